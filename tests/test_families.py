"""Model families beyond SD/SDXL: SD3, FLUX.1 dev/schnell, LCM and EDM-scheduled UNets sample as their stock
pipelines do; pruned survivors equal their solo runs; previews, NFE; the families noisekit does not serve are refused
in one line."""

import pytest
import torch

from noisekit import sample, seed_noise
from noisekit.core.families import adapter_for
from noisekit.core.noise import seed_generators
from noisekit.core.sampler import Sampler, run_batches
from noisekit.testing import t5_tokenizer, tiny_flux_pipeline
from noisekit.testing.families import BUILDERS, SETTINGS, STOCK_GUIDANCE
from noisekit.testing.pixart_sana import gemma_tokenizer

PROMPT = "a red circle"
SEEDS = [0, 1, 2]
STEPS = 4
_PIPES = {}


@pytest.fixture(params=list(BUILDERS))
def family(request):
    if request.param not in _PIPES:
        _PIPES[request.param] = BUILDERS[request.param]()
    return request.param, _PIPES[request.param]


def _setup(name, pipe, seeds=SEEDS):
    guidance_scale, nfe_per_step, size = SETTINGS[name]
    noise = seed_noise(pipe, seeds, height=size, width=size)
    return noise, dict(num_inference_steps=STEPS, guidance_scale=guidance_scale), nfe_per_step


def test_sample_equals_the_stock_pipeline(family):
    name, pipe = family
    noise, settings, nfe_per_step = _setup(name, pipe)
    generators = lambda: seed_generators(SEEDS, noise.shape[1:])  # noqa: E731  (LCM's scheduler draws noise)
    out = sample(pipe, PROMPT, noise, generator=generators(), output_type="np", preview_steps=(1,), **settings)
    adapter = adapter_for(pipe)
    height, width = adapter.image_size(noise)
    if name in STOCK_GUIDANCE:
        settings.update(STOCK_GUIDANCE[name](settings.pop("guidance_scale")))
    stock = pipe(prompt=[PROMPT] * len(SEEDS), latents=adapter.stock_latents(noise), generator=generators(),
                 output_type="np", height=height, width=width, **settings).images
    assert abs(out.images - stock).max() <= 1e-4
    assert out.nfe == STEPS * nfe_per_step * len(SEEDS)
    assert out.previews[1].shape == noise.shape and torch.isfinite(out.previews[1]).all()


def test_pruned_survivors_equal_their_solo_runs(family):
    name, pipe = family
    noise, settings, _ = _setup(name, pipe)
    height, width = adapter_for(pipe).image_size(noise)
    sampler = Sampler(pipe, [PROMPT], height=height, width=width, **settings)
    batch = sampler.start(noise, 0, seed_generators(SEEDS, noise.shape[1:]))
    batch.run(until=2)
    batch.keep([2, 0])
    batch.run()
    for position, row in enumerate(batch.rows.tolist()):
        solo = run_batches(sampler, noise[row : row + 1], 0, seed_generators([SEEDS[row]], noise.shape[1:]),
                           output_type="latent")
        # batched kernels round relative to the values: a random epsilon DiT under PixArt's betas ends near |300|
        scale = max(1.0, solo.latents.abs().max().item())
        assert (batch.latents[position] - solo.latents[0]).abs().max().item() <= 1e-4 * scale


def test_flow_preview_is_x_minus_sigma_v_and_ends_at_the_sample():
    pipe = _PIPES.get("flux_dev") or tiny_flux_pipeline()
    noise = seed_noise(pipe, [0], height=32, width=32)
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=STEPS, guidance_scale=3.5, height=32, width=32)
    assert float(sampler.scheduler.sigmas[0]) == 1.0  # flow starts at pure noise
    batch = sampler.start(noise)
    previews = batch.run(preview_steps=set(range(STEPS)))
    # Euler's last step jumps to sigma = 0 along the same velocity, so the last preview is the final sample.
    assert (previews[STEPS - 1] - batch.latents.float()).abs().max().item() <= 1e-5
    adapter = sampler.adapter
    assert adapter.preview_sigma(sampler.scheduler, 0, None) == float("inf")
    assert 0 < adapter.preview_sigma(sampler.scheduler, 1, None) < float("inf")


def test_flux_canonical_noise_is_the_stock_generator_draw_packed():
    pipe = _PIPES.get("flux_schnell") or tiny_flux_pipeline(guidance_embeds=False)
    noise = seed_noise(pipe, [7], height=32, width=32)
    latents, _ = pipe.prepare_latents(1, 4, 32, 32, torch.float32, torch.device("cpu"),
                                      torch.Generator().manual_seed(7))
    adapter = adapter_for(pipe)
    assert torch.equal(adapter.pack(noise), latents)
    assert torch.equal(adapter.unpack(latents), noise)


def test_flux_sizes_must_fit_the_packing():
    pipe = _PIPES.get("flux_schnell") or tiny_flux_pipeline(guidance_embeds=False)
    with pytest.raises(ValueError, match=r"`height` must be a positive multiple of 4 for FluxPipeline"):
        seed_noise(pipe, [0], height=30, width=32)


def test_t5_tokenizer_is_built_offline():
    tokenizer = t5_tokenizer()
    ids = tokenizer("a red circle", padding="max_length", max_length=8).input_ids
    assert ids[-1] == 0 and 1 in ids and 2 not in ids  # pad, </s>, no <unk>


@pytest.mark.parametrize("class_name", ["HunyuanDiTPipeline", "SanaSprintPipeline", "Lumina2Pipeline"])
def test_unserved_families_are_refused_in_one_line(class_name):
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {class_name}")
    pipe = cls.__new__(cls)  # the refusal reads the class only
    with pytest.raises(ValueError, match=rf"^{class_name} is not supported: [^\n]+\.$"):
        adapter_for(pipe)


# Methods on the flow families -------------------------------------------------------------------------------------
def _flow(name):
    if name not in _PIPES:
        _PIPES[name] = BUILDERS[name]()
    return _PIPES[name]


def _brightness(images, prompts, sigma=None):
    import numpy as np

    return torch.tensor([float(np.asarray(image).mean()) for image in images])


@pytest.mark.parametrize("name", ["flux_dev", "sd3", "pixart_sigma", "sana", "qwen_image", "flux2", "flux2_klein"])
def test_seed_search_and_ttsnap_run_with_the_default_few_step_schedule(name):
    from noisekit.search.strategies import search, step_sigmas

    pipe = _flow(name)
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=STEPS, guidance_scale=SETTINGS[name][0], height=32,
                      width=32)
    sigmas = step_sigmas(sampler)
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))  # VE units: infinite from s = 1 (FLUX, SD3); PixArt's
    below_pure_noise = name in ("pixart_sigma", "sana")  # VP sigma_T is ~157, SANA's DPM-Solver s(T - 1) ~3000
    assert (100 < sigmas[0] < float("inf")) if below_pure_noise else sigmas[0] == float("inf")
    best = search(sampler, 0, _brightness, num_candidates=6, schedule=())
    pruned = search(sampler, 0, _brightness, num_candidates=6, strategy="ttsnap")
    assert pruned.steps == (0, 1) and pruned.nfe < best.nfe
    per_step = SETTINGS[name][1]
    assert best.nfe == 6 * STEPS * per_step


@pytest.mark.parametrize("name", ["flux_dev", "sd3", "sana", "qwen_image", "flux2", "flux2_klein"])
def test_nlg_evaluates_where_flow_has_signal(name):
    from noisekit.core.candidates import from_seeds
    from noisekit.transforms.nlg import evaluation_timestep, nlg_stage

    pipe = _flow(name)
    assert evaluation_timestep(pipe.scheduler) == 936  # ((1 - s) / s)^2 = SD's terminal SNR
    with pytest.raises(ValueError, match=r"integer in \[1, 999\] for flow matching"):
        evaluation_timestep(pipe.scheduler, 1000)
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=STEPS, guidance_scale=SETTINGS[name][0], height=32,
                      width=32, with_uncond=True)
    start = from_seeds(sampler.shape, [0, 1])
    refined = nlg_stage(sampler, start, num_iterations=2, noise_variance=0.0)
    assert refined.nfe == 2 * 2 * 2 and not torch.equal(refined.noise, start.noise)
    dims = start.noise[0].numel()  # renormalised to the norm of unit-variance noise
    assert torch.allclose(refined.noise.flatten(1).norm(dim=1), torch.full((2,), dims**0.5), rtol=1e-4)


@pytest.mark.parametrize("name", ["flux_dev", "sd3", "sana"])
def test_flow_families_refuse_zero_snr_in_one_line(name):
    """Terminal SNR is zero by construction in flow matching (sigma = 1 is pure noise), so zero_snr has nothing to
    fix; golden noise and libraries run on these families (tests/test_flow_methods.py)."""
    from noisekit.core.schedule import zero_snr

    pipe = _flow(name)
    with pytest.raises(ValueError, match=r"^zero_snr does not apply to flow matching [^\n]+$"):
        zero_snr(pipe)


def test_inspect_schedule_reports_flow_sigmas_and_shift():
    from noisekit.core.inspect_schedule import inspect_schedule

    report = inspect_schedule(_flow("sd3").scheduler, STEPS)
    assert report.prediction_type == "flow" and report.zero_terminal_snr and report.flow_shift == 3.0
    assert report.sigmas[0] == 1.0 and len(report.sigmas) == STEPS and "flow sigmas (shift 3)" in str(report)
    dynamic = inspect_schedule(_flow("flux_dev").scheduler, STEPS)
    assert dynamic.dynamic_shifting and "dynamic shift" in str(dynamic)


WRAPPERS = {"flux_dev": "NoisekitFluxPipeline", "sd3": "NoisekitStableDiffusion3Pipeline",
            "qwen_image": "NoisekitQwenImagePipeline", "flux2": "NoisekitFlux2Pipeline",
            "flux2_klein": "NoisekitFlux2KleinPipeline"}
WRAPPERS.update(pixart_sigma="NoisekitPixArtSigmaPipeline", pixart_alpha="NoisekitPixArtAlphaPipeline",
                sana="NoisekitSanaPipeline")


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_noisekit_pipelines_wrap_the_flow_families(name):
    import noisekit.pipelines
    from noisekit.plan import NoisePlan

    pipe = _flow(name)
    wrapped = getattr(noisekit.pipelines, WRAPPERS[name]).from_pipe(pipe)
    wrapped.set_progress_bar_config(disable=True)
    guidance = "true_cfg_scale" if name == "qwen_image" else "guidance_scale"  # Qwen-Image's name for CFG's scale
    settings = {"num_inference_steps": STEPS, guidance: SETTINGS[name][0], "height": 32, "width": 32}
    out = wrapped(PROMPT, seeds=[0, 1], output_type="np", **settings)
    noise = seed_noise(pipe, [0, 1], height=32, width=32)
    direct = sample(pipe, PROMPT, noise, output_type="np", num_inference_steps=STEPS, guidance_scale=SETTINGS[name][0])
    assert abs(out.images - direct.images).max() <= 1e-4 and out.nfe == direct.nfe
    nlg = wrapped(PROMPT, seeds=[0], output_type="np", noise_plan=NoisePlan(nlg={"num_iterations": 1}), **settings)
    assert nlg.recipes[0]["transforms"][-1]["name"] == "nlg" and nlg.nfe == 2 + STEPS * SETTINGS[name][1]


# PixArt and SANA ----------------------------------------------------------------------------------------------------
def test_gemma_tokenizer_is_built_offline():
    tokenizer = gemma_tokenizer()
    tokenizer.padding_side = "right"  # as SanaPipeline sets it
    ids = tokenizer("a red circle, caf\u00e9", padding="max_length", max_length=24).input_ids
    assert ids[0] == 2 and ids[-1] == 0 and 3 not in ids  # <bos> first, <pad> last, no <unk> (byte fallback)


def test_pixart_nlg_zero_snr_and_inspect_schedule_run_as_on_unets():
    """PixArt is a VP epsilon model: NLG evaluates at T - 1 (its betas end at SNR 4e-5, not zero), and zero_snr sets
    trailing spacing but refuses zero terminal SNR for an epsilon model, in one line."""
    from noisekit.core.candidates import from_seeds
    from noisekit.core.inspect_schedule import inspect_schedule
    from noisekit.core.schedule import zero_snr
    from noisekit.transforms.nlg import evaluation_timestep, nlg_stage

    pipe = _flow("pixart_sigma")
    assert evaluation_timestep(pipe.scheduler) == 999
    report = inspect_schedule(pipe.scheduler, STEPS)
    assert report.prediction_type == "epsilon" and report.starts_at_last_timestep and not report.zero_terminal_snr
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=STEPS, guidance_scale=4.5, height=32, width=32)
    start = from_seeds(sampler.shape, [0, 1])
    refined = nlg_stage(sampler, start, num_iterations=2, noise_variance=0.0)
    assert refined.nfe == 2 * 2 * 2 and not torch.equal(refined.noise, start.noise)
    trailing = zero_snr(type(pipe).from_pipe(pipe), mode="trailing")
    assert trailing.scheduler.config.timestep_spacing == "trailing"
    assert sample(trailing, PROMPT, start.noise, num_inference_steps=STEPS, guidance_scale=4.5).nfe == 2 * STEPS * 2
    with pytest.raises(ValueError, match=r"^zero terminal SNR needs a v-prediction [^\n]+$"):
        zero_snr(type(pipe).from_pipe(pipe))


def test_inspect_schedule_reads_sanas_flow_dpm_solver():
    from noisekit.core.inspect_schedule import inspect_schedule

    report = inspect_schedule(_flow("sana").scheduler, STEPS)  # DPM-Solver (it has alphas_cumprod) on flow sigmas
    assert report.prediction_type == "flow" and report.flow_shift == 3.0 and report.starts_at_last_timestep
    assert 0.999 < report.sigmas[0] < 1.0 and "flow sigmas (shift 3)" in str(report)


@pytest.mark.parametrize("name", ["pixart_sigma", "sana"])
def test_golden_noise_and_library_run_on_pixart_and_sana(name, tmp_path):
    """Through the generic paths: NPNet sized to the family's channels and prompt sequence (T5 / Gemma 2, 300
    tokens), and a library of the pipeline's deterministic posteriors (DDIM for PixArt, its own flow sampler for SANA)."""
    from noisekit.core.candidates import from_seeds
    from noisekit.library import NoiseLibrary, build_library
    from noisekit.transforms.golden import golden_stage
    from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet, pipeline_text_shape

    pipe = _flow(name)
    tokens, width = pipeline_text_shape(pipe)
    assert tokens == 300
    net = NoisePromptNet(sample_size=16, latent_channels=adapter_for(pipe).latent_channels, text_embed_dim=width,
                         max_text_tokens=tokens, swin_kwargs=SMALL_SWIN).eval()
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=STEPS, height=32, width=32)
    start = from_seeds(sampler.shape, [0])
    golden = golden_stage(sampler, start, net)
    assert golden.noise.shape == start.noise.shape and golden.recipes[0].transforms[-1]["name"] == "npnet"
    build_library(pipe, str(tmp_path / "lib"), num_seeds=2, height=32, width=32, num_inference_steps=2, shard_size=2)
    library = NoiseLibrary.load(str(tmp_path / "lib"))
    posterior = {"pixart_sigma": "DDIMScheduler", "sana": "DPMSolverMultistepScheduler"}[name]
    assert library.seeds.tolist() == [0, 1] and library.manifest["posterior"]["scheduler"]["class"] == posterior
