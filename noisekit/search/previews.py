"""Scoring x0 previews at a pruning step: latent rewards read the x0 latents, image rewards the decoded previews.

The VAE decode runs only when some preview reward reads images, so a search whose preview rewards all score
latents (`noisekit.rewards.latent`) spends no decode on the candidates it prunes. Their preview latents are kept
(`Candidate.preview`) and decoded only for writing files (`decode_pruned_previews`), outside the search's cost.
"""

import contextlib

import torch

from ..rewards.base import reads_latents


def check_final_rewards(rewards):
    """The clean rewards judge decoded final images; a latent reward among them raises, naming it."""
    latent = [name for name, reward in rewards.items() if reads_latents(reward)]
    if latent:
        raise ValueError(f"`rewards` judge the final images, but {latent} score x0 latents; pass them as "
                         "`preview_rewards` (the rewards of the pruning steps) and a clean image reward here.")


def score_previews(rewards, x0, prompt, *, sigma, decode, clock=None):
    """`({name: (B,) scores}, images)` of the x0 previews `x0` `(B, C, h, w)` at noise level `sigma`.

    Latent rewards get `x0`; the others get `decode(x0)`, decoded once and only when one of them needs images
    (`images` is `None` otherwise). The rewards' seconds go to `clock`'s `reward` part, the decode's to the
    sampler's own `decode` part.
    """
    images = decode(x0) if any(not reads_latents(r) for r in rewards.values()) else None
    prompts = [prompt] * len(x0)
    with clock.time("reward") if clock is not None else contextlib.nullcontext():
        # `.cpu()` waits for the scores, so a GPU reward's seconds end when its scores exist
        return {name: torch.as_tensor(r(x0 if reads_latents(r) else images, prompts, sigma=sigma)).float().cpu()
                .flatten() for name, r in rewards.items()}, images


def decode_pruned_previews(sampler, result, batch_size=8):
    """Decode the kept preview latents of `result`'s pruned candidates into their `image` (for files and grids);
    what this spends is no part of the search's cost. Returns the number of previews decoded."""
    pending = [c for c in result.candidates if c.image is None and c.preview is not None]
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        images = sampler.decode(torch.cat([c.preview for c in chunk]).to(sampler.device), "pil")
        for candidate, image in zip(chunk, images):
            candidate.image = image
    return len(pending)
