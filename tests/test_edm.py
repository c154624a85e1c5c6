"""EDM-scheduled UNets (Playground v2.5: the SDXL UNet under `EDMDPMSolverMultistepScheduler` or `EDMEulerScheduler`,
sigma_data 0.5, Karras sigmas): previews from the scheduler's own preconditioning, search and TTSnap, NLG at sigma_max,
a library of the model's own EDM posteriors; zero_snr and NPNet's DDIM data collection refused in one line. Sampling
against the stock pipeline and pruned survivors run in tests/test_families.py (`sdxl_edm`, `sdxl_edm_euler`)."""

import itertools

import pytest
import torch

from noisekit import sample, seed_noise
from noisekit.core.sampler import Sampler
from noisekit.testing.families import BUILDERS, SETTINGS

PROMPT = "a red circle"
STEPS = 4
SIZE = 32
EDM = ["sdxl_edm", "sdxl_edm_euler"]
_PIPES = {}


def edm_pipe(name):
    if name not in _PIPES:
        _PIPES[name] = BUILDERS[name]()
    return _PIPES[name]


def _sampler(name, **kwargs):
    return Sampler(edm_pipe(name), [PROMPT], num_inference_steps=STEPS, guidance_scale=SETTINGS[name][0], height=SIZE,
                   width=SIZE, **kwargs)


@pytest.mark.parametrize("name", EDM)
def test_previews_are_the_schedulers_x0_and_end_at_the_sample(name):
    sampler = _sampler(name)
    noise = seed_noise(sampler.pipe, [0, 1], height=SIZE, width=SIZE)
    batch = sampler.start(noise)
    previews = batch.run(preview_steps=set(range(STEPS)))
    assert all(torch.isfinite(previews[i]).all() for i in range(STEPS))
    # the last step jumps to sigma = 0 along x0, so the last preview is the final sample
    assert (previews[STEPS - 1] - batch.latents.float()).abs().max().item() <= 1e-5
    sigmas = [sampler.adapter.preview_sigma(sampler.scheduler, i, t) for i, t in enumerate(sampler.timesteps)]
    assert sigmas[0] == pytest.approx(80.0) and all(a > b > 0 for a, b in itertools.pairwise(sigmas))
    assert sampler.timesteps[0].item() == pytest.approx(0.25 * torch.log(torch.tensor(80.0)).item())  # c_noise


@pytest.mark.parametrize("name", EDM)
def test_seed_search_and_ttsnap_run(name):
    from noisekit.search.strategies import search

    def brightness(images, prompts, sigma=None):
        import numpy as np

        return torch.tensor([float(np.asarray(image).mean()) for image in images])

    sampler = _sampler(name)
    best = search(sampler, 0, brightness, num_candidates=6, schedule=())
    pruned = search(sampler, 0, brightness, num_candidates=6, strategy="ttsnap")
    assert best.nfe == 6 * STEPS * 2 and pruned.nfe < best.nfe


@pytest.mark.parametrize("name", EDM)
def test_nlg_evaluates_at_sigma_max(name):
    from noisekit.core.candidates import from_seeds
    from noisekit.transforms.nlg import evaluation_timestep, nlg_stage, noise_level_guidance

    pipe = edm_pipe(name)
    assert evaluation_timestep(pipe.scheduler) == 999  # sigma_max: SNR 1 / 80^2 > 0
    sampler = _sampler(name, with_uncond=True)
    start = from_seeds(sampler.shape, [0, 1])
    refined = nlg_stage(sampler, start, num_iterations=2, noise_variance=0.0)
    assert refined.nfe == 2 * 2 * 2 and not torch.equal(refined.noise, start.noise)
    dims = start.noise[0].numel()
    assert torch.allclose(refined.noise.flatten(1).norm(dim=1), torch.full((2,), dims**0.5), rtol=1e-4)
    with pytest.raises(ValueError, match=r"^`official=True` reproduces [^\n]+EDM[^\n]+$"):
        noise_level_guidance(pipe, PROMPT, start.noise, noise_variance=0.0, official=True)


def test_library_builds_from_the_models_own_edm_posteriors_and_retrieves(library_clip_dir, tmp_path):
    from noisekit.library import NoiseLibrary, build_library, clip_extractor, library_noise

    pipe = edm_pipe("sdxl_edm")
    path = str(tmp_path / "lib")
    build_library(pipe, path, 4, extractors=["color", clip_extractor(f"local-dir:{library_clip_dir}")],
                  num_inference_steps=2, height=SIZE, width=SIZE, shard_size=4, batch_size=4)
    library = NoiseLibrary.load(path)
    posterior = library.manifest["posterior"]["scheduler"]
    assert posterior["class"] == "EDMDPMSolverMultistepScheduler" and posterior["config"]["sigma_data"] == 0.5
    # the posterior is the stock pipeline's empty-prompt, unguided image of the seed's noise
    from noisekit.library import color_attributes

    noise = seed_noise(pipe, [3], height=SIZE, width=SIZE)
    stock = pipe("", latents=noise, num_inference_steps=2, guidance_scale=1.0, height=SIZE, width=SIZE,
                 output_type="pt").images
    torch.testing.assert_close(library.features["color"][3:4], color_attributes(stock.float()), atol=1e-3, rtol=1e-3)
    chosen, recipes, result = library_noise(pipe, path, ["brightness=high"], PROMPT, 2, height=SIZE, width=SIZE)
    assert torch.equal(chosen, seed_noise(pipe, result.seeds, height=SIZE, width=SIZE))
    assert all(torch.equal(recipe.replay(), row[None]) for recipe, row in zip(recipes, chosen))
    assert sample(pipe, PROMPT, chosen, num_inference_steps=2, guidance_scale=5.0).nfe == 2 * 2 * 2


def test_stochastic_edm_posteriors_are_refused_in_one_line(tmp_path):
    from diffusers import EDMDPMSolverMultistepScheduler

    from noisekit.library import build_library

    pipe = edm_pipe("sdxl_edm")
    sde = type(pipe).from_pipe(pipe, scheduler=EDMDPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="sde-dpmsolver++"))
    with pytest.raises(ValueError, match=r"^a library posterior must be deterministic; [^\n]+$"):
        build_library(sde, str(tmp_path / "lib"), 2, extractors=["color"], num_inference_steps=2, height=SIZE,
                      width=SIZE)


def test_zero_snr_and_npnet_data_collection_are_refused_and_inspect_schedule_reports_sigmas():
    from noisekit.core.inspect_schedule import inspect_schedule
    from noisekit.core.schedule import zero_snr
    from noisekit.transforms.npd import re_denoise

    pipe = edm_pipe("sdxl_edm")
    with pytest.raises(ValueError, match=r"^zero_snr does not apply to EDM schedules [^\n]+$"):
        zero_snr(pipe)
    with pytest.raises(ValueError, match=r"^re-denoise sampling takes DDIM steps [^\n]+$"):
        re_denoise(pipe, [PROMPT], seed_noise(pipe, [0], height=SIZE, width=SIZE))
    report = inspect_schedule(pipe.scheduler, STEPS)
    assert report.sigma_data == 0.5 and report.sigmas[0] == pytest.approx(80.0) and len(report.sigmas) == STEPS
    assert report.starts_at_last_timestep and not report.zero_terminal_snr and report.init_noise_sigma > 80
    assert "EDM sigmas (sigma_data 0.5)" in str(report)
