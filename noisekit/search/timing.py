"""What a search's parts cost in seconds on this machine, and the NFE-equivalent of a reward call measured from them.

Budgets are planned in NFE-equivalents: a search costs `nfe + reward_cost * reward_calls`. `reward_cost`, what one
reward call (one image decoded and scored by one reward model) costs in denoiser evaluations, was an assumed
constant; it is kept as the cost model `"fixed"` (`FIXED_REWARD_COST`, to reproduce earlier numbers). The cost
model `"measured"` times a few denoiser calls and a few decode + reward calls on the run's own sampler and rewards
(`measure_cost`) and charges their ratio instead.

A budget in seconds becomes NFE-equivalents through the measured seconds per NFE (`TimedCost.budget_nfe`) before
anything is planned, so the plan is a deterministic function of the recorded measurement.

Examples:
    >>> cost = measure_cost(sampler, {"shapes-judge": judge})  # a few seconds on CPU
    >>> cost.reward_cost, cost.budget_nfe(30.0)  # e.g. 0.412 NFE-equivalents per call; 30 s -> 1,874 NFE
    >>> result = search(sampler, 0, judge, budget_seconds=30.0, cost=cost)
"""

import math
import time
from dataclasses import dataclass, field, replace

import torch

from ..core.candidates import from_seeds
from ..core.clock import synchronize
from .previews import score_previews
from .scoring import as_reward_dict, decode_in_pieces, preview_view, step_sigmas

FIXED_REWARD_COST = 1  # the assumed NFE-equivalents per reward call of earlier runs (cost model "fixed")
COST_MODELS = ("measured", "fixed")
RATIO_DECIMALS = 3  # a recorded ratio plans exactly as the measured one did
PROBE_SEED = 2**31  # far from the seeds a search uses, though the probe's images are thrown away
PROBE_CANDIDATES = 8
PROBE_REPEATS = 3  # timed repeats of one denoiser step and one decode + score, after one untimed warm-up


def check_budget_seconds(budget_seconds):
    """`budget_seconds` if it is a finite number > 0, else a one-line ValueError."""
    if (isinstance(budget_seconds, bool) or not isinstance(budget_seconds, (int, float))
            or not math.isfinite(budget_seconds) or budget_seconds <= 0):
        raise ValueError(f"`budget_seconds` must be a finite number of seconds > 0, got {budget_seconds!r}.")
    return float(budget_seconds)


@dataclass(frozen=True)
class TimedCost:
    """Seconds per NFE and per reward call on this machine, and the NFE-equivalents charged per reward call.

    Args:
        seconds_per_nfe (`float`): one denoiser evaluation (one row of a batch; a CFG step on B candidates is 2B),
            with its share of the step around it (scheduler, guidance).
        seconds_per_reward_call (`float`): one image decoded by the VAE and scored by one reward model (the decode
            is shared by the rewards scoring that image).
        name (`str`): `"measured"` charges their ratio per reward call; `"fixed"` charges `fixed_reward_cost`.
        fixed_reward_cost: the constant of the `"fixed"` model.
        probe (`dict`): what the measurement ran (candidates, NFE, images, seconds).
    """

    seconds_per_nfe: float
    seconds_per_reward_call: float
    name: str = "measured"
    fixed_reward_cost: int | float = FIXED_REWARD_COST
    probe: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.name not in COST_MODELS:
            raise ValueError(f"`name` must be one of {COST_MODELS}, got {self.name!r}.")
        if not math.isfinite(self.seconds_per_nfe) or self.seconds_per_nfe <= 0:
            raise ValueError(f"`seconds_per_nfe` must be a finite number > 0, got {self.seconds_per_nfe!r}.")
        if not math.isfinite(self.seconds_per_reward_call) or self.seconds_per_reward_call < 0:
            raise ValueError(f"`seconds_per_reward_call` must be a finite number >= 0, got "
                             f"{self.seconds_per_reward_call!r}.")

    @property
    def measured_ratio(self):
        """Seconds of a reward call over seconds of an NFE, rounded to `RATIO_DECIMALS`."""
        return round(self.seconds_per_reward_call / self.seconds_per_nfe, RATIO_DECIMALS)

    @property
    def reward_cost(self):
        """NFE-equivalents charged per reward call: the measured ratio, or the fixed constant."""
        return self.measured_ratio if self.name == "measured" else self.fixed_reward_cost

    def as_fixed(self, reward_cost=FIXED_REWARD_COST):
        """The same measurement charging the constant `reward_cost` per reward call (the `"fixed"` model)."""
        return replace(self, name="fixed", fixed_reward_cost=reward_cost)

    def budget_nfe(self, budget_seconds):
        """The integer NFE-equivalents `budget_seconds` buys: floor(seconds / seconds per NFE)."""
        return math.floor(check_budget_seconds(budget_seconds) / self.seconds_per_nfe)

    def to_dict(self):
        return {"name": self.name, "reward_cost": self.reward_cost, "measured_ratio": self.measured_ratio,
                "seconds_per_nfe": self.seconds_per_nfe, "seconds_per_reward_call": self.seconds_per_reward_call,
                "fixed_reward_cost": self.fixed_reward_cost, "probe": dict(self.probe)}

    @classmethod
    def from_dict(cls, data):
        return cls(data["seconds_per_nfe"], data["seconds_per_reward_call"], data["name"],
                   data.get("fixed_reward_cost", FIXED_REWARD_COST), data.get("probe", {}))


@torch.no_grad()
def measure_cost(sampler, rewards, *, prompt_index=0, num_candidates=PROBE_CANDIDATES, repeats=PROBE_REPEATS,
                 name="measured", fixed_reward_cost=FIXED_REWARD_COST):
    """Time `repeats` first steps of `num_candidates` probe seeds and `repeats` decode + score passes of their x0
    previews, after one untimed warm-up of each (lazy initialisation, kernel selection).

    A step is timed whole (the denoiser with CFG, the scheduler, the batch's setup), as a search spends it, so that a
    budget in seconds buys what it says even where the denoiser is a small share of a step (tiny models on a CPU);
    the denoiser's own seconds are in `probe`. A reward call is the decode and the scoring of one image by one
    reward (the decode shared among the rewards).

    Args:
        sampler (`Sampler`): the run's sampler (its settings, batch and device set the cost).
        rewards: a reward or `{name: reward}` as they score previews (noise-aware ones are given the step's sigma).
        prompt_index (`int`): the prompt the probe runs.
        name (`str`): the cost model to return, `"measured"` or `"fixed"` (the measurement is the same; "fixed"
            charges `fixed_reward_cost` per reward call but still converts seconds through the measured NFE time).

    Returns:
        `TimedCost`. The probe's work is counted in `sampler.nfe` and its clock, and in `probe`, never in a
        search's result.
    """
    rewards = {n: preview_view(r) for n, r in as_reward_dict(rewards).items()}
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be a positive integer, got {repeats!r}.")
    candidates = from_seeds(sampler.shape, range(PROBE_SEED, PROBE_SEED + num_candidates), prompt_index)
    prompt, sigma = sampler.prompts[prompt_index], step_sigmas(sampler)[0]
    clock = sampler.clock
    timed, nfe, images, steps = clock.read(), 0, 0, 0.0
    for repeat in range(repeats + 1):
        if repeat == 1:  # everything before is the warm-up
            timed, nfe, images, steps = clock.read(), sampler.nfe, 0, 0.0
        synchronize(sampler.device)
        began = time.perf_counter()
        x0 = sampler.start_candidates(candidates).step(preview=True)
        synchronize(sampler.device)
        steps += time.perf_counter() - began
        # as a search scores previews: latent rewards read x0 undecoded, so their calls cost no decode
        score_previews(rewards, x0, prompt, sigma=sigma, decode=lambda x: decode_in_pieces(sampler, x), clock=clock)
        images += len(x0)
    spent, nfe = clock.since(timed), sampler.nfe - nfe
    seconds_per_nfe = steps / nfe
    seconds_per_call = (spent["decode"] + spent["reward"]) / (images * len(rewards))
    probe = {"candidates": num_candidates, "repeats": repeats, "nfe": nfe, "images": images,
             "reward_calls": images * len(rewards), "step_seconds": round(steps, 6),
             **{f"{part}_seconds": round(s, 6) for part, s in spent.items()}}
    return TimedCost(seconds_per_nfe, seconds_per_call, name, fixed_reward_cost, probe)
