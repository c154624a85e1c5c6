"""noisekit: the initial noise of text-to-image diffusion as a tool, for Hugging Face diffusers."""

__version__ = "0.1.0"

from .inspect_schedule import ScheduleReport, inspect_schedule
from .library import NoiseLibrary, build_library, library_noise
from .nlg import NLGOutput, apply_nlg, noise_level_guidance
from .noise import latent_shape, noise_checksum, seed_generators, seed_noise
from .npnet import NoisePromptNet
from .npnet_noise import apply_npnet, golden_noise
from .recipe import NoiseRecipe, list_transforms, register_transform
from .rewards import add_reward, list_rewards, load_reward
from .sampler import Sampler, SampleOutput, Trajectories, sample
from .schedule import clamped_betas, rescale_zero_terminal_snr, zero_snr
from .search import Candidate, SearchResult, best_of_n, search, ttsnap
from .budget import PruningSchedule, plan_best_of_n, plan_ttsnap

__all__ = [
    "Candidate",
    "PruningSchedule",
    "SearchResult",
    "best_of_n",
    "plan_best_of_n",
    "plan_ttsnap",
    "search",
    "ttsnap",
    "NLGOutput",
    "NoiseLibrary",
    "NoisePromptNet",
    "add_reward",
    "apply_npnet",
    "build_library",
    "golden_noise",
    "NoiseRecipe",
    "ScheduleReport",
    "apply_nlg",
    "clamped_betas",
    "inspect_schedule",
    "noise_level_guidance",
    "rescale_zero_terminal_snr",
    "zero_snr",
    "SampleOutput",
    "Sampler",
    "Trajectories",
    "latent_shape",
    "library_noise",
    "list_rewards",
    "load_reward",
    "list_transforms",
    "noise_checksum",
    "register_transform",
    "sample",
    "seed_generators",
    "seed_noise",
]
