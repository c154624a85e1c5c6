"""What a search's parts cost in seconds on this machine, and the NFE-equivalent of a reward call measured from them.

Budgets are planned in NFE-equivalents: a search costs `nfe + reward_cost * reward_calls` (the final images' calls at
their own ratio when they are timed apart, see below). `reward_cost`, what one reward call (one image decoded and
scored by one reward model) costs in denoiser evaluations, was an assumed constant; it is kept as the cost model
`"fixed"` (`FIXED_REWARD_COST`, to reproduce earlier numbers). The cost model `"measured"` times a few denoiser calls
and a few decode + reward calls on the run's own sampler and rewards (`measure_cost`) and charges their ratio instead.

A step's or a scoring's seconds are not proportional to its batch: a call has a fixed part (Python, the scheduler,
kernel launches) besides its per-row part, and a pruned search runs small batches where the fixed part dominates.
Nor is it a straight line between batch sizes: on a CPU the measured sizes lie up to 22 % below and 27 % above the
line through the smallest and the largest (the probes in `benchmarks/results/`). The probe therefore times a ladder
of batch sizes (1, 2, 4, ... up to the micro-batch), each over consecutive steps of one batch as a search runs them,
and `TimedCost` predicts a call of any size by interpolating between the measured ones (`step_seconds`,
`scoring_seconds`), each the median of its repeats (a stray slow repeat does not set it). Timings drift: on a shared
2-core CPU the same step's seconds moved by -23 % to +61 % within minutes (`benchmarks/bench_seconds_model.py`),
more than the ladder gains over the line there, so a plan in seconds leaves a share of the budget free (`headroom`,
`DEFAULT_HEADROOM` unless the caller asks otherwise); the probe records each size's spread (slowest repeat over the
median) beside it. The final images are decoded and scored by the clean rewards, which can cost far more than the
preview rewards (a latent preview reward decodes nothing), so they are timed apart (`final_scoring_seconds`), and a
budget in NFE-equivalents charges their calls their own measured ratio (`TimedCost.final_reward_cost`). The
affine summary (seconds per row plus seconds per call, likewise for scoring) stays: it converts seconds to NFE-
equivalents and predicts runs given only as totals. A budget in seconds plans N0 from the predicted seconds of the
run it buys (`RunShape`, `plan_by_seconds`); it is recorded as NFE-equivalents too (`TimedCost.budget_nfe`). The
plan is a deterministic function of the recorded measurement.

Examples:
    >>> cost = measure_cost(sampler, {"shapes-judge": judge})  # a few seconds on CPU
    >>> cost.reward_cost, cost.budget_nfe(30.0)  # e.g. 0.412 NFE-equivalents per call; 30 s -> 1,874 NFE
    >>> result = search(sampler, 0, judge, budget_seconds=30.0, cost=cost)
"""

import itertools
import math
import statistics
import time
from dataclasses import astuple, dataclass, field, replace

import torch

from ..core.candidates import from_seeds
from ..core.clock import synchronize
from .budget import survivor_counts
from .previews import score_previews
from .scoring import as_reward_dict, decode_in_pieces, preview_view, score, step_sigmas

FIXED_REWARD_COST = 1  # the assumed NFE-equivalents per reward call of earlier runs (cost model "fixed")
COST_MODELS = ("measured", "fixed")
RATIO_DECIMALS = 3  # a recorded ratio plans exactly as the measured one did
PROBE_SEED = 2**31  # far from the seeds a search uses, though the probe's images are thrown away
PROBE_CANDIDATES = 32  # search's default micro-batch: the largest batch a run steps, so steps never extrapolate
PROBE_REPEATS = 3  # timed repeats of one denoiser step and one decode + score, after one untimed warm-up
DEFAULT_HEADROOM = 0.1  # the share of a seconds budget a plan leaves free for timings that drift after the probe
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
        step_seconds (`tuple`): `((rows, seconds), ...)`, one step of one micro-batch of that many rows, measured
            at increasing sizes; when given, a `RunShape`'s calls are predicted between them (see `seconds`).
        scoring_seconds (`tuple`): `((images, seconds), ...)`, one preview scoring of that many images (the decode
            when a preview reward reads images, and every preview reward).
        final_scoring_seconds (`tuple`): the same for the final images (decode and the clean rewards); empty when
            they are the preview scoring's rewards.
        headroom (`float`): the share of a seconds budget a plan leaves free for timings that drift after the
            probe, in [0, 0.5).
        seconds_per_final_call (`float`): one more final image decoded and scored by one clean reward, when the
            final images were timed apart (`final_scoring_seconds`); 0 when they were not.
    """

    seconds_per_nfe: float
    seconds_per_reward_call: float
    name: str = "measured"
    fixed_reward_cost: int | float = FIXED_REWARD_COST
    probe: dict = field(default_factory=dict, compare=False)
    seconds_per_denoiser_call: float = 0.0
    seconds_per_scoring: float = 0.0
    step_seconds: tuple = ()
    scoring_seconds: tuple = ()
    final_scoring_seconds: tuple = ()
    headroom: float = 0.0
    seconds_per_final_call: float = 0.0

    def __post_init__(self):
        if self.name not in COST_MODELS:
            raise ValueError(f"`name` must be one of {COST_MODELS}, got {self.name!r}.")
        if not math.isfinite(self.seconds_per_nfe) or self.seconds_per_nfe <= 0:
            raise ValueError(f"`seconds_per_nfe` must be a finite number > 0, got {self.seconds_per_nfe!r}.")
        for name in ("seconds_per_reward_call", "seconds_per_denoiser_call", "seconds_per_scoring",
                     "seconds_per_final_call"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
        for name in ("step_seconds", "scoring_seconds", "final_scoring_seconds"):
            object.__setattr__(self, name, _check_curve(name, getattr(self, name)))
        if not 0 <= self.headroom < 0.5:
            raise ValueError(f"`headroom` must lie in [0, 0.5), got {self.headroom!r}.")

    @property
    def measured_ratio(self):
        """Seconds of a reward call over seconds of an NFE, rounded to `RATIO_DECIMALS`."""
        return round(self.seconds_per_reward_call / self.seconds_per_nfe, RATIO_DECIMALS)

    @property
    def reward_cost(self):
        """NFE-equivalents charged per reward call: the measured ratio, or the fixed constant."""
        return self.measured_ratio if self.name == "measured" else self.fixed_reward_cost

    @property
    def final_reward_cost(self):
        """NFE-equivalents charged per reward call on a final image: the measured ratio of the final images' own
        calls when they were timed apart, else `reward_cost` (the fixed constant charges both alike)."""
        if self.name != "measured" or not self.seconds_per_final_call:
            return self.reward_cost
        return round(self.seconds_per_final_call / self.seconds_per_nfe, RATIO_DECIMALS)

    def as_fixed(self, reward_cost=FIXED_REWARD_COST):
        """The same measurement charging the constant `reward_cost` per reward call (the `"fixed"` model)."""
        return replace(self, name="fixed", fixed_reward_cost=reward_cost)

    def budget_nfe(self, budget_seconds):
        """The integer NFE-equivalents `budget_seconds` buys: floor(seconds / seconds per NFE)."""
        return math.floor(check_budget_seconds(budget_seconds) / self.seconds_per_nfe)

    def seconds(self, shape):
        """The predicted seconds of a run of `shape` (a `RunShape`): each call and scoring it lists at its own size
        through the measured sizes; NFE outside its calls (noise stages) and a shape or cost without sizes by the
        affine summary."""
        batched = sum(rows * calls for rows, calls in shape.batches)
        if self.step_seconds and shape.batches:
            denoiser = (sum(calls * _between(self.step_seconds, rows) for rows, calls in shape.batches)
                        + (shape.nfe - batched) * self.seconds_per_nfe)
        else:
            denoiser = shape.denoiser_calls * self.seconds_per_denoiser_call + shape.nfe * self.seconds_per_nfe
        if self.scoring_seconds and (shape.previews or shape.finals):
            final = self.final_scoring_seconds or self.scoring_seconds
            scoring = (sum(_between(self.scoring_seconds, n) for n in shape.previews)
                       + sum(_between(final, n) for n in shape.finals))
        else:
            scoring = shape.scorings * self.seconds_per_scoring + shape.reward_calls * self.seconds_per_reward_call
            if self.seconds_per_final_call and shape.finals:  # the final images' calls at their own seconds
                final_calls = shape.reward_calls * sum(shape.finals) / (sum(shape.previews) + sum(shape.finals))
                scoring += final_calls * (self.seconds_per_final_call - self.seconds_per_reward_call)
        return denoiser + scoring

    def to_dict(self):
        return {"name": self.name, "reward_cost": self.reward_cost, "measured_ratio": self.measured_ratio,
                "final_reward_cost": self.final_reward_cost,
                "seconds_per_nfe": self.seconds_per_nfe, "seconds_per_reward_call": self.seconds_per_reward_call,
                "seconds_per_final_call": self.seconds_per_final_call,
                "seconds_per_denoiser_call": self.seconds_per_denoiser_call,
                "seconds_per_scoring": self.seconds_per_scoring,
                **{name: [list(point) for point in getattr(self, name)]
                   for name in ("step_seconds", "scoring_seconds", "final_scoring_seconds")},
                "headroom": self.headroom, "fixed_reward_cost": self.fixed_reward_cost, "probe": dict(self.probe)}

    @classmethod
    def from_dict(cls, data):
        """The inverse of `to_dict`; a record without the fixed parts or the measured sizes (written before they
        were measured) plans as it did then."""
        return cls(data["seconds_per_nfe"], data["seconds_per_reward_call"], data["name"],
                   data.get("fixed_reward_cost", FIXED_REWARD_COST), data.get("probe", {}),
                   data.get("seconds_per_denoiser_call", 0.0), data.get("seconds_per_scoring", 0.0),
                   *(tuple(tuple(p) for p in data.get(name, ()))
                     for name in ("step_seconds", "scoring_seconds", "final_scoring_seconds")),
                   data.get("headroom", 0.0), data.get("seconds_per_final_call", 0.0))


@dataclass(frozen=True)
class RunShape:
    """What a planned run executes: denoiser calls (one step of one micro-batch each) and the rows they evaluate,
    scorings (one batch of images decoded and scored) and the reward calls they make (images x rewards); and, for
    a cost that knows sizes, the calls by their rows (`batches`: `((rows, calls), ...)`) and the images of each
    preview scoring (`previews`) and final scoring (`finals`)."""

    denoiser_calls: int = 0
    nfe: int = 0
    scorings: int = 0
    reward_calls: int = 0
    batches: tuple = ()
    previews: tuple = ()
    finals: tuple = ()

    def __add__(self, other):
        return RunShape(*(a + b for a, b in zip(astuple(self), astuple(other))))  # tuples concatenate


def search_shape(num_candidates, steps, keep, *, num_steps, nfe_per_step, num_rewards, micro_batch_size,
                 stage_nfe=0):
    """The `RunShape` of a search from `num_candidates` (best-of-N when `steps` is empty): the flight starts in
    micro-batches of `micro_batch_size`; each later stage runs its survivors in at most as many micro-batches
    (taken as evenly filled) and scores them once."""
    counts = survivor_counts(num_candidates, keep)
    chunks = -(-num_candidates // micro_batch_size)
    boundaries = [-1, *steps, num_steps - 1]
    batches = {}
    for stage, (n, a, b) in enumerate(zip(counts, boundaries, boundaries[1:])):
        if stage == 0:
            full, rest = divmod(n, micro_batch_size)
            sizes = [micro_batch_size] * full + ([rest] if rest else [])
        else:
            calls = min(chunks, n)
            sizes = [n // calls + (i < n % calls) for i in range(calls)]
        for size in sizes:
            batches[size * nfe_per_step] = batches.get(size * nfe_per_step, 0) + (b - a)
    calls = sum(batches.values())
    passes = sum(n * (b - a) for n, a, b in zip(counts, boundaries, boundaries[1:]))
    return RunShape(calls, passes * nfe_per_step + num_candidates * stage_nfe, len(counts), sum(counts) * num_rewards,
                    tuple(sorted(batches.items())), tuple(counts[:-1]), (counts[-1],))


def plan_by_seconds(cost, budget_seconds, shape_of, *, limit, smallest=1):
    """The largest N in [`smallest`, `limit` + 1] whose run, `shape_of(N)`, is predicted by `cost` (a `TimedCost`)
    to fit `budget_seconds` (`limit` + 1 says "more than the limit"; the caller refuses it). Predicted seconds
    grow with N, so a doubling then bisection finds it. A one-line ValueError when not even `smallest` fits."""
    usable = budget_seconds * (1 - cost.headroom) * (1 + PLAN_RTOL)  # the headroom stays free for drift
    fits = lambda n: cost.seconds(shape_of(n)) <= usable  # noqa: E731
    if not fits(smallest):
        raise ValueError(f"`budget_seconds` {budget_seconds:g} buys {cost.budget_nfe(budget_seconds)} "
                         f"NFE-equivalents at {cost.seconds_per_nfe:.3g} s per NFE on this machine; the smallest run "
                         f"({smallest} candidate{'s' if smallest > 1 else ''}) is predicted to take "
                         f"{cost.seconds(shape_of(smallest)):.3g} s" + (
                             f", and {cost.headroom:.0%} stays free for timings that drift" if cost.headroom else "")
                         + ". Give more seconds.")
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
def measure_cost(sampler, rewards, *, final_rewards=None, prompt_index=0, num_candidates=PROBE_CANDIDATES,
                 repeats=PROBE_REPEATS, name="measured", fixed_reward_cost=FIXED_REWARD_COST,
                 headroom=DEFAULT_HEADROOM):
    """Time `repeats` steps of batches of 1, 2, 4, ... probe seeds up to `num_candidates`, and `repeats` decode +
    score passes of their x0 previews, after one untimed warm-up of each (lazy initialisation, kernel selection).
    Each size keeps the median of its repeats. The sizes give the curves a plan reads; the line through the smallest
    and the largest gives the affine summary (per row and per call).

    A step is timed whole (the denoiser with CFG, the scheduler, the batch's setup), as a search spends it, so that a
    budget in seconds buys what it says even where the denoiser is a small share of a step (tiny models on a CPU);
    the denoiser's own seconds are in `probe`. A reward call is the decode and the scoring of one image by one
    reward (the decode shared among the rewards).

    Args:
        sampler (`Sampler`): the run's sampler (its settings, batch and device set the cost).
        rewards: a reward or `{name: reward}` as they score previews (noise-aware ones are given the step's sigma).
        final_rewards: the clean rewards that judge the final images, when they are not `rewards` (a search whose
            previews a latent or noise-aware reward scores): their decode + scoring is timed apart.
        prompt_index (`int`): the prompt the probe runs.
        num_candidates (`int`): the largest probe batch: the run's micro-batch size, so that every batch the plan
            runs lies within the measured sizes.
        name (`str`): the cost model to return, `"measured"` or `"fixed"` (the measurement is the same; "fixed"
            charges `fixed_reward_cost` per reward call but still converts seconds through the measured times).
        headroom (`float`): the share of a seconds budget plans leave free, in [0, 0.5).

    Returns:
        `TimedCost`. The probe's work is counted in `sampler.nfe` and its clock, and in `probe`, never in a
        search's result.
    """
    rewards = {n: preview_view(r) for n, r in as_reward_dict(rewards).items()}
    final_rewards = as_reward_dict(final_rewards) if final_rewards is not None else None
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be a positive integer, got {repeats!r}.")
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 2:
        raise ValueError(f"`num_candidates` must be an integer >= 2 (the probe fits a line through 1 and it), got "
                         f"{num_candidates!r}.")
    nfe_before, timed = sampler.nfe, sampler.clock.read()
    sizes = probe_sizes(num_candidates)
    timings = {size: _probe_size(sampler, rewards, final_rewards, prompt_index, size, repeats) for size in sizes}
    rows = {size: t[0] for size, t in timings.items()}
    steps = _rising([(rows[size], timings[size][1]) for size in sizes])
    scorings = _rising([(size, timings[size][2]) for size in sizes])
    finals = _rising([(size, timings[size][3]) for size in sizes]) if final_rewards is not None else ()
    (rows_1, step_1), (rows_n, step_n) = steps[0], steps[-1]
    per_row, per_call = _line(rows_1, step_1, rows_n, step_n)
    per_image, per_scoring = _line(len(rewards), scorings[0][1], num_candidates * len(rewards), scorings[-1][1])
    per_final = (_line(len(final_rewards), finals[0][1], num_candidates * len(final_rewards), finals[-1][1])[0]
                 if final_rewards is not None else 0.0)
    spent = sampler.clock.since(timed)
    images = (repeats + 1) * sum(sizes)
    probe = {"candidates": num_candidates, "sizes": sizes, "repeats": repeats,
             "step_spread": {str(size): round(t[4], 4) for size, t in timings.items()},
             "nfe": sampler.nfe - nfe_before, "images": images, "reward_calls": images * len(rewards),
             "step_seconds": {str(size): round(t[1], 6) for size, t in timings.items()},
             "scoring_seconds": {str(size): round(t[2], 6) for size, t in timings.items()},
             **{f"{part}_seconds": round(s, 6) for part, s in spent.items()}}
    if final_rewards is not None:
        probe["final_scoring_seconds"] = {str(size): round(t[3], 6) for size, t in timings.items()}
    return TimedCost(per_row, per_image, name, fixed_reward_cost, probe, per_call, per_scoring, steps, scorings,
                     finals, headroom, per_final)


def probe_sizes(largest):
    """1, 2, 4, ... below `largest`, then `largest`: the batch sizes the probe times."""
    sizes = [1]
    while sizes[-1] * 2 < largest:
        sizes.append(sizes[-1] * 2)
    return [*sizes, largest]


def _probe_size(sampler, rewards, final_rewards, prompt_index, size, repeats):
    """`(rows, step seconds, preview scoring seconds, final scoring seconds, step spread)` of `size` probe seeds:
    `repeats` consecutive steps of one batch after an untimed first one (as a search steps a micro-batch), then
    `repeats` scorings of its previews and (with `final_rewards`) decodes + scorings as final images after an
    untimed warm-up; each the median of its repeats. The spread is the slowest step over the median, minus one."""
    candidates = from_seeds(sampler.shape, range(PROBE_SEED, PROBE_SEED + size), prompt_index)
    prompt, sigma = sampler.prompts[prompt_index], step_sigmas(sampler)[0]
    nfe = sampler.nfe
    batch = sampler.start_candidates(candidates)
    x0, steps = batch.step(preview=True), []  # the first step is the warm-up (lazy initialisation, kernels)
    for _ in range(repeats):
        if batch.step_index >= sampler.num_steps:  # a short loop: start the batch again, untimed
            batch = sampler.start_candidates(candidates)
        began = _now(sampler)
        x0 = batch.step(preview=True)
        steps.append(_now(sampler) - began)
    scorings, finals = [], []
    for repeat in range(repeats + 1):
        began = _now(sampler)
        # as a search scores previews: latent rewards read x0 undecoded, so their calls cost no decode
        score_previews(rewards, x0, prompt, sigma=sigma, decode=lambda x: decode_in_pieces(sampler, x),
                       clock=sampler.clock)
        scored = _now(sampler)
        if final_rewards is not None:  # as a search judges its survivors: decoded, by the clean rewards
            score(final_rewards, decode_in_pieces(sampler, x0), prompt, clock=sampler.clock)
        if repeat:  # the first is the warm-up
            scorings.append(scored - began)
            finals.append(_now(sampler) - scored)
    step = statistics.median(steps)
    return ((sampler.nfe - nfe) // (repeats + 1), step, statistics.median(scorings), statistics.median(finals),
            max(steps) / step - 1)


def _now(sampler):
    synchronize(sampler.device)
    return time.perf_counter()


def _rising(points):
    """Measured `(size, seconds)` points, each at least the one before: a larger batch never plans as cheaper."""
    out = []
    for size, seconds in points:
        out.append((size, max(seconds, out[-1][1]) if out else seconds))
    return tuple(out)


def _between(points, size):
    """Seconds at `size` from measured `(size, seconds)` points: linear between the two around it, along the last
    segment's slope above the largest, and scaled down proportionally below the smallest."""
    if size <= points[0][0]:
        return points[0][1] * size / points[0][0]
    for (x1, y1), (x2, y2) in itertools.pairwise(points):
        if size <= x2:
            return y1 + (y2 - y1) * (size - x1) / (x2 - x1)
    (x1, y1), (x2, y2) = points[-2:] if len(points) > 1 else ((0, 0.0), points[-1])
    return y2 + (y2 - y1) / (x2 - x1) * (size - x2)


def _check_curve(name, points):
    """`points` as a tuple of `(size, seconds)` with sizes increasing and seconds >= 0, else a one-line ValueError."""
    points = tuple((int(size), float(seconds)) for size, seconds in points)
    if any(size < 1 or not math.isfinite(seconds) or seconds < 0 for size, seconds in points) or any(
            b[0] <= a[0] for a, b in itertools.pairwise(points)):
        raise ValueError(f"`{name}` must be (size, seconds) pairs with sizes >= 1 increasing and seconds >= 0, got "
                         f"{list(points)}.")
    return points


def _line(x1, y1, x2, y2):
    """`(slope, intercept)` of the line through two timings, both >= 0: a noisy pair that gives a negative part
    falls back to the proportional line through the larger point."""
    slope = (y2 - y1) / (x2 - x1)
    intercept = y1 - slope * x1
    if slope <= 0 or intercept < 0:
        return y2 / x2, 0.0
    return slope, intercept
