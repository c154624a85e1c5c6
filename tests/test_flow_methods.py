"""NoiseQuery libraries and golden noise (NPNet) on the flow-matching families (SD3, FLUX.1): build, retrieval,
golden noise of any channel count and size, the pipeline's own prompt sequence, NPD collection and training, the
CLI on saved pipeline folders, and replay."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from noisekit import seed_noise
from noisekit.cli import main
from noisekit.core.candidates import from_seeds
from noisekit.core.families import adapter_for
from noisekit.core.recipe import NoiseRecipe, seed_recipes
from noisekit.core.sampler import Sampler, sample
from noisekit.core.weights import module_hash
from noisekit.generate import generate
from noisekit.library import NoiseLibrary, build_library, clip_extractor, library_noise
from noisekit.plan import NoisePlan
from noisekit.testing import tiny_sd3_pipeline
from noisekit.transforms.golden import apply_npnet, golden_stage, prompt_embeddings
from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet, channel_grid, pipeline_text_shape

from test_families import BUILDERS, SETTINGS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
import collect_npd  # noqa: E402
import train_npnet  # noqa: E402

PROMPT = "a red circle"
SIZE = 32  # pixels: 4 x 16 x 16 latents for both tiny families
FLOW = ["sd3", "flux_dev"]
_PIPES = {}


def flow_pipe(name):
    if name not in _PIPES:
        _PIPES[name] = BUILDERS[name]() if name in BUILDERS else tiny_sd3_pipeline(latent_channels=16)
    return _PIPES[name]


def net_for(pipe, sample_size=16, seed=0):
    """A small NPNet sized to `pipe` (its channels and prompt sequence), with the prompt and residual terms open."""
    tokens, width = pipeline_text_shape(pipe)
    torch.manual_seed(seed)
    net = NoisePromptNet(sample_size=sample_size, latent_channels=adapter_for(pipe).latent_channels,
                         text_embed_dim=width, max_text_tokens=tokens, swin_kwargs=SMALL_SWIN).eval()
    with torch.no_grad():  # alpha = beta = 0 at init would leave only the prompt-blind SVD branch
        net.alpha.fill_(0.4)
        net.beta.fill_(0.1)
    return net


# --- golden noise ----------------------------------------------------------------------------------------------


def test_prompt_sequence_is_the_pipelines_own_conditioning():
    sd3, flux = flow_pipe("sd3"), flow_pipe("flux_dev")
    # SD3: the stock joint sequence, CLIP-L || CLIP-G (77 tokens, zero-padded to the T5 width) then 256 T5 tokens
    stock = sd3.encode_prompt(prompt=PROMPT, prompt_2=None, prompt_3=None, device="cpu",
                              do_classifier_free_guidance=False)[0]
    assert torch.equal(prompt_embeddings(sd3, [PROMPT]), stock) and pipeline_text_shape(sd3) == (77 + 256, 64)
    # FLUX: T5's 512 tokens, then CLIP's pooled embedding as a last token zero-padded to the T5 width
    t5, pooled, _ = flux.encode_prompt(prompt=PROMPT, prompt_2=None, device="cpu")
    sequence = prompt_embeddings(flux, [PROMPT, "a blue square"])
    assert sequence.shape == (2, 513, 32) and pipeline_text_shape(flux) == (513, 32)
    assert torch.equal(sequence[:1, :512], t5) and torch.equal(sequence[:1, 512, : pooled.shape[-1]], pooled)


@pytest.mark.parametrize("name", [*FLOW, "sd3_no_t5"])
def test_golden_stage_runs_and_replays_on_flow_families(name):
    pipe = flow_pipe(name)
    net = net_for(pipe)
    sampler = Sampler(pipe, [PROMPT, "a blue square"], num_inference_steps=2, guidance_scale=SETTINGS[name][0],
                      height=SIZE, width=SIZE)
    start = from_seeds(sampler.shape, [3, 4], prompt_index=1)
    assert torch.equal(start.noise, seed_noise(pipe, [3, 4], height=SIZE, width=SIZE))  # the seeds' own bits
    golden = golden_stage(sampler, start, net)
    assert golden.noise.shape == (2, 4, 16, 16) and torch.isfinite(golden.noise).all()
    assert not torch.equal(golden.noise, start.noise) and golden.nfe == start.nfe
    assert torch.equal(golden_stage(sampler, start, net).noise, golden.noise)  # deterministic
    step = golden.recipes[0].transforms[-1]
    assert step["name"] == "npnet" and step["params"]["prompt"] == "a blue square"
    for recipe, row in zip(golden.recipes, golden.noise):
        replayed = NoiseRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))).replay(pipe=pipe, npnet=net)
        torch.testing.assert_close(replayed, row[None], rtol=0, atol=1e-5)
    # the golden noise samples like any canonical noise (FLUX: packed by the adapter)
    out = sample(pipe, "a blue square", golden.noise, num_inference_steps=2, guidance_scale=SETTINGS[name][0],
                 output_type="np")
    adapter = adapter_for(pipe)
    stock = pipe(["a blue square"] * 2, latents=adapter.pack(golden.noise), num_inference_steps=2, height=SIZE,
                 width=SIZE, guidance_scale=SETTINGS[name][0], output_type="np").images
    assert np.abs(out.images - stock).max() <= 1e-4


@pytest.mark.parametrize("name", FLOW)
def test_golden_noise_resizes_for_a_net_of_another_size(name):
    pipe = flow_pipe(name)
    net = net_for(pipe, sample_size=8)
    noise = seed_noise(pipe, [0, 1], height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match=r"^this NPNet was trained for 8 x 8 latents, the pipeline's are 16 x 16"):
        apply_npnet(pipe, net, PROMPT, noise, seed_recipes([0, 1], noise.shape[1:]))
    golden, recipes = apply_npnet(pipe, net, PROMPT, noise, seed_recipes([0, 1], noise.shape[1:]), resize=True)
    assert golden.shape == noise.shape and not torch.equal(golden, noise)
    torch.testing.assert_close(recipes[1].replay(pipe=pipe, npnet=net), golden[1:], rtol=0, atol=1e-5)


def test_sixteen_channel_latents_tile_four_by_four_and_refuse_a_four_channel_net():
    pipe = flow_pipe("sd3_16")
    noise = seed_noise(pipe, [0], height=SIZE, width=SIZE)
    assert noise.shape == (1, 16, 16, 16) and channel_grid(16) == (4, 4) and channel_grid(32) == (4, 8)
    net = net_for(pipe)
    golden, _ = apply_npnet(pipe, net, PROMPT, noise, seed_recipes([0], noise.shape[1:]))
    assert golden.shape == (1, 16, 16, 16) and torch.isfinite(golden).all()
    # the SVD branch reads the 16 channels as a 4 x 4 grid of blocks of one 64 x 64 matrix
    torch.nn.init.zeros_(net.unet_svd.mlp4[2].weight)
    torch.nn.init.constant_(net.unet_svd.mlp4[2].bias, 0.5)  # new singular values = S + 0.5
    x = torch.randn(2, 16, 16, 16)
    matrix = torch.cat([torch.cat([x[:, 4 * i + j] for j in range(4)], 2) for i in range(4)], 1)
    u, _, vh = torch.linalg.svd(matrix)
    expected = matrix + 0.5 * u @ vh
    blocks = [expected[:, 16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)] for i in range(4) for j in range(4)]
    with torch.no_grad():
        torch.testing.assert_close(net.unet_svd(x), torch.stack(blocks, 1), atol=1e-4, rtol=1e-4)
    four = net_for(flow_pipe("sd3"))
    with pytest.raises(ValueError, match=r"^this NPNet takes 4-channel latents, the pipeline's "
                                         r"StableDiffusion3Pipeline has 16: [^\n]+$"):
        apply_npnet(pipe, four, PROMPT, noise, seed_recipes([0], noise.shape[1:]))
    with pytest.raises(ValueError, match=r"^this NPNet takes prompt embeddings of 513 x 32, but the pipeline's "
                                         r"StableDiffusion3Pipeline encodes prompts to 333 x 64"):
        apply_npnet(flow_pipe("sd3"), net_for(flow_pipe("flux_dev")), PROMPT, seed_noise(flow_pipe("sd3"), [0],
                    height=SIZE, width=SIZE), seed_recipes([0], (4, 16, 16)))


def test_variable_length_prompts_are_refused_in_one_line():
    from noisekit.testing.qwen_flux2 import tiny_qwen_image_pipeline

    pipe = tiny_qwen_image_pipeline()
    with pytest.raises(ValueError, match=r"^golden noise \(NPNet\) needs prompts encoded to a fixed number of "
                                         r"tokens [^\n]+ QwenImagePipeline encodes each prompt to its own length\.$"):
        pipeline_text_shape(pipe)


def test_golden_noise_on_flux2_and_a_library_on_qwen_image(clip, tmp_path):
    from noisekit.testing.qwen_flux2 import tiny_flux2_pipeline, tiny_qwen_image_pipeline

    flux2 = tiny_flux2_pipeline()
    noise = seed_noise(flux2, [0], height=SIZE, width=SIZE)  # the patchified grid (C, h, w)
    net = net_for(flux2, sample_size=noise.shape[-1])
    golden, recipes = apply_npnet(flux2, net, PROMPT, noise, seed_recipes([0], noise.shape[1:]))
    assert golden.shape == noise.shape and not torch.equal(golden, noise)
    torch.testing.assert_close(recipes[0].replay(pipe=flux2, npnet=net), golden, rtol=0, atol=1e-5)
    qwen = tiny_qwen_image_pipeline()
    path = str(tmp_path / "lib")
    build_library(qwen, path, 3, extractors=["color", clip], num_inference_steps=2, height=SIZE, width=SIZE)
    chosen, _, result = library_noise(qwen, path, (), PROMPT, 2, height=SIZE, width=SIZE)
    assert torch.equal(chosen, seed_noise(qwen, result.seeds, height=SIZE, width=SIZE))


def _official_pth(net, path):
    parts = {"unet_svd": net.unet_svd.state_dict(), "unet_embedding": net.unet_embedding.state_dict(),
             "embeeding": net.text_embedding.state_dict()}
    torch.save({**parts, "alpha": net.alpha.detach().clone(), "beta": net.beta.detach().clone()}, path)
    flat = {f"{part}.{k}": v.contiguous() for part, state in parts.items() for k, v in state.items()}
    save_file({**flat, "alpha": net.alpha.detach().clone(), "beta": net.beta.detach().clone()},
              str(path).replace(".pth", ".safetensors"))


def test_official_layouts_load_dit_and_sixteen_channel_nets(tmp_path):
    # Hunyuan-DiT's dit.pth: the SDXL layout with a 77 x 1024 prompt projection
    torch.manual_seed(1)
    dit = NoisePromptNet(sample_size=8, text_embed_dim=1024, swin_kwargs=SMALL_SWIN).eval()
    _official_pth(dit, tmp_path / "dit.pth")
    loaded = NoisePromptNet.from_official_checkpoint(str(tmp_path / "dit.pth"), swin_kwargs=SMALL_SWIN)
    assert (loaded.config.text_embed_dim, loaded.config.latent_channels, loaded.config.sample_size) == (1024, 4, 8)
    # a 16-channel net written in the official layout: channels and size are read from the weights
    sd3 = flow_pipe("sd3_16")
    net = net_for(sd3)
    _official_pth(net, tmp_path / "sd3.pth")
    for path in (tmp_path / "sd3.pth", tmp_path / "sd3.safetensors"):
        loaded = NoisePromptNet.from_official_checkpoint(str(path), pipe=sd3, height=SIZE, width=SIZE,
                                                         max_text_tokens=333, swin_kwargs=SMALL_SWIN)
        assert (loaded.config.latent_channels, loaded.config.sample_size) == (16, 16)
        x, embeds = torch.randn(1, 16, 16, 16), prompt_embeddings(sd3, [PROMPT])
        with torch.no_grad():
            assert torch.equal(loaded(x, embeds), net(x, embeds))


# --- NoiseQuery libraries --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(library_clip_dir):
    return clip_extractor(f"local-dir:{library_clip_dir}")


@pytest.mark.parametrize("name", FLOW)
def test_library_builds_and_retrieves_on_flow_families(name, clip, tmp_path):
    pipe = flow_pipe(name)
    path = str(tmp_path / "lib")
    build_library(pipe, path, 6, extractors=["color", "sharpness", clip], num_inference_steps=2, height=SIZE,
                  width=SIZE, shard_size=4, batch_size=4)
    library = NoiseLibrary.load(path)
    manifest = library.manifest
    assert manifest["latent_shape"] == [4, 16, 16] and (manifest["height"], manifest["width"]) == (SIZE, SIZE)
    assert manifest["posterior"]["scheduler"]["class"] == "FlowMatchEulerDiscreteScheduler"
    assert manifest["model"]["unet_hash"] == module_hash(pipe.transformer)
    assert library.seeds.tolist() == list(range(6)) and library.features["clip"].shape == (6, 16)
    # the posterior is the stock pipeline's empty-prompt, unguided image of the seed's (packed) noise
    noise = seed_noise(pipe, [4], height=SIZE, width=SIZE)
    stock = pipe("", latents=adapter_for(pipe).pack(noise), num_inference_steps=2, guidance_scale=1.0, height=SIZE,
                 width=SIZE, output_type="pt").images
    torch.testing.assert_close(library.features["color"][4:5], library_color(stock), atol=1e-3, rtol=1e-3)
    # retrieval: the chosen seeds' canonical noise, checked against the stored checksums, and their recipes
    chosen, recipes, result = library_noise(pipe, path, ["brightness=high"], PROMPT, 2, exclude=[0], height=SIZE,
                                            width=SIZE)
    assert chosen.shape == (2, 4, 16, 16) and 0 not in result.seeds and set(result.terms) == {"text", "brightness"}
    assert torch.equal(chosen, seed_noise(pipe, result.seeds, height=SIZE, width=SIZE))
    for recipe, row in zip(recipes, chosen):
        assert torch.equal(recipe.replay(), row[None])
    # keyed to the model: another family's (or another model's) pipeline is refused in one line
    other = flow_pipe("flux_dev" if name == "sd3" else "sd3")
    with pytest.raises(ValueError, match=r"^library .* was built with another model [^\n]+$"):
        library_noise(other, path, ["brightness=high"], None, 1, height=SIZE, width=SIZE)


def library_color(pixels):
    from noisekit.library import color_attributes

    return color_attributes(pixels.float())


@pytest.mark.parametrize("name", FLOW)
def test_library_and_golden_noise_in_one_plan(name, clip, tmp_path):
    pipe = flow_pipe(name)
    path = str(tmp_path / "lib")
    build_library(pipe, path, 5, extractors=["color", clip], num_inference_steps=2, height=SIZE, width=SIZE)
    plan = NoisePlan(library={"path": path, "attributes": ("brightness=low",)}, npnet=net_for(pipe))
    records, _ = generate(pipe, [PROMPT], [0, 1], num_inference_steps=2, guidance_scale=SETTINGS[name][0],
                          plan=plan, height=SIZE, width=SIZE, output_type="np")
    seeds = [r["seed"] for r in records]
    assert len(set(seeds)) == 2 and set(seeds) <= set(range(5))
    assert [t["name"] for t in records[0]["recipe"]["transforms"]] == ["npnet"]
    assert records[0]["recipe"]["checksum"]  # the library's stored checksum travels with the recipe


# --- the CLI on saved flow pipeline folders ----------------------------------------------------------------------


@pytest.mark.parametrize("name", FLOW)
def test_cli_builds_a_library_and_generates_with_it_and_golden_noise(name, library_clip_dir, tmp_path, capsys):
    pipe = flow_pipe(name)
    model = str(tmp_path / "model")
    pipe.save_pretrained(model)
    net_for(pipe).save_pretrained(tmp_path / "npnet")
    lib = str(tmp_path / "lib")
    assert main(["library", "build", "--model", model, "--output", lib, "--num_seeds", "5", "--steps", "2",
                 "--height", str(SIZE), "--width", str(SIZE), "--shard_size", "4", "--clip",
                 f"local-dir:{library_clip_dir}", "--device", "cpu", "--quiet", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 5 and info["latent_shape"] == [4, 16, 16]
    out = tmp_path / "out"
    assert main(["generate", PROMPT, "--model", model, "--library", lib, "--attribute", "brightness=high",
                 "--npnet", str(tmp_path / "npnet"), "--num_images", "2", "--steps", "2", "--guidance_scale",
                 str(SETTINGS[name][0]), "--height", str(SIZE), "--width", str(SIZE), "--device", "cpu",
                 "--output_dir", str(out), "--quiet"]) == 0
    records = json.loads((out / "results.json").read_text())["images"]
    assert len(records) == 2 and all(r["seed"] in range(5) for r in records)
    assert [t["name"] for t in records[0]["recipe"]["transforms"]] == ["npnet"]
    capsys.readouterr()
    assert main(["replay", str(out / "results.json"), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == report["identical"] == 2


# --- NPD collection and NPNet training on SD3 --------------------------------------------------------------------


def test_flow_re_denoise_is_an_euler_step_and_its_exact_inverse():
    from noisekit.transforms.npd import re_denoise
    from noisekit.transforms.npd_flow import flow_first_sigmas

    pipe = flow_pipe("sd3")
    noise = seed_noise(pipe, [0, 1], height=SIZE, width=SIZE)
    result = re_denoise(pipe, [PROMPT], noise, inversion="exact")
    _, s0, s1 = flow_first_sigmas(adapter_for(pipe), 10, (4, 16, 16))
    assert s0 == 1.0 and 0 < s1 < 1
    torch.testing.assert_close(result.x_t1, noise + (s1 - s0) * result.eps_l, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.target, noise + (s0 - s1) * (result.eps_w - result.eps_l), atol=1e-5,
                               rtol=1e-5)
    assert (result.target - noise).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"^`inversion` must be 'exact' for StableDiffusion3Pipeline: [^\n]+$"):
        re_denoise(pipe, [PROMPT], noise)
    with pytest.raises(ValueError, match=r"^re-denoise sampling needs a guidance gap [^\n]+FLUX.1-schnell"):
        re_denoise(BUILDERS["flux_schnell"](), [PROMPT], noise, inversion="exact")


def test_npd_collection_and_npnet_training_on_sd3(tmp_path):
    from noisekit.shapes.judge import ShapesJudge
    from noisekit.transforms.npd import load_npd, re_denoise

    pipe = flow_pipe("sd3")
    pipe.save_pretrained(tmp_path / "pipe")
    torch.manual_seed(0)
    ShapesJudge(width=8).save_pretrained(tmp_path / "judge")
    npd = tmp_path / "npd"
    collect_npd.main(collect_npd.parse_args([
        "--pretrained_model_name_or_path", str(tmp_path / "pipe"), "--output_dir", str(npd), "--dataset", "shapes",
        "--num_prompts", "3", "--seeds_per_prompt", "2", "--shard_size", "4", "--batch_size", "3", "--reward",
        "shapes-judge", "--reward_path", str(tmp_path / "judge"), "--margin", "-1", "--num_inference_steps", "4",
        "--resolution", str(SIZE)]))
    assert json.loads((npd / "collection.json").read_text())["inversion"] == "exact"
    tensors, prompts = load_npd(npd)
    assert tensors["source"].shape == tensors["target"].shape == (6, 4, 16, 16)
    torch.testing.assert_close(tensors["source"], seed_noise(pipe, range(6), height=SIZE, width=SIZE))
    expected = re_denoise(pipe, prompts, tensors["source"], tensors["prompt_index"].tolist(), 4,
                          inversion="exact").target
    torch.testing.assert_close(tensors["target"], expected, atol=1e-4, rtol=1e-4)

    output_dir = tmp_path / "npnet"
    record = train_npnet.main(train_npnet.parse_args([
        "--data_dir", str(npd), "--pretrained_model_name_or_path", str(tmp_path / "pipe"), "--output_dir",
        str(output_dir), "--small_swin", "--train_batch_size", "4", "--validation_fraction", "0.3",
        "--checkpointing_steps", "2", "--validation_steps", "2", "--eval_batch_size", "2", "--max_train_steps", "3",
        "--resolution", str(SIZE)]))
    assert record["steps"] == 3 and record["val_mse"] > 0
    npnet = NoisePromptNet.from_pretrained(output_dir / "npnet").eval()
    config = npnet.config
    assert (config.latent_channels, config.sample_size, config.max_text_tokens, config.text_embed_dim) == \
        (4, 16, 333, 64)
    noise = seed_noise(pipe, [9], height=SIZE, width=SIZE)
    golden, _ = apply_npnet(pipe, npnet, PROMPT, noise, seed_recipes([9], noise.shape[1:]))
    assert golden.shape == noise.shape and torch.isfinite(golden).all()
