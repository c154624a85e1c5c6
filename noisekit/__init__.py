"""noisekit: the initial noise of text-to-image diffusion as a tool, for Hugging Face diffusers."""

__version__ = "0.1.0"

from .noise import latent_shape, noise_checksum, seed_generators, seed_noise
from .recipe import NoiseRecipe, list_transforms, register_transform
from .sampler import Sampler, SampleOutput, Trajectories, sample

__all__ = [
    "NoiseRecipe",
    "SampleOutput",
    "Sampler",
    "Trajectories",
    "latent_shape",
    "list_transforms",
    "noise_checksum",
    "register_transform",
    "sample",
    "seed_generators",
    "seed_noise",
]
