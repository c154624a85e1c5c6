"""`Candidates`: the one batch of initial noises that flows through every stage of a run.

It is made once, from seeds (`from_seeds`) or from a noise library's choice of seeds, and every stage (golden
noise, NLG, then sampling or search) takes it with the run's conditioning and returns a new one: the noise, one
recipe per candidate that says how its noise was made, the prompt each candidate belongs to, and the denoiser
evaluations the stages have spent on it so far.
"""

from dataclasses import dataclass, replace

import torch

from .noise import noise_from_seed, seed_generators
from .recipe import NoiseRecipe, seed_recipes


@dataclass(frozen=True)
class Candidates:
    """Args:
        noise (`torch.Tensor`): unit-variance float32 noise `(N, C, h, w)` on the CPU.
        recipes (`list[NoiseRecipe]`): one per candidate.
        prompt_index (`tuple[int]`): the prompt of each candidate (an index into the run's prompts).
        nfe (`int`): denoiser evaluations the noise stages spent on these candidates (NLG: 2 per iteration each).
    """

    noise: torch.Tensor
    recipes: tuple
    prompt_index: tuple
    nfe: int = 0

    def __post_init__(self):
        object.__setattr__(self, "recipes", tuple(self.recipes))
        object.__setattr__(self, "prompt_index", tuple(int(i) for i in self.prompt_index))
        count = len(self.noise)
        if self.noise.ndim != 4 or not count:
            raise ValueError(f"`noise` must be a non-empty (N, C, h, w) tensor, got shape {tuple(self.noise.shape)}.")
        if len(self.recipes) != count or len(self.prompt_index) != count:
            raise ValueError(f"`recipes` and `prompt_index` must hold one entry per noise row ({count}), got "
                             f"{len(self.recipes)} and {len(self.prompt_index)}.")

    def __len__(self):
        return len(self.noise)

    @property
    def seeds(self):
        return [recipe.seed for recipe in self.recipes]

    def generators(self):
        """Fresh per-candidate CPU generators, advanced past the noise draw as `pipe(generator=[...])` leaves
        them: stochastic schedulers draw their step noise from these, one candidate each."""
        return seed_generators(self.seeds, self.noise.shape[1:])

    def transformed(self, noise, recipes, nfe=0):
        """The candidates after a transform: new noise and recipes, `nfe` more evaluations spent."""
        return replace(self, noise=noise, recipes=tuple(recipes), nfe=self.nfe + nfe)

    def select(self, rows):
        """The candidates at positions `rows`, in that order (their share of the stages' NFE goes with them)."""
        rows = list(rows)
        share = self.nfe * len(rows) // len(self) if len(self) else 0
        return Candidates(self.noise[rows], [self.recipes[i] for i in rows], [self.prompt_index[i] for i in rows],
                          share)

    @property
    def nfe_per_candidate(self):
        return self.nfe // len(self)


def from_seeds(shape, seeds, prompt_index=0):
    """Canonical noise of `seeds` for latents of `shape` `(C, h, w)`, one CPU generator per seed (bit-exact on any
    machine); `prompt_index` is one int for all candidates or one per seed."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("`seeds` must name at least one seed, got an empty list.")
    noise = torch.cat([noise_from_seed(seed, shape) for seed in seeds])
    index = [prompt_index] * len(seeds) if isinstance(prompt_index, int) else list(prompt_index)
    return Candidates(noise, seed_recipes(seeds, shape, noise), index)


def from_recipes(recipes, prompt_index=0, noise=None):
    """Candidates of recorded recipes (their base noise, or `noise` when the caller already replayed it)."""
    recipes = [r if isinstance(r, NoiseRecipe) else NoiseRecipe.from_dict(r) for r in recipes]
    noise = torch.cat([r.base_noise() for r in recipes]) if noise is None else noise
    index = [prompt_index] * len(recipes) if isinstance(prompt_index, int) else list(prompt_index)
    return Candidates(noise, recipes, index)


def seed_list(seeds, count):
    """`count` seeds: `S, S+1, ...` from a first seed `S`, or the first `count` of a list."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return list(range(seeds, seeds + count))
    seeds = list(seeds)
    if len(seeds) < count:
        raise ValueError(f"`seeds` must hold at least the {count} candidates to run, got {len(seeds)}.")
    return seeds[:count]
