import json

import pytest
import torch
from conftest import with_scheduler
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       LMSDiscreteScheduler, UniPCMultistepScheduler)

from noisekit import Sampler, sample, seed_noise
from noisekit.cli import main
from noisekit.core.inspect_schedule import inspect_schedule
from noisekit.core.schedule import CLAMPS, base_betas, clamped_betas, rescale_zero_terminal_snr, trailing_timesteps, zero_snr
from noisekit.testing import SD_SCHEDULE


def test_algorithm_1_matches_diffusers_and_the_paper():
    betas = base_betas(dict(DDIMScheduler(**SD_SCHEDULE).config))
    ours = rescale_zero_terminal_snr(betas)
    # diffusers computes in float32, we in float64: equal to float32 rounding.
    assert torch.allclose(ours, DDIMScheduler(**SD_SCHEDULE, rescale_betas_zero_snr=True).betas, rtol=1e-3, atol=1e-7)
    alphas_bar = torch.cumprod(1 - ours.double(), 0)
    original = torch.cumprod(1 - betas.double(), 0)
    assert alphas_bar[-1] == 0 and ours[-1] == 1
    assert torch.isclose(alphas_bar[0], original[0])
    snr = alphas_bar / (1 - alphas_bar)
    assert abs(snr[500].item() - 0.318) < 0.002 and abs(snr[900].item() - 0.0030) < 0.0002  # the note's table


@pytest.mark.parametrize("clamp,beta_T,sigma_max", [("diffusers", 0.697114, 4096.0), ("comfyui", 0.751137, 4518.8)])
def test_clamped_betas_encode_the_clamp(clamp, beta_T, sigma_max):
    betas = clamped_betas(base_betas(dict(DDIMScheduler(**SD_SCHEDULE).config)), clamp)
    alphas_bar = torch.cumprod(1 - betas.double(), 0)
    assert abs(betas[-1].item() - beta_T) < 1e-5
    assert abs(alphas_bar[-1].item() / CLAMPS[clamp] - 1) < 1e-3
    heun = HeunDiscreteScheduler(trained_betas=betas.tolist(), timestep_spacing="trailing")
    assert abs(heun.sigmas.max().item() / sigma_max - 1) < 1e-3


def test_bad_clamp_is_refused():
    with pytest.raises(ValueError, match="`clamp` must be one of"):
        clamped_betas(torch.full((10,), 0.01), "a1111")


def test_zero_snr_on_a_v_model_sets_flag_trailing_and_rescale(sd2_pipe):
    pipe = zero_snr(with_scheduler(sd2_pipe, DDIMScheduler))
    config = pipe.scheduler.config
    assert config.rescale_betas_zero_snr and config.timestep_spacing == "trailing"
    assert pipe.noisekit_guidance_rescale == 0.7
    assert pipe.scheduler.alphas_cumprod[-1] == 0
    report = inspect_schedule(pipe.scheduler, 20)
    assert report.zero_terminal_snr and report.starts_at_last_timestep and not report.problems


@pytest.mark.parametrize("scheduler_class", [HeunDiscreteScheduler, LMSDiscreteScheduler])
def test_schedulers_without_the_flag_get_clamped_trained_betas(sd2_pipe, scheduler_class):
    pipe = zero_snr(with_scheduler(sd2_pipe, scheduler_class))
    assert pipe.scheduler.config.trained_betas is not None
    assert abs(pipe.scheduler.alphas_cumprod[-1].item() / 2**-24 - 1) < 1e-3
    out = sample(pipe, "a red circle", seed_noise(pipe, [0, 1]), num_inference_steps=4, guidance_scale=5.0,
                 guidance_rescale=0.7, output_type="latent")
    assert torch.isfinite(out.latents).all()


def test_epsilon_models_are_refused_with_the_way_out(sd1_pipe):
    with pytest.raises(ValueError, match=r"mode='trailing'.*force=True"):
        zero_snr(with_scheduler(sd1_pipe, DDIMScheduler))
    pipe = zero_snr(with_scheduler(sd1_pipe, DDIMScheduler), mode="trailing")
    assert pipe.scheduler.config.timestep_spacing == "trailing" and not pipe.scheduler.config.rescale_betas_zero_snr
    forced = zero_snr(with_scheduler(sd1_pipe, DDIMScheduler), force=True)
    assert inspect_schedule(forced.scheduler).problems  # still reported


def test_bad_mode_is_refused(sd2_pipe):
    with pytest.raises(ValueError, match="`mode` must be one of"):
        zero_snr(sd2_pipe, mode="zero")


@pytest.mark.parametrize("n", [61, 103, 20])
@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler,
                                             UniPCMultistepScheduler])
def test_exactly_n_timesteps_none_negative(sd2_pipe, n, scheduler_class):
    pipe = zero_snr(with_scheduler(sd2_pipe, scheduler_class))
    sampler = Sampler(pipe, ["a red circle"], num_inference_steps=n)
    assert len(sampler.timesteps) == n and sampler.timesteps.min() >= 0
    assert [round(float(t)) for t in sampler.timesteps] == trailing_timesteps(n).tolist()
    if n == 61:  # and it samples to the end
        out = sample(pipe, "a red circle", seed_noise(pipe, [0]), num_inference_steps=n, output_type="latent")
        assert torch.isfinite(out.latents).all() and out.nfe == 2 * n


def test_unipc_drops_the_extra_timestep_as_its_own_correct_schedule_would_be(sd2_pipe):
    """UniPC takes no explicit timesteps: the -1 and its sigma are dropped, and the n sigmas that remain are the ones
    UniPC computes for those n timesteps (each sigma interpolated at its own timestep)."""
    import numpy as np

    pipe = zero_snr(with_scheduler(sd2_pipe, UniPCMultistepScheduler))
    sampler = Sampler(pipe, ["a red circle"], num_inference_steps=61)
    full = ((1 - pipe.scheduler.alphas_cumprod) / pipe.scheduler.alphas_cumprod) ** 0.5
    expected = np.interp(trailing_timesteps(61), np.arange(len(full)), full.numpy())
    assert np.allclose(sampler.scheduler.sigmas[:-1].numpy(), expected, rtol=1e-6)
    assert len(sampler.scheduler.sigmas) == 62 and float(sampler.scheduler.sigmas[-1]) == 0.0


def test_inspect_reports_leading_spacing_and_the_trailing_bug():
    sd = inspect_schedule(DDIMScheduler(**SD_SCHEDULE), 20)
    assert sd.first_timestep == 951 and abs(sd.first_snr - 0.0082) < 2e-4 and not sd.starts_at_last_timestep
    assert abs(sd.terminal_sqrt_alpha_bar - 0.068265) < 1e-5 and not sd.zero_terminal_snr
    buggy = inspect_schedule(DDIMScheduler(**{**SD_SCHEDULE, "steps_offset": 0}, timestep_spacing="trailing"), 61)
    assert buggy.trailing_extra_negative_timestep and buggy.problems
    assert buggy.ddim_prev_timestep_mismatches > 0
    json.loads(buggy.to_json()) and str(buggy)


def test_inspect_reports_karras_sigmas_above_the_original_max():
    scheduler = DPMSolverMultistepScheduler(**{k: v for k, v in SD_SCHEDULE.items() if k in
                                               ("beta_start", "beta_end", "beta_schedule")},
                                            use_karras_sigmas=True, rescale_betas_zero_snr=True,
                                            prediction_type="v_prediction")
    report = inspect_schedule(scheduler, 20)
    assert report.clamp == pytest.approx(2**-24, rel=1e-3)
    assert 0.5 < report.share_of_sigmas_above_original_max < 0.8 and report.warnings


def test_cfg_rescale_runs_through_the_sampler(sd2_pipe):
    pipe = zero_snr(with_scheduler(sd2_pipe, EulerDiscreteScheduler))
    noise = seed_noise(pipe, [0])
    plain = sample(pipe, "a red circle", noise, num_inference_steps=4, guidance_scale=7.0, guidance_rescale=0.0,
                   output_type="latent")
    rescaled = sample(pipe, "a red circle", noise, num_inference_steps=4, guidance_scale=7.0, guidance_rescale=0.7,
                      output_type="latent")
    assert not torch.allclose(plain.latents, rescaled.latents)
    # zero_snr's CFG rescale is the default of every entry point afterwards, as its docstring says
    default = sample(pipe, "a red circle", noise, num_inference_steps=4, guidance_scale=7.0, output_type="latent")
    assert torch.equal(default.latents, rescaled.latents)


def test_inspect_schedule_cli(tmp_path, sd2_pipe, capsys):
    sd2_pipe.save_pretrained(tmp_path / "model")
    assert main(["inspect-schedule", "--model", str(tmp_path / "model"), "--num_inference_steps", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prediction_type"] == "v_prediction" and len(report["timesteps"]) == 20
    assert main(["inspect-schedule", "--model", "not a model"]) == 2
    assert "is neither a local path" in capsys.readouterr().err


def test_trailing_sets_for_every_n():
    scheduler = DDIMScheduler(**{**SD_SCHEDULE, "steps_offset": 0}, timestep_spacing="trailing")
    buggy = []
    for n in range(1, 1001):
        steps = trailing_timesteps(n)
        assert len(steps) == n and steps[0] == 999 and steps.min() >= 0 and (steps[:-1] > steps[1:]).all()
        scheduler.set_timesteps(n)
        theirs = scheduler.timesteps.numpy()
        if len(theirs) != n:
            buggy.append(n)
            assert theirs[-1] == -1 and (theirs[:n] == steps).all()
        else:
            assert (theirs == steps).all()
    assert len(buggy) == 62 and buggy[:5] == [61, 103, 121, 122, 201]  # the note's count and first values


def test_sd_terminal_snr_before_and_after():
    before = inspect_schedule(DDIMScheduler(**SD_SCHEDULE))
    after = inspect_schedule(DDIMScheduler(**SD_SCHEDULE, rescale_betas_zero_snr=True, prediction_type="v_prediction"))
    assert before.terminal_snr == pytest.approx(0.004682, rel=1e-3) and not before.zero_terminal_snr
    assert after.terminal_snr == 0 and after.zero_terminal_snr and after.clamp is None
