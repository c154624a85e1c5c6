"""What search and the cost probe share: rewards as a dict, the view that scores x0 previews, each step's sigma,
scoring (timed on the run's clock) and decoding in pieces."""

import contextlib

import torch

from ..rewards.base import NoiseAwareReward, ignore_sigma

# Images decoded at once: the VAE's activations for a whole search's candidates would set the peak memory (about
# 3 MB per shapes-world candidate); in pieces the peak no longer grows with the candidate count.
DECODE_BATCH = 8


def step_sigmas(sampler):
    """Noise level sigma of the sample each loop pass reads (the level its x0 preview is taken at), as floats in
    VE units (x0 + sigma eps): the scheduler's `sigmas` where it has them, else sqrt((1 - alpha_bar_t) /
    alpha_bar_t); flow sigma s reads as s / (1 - s), so one noise-aware reward serves every family."""
    return [sampler.adapter.preview_sigma(sampler.scheduler, i, t) for i, t in enumerate(sampler.timesteps)]


def as_reward_dict(rewards):
    """A reward or `{name: reward}` -> `{name: reward}` (a lone reward is named "reward")."""
    if isinstance(rewards, dict):
        if not rewards:
            raise ValueError("`rewards` must hold at least one reward, got an empty dict.")
        return dict(rewards)
    if not callable(rewards):
        raise TypeError(f"`rewards` must be a reward or a dict of name -> reward, got {type(rewards).__name__}.")
    return {"reward": rewards}


def preview_view(reward):
    """The reward to score x0 previews with: a noise-aware reward as is, a clean one through `ignore_sigma`."""
    if getattr(reward, "noise_aware", False):
        return reward
    if isinstance(reward, NoiseAwareReward):
        return ignore_sigma(reward)
    return lambda images, prompts, sigma=None: reward(images, prompts)


def score(rewards, images, prompt, sigma=None, clock=None):
    """`{name: (B,) scores}`; the rewards' seconds are added to `clock`'s `reward` part when one is given."""
    prompts = [prompt] * len(images)
    kwargs = {} if sigma is None else {"sigma": sigma}
    with clock.time("reward") if clock is not None else contextlib.nullcontext():
        # `.cpu()` waits for the scores, so a GPU reward's seconds end when its scores exist
        return {name: torch.as_tensor(r(images, prompts, **kwargs)).float().cpu().flatten()
                for name, r in rewards.items()}


def decode_in_pieces(sampler, latents, output_type="pil"):
    """`latents` decoded `DECODE_BATCH` at a time (the peak memory no longer grows with the candidate count, and a
    search and its replay decode in the same pieces)."""
    parts = [sampler.decode(latents[i : i + DECODE_BATCH], output_type) for i in range(0, len(latents), DECODE_BATCH)]
    if output_type == "pil":
        return [image for part in parts for image in part]
    return torch.cat([torch.as_tensor(part) for part in parts])
