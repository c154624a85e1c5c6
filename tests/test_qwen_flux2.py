"""Qwen-Image and FLUX.2 specifics beyond the shared family tests (tests/test_families.py): Qwen-Image's masked
prompts and norm-rescaled true CFG, FLUX.2's canonical grid as the stock draw, klein's distilled one-call steps,
zero_snr and the schedule report on both."""

import pytest
import torch

from noisekit import sample, seed_noise
from noisekit.core.families import adapter_for
from noisekit.testing.qwen_flux2 import tiny_flux2_klein_pipeline, tiny_flux2_pipeline, tiny_qwen_image_pipeline

PROMPTS = ["a red circle", "a small blue square on the left of a green cat"]  # different lengths: a padding mask
STEPS = 3
_PIPES = {}


def _pipe(name):
    builders = {"qwen_image": tiny_qwen_image_pipeline, "flux2": tiny_flux2_pipeline,
                "flux2_klein": tiny_flux2_klein_pipeline}
    if name not in _PIPES:
        _PIPES[name] = builders[name]()
    return _PIPES[name]


def test_qwen_image_prompts_of_different_lengths_equal_the_stock_batch():
    pipe = _pipe("qwen_image")
    noise = seed_noise(pipe, [0, 1], height=32, width=32)
    out = sample(pipe, PROMPTS, noise, num_inference_steps=STEPS, guidance_scale=4.0, negative_prompt="blurry",
                 output_type="np")
    stock = pipe(prompt=PROMPTS, negative_prompt="blurry", true_cfg_scale=4.0, latents=adapter_for(pipe).pack(noise),
                 height=32, width=32, num_inference_steps=STEPS, output_type="np").images
    assert abs(out.images - stock).max() <= 1e-4 and out.nfe == 2 * STEPS * 2


def test_qwen_image_true_cfg_rescales_each_token_to_the_conditional_norm():
    adapter = adapter_for(_pipe("qwen_image"))
    uncond, cond = torch.randn(2, 1, 5, 16).unbind(0)
    guided = adapter.guide(uncond, cond, 4.0)
    assert torch.allclose(guided.norm(dim=-1), cond.norm(dim=-1), rtol=1e-5)
    combined = uncond + 4.0 * (cond - uncond)  # CFG's direction is kept, only each token's length changes
    assert torch.allclose(guided / guided.norm(dim=-1, keepdim=True), combined / combined.norm(dim=-1, keepdim=True))


def test_qwen_image_without_cfg_runs_one_call_per_step():
    pipe = _pipe("qwen_image")
    noise = seed_noise(pipe, [0], height=32, width=32)
    out = sample(pipe, PROMPTS[0], noise, num_inference_steps=STEPS, guidance_scale=1.0, output_type="np")
    stock = pipe(prompt=PROMPTS[0], true_cfg_scale=1.0, latents=adapter_for(pipe).pack(noise), height=32, width=32,
                 num_inference_steps=STEPS, output_type="np").images
    assert abs(out.images - stock).max() <= 1e-4 and out.nfe == STEPS


@pytest.mark.parametrize("name", ["flux2", "flux2_klein"])
def test_flux2_canonical_noise_is_the_stock_generator_draw(name):
    pipe = _pipe(name)
    noise = seed_noise(pipe, [7], height=32, width=32)
    assert noise.shape == (1, 16, 8, 8)  # the patchified grid: 4 VAE channels x 2 x 2 at half the latent size
    latents, _ = pipe.prepare_latents(1, 4, 32, 32, torch.float32, torch.device("cpu"),
                                      torch.Generator().manual_seed(7))
    adapter = adapter_for(pipe)
    assert torch.equal(adapter.pack(noise), latents) and torch.equal(adapter.unpack(latents), noise)
    with pytest.raises(ValueError, match=r"`height` must be a positive multiple of 4 for Flux2"):
        seed_noise(pipe, [0], height=30, width=32)


def test_flux2_klein_distilled_runs_one_call_per_step():
    pipe = tiny_flux2_klein_pipeline(is_distilled=True)
    noise = seed_noise(pipe, [0], height=32, width=32)
    out = sample(pipe, PROMPTS[0], noise, num_inference_steps=STEPS, guidance_scale=4.0, output_type="np")
    stock = pipe(prompt=PROMPTS[0], latents=noise, height=32, width=32, num_inference_steps=STEPS,
                 guidance_scale=4.0, output_type="np").images
    assert abs(out.images - stock).max() <= 1e-4 and out.nfe == STEPS


@pytest.mark.parametrize("name", ["qwen_image", "flux2", "flux2_klein"])
def test_zero_snr_is_refused_and_the_schedule_is_reported_as_flow(name):
    from noisekit.core.inspect_schedule import inspect_schedule
    from noisekit.core.schedule import zero_snr

    pipe = _pipe(name)
    with pytest.raises(ValueError, match=r"^zero_snr does not apply to flow matching [^\n]+$"):
        zero_snr(pipe)
    report = inspect_schedule(pipe.scheduler, STEPS)
    assert report.prediction_type == "flow" and report.dynamic_shifting and report.sigmas[0] == 1.0
