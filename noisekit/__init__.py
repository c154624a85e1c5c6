"""noisekit: the initial noise of text-to-image diffusion as a tool, for Hugging Face diffusers.

The house, by stage: `core` (canonical noise, recipes, candidates, family adapters, sampler, schedule),
`transforms` (NPNet golden noise, NLG), `search` (best-of-N, TTSnap, budgets, calibration), `rewards`, `library`
(NoiseQuery), `plan` (the stages composed), `shapes` (the embedded world) and `cli` (never imported by the rest).
"""

from .version import __version__  # noqa: F401  (the package's version, as `noisekit.__version__`)

from .core.candidates import Candidates, from_seeds
from .core.inspect_schedule import ScheduleReport, inspect_schedule
from .core.noise import latent_shape, noise_checksum, seed_generators, seed_noise
from .core.recipe import NoiseRecipe, list_transforms, register_transform
from .core.sampler import Sampler, SampleOutput, Trajectories, sample
from .core.schedule import clamped_betas, rescale_zero_terminal_snr, zero_snr
from .generate import generate
from .library import NoiseLibrary, build_library, library_noise
from .plan import LibraryStage, NLGStage, NoisePlan, SearchStage
from .rewards import add_reward, list_rewards, load_reward
from .search.budget import PruningSchedule, plan_best_of_n, plan_ttsnap
from .search.strategies import Candidate, SearchResult, best_of_n, search, ttsnap
from .transforms.golden import apply_npnet, golden_noise
from .transforms.nlg import NLGOutput, apply_nlg, noise_level_guidance
from .transforms.npnet import NoisePromptNet

__all__ = [
    "Candidate", "Candidates", "LibraryStage", "NLGOutput", "NLGStage", "NoiseLibrary", "NoisePlan",
    "NoisePromptNet", "NoiseRecipe", "PruningSchedule", "SampleOutput", "Sampler", "ScheduleReport", "SearchResult",
    "SearchStage", "Trajectories", "add_reward", "apply_nlg", "apply_npnet", "best_of_n", "build_library",
    "clamped_betas", "from_seeds", "generate", "golden_noise", "inspect_schedule", "latent_shape", "library_noise",
    "list_rewards", "list_transforms", "load_reward", "noise_checksum", "noise_level_guidance", "plan_best_of_n",
    "plan_ttsnap", "register_transform", "rescale_zero_terminal_snr", "sample", "search", "seed_generators",
    "seed_noise", "ttsnap", "zero_snr",
]
