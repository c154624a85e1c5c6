"""Calibrate pruning offline: record every candidate's reward at every step once, then replay any schedule.

A `TrajectoryTable` holds, per prompt and seed, the preview reward at each step `s < T - 1` and the clean reward
of the final image at `s = T - 1` (TTSnap's reward tensor r[p, i, s]). `simulate` replays a TTSnap run on it with
the selection code of the online search, so it picks what `noisekit.search.search` picks on the same seeds;
`evaluate` follows TTSnap's Monte-Carlo protocol (random subsets of the trajectory pool, shared by all prompts);
`omega` is TTSnap's metric, the gain in area under the reward-vs-budget curve over best-of-N (Sec. 3 of the
reference notes), and `bon_equivalent` the best-of-N size that matches a method's reward.

Examples:
    >>> table = record_table(sampler, {"shapes-judge": judge}, seeds=range(64), preview_rewards={"shapes-judge": naj})
    >>> table.save("runs/table.safetensors")
    >>> calib, held = table.split(range(0, 50)), table.split(range(50, 100))
    >>> best = grid_search(calib, held, budget=2000)[0]
"""

import itertools
import json
import math
import os
from dataclasses import dataclass

import torch

from .budget import CostModel, PruningSchedule, default_schedule, plan_best_of_n, plan_ttsnap
from ..core.candidates import from_seeds
from .previews import score_previews
from .strategies import Flight, _score, as_reward_dict, preview_view, rank_sum, step_sigmas, top_positions


@dataclass
class TrajectoryTable:
    """Rewards of `len(seeds)` trajectories per prompt at every step: `scores[name]` is `(P, N, T)` float32."""

    prompts: list
    seeds: list
    sigmas: list  # noise level of each step's preview (T,)
    nfe_per_step: int
    scores: dict

    @property
    def num_steps(self):
        return len(self.sigmas)

    def cost_model(self, reward_cost=1):
        return CostModel(self.num_steps, self.nfe_per_step, reward_cost, len(self.scores))

    def split(self, prompt_indices):
        """The table restricted to some prompts (a calibration or held-out split)."""
        rows = list(prompt_indices)
        return TrajectoryTable([self.prompts[i] for i in rows], list(self.seeds), list(self.sigmas),
                               self.nfe_per_step, {n: v[rows] for n, v in self.scores.items()})

    def save(self, path):
        from safetensors.torch import save_file

        meta = {"prompts": self.prompts, "seeds": self.seeds, "sigmas": self.sigmas,
                "nfe_per_step": self.nfe_per_step, "rewards": list(self.scores)}
        save_file({f"scores/{n}": v.contiguous() for n, v in self.scores.items()}, str(path),
                  metadata={"noisekit_trajectory_table": json.dumps(meta)})

    @classmethod
    def load(cls, path):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if "noisekit_trajectory_table" not in meta:
                raise ValueError(f"{path} is not a noisekit trajectory table (no `noisekit_trajectory_table` metadata).")
            meta = json.loads(meta["noisekit_trajectory_table"])
            scores = {n: f.get_tensor(f"scores/{n}") for n in meta["rewards"]}
        return cls(meta["prompts"], meta["seeds"], meta["sigmas"], meta["nfe_per_step"], scores)


@torch.no_grad()
def record_table(sampler, rewards, seeds, preview_rewards=None, micro_batch_size=None, progress=None):
    """Run every seed of every prompt of `sampler` to the end, scoring the x0 preview at each step with
    `preview_rewards` (default: the clean rewards through `ignore_sigma`) and the final image with `rewards`."""
    rewards = as_reward_dict(rewards)
    preview_rewards = ({n: preview_view(r) for n, r in rewards.items()} if preview_rewards is None
                       else as_reward_dict(preview_rewards))
    if set(preview_rewards) != set(rewards):
        raise ValueError(f"`preview_rewards` must name the rewards {sorted(rewards)}, got {sorted(preview_rewards)}.")
    seeds, sigmas, T = list(seeds), step_sigmas(sampler), sampler.num_steps
    scores = {n: torch.zeros(len(sampler.prompts), len(seeds), T) for n in rewards}
    for p, prompt in enumerate(sampler.prompts):
        flight = Flight(sampler, from_seeds(sampler.shape, seeds, p), micro_batch_size)
        for s in range(T - 1):
            x0 = flight.advance(s + 1, preview_step=s)
            # latent preview rewards read x0 itself; the decode runs only for those that read images
            previews, _ = score_previews(preview_rewards, x0, prompt, sigma=sigmas[s], decode=flight.images)
            for n, v in previews.items():
                scores[n][p, :, s] = v
        flight.advance(T)
        for n, v in _score(rewards, flight.images(), prompt).items():
            scores[n][p, :, T - 1] = v
        if progress is not None:
            progress.update(1)
    return TrajectoryTable(list(sampler.prompts), seeds, sigmas, sampler.nfe_per_step, scores)


def simulate(table, ids, steps, keep):
    """Replay TTSnap on trajectories `ids` (columns of the table, in the order the online run has its seeds) for
    every prompt at once. Returns `(best, kept)`: the chosen column per prompt `(P,)` and, per stage, the kept
    columns `(P, n_k)`. With `steps=()` it is best-of-N."""
    ids = torch.as_tensor(list(ids), dtype=torch.long)
    prompts = len(table.prompts)
    alive = ids.expand(prompts, -1)
    kept = []
    for step, alpha in zip(steps, keep):
        values = rank_sum({n: v[torch.arange(prompts)[:, None], alive, step] for n, v in table.scores.items()})
        alive = alive.gather(1, top_positions(values, max(1, round(alive.shape[1] * alpha))))
        kept.append(alive)
    final = rank_sum({n: v[torch.arange(prompts)[:, None], alive, -1] for n, v in table.scores.items()})
    return alive.gather(1, top_positions(final, 1))[:, 0], kept


def simulate_many(table, ids, steps, keep):
    """`simulate` for several subsets at once: `ids` `(I, n)` (one subset of columns per row) -> the chosen column
    of every prompt under every subset, `(I, P)`. Each (subset, prompt) pair is replayed as `simulate` does."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    alive = ids[:, None, :].expand(-1, len(table.prompts), -1)  # (I, P, n)

    def at(step):  # gather from one contiguous step column: far faster than indexing (P, N, T) three ways
        columns = {n: v[:, :, step].contiguous() for n, v in table.scores.items()}
        if len(columns) == 1:  # a lone reward's rank sum is elementwise: apply it to the column, once
            columns = {"": rank_sum(columns)}
        values = {n: c.expand(len(ids), -1, -1).gather(2, alive) for n, c in columns.items()}
        return values[""] if "" in values else rank_sum(values)

    for step, alpha in zip(steps, keep):
        alive = alive.gather(2, top_positions(at(step), max(1, round(alive.shape[2] * alpha))))
    return alive.gather(2, top_positions(at(-1), 1))[..., 0]


def evaluate(table, budgets, schedule=None, reward_cost=1, iterations=40, seed=0, formula="exact", *, cost=None):
    """Mean final clean reward of the chosen image at each budget, TTSnap's Monte-Carlo protocol.

    For each budget, N (best-of-N, `schedule=None`) or N0 (TTSnap) comes from the budget; each iteration draws
    one random subset of that many trajectories, shared by all prompts, and the result is averaged over prompts
    and iterations. Returns `{reward name: (len(budgets),) float64}` and the candidate counts used. `cost`
    (a `CostModel`) replaces the table's own accounting (e.g. FLOPs instead of NFE).
    """
    cost = cost or table.cost_model(reward_cost)
    steps = schedule.steps(table.num_steps, table.sigmas) if schedule is not None else ()
    keep = schedule.keep if schedule is not None else ()
    generator = torch.Generator().manual_seed(seed)
    means = {n: torch.zeros(len(budgets), dtype=torch.float64) for n in table.scores}
    counts = []
    for b, budget in enumerate(budgets):
        n = plan_ttsnap(budget, cost, steps, keep, formula) if steps else plan_best_of_n(budget, cost)
        if n > len(table.seeds):
            raise ValueError(f"budget {budget} asks for {n} candidates; the table holds {len(table.seeds)} per "
                             f"prompt. Record more seeds or lower the budgets.")
        counts.append(n)
        ids = torch.stack([torch.randperm(len(table.seeds), generator=generator)[:n].sort().values
                           for _ in range(iterations)])
        best = simulate_many(table, ids, steps, keep)  # (iterations, P)
        for name, v in table.scores.items():
            means[name][b] = v[torch.arange(len(table.prompts)), best, -1].double().mean()
    return means, counts


def simpson(y, x):
    """Composite Simpson's rule on possibly uneven `x` (with Cartwright's correction for an odd last interval,
    as `scipy.integrate.simpson` >= 1.11)."""
    y, x = [float(v) for v in y], [float(v) for v in x]
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"`simpson` needs at least 3 points and equal lengths, got {len(x)} x and {len(y)} y.")

    def pairs(last):
        total = 0.0
        for i in range(0, last, 2):
            h0, h1 = x[i + 1] - x[i], x[i + 2] - x[i + 1]
            total += (h0 + h1) / 6 * (y[i] * (2 - h1 / h0) + y[i + 1] * (h0 + h1) ** 2 / (h0 * h1)
                                      + y[i + 2] * (2 - h0 / h1))
        return total

    intervals = len(x) - 1
    if intervals % 2 == 0:
        return pairs(intervals)
    h0, h1 = x[-2] - x[-3], x[-1] - x[-2]
    alpha = (2 * h1**2 + 3 * h0 * h1) / (6 * (h0 + h1))
    beta = (h1**2 + 3 * h0 * h1) / (6 * h0)
    eta = h1**3 / (6 * h0 * (h0 + h1))
    return pairs(intervals - 1) + alpha * y[-1] + beta * y[-2] - eta * y[-3]


def omega(budgets, method, best_of_n):
    """TTSnap's Omega in percent: 100 (A_m - A_b) / A_b, with A = integral over the budget grid of
    (R(B) - R_bon(B_1)) dB (composite Simpson): the area gain over best-of-N above best-of-N's first value."""
    y0 = float(best_of_n[0])
    area_method = simpson([float(v) - y0 for v in method], budgets)
    area_bon = simpson([float(v) - y0 for v in best_of_n], budgets)
    if area_bon <= 0:
        raise ValueError(f"best-of-N does not improve over its first budget on this grid (area {area_bon:.4g}); "
                         f"Omega is undefined. Widen the budget grid.")
    return 100.0 * (area_method - area_bon) / area_bon


def _log_comb(a, b):
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def expected_best_of_n(final, n):
    """Exact E[max of a random n-subset] of each row of `final` `(P, N)`, averaged over rows (no Monte Carlo):
    the j-th smallest of N is the max with probability C(j - 1, n - 1) / C(N, n)."""
    values = torch.as_tensor(final, dtype=torch.float64).sort(dim=-1).values
    pool = values.shape[-1]
    if not 1 <= n <= pool:
        raise ValueError(f"`n` must lie in [1, {pool}], got {n}.")
    weights = torch.zeros(pool, dtype=torch.float64)
    for j in range(n, pool + 1):  # the j-th smallest (1-based) can be the max only when j >= n
        weights[j - 1] = math.exp(_log_comb(j - 1, n - 1) - _log_comb(pool, n))
    return float((values * weights).sum(-1).mean())


def bon_equivalent(table, reward, name=None):
    """The best-of-N size (fractional, interpolated) whose exact expected reward equals `reward`: how many full
    samples best-of-N needs to match a method. `inf` when even N = pool size falls short."""
    name = name or next(iter(table.scores))
    final = table.scores[name][:, :, -1]
    curve = [expected_best_of_n(final, n) for n in range(1, len(table.seeds) + 1)]
    if reward <= curve[0]:
        return 1.0
    for n in range(1, len(curve)):
        if curve[n] >= reward:
            return n + (reward - curve[n - 1]) / (curve[n] - curve[n - 1])
    return float("inf")


def kendall_tau(scores, reference):
    """Mean over rows (prompts) of Kendall's tau-a between `scores` and `reference`, both `(P, N)`: how well a
    step's scores order the candidates of a prompt as their final reward does."""
    a, b = torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(reference, dtype=torch.float64)
    n = a.shape[-1]
    if a.shape != b.shape or n < 2:
        raise ValueError(f"`scores` and `reference` must share a shape (P, N >= 2), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    concordance = (a[..., :, None] - a[..., None, :]).sign() * (b[..., :, None] - b[..., None, :]).sign()
    return float((concordance.sum((-1, -2)) / (n * (n - 1))).mean())


def schedule_grid(num_steps, max_stages=3, num_points=8, keep=(0.4, 0.5, 0.6)):
    """Candidate schedules: 1..`max_stages` pruning steps out of `num_points` evenly spread steps below T - 1,
    each stage with a keep ratio from `keep`."""
    points = sorted({round(i * (num_steps - 2) / max(1, num_points - 1)) for i in range(num_points)})
    for stages in range(1, max_stages + 1):
        for steps in itertools.combinations(points, stages):
            for ratios in itertools.product(keep, repeat=stages):
                yield PruningSchedule(steps, ratios)


def grid_search(calibration, heldout, budget, schedules=None, reward_cost=1, iterations=20, seed=0, top_k=5, *,
                cost=None):
    """Rank `schedules` (default `schedule_grid`) by the mean reward at `budget` on the calibration table, then
    report the `top_k` on the held-out table next to best-of-N on both. Rewards: the first reward's, or the mean
    of each reward's for several (the choice is by rank sum either way). `cost`: as in `evaluate`."""
    schedules = list(schedules) if schedules is not None else list(schedule_grid(calibration.num_steps))
    cost = cost or calibration.cost_model(reward_cost)
    pool = min(len(t.seeds) for t in (calibration, heldout))

    def fits(schedule):  # a schedule whose N0 at `budget` exceeds the recorded candidates cannot be replayed
        try:
            steps = schedule.steps(calibration.num_steps, calibration.sigmas)
            return plan_ttsnap(budget, cost, steps, schedule.keep) <= pool
        except ValueError:
            return False

    schedules = [s for s in schedules if fits(s)]
    if not schedules:
        raise ValueError(f"no schedule fits budget {budget} with {pool} recorded candidates per prompt.")

    def score(table, schedule):
        means, _ = evaluate(table, [budget], schedule, reward_cost, iterations, seed, cost=cost)
        return float(sum(v[0] for v in means.values()) / len(means))

    ranked = sorted(((score(calibration, s), i) for i, s in enumerate(schedules)), key=lambda t: (-t[0], t[1]))
    bon = {"calibration": score(calibration, None), "heldout": score(heldout, None)}
    return [{"schedule": schedules[i].to_dict(), "calibration": value, "heldout": score(heldout, schedules[i]),
             "best_of_n": bon} for value, i in ranked[:top_k]]


# ------------------------------------------------------------------------------------ calibrated schedules

SCHEDULE_FILE = "schedule.json"
SCHEDULE_FORMAT = "noisekit-pruning-schedule"


def in_sigma_units(schedule, sigmas):
    """A step schedule as the noise levels its steps read (`sigmas[s]`), so it applies to any step count: each
    sigma point resolves to the first step at or below it, which is `s` again on the recorded schedule."""
    if schedule.unit == "sigma":
        return schedule
    return PruningSchedule(tuple(float(sigmas[s]) for s in schedule.points), schedule.keep, unit="sigma")


def calibration_objective(table, schedule, budgets, *, cost, iterations, seed, formula="exact"):
    """Mean over `budgets` of the mean final reward (each reward divided by the spread of its final values, so
    several rewards weigh alike): proportional to the area under the reward-vs-budget curve that Omega compares."""
    means, _ = evaluate(table, budgets, schedule, iterations=iterations, seed=seed, formula=formula, cost=cost)
    spread = {n: float(v[:, :, -1].double().std()) or 1.0 for n, v in table.scores.items()}
    return float(sum(v.mean() / spread[n] for n, v in means.items()) / len(means))


def calibrate_schedule(table, *, budgets, cost=None, schedules=None, iterations=10, refine=20,
                       refine_iterations=40, seed=0, formula="exact", unit="sigma"):
    """Pick the pruning schedule that fits `table`'s model and reward: grid search over `schedules` (default
    `schedule_grid`) of the area under the reward-vs-budget curve on `table` (a calibration split), at
    `iterations` Monte-Carlo subsets, then the `refine` best again at `refine_iterations`.

    Args:
        table (`TrajectoryTable`): the calibration prompts (keep held-out prompts out of it).
        budgets (`list[int]`): the budget grid (in `cost`'s units) the curve is integrated over.
        cost (`CostModel`, *optional*): accounting (default: the table's, 1 per reward call).
        formula (`str`): how N0 follows from a budget (`plan_ttsnap`).
        unit (`str`): `"sigma"` (default: portable across step counts) or `"step"` for the returned schedule.

    Returns:
        `(schedule, report)`: the best schedule and `{"objective", "default_objective", "best_of_n_objective",
        "ranked", "schedules_searched", ...}` (objective: mean reward over the budgets, reward-spread units).
    """
    if unit not in ("sigma", "step"):
        raise ValueError(f"`unit` must be 'sigma' or 'step', got {unit!r}.")
    if len(budgets) < 1:
        raise ValueError("`budgets` must hold at least one budget.")
    cost = cost or table.cost_model()
    schedules = list(schedules) if schedules is not None else list(schedule_grid(table.num_steps))
    schedules = [s for s in schedules if _replayable(table, s, budgets, cost, formula)]
    if not schedules:
        raise ValueError(f"no schedule fits budgets {budgets[0]}..{budgets[-1]} with {len(table.seeds)} recorded "
                         f"candidates per prompt.")
    score = lambda s, its: calibration_objective(table, s, budgets, cost=cost, iterations=its, seed=seed,  # noqa
                                                 formula=formula)
    coarse = sorted(((score(s, iterations), i) for i, s in enumerate(schedules)), key=lambda t: (-t[0], t[1]))
    fine = sorted(((score(schedules[i], refine_iterations), i) for _, i in coarse[:refine]),
                  key=lambda t: (-t[0], t[1]))
    best = schedules[fine[0][1]]
    report = {"objective": fine[0][0], "schedules_searched": len(schedules), "budgets": list(budgets),
              "iterations": [iterations, refine_iterations], "formula": formula,
              "best_of_n_objective": score(None, refine_iterations),
              "ranked": [{"schedule": schedules[i].to_dict(), "objective": v} for v, i in fine]}
    try:
        default = default_schedule(len(table.scores), table.num_steps)
    except ValueError:  # too few steps for the paper's schedule
        default = None
    if default is not None and _replayable(table, default, budgets, cost, formula):
        report["default_objective"] = score(default, refine_iterations)
    chosen = in_sigma_units(best, table.sigmas) if unit == "sigma" else best
    report["schedule_steps"] = best.to_dict()
    return chosen, report


def _replayable(table, schedule, budgets, cost, formula):
    """Whether `schedule` starts at least one candidate at the smallest budget and no more than the table holds
    at the largest."""
    try:
        steps = schedule.steps(table.num_steps, table.sigmas)
        return (plan_ttsnap(budgets[0], cost, steps, schedule.keep, formula) >= 1
                and plan_ttsnap(budgets[-1], cost, steps, schedule.keep, formula) <= len(table.seeds))
    except ValueError:
        return False


def save_schedule(path, schedule, *, calibration=None):
    """Write `schedule` as JSON (`path`: a file, or a reward folder to hold `schedule.json`), with a free-form
    `calibration` record (table, budgets, objective...). Returns the file written."""
    path = str(path)
    if os.path.isdir(path):
        path = os.path.join(path, SCHEDULE_FILE)
    record = {"format": SCHEDULE_FORMAT, "version": 1, "schedule": schedule.to_dict(),
              "calibration": calibration or {}}
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def load_schedule(path):
    """The `PruningSchedule` of a file written by `save_schedule`."""
    with open(path) as f:
        record = json.load(f)
    if not isinstance(record, dict) or record.get("format") != SCHEDULE_FORMAT:
        raise ValueError(f"{path} is not a noisekit pruning schedule (no format {SCHEDULE_FORMAT!r}).")
    entry = record.get("schedule") or {}
    try:
        return PruningSchedule(tuple(entry["points"]), tuple(entry["keep"]), entry.get("unit", "step"))
    except KeyError as missing:
        raise ValueError(f"{path}: the schedule has no {missing} entry.") from None


def shipped_schedule(reward_path):
    """The schedule calibrated for a (noise-aware) reward: `schedule.json` in its folder, or None when it has
    none (then TTSnap's default applies)."""
    if reward_path is None:
        return None
    path = os.path.join(str(reward_path), SCHEDULE_FILE)
    return load_schedule(path) if os.path.isfile(path) else None


def schedule_for_reward(name, *, path=None):
    """The calibrated schedule of the reward registered as `name`, loaded from `path` (its folder) or, for a
    shipped model such as `shapes-judge-noise-aware`, from its asset folder; None when it has none."""
    if path is None:
        from ..shapes.assets import ASSET_NAMES, assets_dir

        if name not in ASSET_NAMES:
            return None
        path = assets_dir() / name
    return shipped_schedule(path)


def named_schedule(name, *, reward_path=None, num_rewards=1, num_steps=20):
    """A schedule by name: `"paper"` (TTSnap's default, scaled to `num_steps`) or `"calibrated"` (the one shipped
    beside the reward at `reward_path`)."""
    if name == "paper":
        return default_schedule(num_rewards, num_steps)
    if name == "calibrated":
        schedule = shipped_schedule(reward_path)
        if schedule is None:
            raise ValueError(f"no calibrated schedule ({SCHEDULE_FILE}) beside the reward at {reward_path}.")
        return schedule
    raise ValueError(f"schedule name must be 'paper' or 'calibrated', got {name!r}.")
