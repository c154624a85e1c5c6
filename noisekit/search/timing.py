"""What a search's parts cost in seconds on this machine, and the NFE-equivalent of a reward call measured from them.

Budgets are planned in NFE-equivalents: a search costs `nfe + reward_cost * reward_calls`. `reward_cost`, what one
reward call (one image decoded and scored by one reward model) costs in denoiser evaluations, was an assumed
constant; it is kept as the cost model `"fixed"` (`FIXED_REWARD_COST`, to reproduce earlier numbers). The cost
model `"measured"` times a few denoiser calls and a few decode + reward calls on the run's own sampler and rewards
(`measure_cost`) and charges their ratio instead.

A step's or a scoring's seconds are not proportional to its batch: a call has a fixed part (Python, the scheduler,
kernel launches) besides its per-row part, and a pruned search runs small batches where the fixed part dominates.
So the probe times two batch sizes and `TimedCost` is affine: seconds per row (`seconds_per_nfe`, one denoiser
evaluation) plus seconds per call (`seconds_per_denoiser_call`), and likewise for scoring. A budget in seconds
plans N0 from the predicted seconds of the run it buys (`RunShape`, `plan_by_seconds`); it is recorded as
NFE-equivalents too (`TimedCost.budget_nfe`). The plan is a deterministic function of the recorded measurement.

Examples:
    >>> cost = measure_cost(sampler, {"shapes-judge": judge})  # a few seconds on CPU
    >>> cost.reward_cost, cost.budget_nfe(30.0)  # e.g. 0.412 NFE-equivalents per call; 30 s -> 1,874 NFE
    >>> result = search(sampler, 0, judge, budget_seconds=30.0, cost=cost)
"""

import math
import time
from dataclasses import astuple, dataclass, field, replace

import torch

from ..core.candidates import from_seeds
from ..core.clock import synchronize
from .budget import survivor_counts
from .previews import score_previews
from .scoring import as_reward_dict, decode_in_pieces, preview_view, step_sigmas

FIXED_REWARD_COST = 1  # the assumed NFE-equivalents per reward call of earlier runs (cost model "fixed")
COST_MODELS = ("measured", "fixed")
RATIO_DECIMALS = 3  # a recorded ratio plans exactly as the measured one did
PROBE_SEED = 2**31  # far from the seeds a search uses, though the probe's images are thrown away
PROBE_CANDIDATES = 32  # search's default micro-batch: the largest batch a run steps, so the line never extrapolates
PROBE_REPEATS = 3  # timed repeats of one denoiser step and one decode + score, after one untimed warm-up
PLAN_RTOL = 1e-9  # a run predicted at exactly the budget fits, whatever the float rounding


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
        seconds_per_nfe (`float`): one more denoiser evaluation in a call (one row of a batch; a CFG step on B
            candidates is 2B), with its share of the step around it (scheduler, guidance).
        seconds_per_reward_call (`float`): one more image decoded by the VAE and scored by one reward model (the
            decode is shared by the rewards scoring that image).
        name (`str`): `"measured"` charges their ratio per reward call; `"fixed"` charges `fixed_reward_cost`.
        fixed_reward_cost: the constant of the `"fixed"` model.
        probe (`dict`): what the measurement ran (candidates, NFE, images, seconds).
        seconds_per_denoiser_call (`float`): the fixed part of one step of one micro-batch, whatever its size.
        seconds_per_scoring (`float`): the fixed part of decoding and scoring one batch of images.
    """

    seconds_per_nfe: float
    seconds_per_reward_call: float
    name: str = "measured"
    fixed_reward_cost: int | float = FIXED_REWARD_COST
    probe: dict = field(default_factory=dict, compare=False)
    seconds_per_denoiser_call: float = 0.0
    seconds_per_scoring: float = 0.0

    def __post_init__(self):
        if self.name not in COST_MODELS:
            raise ValueError(f"`name` must be one of {COST_MODELS}, got {self.name!r}.")
        if not math.isfinite(self.seconds_per_nfe) or self.seconds_per_nfe <= 0:
            raise ValueError(f"`seconds_per_nfe` must be a finite number > 0, got {self.seconds_per_nfe!r}.")
        for name in ("seconds_per_reward_call", "seconds_per_denoiser_call", "seconds_per_scoring"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")

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

    def seconds(self, shape):
        """The predicted seconds of a run of `shape` (a `RunShape`)."""
        return (shape.denoiser_calls * self.seconds_per_denoiser_call + shape.nfe * self.seconds_per_nfe
                + shape.scorings * self.seconds_per_scoring + shape.reward_calls * self.seconds_per_reward_call)

    def to_dict(self):
        return {"name": self.name, "reward_cost": self.reward_cost, "measured_ratio": self.measured_ratio,
                "seconds_per_nfe": self.seconds_per_nfe, "seconds_per_reward_call": self.seconds_per_reward_call,
                "seconds_per_denoiser_call": self.seconds_per_denoiser_call,
                "seconds_per_scoring": self.seconds_per_scoring,
                "fixed_reward_cost": self.fixed_reward_cost, "probe": dict(self.probe)}

    @classmethod
    def from_dict(cls, data):
        """The inverse of `to_dict`; a record without the fixed parts (written before they were measured) plans as
        it did then, proportionally."""
        return cls(data["seconds_per_nfe"], data["seconds_per_reward_call"], data["name"],
                   data.get("fixed_reward_cost", FIXED_REWARD_COST), data.get("probe", {}),
                   data.get("seconds_per_denoiser_call", 0.0), data.get("seconds_per_scoring", 0.0))


@dataclass(frozen=True)
class RunShape:
    """What a planned run executes: denoiser calls (one step of one micro-batch each) and the rows they evaluate,
    scorings (one batch of images decoded and scored) and the reward calls they make (images x rewards)."""

    denoiser_calls: int = 0
    nfe: int = 0
    scorings: int = 0
    reward_calls: int = 0

    def __add__(self, other):
        return RunShape(*(a + b for a, b in zip(astuple(self), astuple(other))))


def search_shape(num_candidates, steps, keep, *, num_steps, nfe_per_step, num_rewards, micro_batch_size,
                 stage_nfe=0):
    """The `RunShape` of a search from `num_candidates` (best-of-N when `steps` is empty): each stage runs its
    survivors in at most as many micro-batches as the flight started with, and scores them once."""
    counts = survivor_counts(num_candidates, keep)
    chunks = -(-num_candidates // micro_batch_size)
    boundaries = [-1, *steps, num_steps - 1]
    calls = sum(min(chunks, n) * (b - a) for n, a, b in zip(counts, boundaries, boundaries[1:]))
    passes = sum(n * (b - a) for n, a, b in zip(counts, boundaries, boundaries[1:]))
    return RunShape(calls, passes * nfe_per_step + num_candidates * stage_nfe, len(counts), sum(counts) * num_rewards)


def plan_by_seconds(cost, budget_seconds, shape_of, *, limit, smallest=1):
    """The largest N in [`smallest`, `limit` + 1] whose run, `shape_of(N)`, is predicted by `cost` (a `TimedCost`)
    to fit `budget_seconds` (`limit` + 1 says "more than the limit"; the caller refuses it). Predicted seconds
    grow with N, so a doubling then bisection finds it. A one-line ValueError when not even `smallest` fits."""
    fits = lambda n: cost.seconds(shape_of(n)) <= budget_seconds * (1 + PLAN_RTOL)  # noqa: E731
    if not fits(smallest):
        raise ValueError(f"`budget_seconds` {budget_seconds:g} buys {cost.budget_nfe(budget_seconds)} "
                         f"NFE-equivalents at {cost.seconds_per_nfe:.3g} s per NFE on this machine; the smallest run "
                         f"({smallest} candidate{'s' if smallest > 1 else ''}) is predicted to take "
                         f"{cost.seconds(shape_of(smallest)):.3g} s. Give more seconds.")
    low, high = smallest, smallest + 1
    while high <= limit and fits(high):
        low, high = high, min(2 * high, limit + 1)
    if high > limit and fits(high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@torch.no_grad()
def measure_cost(sampler, rewards, *, prompt_index=0, num_candidates=PROBE_CANDIDATES, repeats=PROBE_REPEATS,
                 name="measured", fixed_reward_cost=FIXED_REWARD_COST):
    """Time `repeats` first steps of one probe seed and of `num_candidates`, and `repeats` decode + score passes of
    their x0 previews, after one untimed warm-up of each size (lazy initialisation, kernel selection); the line
    through the two sizes gives the per-row and the per-call seconds.

    A step is timed whole (the denoiser with CFG, the scheduler, the batch's setup), as a search spends it, so that a
    budget in seconds buys what it says even where the denoiser is a small share of a step (tiny models on a CPU);
    the denoiser's own seconds are in `probe`. A reward call is the decode and the scoring of one image by one
    reward (the decode shared among the rewards).

    Args:
        sampler (`Sampler`): the run's sampler (its settings, batch and device set the cost).
        rewards: a reward or `{name: reward}` as they score previews (noise-aware ones are given the step's sigma).
        prompt_index (`int`): the prompt the probe runs.
        num_candidates (`int`): the larger probe batch (the smaller is one candidate): the run's micro-batch size,
            so that every batch the plan runs lies between the two. On a GPU, whose step time stays flat until the
            batch fills it, the line between them overestimates the middle: a seconds budget errs towards spending
            less.
        name (`str`): the cost model to return, `"measured"` or `"fixed"` (the measurement is the same; "fixed"
            charges `fixed_reward_cost` per reward call but still converts seconds through the measured times).

    Returns:
        `TimedCost`. The probe's work is counted in `sampler.nfe` and its clock, and in `probe`, never in a
        search's result.
    """
    rewards = {n: preview_view(r) for n, r in as_reward_dict(rewards).items()}
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be a positive integer, got {repeats!r}.")
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 2:
        raise ValueError(f"`num_candidates` must be an integer >= 2 (the probe fits a line through 1 and it), got "
                         f"{num_candidates!r}.")
    nfe_before, timed = sampler.nfe, sampler.clock.read()
    sizes = {size: _probe_size(sampler, rewards, prompt_index, size, repeats) for size in (1, num_candidates)}
    (rows_1, step_1, score_1), (rows_n, step_n, score_n) = sizes.values()
    per_row, per_call = _line(rows_1, step_1, rows_n, step_n)
    per_image, per_scoring = _line(len(rewards), score_1, num_candidates * len(rewards), score_n)
    spent = sampler.clock.since(timed)
    probe = {"candidates": num_candidates, "sizes": [1, num_candidates], "repeats": repeats,
             "nfe": sampler.nfe - nfe_before, "images": (repeats + 1) * (1 + num_candidates),
             "reward_calls": (repeats + 1) * (1 + num_candidates) * len(rewards),
             "step_seconds": {str(size): round(v[1], 6) for size, v in sizes.items()},
             "scoring_seconds": {str(size): round(v[2], 6) for size, v in sizes.items()},
             **{f"{part}_seconds": round(s, 6) for part, s in spent.items()}}
    return TimedCost(per_row, per_image, name, fixed_reward_cost, probe, per_call, per_scoring)


def _probe_size(sampler, rewards, prompt_index, size, repeats):
    """`(rows, seconds, scoring seconds)` of one first step of `size` probe seeds and of one decode + score of
    their previews, each the mean of `repeats` timed runs after a warm-up."""
    candidates = from_seeds(sampler.shape, range(PROBE_SEED, PROBE_SEED + size), prompt_index)
    prompt, sigma = sampler.prompts[prompt_index], step_sigmas(sampler)[0]
    step = scoring = 0.0
    nfe = sampler.nfe
    for repeat in range(repeats + 1):
        synchronize(sampler.device)
        began = time.perf_counter()
        x0 = sampler.start_candidates(candidates).step(preview=True)
        synchronize(sampler.device)
        middle = time.perf_counter()
        # as a search scores previews: latent rewards read x0 undecoded, so their calls cost no decode
        score_previews(rewards, x0, prompt, sigma=sigma, decode=lambda x: decode_in_pieces(sampler, x),
                       clock=sampler.clock)
        synchronize(sampler.device)
        if repeat:  # the first is the warm-up
            step, scoring = step + middle - began, scoring + time.perf_counter() - middle
    return (sampler.nfe - nfe) // (repeats + 1), step / repeats, scoring / repeats


def _line(x1, y1, x2, y2):
    """`(slope, intercept)` of the line through two timings, both >= 0: a noisy pair that gives a negative part
    falls back to the proportional line through the larger point."""
    slope = (y2 - y1) / (x2 - x1)
    intercept = y1 - slope * x1
    if slope <= 0 or intercept < 0:
        return y2 / x2, 0.0
    return slope, intercept
