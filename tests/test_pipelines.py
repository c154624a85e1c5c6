import os

import pytest
import torch
from diffusers import DiffusionPipeline

from noisekit import NoiseRecipe, sample, seed_generators
from noisekit.npnet import SMALL_SWIN, NoisePromptNet
from noisekit.pipelines import NoisekitStableDiffusionPipeline, NoisekitStableDiffusionXLPipeline
from noisekit.plan import NoisePlan, prepare_noise

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
    noise, recipes, _ = prepare_noise(pipe, "a blue square", [1, 2], NoisePlan(**{**stages, "npnet": pipe.npnet}
                                                                              if stages.get("npnet") else stages))
    again = sample(pipe, "a blue square", noise, generator=seed_generators([1, 2], noise.shape[1:]), **SETTINGS)
    assert (again.images - out.images[2:]).abs().max() <= 1e-4
    replayed = NoiseRecipe.from_dict(out.recipes[3]).replay(pipe=pipe, npnet=pipe.npnet)
    assert torch.equal(replayed, noise[1:2])


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
    assert torch.equal(first.images, second.images)


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
    from noisekit.sampler import Sampler
    from noisekit.search import search

    def brightness(images, prompts=None, sigma=None):  # a real, cheap reward: mean brightness
        return torch.tensor([float(torch.tensor(list(i.convert("L").getdata())).float().mean()) for i in images])

    pipe = NoisekitStableDiffusionPipeline.from_pipe(sd1_pipe, npnet=npnet_for(32))
    plan = NoisePlan(npnet=True, search={"rewards": {"brightness": brightness}, "strategy": "ttsnap"})
    out = pipe(PROMPT, seeds=range(6), noise_plan=plan, num_inference_steps=20, guidance_scale=5.0)
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=20, guidance_scale=5.0)
    from functools import partial

    from noisekit.npnet_noise import apply_npnet

    expected = search(sampler, 0, {"brightness": brightness}, seeds=list(range(6)), num_candidates=6,
                      noise_transform=partial(apply_npnet, pipe, pipe.npnet, PROMPT))
    assert out.recipes[0]["seed"] == expected.best.seed and out.recipes[0]["transforms"][0]["name"] == "npnet"
    assert out.nfe == expected.nfe < 6 * 20 * 2  # pruning saved denoiser evaluations
    with pytest.raises(ValueError, match="both NLG and search"):
        pipe(PROMPT, noise_plan=NoisePlan(nlg={}, search={"rewards": {"b": brightness}}))
