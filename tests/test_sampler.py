import pytest
import torch
from conftest import SCHEDULERS, STOCHASTIC, with_scheduler
from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

from noisekit import Sampler, sample, seed_generators, seed_noise
from noisekit.core.sampler import predict_x0, rescale_guidance

PROMPT = "a large red circle in the top left on a black background"
SEEDS = [3, 4, 5, 6]
SETTINGS = dict(num_inference_steps=4, guidance_scale=5.0)


def generators(pipe, seeds):
    return seed_generators(seeds, seed_noise(pipe, seeds[:1]).shape[1:])


@pytest.mark.parametrize("guidance_rescale", [0.0, 0.7])
@pytest.mark.parametrize("scheduler_class", SCHEDULERS, ids=lambda c: c.__name__)
def test_same_images_as_the_stock_pipeline(any_pipe, scheduler_class, guidance_rescale):
    pipe = with_scheduler(any_pipe, scheduler_class)
    noise = seed_noise(pipe, SEEDS)
    expected = pipe(PROMPT, latents=noise, num_images_per_prompt=len(SEEDS), guidance_rescale=guidance_rescale,
                    generator=generators(pipe, SEEDS), output_type="pt", **SETTINGS).images
    got = sample(pipe, PROMPT, noise, guidance_rescale=guidance_rescale, generator=generators(pipe, SEEDS),
                 output_type="pt", **SETTINGS)
    assert (got.images - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("scheduler_class", SCHEDULERS, ids=lambda c: c.__name__)
def test_dropped_candidates_leave_survivors_as_if_run_alone(sd2_pipe, scheduler_class):
    pipe = with_scheduler(sd2_pipe, scheduler_class)
    sampler = Sampler(pipe, [PROMPT], **SETTINGS)
    batch = sampler.start(seed_noise(pipe, SEEDS), 0, generators(pipe, SEEDS))
    batch.run(until=2)
    batch.keep([1, 3])
    batch.run()
    alone = sampler.start(seed_noise(pipe, [4, 6]), 0, generators(pipe, [4, 6]))
    alone.run()
    assert batch.rows.tolist() == [1, 3]
    assert torch.allclose(batch.latents, alone.latents, atol=1e-5)
    if scheduler_class in STOCHASTIC:  # the step noise really comes from each candidate's own generator
        other = sampler.start(seed_noise(pipe, [4, 6]), 0, generators(pipe, [40, 60]))
        other.run()
        assert not torch.allclose(other.latents, alone.latents, atol=1e-3)


def test_keep_accepts_a_mask_and_rejects_bad_rows(sd1_pipe):
    sampler = Sampler(sd1_pipe, [PROMPT], **SETTINGS)
    batch = sampler.start(seed_noise(sd1_pipe, SEEDS))
    batch.step()
    batch.keep(torch.tensor([True, False, False, True]))
    assert batch.rows.tolist() == [0, 3]
    with pytest.raises(ValueError, match="must index the 2 candidates"):
        batch.keep([2])


@pytest.mark.parametrize("micro_batch_size", [1, 3])
def test_micro_batches_give_the_same_results(sdxl_pipe, micro_batch_size):
    noise = seed_noise(sdxl_pipe, SEEDS)
    whole = sample(sdxl_pipe, PROMPT, noise, output_type="pt", **SETTINGS)
    parts = sample(sdxl_pipe, PROMPT, noise, output_type="pt", micro_batch_size=micro_batch_size, **SETTINGS)
    assert (whole.images - parts.images).abs().max().item() <= 1e-5
    assert whole.nfe == parts.nfe


def test_nfe_counts_cfg_and_heun(sd1_pipe):
    noise = seed_noise(sd1_pipe, SEEDS)
    assert sample(sd1_pipe, PROMPT, noise, output_type="latent", **SETTINGS).nfe == 4 * 2 * len(SEEDS)
    unguided = sample(sd1_pipe, PROMPT, noise, output_type="latent", num_inference_steps=4, guidance_scale=1.0)
    assert unguided.nfe == 4 * len(SEEDS)
    heun = with_scheduler(sd1_pipe, HeunDiscreteScheduler)
    assert sample(heun, PROMPT, noise, output_type="latent", **SETTINGS).nfe == (2 * 4 - 1) * 2 * len(SEEDS)


def test_one_prompt_per_candidate_equals_separate_runs(sd1_pipe):
    noise = seed_noise(sd1_pipe, [1, 2])
    mixed = sample(sd1_pipe, ["a red circle", "a blue square"], noise, output_type="pt", **SETTINGS)
    second = sample(sd1_pipe, "a blue square", noise[1:], output_type="pt", **SETTINGS)
    assert (mixed.images[1] - second.images[0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, EulerDiscreteScheduler])
def test_x0_preview_inverts_the_forward_process(sd1_pipe, prediction_type, scheduler_class):
    scheduler = scheduler_class.from_config(sd1_pipe.scheduler.config, prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    step, t = 3, scheduler.timesteps[3]
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    alpha_bar = scheduler.alphas_cumprod[int(t)] if scheduler_class is DDIMScheduler else \
        1 / (1 + scheduler.sigmas[step] ** 2)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps  # the VP-space model input
    output = {"epsilon": eps, "v_prediction": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0,
              "sample": x0}[prediction_type]
    assert torch.allclose(predict_x0(scheduler, output, x_t, step, t), x0, atol=1e-4)


def test_preview_matches_the_schedulers_own_x0(sd2_pipe):
    sampler = Sampler(sd2_pipe, [PROMPT], **SETTINGS)
    batch = sampler.start(seed_noise(sd2_pipe, SEEDS))
    batch.step()
    latents = batch.latents.clone()
    preview = batch.step(preview=True)
    # Recompute step 1 through DDIM and read its pred_original_sample.
    scheduler, t = sampler.scheduler, sampler.timesteps[1]
    output = sampler.call_denoiser(torch.cat([latents] * 2), t, batch.prompt_index)
    uncond, cond = output.chunk(2)
    guided = uncond + 5.0 * (cond - uncond)
    expected = scheduler.step(guided, t, latents).pred_original_sample
    assert torch.allclose(preview, expected, atol=1e-5)


def test_previews_returned_at_requested_steps(sd1_pipe):
    out = sample(sd1_pipe, PROMPT, seed_noise(sd1_pipe, SEEDS), preview_steps=(0, 2), output_type="latent",
                 micro_batch_size=3, **SETTINGS)
    assert sorted(out.previews) == [0, 2] and out.previews[0].shape == (4, 4, 8, 8)


def test_guidance_rescale_guards_zero_std():
    guided, cond = torch.ones(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.isfinite(rescale_guidance(guided, cond, 0.7)).all()


def test_bad_arguments_name_what_is_wrong(sd1_pipe):
    with pytest.raises(ValueError, match="`noise` must have shape"):
        sample(sd1_pipe, PROMPT, torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="one prompt or one per candidate"):
        sample(sd1_pipe, ["a", "b"], seed_noise(sd1_pipe, [1, 2, 3]))
    with pytest.raises(ValueError, match="`guidance_rescale` must lie in"):
        Sampler(sd1_pipe, [PROMPT], guidance_rescale=2.0)
    with pytest.raises(ValueError, match="`num_inference_steps` must be a positive integer"):
        Sampler(sd1_pipe, [PROMPT], num_inference_steps=0)
