import os

import pytest
import torch
from diffusers import DiffusionPipeline

from noisekit import NoiseRecipe, sample, seed_generators
from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet
from noisekit.pipelines import NoisekitStableDiffusionPipeline, NoisekitStableDiffusionXLPipeline
from noisekit.plan import NoisePlan, prepare, run_sampler

PIPELINES = os.path.join(os.path.dirname(__file__), "..", "pipelines")
PROMPT = "a red circle on a black background"
SETTINGS = dict(num_inference_steps=3, guidance_scale=5.0, output_type="pt")


def npnet_for(text_width):
    torch.manual_seed(0)
    net = NoisePromptNet(sample_size=8, text_embed_dim=text_width, max_text_tokens=77, swin_kwargs=SMALL_SWIN).eval()
    with torch.no_grad():
        net.alpha.fill_(1.0)
        net.beta.fill_(1.0)
    return net


@pytest.fixture(params=["sd", "sdxl"])
def family(request, sd1_pipe, sdxl_pipe):
    if request.param == "sd":
        return NoisekitStableDiffusionPipeline, sd1_pipe, 32
    return NoisekitStableDiffusionXLPipeline, sdxl_pipe, 64


def test_without_a_plan_it_is_the_stock_pipeline(family):
    cls, stock, _ = family
    pipe = cls.from_pipe(stock)
    out = pipe(PROMPT, seeds=[3, 4], **SETTINGS)
    expected = stock(PROMPT, num_images_per_prompt=2, generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
                     **SETTINGS).images
    assert torch.equal(out.images, expected)
    assert out.nfe == 3 * 2 * 2 and [r["seed"] for r in out.recipes] == [3, 4]


@pytest.mark.parametrize("stages", [dict(nlg={"num_iterations": 2}), dict(npnet=True),
                                    dict(npnet=True, nlg={"num_iterations": 1})])
def test_noise_stages_on_and_replay_bit_identical(family, stages):
    cls, stock, text_width = family
    pipe = cls.from_pipe(stock, npnet=npnet_for(text_width))
    plan = NoisePlan(**stages)
    out = pipe([PROMPT, "a blue square"], seeds=[1, 2], noise_plan=plan, **SETTINGS)
    names = [t["name"] for t in out.recipes[3]["transforms"]]
    assert names == [n for n in ("npnet", "nlg") if stages.get(n) is not None]
    assert out.nfe == 2 * (2 * 2 * stages.get("nlg", {}).get("num_iterations", 0) + 3 * 2 * 2)
    # The images equal noisekit's sampler on the same prepared noise, and the recipes replay that noise exactly.
    plan = NoisePlan(**{**stages, "npnet": pipe.npnet} if stages.get("npnet") else stages)
    sampler = run_sampler(pipe, ["a blue square"], plan, guidance_scale=SETTINGS["guidance_scale"])
    noise = prepare(sampler, plan, 0, [1, 2]).noise
    again = sample(pipe, "a blue square", noise, generator=seed_generators([1, 2], noise.shape[1:]), **SETTINGS)
    assert (again.images - out.images[2:]).abs().max() <= 1e-4
    # float transforms replay within the stated tolerance (bit for bit only where kernels take the same path)
    recipe = NoiseRecipe.from_dict(out.recipes[3])
    replayed = recipe.replay(pipe=pipe, npnet=pipe.npnet)
    assert recipe.verify(replayed)[0] in ("identical", "within tolerance")
    torch.testing.assert_close(replayed, noise[1:2], rtol=0, atol=1e-4)


def test_call_contract(sd1_pipe):
    """Arguments noisekit sets itself are refused by name; output_type is respected with a search stage; NFE is
    counted as spent (CFG off: one evaluation per step)."""
    pipe = NoisekitStableDiffusionPipeline.from_pipe(sd1_pipe)
    for name in ("generator", "latents"):
        with pytest.raises(ValueError, match=f"`{name}` is set by noisekit"):
            pipe(PROMPT, seeds=[0], **{name: None}, **SETTINGS)
    out = pipe(PROMPT, seeds=[0, 1], num_inference_steps=3, guidance_scale=1.0, output_type="pt")
    assert out.nfe == 2 * 3
    plan = NoisePlan(search={"rewards": {"mean": lambda images, prompts, sigma=None: torch.arange(len(images))}})
    latent = pipe(PROMPT, seeds=[0, 1], noise_plan=plan, **{**SETTINGS, "output_type": "latent"})
    assert torch.is_tensor(latent.images) and latent.images.shape == (1, 4, 8, 8)


def test_npnet_true_without_a_component_is_refused(sd1_pipe):
    pipe = NoisekitStableDiffusionPipeline.from_pipe(sd1_pipe)
    with pytest.raises(ValueError, match="has none"):
        pipe(PROMPT, noise_plan=NoisePlan(npnet=True), **SETTINGS)


def test_save_with_npnet_reloads(tmp_path, sd1_pipe):
    pipe = NoisekitStableDiffusionPipeline.from_pipe(sd1_pipe, npnet=npnet_for(32))
    pipe.save_pretrained(tmp_path / "saved")
    again = NoisekitStableDiffusionPipeline.from_pretrained(tmp_path / "saved")
    assert isinstance(again.npnet, NoisePromptNet)
    first = pipe(PROMPT, seeds=[5], noise_plan=NoisePlan(npnet=True), **SETTINGS)
    second = again(PROMPT, seeds=[5], noise_plan=NoisePlan(npnet=True), **SETTINGS)
    # weights read from disk (memory-mapped) take other kernel paths than the same weights in memory: equal within
    # float tolerance, not bit for bit
    torch.testing.assert_close(first.images, second.images, rtol=0, atol=1e-4)
    recipe = NoiseRecipe.from_dict(first.recipes[0])
    assert recipe.verify(recipe.replay_unverified(pipe=again, npnet=again.npnet))[0] != "different"
    # stock diffusers loads the folder as the stock pipeline; noisekit's loader as its own class, NPNet included
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    from noisekit.sources import load_pipeline

    assert type(DiffusionPipeline.from_pretrained(tmp_path / "saved")) is StableDiffusionPipeline
    loaded = load_pipeline(str(tmp_path / "saved"), device="cpu")
    assert isinstance(loaded, NoisekitStableDiffusionPipeline) and isinstance(loaded.npnet, NoisePromptNet)


@pytest.mark.parametrize("file_name,stock_name", [("pipeline_noisekit_sd.py", "sd1_pipe"),
                                                  ("pipeline_noisekit_sdxl.py", "sdxl_pipe")])
def test_loadable_as_custom_pipeline(tmp_path, request, file_name, stock_name):
    stock = request.getfixturevalue(stock_name)
    stock.save_pretrained(tmp_path / "stock")
    # diffusers asks for trust_remote_code=True before it runs any pipeline file, a local one included.
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "stock", custom_pipeline=os.path.join(PIPELINES, file_name),
                                             trust_remote_code=True)
    assert type(pipe).__name__.startswith("NoisekitStableDiffusion")
    out = pipe(PROMPT, seeds=[0], noise_plan=NoisePlan(nlg={"num_iterations": 1}), **SETTINGS)
    assert out.recipes[0]["transforms"][0]["name"] == "nlg"


def test_search_stage_with_golden_noise_returns_the_best_candidate(sd1_pipe):
    from noisekit.rewards import add_reward  # noqa: F401
    from noisekit.core.sampler import Sampler
    from noisekit.search.strategies import search

    def brightness(images, prompts=None, sigma=None):  # a real, cheap reward: mean brightness
        return torch.tensor([float(torch.tensor(list(i.convert("L").getdata())).float().mean()) for i in images])

    pipe = NoisekitStableDiffusionPipeline.from_pipe(sd1_pipe, npnet=npnet_for(32))
    plan = NoisePlan(npnet=True, search={"rewards": {"brightness": brightness}, "strategy": "ttsnap"})
    out = pipe(PROMPT, seeds=range(6), noise_plan=plan, num_inference_steps=20, guidance_scale=5.0)
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=20, guidance_scale=5.0)
    from noisekit.core.candidates import from_seeds
    from noisekit.transforms.golden import golden_stage

    candidates = golden_stage(sampler, from_seeds(sampler.shape, range(6)), pipe.npnet)
    expected = search(sampler, 0, {"brightness": brightness}, candidates=candidates)
    assert out.recipes[0]["seed"] == expected.best.seed and out.recipes[0]["transforms"][0]["name"] == "npnet"
    assert out.nfe == expected.nfe < 6 * 20 * 2  # pruning saved denoiser evaluations
    # NLG before search: its NFE are charged to the budget, so the budget buys fewer candidates
    budget = 4 * (20 * 2 + 1)
    plain = pipe(PROMPT, noise_plan=NoisePlan(search={"rewards": {"b": brightness}, "budget": budget}),
                 num_inference_steps=20, guidance_scale=5.0)
    guided = pipe(PROMPT, noise_plan=NoisePlan(nlg={"num_iterations": 2},
                                               search={"rewards": {"b": brightness}, "budget": budget}),
                  num_inference_steps=20, guidance_scale=5.0)
    assert plain.nfe == 4 * 40 and guided.nfe == 3 * (40 + 4) <= budget
    assert [s["name"] for s in guided.recipes[0]["transforms"]] == ["nlg"]


@pytest.fixture(scope="module")
def libraries(tmp_path_factory, sd1_pipe, sdxl_pipe):
    from noisekit.library import build_library

    paths = {}
    for name, stock in (("sd", sd1_pipe), ("sdxl", sdxl_pipe)):
        paths[name] = str(tmp_path_factory.mktemp(f"lib-{name}") / "lib")
        build_library(stock, paths[name], 8, extractors=["color"], num_inference_steps=2, shard_size=4, batch_size=4)
    return paths


@pytest.mark.parametrize("stages", [dict(), dict(npnet=True), dict(npnet=True, nlg={"num_iterations": 1})])
def test_library_stage_first_then_the_others(family, libraries, stages):
    from noisekit.library import NoiseLibrary

    cls, stock, text_width = family
    path = libraries["sd" if cls is NoisekitStableDiffusionPipeline else "sdxl"]
    pipe = cls.from_pipe(stock, npnet=npnet_for(text_width))
    library = {"path": path, "attributes": ["brightness=high"]}
    out = pipe(PROMPT, seeds=[0, 0], noise_plan=NoisePlan(library=library, **stages), **SETTINGS)
    chosen = NoiseLibrary.load(path).query(attributes=["brightness=high"], top_k=2).seeds
    assert [r["seed"] for r in out.recipes] == chosen  # the library picks the seeds, the caller's only count
    assert [t["name"] for t in out.recipes[1]["transforms"]] == [n for n in ("npnet", "nlg") if stages.get(n)]
    noise = torch.cat([NoiseRecipe.from_dict(r).replay(pipe=pipe, npnet=pipe.npnet) for r in out.recipes])
    again = sample(pipe, PROMPT, noise, generator=seed_generators(chosen, noise.shape[1:]), **SETTINGS)
    assert (again.images - out.images).abs().max() <= 1e-4


def test_search_stage_on_sdxl_with_a_library(sdxl_pipe, libraries):
    def brightness(images, prompts=None, sigma=None):
        return torch.tensor([float(torch.tensor(list(i.convert("L").getdata())).float().mean()) for i in images])

    pipe = NoisekitStableDiffusionXLPipeline.from_pipe(sdxl_pipe)
    plan = NoisePlan(library={"path": libraries["sdxl"], "attributes": ["brightness=low"]},
                     search={"rewards": {"brightness": brightness}, "strategy": "best_of_n"})
    out = pipe(PROMPT, seeds=range(4), noise_plan=plan, num_inference_steps=4, guidance_scale=5.0)
    from noisekit.library import NoiseLibrary

    pool = NoiseLibrary.load(libraries["sdxl"]).query(attributes=["brightness=low"], top_k=4).seeds
    assert len(out.recipes) == 1 and out.recipes[0]["seed"] in pool and out.nfe == 4 * 4 * 2


def test_a_composed_plan_encodes_each_prompt_once(sd1_pipe):
    """Library-free plan with golden noise, NLG and a search stage: the text encoder runs once per prompt for the
    conditional rows and once for the unconditional ones (CFG), whatever the stages."""
    calls = []
    pipe = NoisekitStableDiffusionPipeline.from_pipe(sd1_pipe, npnet=npnet_for(32))
    handle = pipe.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        plan = NoisePlan(npnet=True, nlg={"num_iterations": 1},
                         search={"rewards": {"mean": lambda images, prompts, sigma=None: torch.arange(len(images))}})
        pipe([PROMPT, "a blue square"], seeds=[0, 1], noise_plan=plan, **SETTINGS)
        assert len(calls) == 2 * 2
        calls.clear()
        pipe([PROMPT, "a blue square"], seeds=[0, 1], noise_plan=NoisePlan(npnet=True, nlg={"num_iterations": 1}),
             **SETTINGS)
        assert len(calls) == 2 * 2  # the stock call gets the embeddings, it does not encode again
    finally:
        handle.remove()
