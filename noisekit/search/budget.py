"""Compute accounting for seed search: pruning schedules, the TTSnap cost formula, and exact integer budgets.

Units. One *step* is one pass of the sampler's loop (`Sampler.num_steps` passes; Heun-type schedulers pass twice per
timestep) and costs `nfe_per_step` denoiser evaluations per candidate (2 under CFG, else 1). A *reward call* is one
image scored by one reward model (the VAE decode of a preview belongs to it) and costs `reward_cost` NFE-equivalents:
an assumed constant (1; 0 counts denoiser passes only, as Ma et al. 2025 do) or the ratio measured on the run's machine
(`noisekit.search.timing`). When the previews are scored by a cheaper reward than the final images (a latent reward
decodes nothing), the final images' calls are charged their own `final_reward_cost`. The realised cost of a search is
`nfe + reward_cost * reward_calls` (the final images' calls at `final_reward_cost`; an integer when both are whole),
and `plan_*` choose the largest candidate count whose realised cost fits the budget, so a search never spends more than
it was given.

Step index `s` is the x0 preview made by the `(s + 1)`-th denoiser pass (TTSnap's convention, T = 20 there).
Reaching it costs `s + 1` steps; TTSnap's public simulator charges `s` (an off-by-one kept as
`formula="official"` to reproduce its published numbers only).

Symbols (TTSnap, arXiv 2511.22242, and `../shared/reference/ttsnap.md` Sec. 1.4):
    T = num_steps, s_k = pruning steps (k = 1..K), alpha_k = keep ratios, x = step cost, y = reward-call cost,
    n_0 = N0 candidates, n_k = max(1, round(n_{k-1} * alpha_k)) survivors of stage k.
"""

import math
from dataclasses import dataclass

REFERENCE_STEPS = 20  # the step count TTSnap's default schedules were tuned for
UNITS = ("step", "sigma")
FORMULAS = ("exact", "expected", "official")
SIGMA_RTOL = 1e-5


@dataclass(frozen=True)
class PruningSchedule:
    """Where to prune and how many to keep: stage `k` scores the live candidates at `points[k]` and keeps the top
    `max(1, round(n * keep[k]))`.

    Args:
        points (`tuple`): step indices (`unit="step"`, increasing) or noise levels sigma (`unit="sigma"`,
            decreasing), one per stage. Sigma points fit any scheduler and step count: each becomes the first step
            whose preview's noise level is at or below it.
        keep (`tuple[float]`): keep ratio alpha_k in (0, 1] of each stage.
        unit (`str`): `"step"` or `"sigma"`.

    Examples:
        >>> PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5))  # TTSnap's single-reward default at 20 steps
        >>> PruningSchedule((8.0, 2.0), (0.5, 0.5), unit="sigma")
    """

    points: tuple
    keep: tuple
    unit: str = "step"

    def __post_init__(self):
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "keep", tuple(float(a) for a in self.keep))
        if self.unit not in UNITS:
            raise ValueError(f"`unit` must be one of {UNITS}, got {self.unit!r}.")
        if not self.points or len(self.points) != len(self.keep):
            raise ValueError(f"`points` and `keep` must be non-empty and of equal length, got {len(self.points)} "
                             f"points {list(self.points)} and {len(self.keep)} keep ratios {list(self.keep)}.")
        if any(not 0.0 < a <= 1.0 for a in self.keep):
            raise ValueError(f"`keep` ratios must lie in (0, 1], got {list(self.keep)}.")
        if self.unit == "step":
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.points):
                raise ValueError(f"step `points` must be non-negative integers, got {list(self.points)}.")
            if any(b <= a for a, b in zip(self.points, self.points[1:])):
                raise ValueError(f"step `points` must increase strictly, got {list(self.points)}.")
        elif any(s <= 0 for s in self.points) or any(b >= a for a, b in zip(self.points, self.points[1:])):
            raise ValueError(f"sigma `points` must be positive and decrease strictly, got {list(self.points)}.")

    def steps(self, num_steps, sigmas=None):
        """The pruning steps for a loop of `num_steps` passes (`sigmas`: each pass's noise level, needed for
        `unit="sigma"`). Every step must come before the last one, which makes the final image."""
        points = self.points
        if self.unit == "sigma":
            if sigmas is None or len(sigmas) != num_steps:
                raise ValueError(f"sigma pruning points need the noise level of each of the {num_steps} steps.")
            points = []
            for sigma in self.points:
                # a relative tolerance: a sigma recorded in float64 must find its own step when read back in float32
                below = [i for i, level in enumerate(sigmas) if level <= sigma * (1 + SIGMA_RTOL)]
                if not below:
                    raise ValueError(f"no step of this schedule reaches sigma {sigma} (lowest sigma "
                                     f"{min(sigmas):.4g}).")
                points.append(below[0])
            if any(b <= a for a, b in zip(points, points[1:])):
                raise ValueError(f"sigma points {list(self.points)} fall on steps {points} of this {num_steps}-step "
                                 f"schedule; two stages on one step. Use fewer points or more steps.")
        if points[-1] >= num_steps - 1:
            raise ValueError(f"pruning steps must be below the last step {num_steps - 1} of a {num_steps}-step "
                             f"loop (the final image is judged by the clean reward), got {list(points)}.")
        return tuple(points)

    def to_dict(self):
        return {"points": list(self.points), "keep": list(self.keep), "unit": self.unit}


DEFAULT_SCHEDULE = PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5))  # single reward, T = 20
DEFAULT_MULTI_SCHEDULE = PruningSchedule((4, 6, 11), (0.4, 0.5, 0.6))  # several rewards by rank sum, T = 20


def default_schedule(num_rewards=1, num_steps=REFERENCE_STEPS):
    """TTSnap's default schedule (single or multi-reward), its steps scaled from 20 to `num_steps` by the
    fraction of denoiser passes done: `s' = round((s + 1) * num_steps / 20) - 1`. Few-step models (FLUX schnell,
    LCM, Turbo at 4 steps) get the same overall survivor fraction: stages that land on one step merge (their keep
    ratios multiply) and stages at or past the last step fold into the last one before it."""
    schedule = DEFAULT_SCHEDULE if num_rewards == 1 else DEFAULT_MULTI_SCHEDULE
    if num_steps == REFERENCE_STEPS:
        return schedule
    if num_steps < 2:
        raise ValueError(f"pruning needs a step before the last one; a {num_steps}-step loop has none (search it "
                         "with strategy best_of_n).")
    merged = {}
    for s, keep in zip(schedule.points, schedule.keep):
        step = min(max(0, round((s + 1) * num_steps / REFERENCE_STEPS) - 1), num_steps - 2)
        merged[step] = merged.get(step, 1.0) * keep
    steps = tuple(sorted(merged))
    return PruningSchedule(steps, tuple(merged[s] for s in steps))


@dataclass(frozen=True)
class CostModel:
    """Cost of a search: `nfe_per_step` per candidate per step, `reward_cost` per reward call.

    Args:
        num_steps (`int`): loop passes to the final image, T.
        nfe_per_step (`int`): denoiser evaluations per candidate per step (2 with CFG).
        reward_cost (`int` or `float`): NFE-equivalents charged per reward call (image x reward model); a float
            is a measured ratio (`noisekit.search.timing.TimedCost.reward_cost`).
        num_rewards (`int`): reward models scoring each image at each stage.
        stage_nfe (`int`): denoiser evaluations the noise stages spend on each candidate before sampling (NLG:
            2 per iteration), charged to every candidate started.
        final_reward_cost (`int` or `float`, *optional*): NFE-equivalents per reward call on a final image, when
            it differs from a preview's (previews scored by a latent reward decode nothing; the final images are
            decoded and judged by the clean rewards); `None` charges `reward_cost` for both.
    """

    num_steps: int
    nfe_per_step: int = 1
    reward_cost: int | float = 1
    num_rewards: int = 1
    stage_nfe: int = 0
    final_reward_cost: int | float | None = None

    def __post_init__(self):
        for name in ("num_steps", "nfe_per_step", "num_rewards"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(self.stage_nfe, bool) or not isinstance(self.stage_nfe, int) or self.stage_nfe < 0:
            raise ValueError(f"`stage_nfe` must be a non-negative integer, got {self.stage_nfe!r}.")
        check_reward_cost(self.reward_cost)
        if self.final_reward_cost is not None:
            check_reward_cost(self.final_reward_cost)

    @classmethod
    def for_sampler(cls, sampler, reward_cost=1, num_rewards=1, stage_nfe=0, final_reward_cost=None):
        return cls(sampler.num_steps, sampler.nfe_per_step, reward_cost, num_rewards, stage_nfe, final_reward_cost)

    @property
    def final_cost(self):
        """NFE-equivalents per reward call on a final image."""
        return self.reward_cost if self.final_reward_cost is None else self.final_reward_cost

    def total(self, nfe, reward_calls, final_calls=0):
        """`nfe + reward_cost * (reward_calls - final_calls) + final_cost * final_calls`: `reward_calls` counts
        every call, `final_calls` those on final images. With a measured (float) ratio, rounded to 6 decimals so
        that the same counts always give the same number."""
        if not 0 <= final_calls <= reward_calls:
            raise ValueError(f"`final_calls` must lie in [0, reward_calls = {reward_calls}], got {final_calls!r}.")
        total = nfe + self.reward_cost * (reward_calls - final_calls) + self.final_cost * final_calls
        return total if isinstance(total, int) else round(total, 6)

    def realised(self, num_candidates, steps=(), keep=()):
        """The realised cost of a run from `num_candidates`: best-of-N when `steps` is empty, else TTSnap."""
        if not steps:
            nfe, calls = self.best_of_n(num_candidates)
            return self.total(nfe, calls, calls)
        nfe, calls, counts = self.ttsnap(num_candidates, steps, keep)
        return self.total(nfe, calls, counts[-1] * self.num_rewards)

    def best_of_n(self, num_candidates):
        """`(nfe, reward_calls)` of best-of-N: every candidate denoised fully and scored once per reward."""
        nfe = num_candidates * (self.num_steps * self.nfe_per_step + self.stage_nfe)
        return nfe, num_candidates * self.num_rewards

    def ttsnap(self, num_candidates, steps, keep):
        """`(nfe, reward_calls, survivors)` of a TTSnap run with `n_0 = num_candidates` (realised, rounded counts):
        NFE = n_0 (s_1 + 1) + sum_{k>=1} n_k (s_{k+1} - s_k) with s_{K+1} = T - 1; reward calls =
        num_rewards * sum_{k=0}^{K} n_k, of which num_rewards * n_K judge final images."""
        counts = survivor_counts(num_candidates, keep)
        boundaries = [-1, *steps, self.num_steps - 1]
        passes = sum(n * (b - a) for n, a, b in zip(counts, boundaries, boundaries[1:]))
        nfe = passes * self.nfe_per_step + num_candidates * self.stage_nfe
        return nfe, sum(counts) * self.num_rewards, counts


def check_reward_cost(reward_cost):
    """`reward_cost` if it is a finite number >= 0 (NFE-equivalents per reward call), else a ValueError."""
    if (isinstance(reward_cost, bool) or not isinstance(reward_cost, (int, float)) or not math.isfinite(reward_cost)
            or reward_cost < 0):
        raise ValueError(f"`reward_cost` must be a finite number >= 0 (NFE-equivalents per reward call), got "
                         f"{reward_cost!r}.")
    return reward_cost


def survivor_counts(num_candidates, keep):
    """`[n_0, n_1, ..., n_K]` with n_k = max(1, round(n_{k-1} * alpha_k)) (Python's round, as TTSnap's code)."""
    counts = [num_candidates]
    for alpha in keep:
        counts.append(max(1, round(counts[-1] * alpha)))
    return counts


def ttsnap_candidate_cost(steps, keep, num_steps, step_cost, reward_cost, formula="expected", final_cost=None):
    """Expected cost of one TTSnap candidate (fractions P_k, no rounding), in the units of `step_cost` (x) and
    `reward_cost` (y; `final_cost`, y_f, for the final images when it differs):
    C = sum_k P_{k-1} ((s_k - s_{k-1}) x + y) + P_K ((T - 1 - s_K) x + y_f), P_0 = 1.

    `formula="expected"` takes s_0 = -1 (s + 1 passes reach step s); `"official"` takes s_0 = 0 as TTSnap's
    simulator does, one step per candidate short.
    """
    if formula not in ("expected", "official"):
        raise ValueError(f"`formula` must be 'expected' or 'official', got {formula!r}.")
    boundaries = [-1 if formula == "expected" else 0, *steps, num_steps - 1]
    fraction, cost = 1.0, 0.0
    final_cost = reward_cost if final_cost is None else final_cost
    for k, (a, b) in enumerate(zip(boundaries, boundaries[1:])):
        cost += fraction * ((b - a) * step_cost + (reward_cost if k < len(keep) else final_cost))
        if k < len(keep):
            fraction *= keep[k]
    return cost


def plan_best_of_n(budget, cost):
    """The largest N whose best-of-N cost fits `budget` (an int of NFE-equivalents) under `CostModel` `cost`."""
    per_candidate = cost.realised(1)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < per_candidate:
        raise ValueError(f"`budget` must be an integer of at least {math.ceil(per_candidate)} (one full candidate: "
                         f"{cost.num_steps} steps x {cost.nfe_per_step} NFE + {cost.num_rewards} reward call(s) x "
                         f"{cost.final_cost}), got {budget!r}.")
    count = budget // per_candidate
    while cost.realised(count + 1) <= budget:  # a float ratio's rounding may leave one more
        count += 1
    while cost.realised(count) > budget:
        count -= 1
    return int(count)


def plan_ttsnap(budget, cost, steps, keep, formula="exact", step_cost=None, call_cost=None):
    """N0, the number of candidates TTSnap starts from under `budget`.

    Args:
        budget: integer NFE-equivalents (`formula="exact"`), or any number in the units of `step_cost` /
            `call_cost` for the other formulas.
        cost (`CostModel`): the run's accounting.
        steps, keep: resolved pruning steps and keep ratios.
        formula (`str`): `"exact"` (default): the largest n_0 whose realised, rounded cost fits the budget, so
            the run never overspends. `"expected"`: floor(B / C) with the corrected expected cost C.
            `"official"`: floor(B / C) with TTSnap's simulator formula (one step short per candidate); use it to
            reproduce published numbers only, it can overspend.
        step_cost, call_cost: x and y for the formulas (default: `nfe_per_step`, and `reward_cost * num_rewards`
            for previews and `final_cost * num_rewards` for the final images).

    Examples:
        >>> cost = CostModel(num_steps=20)
        >>> plan_ttsnap(2000, cost, (2, 6, 11), (0.4, 0.4, 0.5), "official", step_cost=9.9, call_cost=1.2)  # 38
    """
    if formula not in FORMULAS:
        raise ValueError(f"`formula` must be one of {FORMULAS}, got {formula!r}.")
    if formula != "exact":
        x = cost.nfe_per_step if step_cost is None else step_cost
        y = cost.reward_cost * cost.num_rewards if call_cost is None else call_cost
        y_final = cost.final_cost * cost.num_rewards if call_cost is None else call_cost
        n0 = int(budget // ttsnap_candidate_cost(steps, keep, cost.num_steps, x, y, formula, y_final))
        if n0 < 1:
            raise ValueError(f"`budget` {budget!r} is below the expected cost of one TTSnap candidate.")
        return n0
    minimum = cost.realised(1, steps, keep)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < minimum:
        raise ValueError(f"`budget` must be an integer of at least {math.ceil(minimum)} (one TTSnap candidate run to "
                         f"the end with its reward calls), got {budget!r}.")
    # the realised cost never decreases with n_0 (each n_k is monotone in n_0): walk up by doubling, then bisect
    fits = lambda n: cost.realised(n, steps, keep) <= budget  # noqa: E731
    low, high = 1, 2
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low
