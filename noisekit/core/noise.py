"""Canonical noise: a seed becomes unit-variance float32 noise of the pipeline's latent shape.

Each seed gets its own CPU `torch.Generator`, so the same seed gives the same bits whatever else is in the batch
and whatever device sampling later runs on. The draw is the one diffusers' `randn_tensor` makes for a batch of
one with that generator, so `pipe(prompt, generator=torch.Generator().manual_seed(s))` starts from the same
noise as `seed_noise(pipe, [s])`.
"""

import hashlib

import torch

from .families import adapter_for

GENERATOR = "torch.Generator('cpu').manual_seed(seed); torch.randn(1, *shape, dtype=float32)"


def vae_scale_factor(pipe):
    return adapter_for(pipe).vae_scale_factor


def default_size(pipe):
    """The pipeline's default `(height, width)` in pixels, as its own `__call__` computes it."""
    return adapter_for(pipe).default_size()


def latent_shape(pipe, height=None, width=None):
    """`(channels, height // f, width // f)` of the pipeline's latents for an image of `height` x `width`."""
    return adapter_for(pipe).latent_shape(height, width)


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"a seed must be an integer in [0, 2**63), got {seed!r}.")
    return seed


def noise_from_seed(seed, shape):
    """`(1, *shape)` float32 noise from seed `seed` on a fresh CPU generator."""
    generator = torch.Generator("cpu").manual_seed(check_seed(seed))
    return torch.randn((1, *shape), generator=generator, dtype=torch.float32)


def seed_noise(pipe, seeds, height=None, width=None):
    """Canonical noise for `seeds`: a float32 CPU tensor `(len(seeds), C, H/f, W/f)`, one generator per seed.

    Examples:
        >>> noise = seed_noise(pipe, range(8))
        >>> images = pipe("a red circle", latents=noise[:1]).images
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("`seeds` must name at least one seed, got an empty list.")
    shape = latent_shape(pipe, height, width)
    return torch.cat([noise_from_seed(seed, shape) for seed in seeds])


def seed_generators(seeds, shape):
    """Per-seed CPU generators advanced past the noise draw, as `pipe(generator=[...])` leaves them; stochastic
    schedulers (DDPM, Euler ancestral) draw their step noise from these, one candidate each."""
    generators = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(check_seed(seed))
        torch.randn((1, *shape), generator=generator, dtype=torch.float32)
        generators.append(generator)
    return generators


def noise_checksum(noise):
    """SHA-256 (first 16 hex digits) of a noise tensor's float32 bytes: replay verifies against it."""
    data = noise.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
