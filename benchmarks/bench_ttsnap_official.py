"""TTSnap's published FLUX and SDXL reward trajectories: a schedule calibrated on half the prompts, reported on the
other half, with TTSnap's cost formula and with the corrected one.

    python benchmarks/bench_ttsnap_official.py --values TTSnap/simulation/values \\
        --cache runs/ttsnap_tables --output benchmarks/results/ttsnap_official.json

`--values` is the `simulation/values` folder of TTSnap's repository (github.com/TerrysLearning/TTSnap, ~164 MB
of YAML; read from there, never copied into this repository). For every model (FLUX.1-dev, RealVisXL-V4) and
reward (HPS, ImageReward, PickScore), with previews scored by the noise-aware (`naft`) rewards:

1. **Reproduction.** TTSnap's own protocol on all 200 prompts: the paper's schedule [2, 6, 11] x [0.4, 0.4, 0.5],
   budgets 400..4000 TFLOPs in steps of 200, 9.9 TFLOPs per step and 1.2 per reward call, N0 = floor(B / C) with
   its cost formula (one step per candidate short), 50 Monte-Carlo subsets; Omega to compare with its notebooks
   (FLUX-HPS: 27.23 %).
2. **Calibration.** `calibrate_schedule` on prompts 0-99 (area under the curve over the budget grid, corrected
   exact cost: s + 1 passes to reach step s, realised rounded counts within the budget).
3. **Held-out report.** On prompts 100-199, for the paper's schedule and the calibrated one, under three
   accountings (`official`: TTSnap's formula; `expected`: floor(B / C) with the off-by-one fixed; `exact`: the
   largest N0 whose realised cost fits): the mean final reward per budget and Omega; and the share of best-of-N's
   cost TTSnap needs to reach best-of-N's reward (exact E[max of N]) for every N of the grid (2..20), the cost
   counted as TTSnap's formula counts it and as it is spent (exact).
4. **Limits.** Per step, the previews' Kendall tau with the final reward; the calibrated schedule's share with
   perfect previews; and, optimistic for any calibration of these previews, the best schedule of TTSnap's form that
   a greedy local search finds on the held-out prompts themselves (`--hindsight_iterations`).

Runtime on 2 shared CPU cores: reading the YAML ~10-50 s per model and reward (cached with `--cache`), the
calibration ~1-3 min, the report ~1 min per model and reward.
"""

import argparse
import math
import os
import sys
import time

import torch

from noisekit.search.budget import DEFAULT_SCHEDULE, PruningSchedule, ttsnap_candidate_cost
from noisekit.search.calibrate import (TrajectoryTable, calibrate_schedule, evaluate, expected_best_of_n,
                                       kendall_tau, omega, schedule_grid, simulate_many)
from noisekit.search.official_tables import (CALL_TFLOPS, COST_UNIT_TFLOPS, MODELS, REWARD_NAMES, REWARDS,
                                             STEP_TFLOPS, official_cost_model, official_scale, read_official_values)
from noisekit.results import write_json

FORMULAS = ("official", "expected", "exact")
NOTEBOOK_OMEGA = {("flux", "hps"): 27.23}  # printed in TTSnap's simulation/ttsnap_single.ipynb (all 200 prompts)
TARGET_SHARE = 0.6


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", required=True, help="TTSnap's simulation/values folder")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS)
    parser.add_argument("--kind", default="naft", choices=["naft", "base"], help="preview rewards")
    parser.add_argument("--cache", default=None, help="folder for the tables as safetensors (read again fast)")
    parser.add_argument("--budgets", default="400:4000:200", help="TFLOP budget grid start:stop:step")
    parser.add_argument("--calibration_prompts", type=int, default=100, help="the first K prompts calibrate")
    parser.add_argument("--iterations", type=int, default=50, help="Monte-Carlo subsets per budget")
    parser.add_argument("--grid_iterations", type=int, default=4, help="subsets per budget in the coarse search")
    parser.add_argument("--refine", type=int, default=15, help="schedules searched again at --iterations")
    parser.add_argument("--grid_budgets", type=int, default=4, help="budgets of the grid used to calibrate")
    parser.add_argument("--grid_points", type=int, default=6, help="candidate pruning steps of the schedule grid")
    parser.add_argument("--hindsight_iterations", type=int, default=20,
                        help="subsets per N0 in the search for the best schedule on the held-out prompts (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(input_args)
    try:
        start, stop, step = (float(v) for v in args.budgets.split(":"))
    except ValueError:
        parser.error(f"--budgets must be start:stop:step in TFLOPs, got {args.budgets!r}.")
    args.tflop_budgets = [start + i * step for i in range(int(round((stop - start) / step)) + 1)]
    return args


def log(args, *parts):
    if not args.quiet:
        print(*parts, file=sys.stderr, flush=True)


def load_table(args, model, reward):
    cached = os.path.join(args.cache, f"{model}_{reward}_{args.kind}.safetensors") if args.cache else None
    if cached and os.path.exists(cached):
        return TrajectoryTable.load(cached)
    began = time.perf_counter()
    table = read_official_values(args.values, model=model, reward=reward, kind=args.kind)
    log(args, f"read {model}/{reward}/{args.kind} {tuple(table.scores[reward].shape)} in "
              f"{time.perf_counter() - began:.1f}s")
    if cached:
        os.makedirs(args.cache, exist_ok=True)
        table.save(cached)
    return table


def units(tflops):
    """TFLOPs -> `official_cost_model`'s integer units (0.1 TFLOPs)."""
    return int(round(tflops / COST_UNIT_TFLOPS))


# -------------------------------------------------------------------------------------------- cost to match


def tflops_of(cost, n0, steps, keep, formula):
    """TFLOPs a TTSnap run from `n0` candidates costs: as spent (`exact`: rounded survivors, s + 1 passes to step
    s) or as a formula charges it (`official` / `expected`: n0 times the expected cost of one candidate)."""
    if formula == "exact":
        return cost.realised(n0, steps, keep) * COST_UNIT_TFLOPS
    return n0 * ttsnap_candidate_cost(steps, keep, cost.num_steps, STEP_TFLOPS, CALL_TFLOPS, formula)


def curve_over_n0(table, schedule, iterations, seed, max_n0=None):
    """TTSnap's mean final reward for n0 = 1..pool, or 1..`max_n0` (Monte-Carlo subsets shared by all prompts)."""
    steps = schedule.steps(table.num_steps, table.sigmas)
    pool, rows = len(table.seeds), torch.arange(len(table.prompts))
    final = next(iter(table.scores.values()))[:, :, -1].double()
    generator = torch.Generator().manual_seed(seed)
    rewards = []
    for n in range(1, min(pool, max_n0 or pool) + 1):
        ids = torch.stack([torch.randperm(pool, generator=generator)[:n].sort().values
                           for _ in range(iterations if n < pool else 1)])
        best = simulate_many(table, ids, steps, schedule.keep)
        rewards.append(float(final[rows, best].mean()))
    return steps, rewards


def match_share(rewards, target, cost_of_n0, bon_cost):
    """Cost at which the best-so-far curve first reaches `target` (linear between n0 and n0 + 1), over
    best-of-N's cost; None when the pool falls short."""
    best, previous = -math.inf, None
    for n0, reward in enumerate(rewards, start=1):
        best = max(best, reward)
        if best >= target:
            if previous is None or best == previous[1]:
                return {"n0": n0, "share": cost_of_n0(n0) / bon_cost}
            f = (target - previous[1]) / (best - previous[1])
            spent = cost_of_n0(previous[0]) + f * (cost_of_n0(n0) - cost_of_n0(previous[0]))
            return {"n0": n0, "share": spent / bon_cost}
        previous = (n0, best)
    return None


def bon_tflops_of(table, n):
    return n * (table.num_steps * STEP_TFLOPS + CALL_TFLOPS)


def match_report(table, schedule, bon_sizes, args):
    """Per best-of-N size: the share of its cost TTSnap needs for its reward, under each formula."""
    cost = official_cost_model(table.num_steps)
    steps, rewards = curve_over_n0(table, schedule, args.iterations, args.seed)
    final = next(iter(table.scores.values()))[:, :, -1]
    out = []
    for n in bon_sizes:
        target = expected_best_of_n(final, n)
        bon_tflops = bon_tflops_of(table, n)
        row = {"best_of_n": n, "reward": target, "bon_tflops": round(bon_tflops, 1)}
        for formula in FORMULAS:
            row[formula] = match_share(rewards, target, lambda k: tflops_of(cost, k, steps, schedule.keep, formula),
                                       bon_tflops)
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ reporting


def arm(table, schedule, budgets, bon, args, formula):
    """Mean final reward per budget (TTSnap's printed scale) and Omega against `bon`."""
    cost = official_cost_model(table.num_steps)
    means, counts = evaluate(table, budgets, schedule, iterations=args.iterations, seed=args.seed, formula=formula,
                             cost=cost)
    (name, values), = means.items()
    rewards = [float(v) for v in values]
    return {"formula": formula, "n0": counts, "reward": [float(official_scale(name, r)) for r in rewards],
            "omega": omega(budgets, rewards, bon)}


def best_of_n_arm(table, budgets, args):
    means, counts = evaluate(table, budgets, None, iterations=args.iterations, seed=args.seed,
                             cost=official_cost_model(table.num_steps))
    (name, values), = means.items()
    rewards = [float(v) for v in values]
    return rewards, {"n": counts, "reward": [float(official_scale(name, r)) for r in rewards]}


def summarize(matches):
    """Largest share over the grid's best-of-N sizes >= 2 per formula (None where the pool fell short), and
    whether it is <= 60 %; the notebooks' point B = 2000 TFLOPs is best-of-10."""
    out = {}
    for formula in FORMULAS:
        shares = {m["best_of_n"]: (None if m[formula] is None else round(m[formula]["share"], 3)) for m in matches
                  if m["best_of_n"] >= 2}
        reached = [v for v in shares.values() if v is not None]
        out[formula] = {"share_by_n": shares, "max_share": max(reached) if reached else None,
                        "share_at_n10": shares.get(10),
                        "all_le_0.6": bool(reached) and len(reached) == len(shares) and max(reached) <= TARGET_SHARE}
    return out


def run_setting(args, model, reward):
    began = time.perf_counter()
    table = load_table(args, model, reward)
    budgets = [units(b) for b in args.tflop_budgets]
    out = {"model": model, "reward": reward, "reward_name": REWARD_NAMES[reward], "kind": args.kind}

    # 1. TTSnap's own protocol on all prompts, the paper's schedule
    bon_all, _ = best_of_n_arm(table, budgets, args)
    reproduced = arm(table, DEFAULT_SCHEDULE, budgets, bon_all, args, "official")
    out["reproduction"] = {"prompts": len(table.prompts), "omega": reproduced["omega"],
                           "notebook_omega": NOTEBOOK_OMEGA.get((model, reward)),
                           "bon_reward_at_2000": None}
    if 2000 in args.tflop_budgets:
        out["reproduction"]["bon_reward_at_2000"] = float(
            official_scale(reward, bon_all[args.tflop_budgets.index(2000)]))
    log(args, f"{model}/{reward}: reproduction Omega {reproduced['omega']:+.2f} % (all prompts, official)")

    # 2. calibration on the first half, corrected exact cost
    k = args.calibration_prompts
    calibration, heldout = table.split(range(k)), table.split(range(k, len(table.prompts)))
    step = max(1, (len(budgets) - 1) // max(1, args.grid_budgets - 1))
    grid_budgets = budgets[::step] if budgets[::step][-1] == budgets[-1] else budgets[::step] + [budgets[-1]]
    tic = time.perf_counter()
    schedule, report = calibrate_schedule(calibration, budgets=grid_budgets, cost=official_cost_model(),
                                          schedules=[DEFAULT_SCHEDULE, *schedule_grid(table.num_steps, num_points=args.grid_points)],
                                          iterations=args.grid_iterations, refine=args.refine,
                                          refine_iterations=args.iterations, seed=args.seed, formula="exact")
    steps_schedule = PruningSchedule(tuple(report["schedule_steps"]["points"]), schedule.keep)
    out["calibration"] = {"prompts": k, "schedule_sigma": schedule.to_dict(),
                          "schedule_steps": steps_schedule.to_dict(), "seconds": round(time.perf_counter() - tic, 1),
                          **{key: report[key] for key in ("objective", "default_objective", "best_of_n_objective",
                                                           "schedules_searched", "iterations")},
                          "grid_budgets_tflops": [b * COST_UNIT_TFLOPS for b in grid_budgets],
                          "top": report["ranked"][:5]}
    log(args, f"{model}/{reward}: calibrated {steps_schedule.points} x {steps_schedule.keep} in "
              f"{out['calibration']['seconds']}s")

    # 3. held-out half
    bon, bon_report = best_of_n_arm(heldout, budgets, args)
    held = {"prompts": len(heldout.prompts), "best_of_n": bon_report, "arms": {}}
    bon_sizes = sorted(set(bon_report["n"]))
    for name, sched in (("paper", DEFAULT_SCHEDULE), ("calibrated", steps_schedule)):
        held["arms"][name] = {"schedule": sched.to_dict(),
                              "by_formula": {f: arm(heldout, sched, budgets, bon, args, f) for f in FORMULAS},
                              "match_best_of_n": match_report(heldout, sched, bon_sizes, args)}
        held["arms"][name]["summary"] = summarize(held["arms"][name]["match_best_of_n"])
    held["limits"] = limits(heldout, steps_schedule, bon_sizes, args)
    out["heldout"] = held
    out["seconds"] = round(time.perf_counter() - began, 1)
    cal = held["arms"]["calibrated"]
    log(args, f"{model}/{reward}: held-out Omega (exact) paper {held['arms']['paper']['by_formula']['exact']['omega']:+.1f}"
              f" calibrated {cal['by_formula']['exact']['omega']:+.1f}; max cost share (exact) "
              f"{cal['summary']['exact']['max_share']}")
    return out


def neighbours(schedule, num_steps):
    """The schedules one move away: a pruning step moved by 1 or 2, a keep ratio by 0.1, a stage dropped, or a
    stage added at any free step (keep 0.5)."""
    if schedule.unit != "step":
        raise ValueError(f"`neighbours` moves step schedules, got unit {schedule.unit!r}.")
    stages = dict(zip(schedule.points, schedule.keep))
    moves = []
    for step, alpha in stages.items():
        rest = {s: a for s, a in stages.items() if s != step}
        moves += [{**rest, step + d: alpha} for d in (-2, -1, 1, 2)
                  if 0 <= step + d <= num_steps - 2 and step + d not in rest]
        moves += [{**rest, step: round(alpha + d, 2)} for d in (-0.1, 0.1) if 0.1 <= alpha + d <= 0.9]
        moves += [rest] if rest else []
    moves += [{**stages, s: 0.5} for s in range(num_steps - 1) if s not in stages]
    return [PruningSchedule(tuple(sorted(m)), tuple(m[s] for s in sorted(m))) for m in moves]


def hindsight_schedule(table, start, args, best_of_n=10):
    """Greedy local search, on `table` itself, for the schedule of TTSnap's form (any steps, any number of stages,
    keep ratios in tenths) that reaches best-of-`best_of_n`'s reward at the lowest corrected cost. Searched on the
    held-out prompts, it fits their noise too: an optimistic estimate (not a proof, the search being local) of what
    any calibration of these previews can reach."""
    cost = official_cost_model(table.num_steps)
    final = next(iter(table.scores.values()))[:, :, -1]
    target, bon_tflops = expected_best_of_n(final, best_of_n), bon_tflops_of(table, best_of_n)

    def share(schedule):  # the pool is cut at 6 x N: a schedule that needs more is no bound worth finding
        steps, rewards = curve_over_n0(table, schedule, args.hindsight_iterations, args.seed, 6 * best_of_n)
        found = match_share(rewards, target, lambda k: tflops_of(cost, k, steps, schedule.keep, "exact"), bon_tflops)
        return math.inf if found is None else found["share"]

    best, value, seen = start, share(start), {start}
    improved = True
    while improved:
        improved = False
        for candidate in neighbours(best, table.num_steps):
            if candidate in seen:
                continue
            seen.add(candidate)
            candidate_value = share(candidate)
            if candidate_value < value - 1e-4:
                best, value, improved = candidate, candidate_value, True
    return best, len(seen)


def limits(table, schedule, bon_sizes, args):
    """What bounds the cost share: how well each step's preview reward orders a prompt's trajectories as the final
    reward does (Kendall tau, per prompt, mean over the first 60 trajectories); the share the same schedule would
    need with perfect previews (every step scored by the final reward); and the share of the best schedule found on
    these prompts themselves (`hindsight_schedule`), with the same previews."""
    (name, scores), = table.scores.items()
    final = scores[:, :60, -1]
    tau = [round(kendall_tau(scores[:, :60, s], final), 3) for s in range(table.num_steps - 1)]
    oracle = TrajectoryTable(table.prompts, table.seeds, table.sigmas, table.nfe_per_step,
                             {name: scores[:, :, -1:].expand_as(scores).contiguous()})
    matches = match_report(oracle, schedule, bon_sizes, args)
    out = {"kendall_tau_by_step": tau, "oracle_previews": summarize(matches)["exact"]}
    if args.hindsight_iterations:
        tic = time.perf_counter()
        best, searched = hindsight_schedule(table, schedule, args)
        out["hindsight"] = {"schedule": best.to_dict(), "schedules_searched": searched,
                            "seconds": round(time.perf_counter() - tic, 1),
                            **summarize(match_report(table, best, bon_sizes, args))["exact"]}
    return out


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_report(result):
    print(f"\nheld-out prompts {result['config']['heldout_prompts']}; budgets {result['config']['budgets_tflops'][0]}"
          f"..{result['config']['budgets_tflops'][-1]} TFLOPs; Omega in %, cost share = TTSnap's cost to reach "
          f"best-of-N's reward / best-of-N's cost (max over N = 2..20 | at N = 10)")
    print(f"{'setting':12s} {'repro':>7s} {'nb':>6s} {'arm':11s} {'schedule':30s} {'Om.off':>7s} {'Om.exp':>7s} "
          f"{'Om.exa':>7s} {'share off':>14s} {'share exact':>14s} {'<=60%':>6s}")
    for s in result["settings"]:
        for name, a in s["heldout"]["arms"].items():
            sched = f"{a['schedule']['points']}x{[round(v, 2) for v in a['schedule']['keep']]}"
            om = [a["by_formula"][f]["omega"] for f in FORMULAS]
            so, se = a["summary"]["official"], a["summary"]["exact"]
            print(f"{s['model'] + '/' + s['reward']:12s} {s['reproduction']['omega']:+7.2f} "
                  f"{fmt(s['reproduction']['notebook_omega'], '+6.2f'):>6s} {name:11s} {sched:30s} "
                  f"{om[0]:+7.1f} {om[1]:+7.1f} {om[2]:+7.1f} "
                  f"{fmt(so['max_share'], '.2f'):>6s} | {fmt(so['share_at_n10'], '.2f'):>5s} "
                  f"{fmt(se['max_share'], '.2f'):>6s} | {fmt(se['share_at_n10'], '.2f'):>5s} "
                  f"{str(se['all_le_0.6']):>6s}")
    print("limits (held-out, calibrated schedule): Kendall tau of the preview at steps 0 / 4 / 8 / 12 with the final "
          "reward; corrected share at N = 10 and worst over N with perfect previews, and with the best schedule "
          "found on the held-out prompts themselves")
    for s in result["settings"]:
        lim = s["heldout"]["limits"]
        tau = lim["kendall_tau_by_step"]
        print(f"  {s['model'] + '/' + s['reward']:12s} tau {tau[0]:+.2f} / {tau[4]:+.2f} / {tau[8]:+.2f} / "
              f"{tau[12]:+.2f}; oracle share {fmt(lim['oracle_previews']['share_at_n10'], '.2f')} | "
              f"worst {fmt(lim['oracle_previews']['max_share'], '.2f')}", end="")
        if "hindsight" in lim:
            h = lim["hindsight"]
            print(f"; hindsight {h['schedule']['points']}x{h['schedule']['keep']} share {fmt(h['share_at_n10'], '.2f')}"
                  f" | worst {fmt(h['max_share'], '.2f')}", end="")
        print()


def main(args):
    began = time.perf_counter()
    settings = [run_setting(args, m, r) for m in args.models for r in args.rewards]
    result = {"config": {"values": os.path.abspath(args.values), "kind": args.kind,
                         "budgets_tflops": args.tflop_budgets, "step_tflops": STEP_TFLOPS,
                         "call_tflops": CALL_TFLOPS, "calibration_prompts": args.calibration_prompts,
                         "heldout_prompts": 200 - args.calibration_prompts, "iterations": args.iterations,
                         "grid_iterations": args.grid_iterations, "refine": args.refine, "seed": args.seed,
                         "hindsight_iterations": args.hindsight_iterations,
                         "target_share": TARGET_SHARE},
              "settings": settings, "seconds": round(time.perf_counter() - began, 1)}
    print_report(result)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, result)
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main(parse_args())
