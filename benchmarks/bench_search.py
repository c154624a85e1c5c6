"""Seed search on the shapes world: best-of-N against TTSnap pruning, offline and online.

    python benchmarks/bench_search.py --num_candidates 32 --output benchmarks/results/bench_search.json
    python benchmarks/bench_search.py --noise_aware_path runs/naj/noise-aware --output runs/bench_search/na.json
    python benchmarks/bench_search.py --tiny --output /tmp/bench_search_tiny.json   # random weights, seconds
    python benchmarks/bench_search.py --num_prompts 2 --num_candidates 8 --steps 10 --online_prompts 1 \
        --output /tmp/bench_search_small.json     # the real shapes world, a check that it runs (a minute)
    python benchmarks/bench_search.py --num_candidates 32 --table runs/shapes_table.safetensors \
        --save_schedule assets/shapes-judge-noise-aware     # re-calibrate the shipped schedule

Prompts are the shapes world's held-out captions (`heldout_scenes`, never used in training); the first half of
them calibrates (grid search of pruning schedules), the second half reports. Steps:

1. Record a trajectory table once (`record_table`): for every prompt, `--num_candidates` seeds run to the end; the
   x0 preview of every step is scored by the clean judge as if clean (`base`, TTSnap's un-tuned baseline) and, when
   a noise-aware judge is given, by it too (`noise-aware` for its sigma model, `noise-aware-stages` for its
   per-stage checkpoints; `--noise_aware_mode`) and, on shapes-t2i, by the judge's latent twin on the x0 latents
   (`latent-twin`, no decode; `--latent_preview`); the final image by the clean judge.
2. Grid-search pruning schedules on the calibration half (`grid_search`, one per preview reward), among those whose
   N0 fits the recorded pool at every budget.
3. On the held-out half, at every budget of the grid (whole multiples of one best-of-N candidate's cost, from 2 up
   to the most the pool allows): the mean final judge reward of best-of-N and of TTSnap (default and tuned schedule,
   per preview reward) at equal realised integer cost (NFE + reward calls, TTSnap's Monte-Carlo protocol over
   random subsets of the pool); Omega (area gain over best-of-N, Simpson); the best-of-N-equivalent N; the share of
   best-of-N's cost (and of its NFE) TTSnap needs to reach best-of-N's reward (exact expected best-of-N, TTSnap's
   curve over N0 = 1..pool); Kendall tau of each step's preview scores against the final reward (per prompt, mean);
   and the bound on any preview reward: the same shares with perfect previews (each step scored as its final
   image, schedule tuned on the calibration half).
4. One online run per arm (`best_of_n` / `search`) on `--online_prompts` held-out prompts at `--online_budget`,
   timed in seconds (denoiser, decode and reward seconds too), with its realised NFE and cost, next to the offline
   replay of the same seeds (same pick?).
5. Equal seconds (`equal_seconds.py`): best-of-N, every TTSnap arm and cheap drafts (`--draft_steps`-step drafts of
   every seed, the `--draft_finish` best finished) on the same held-out prompts, each given the same
   `--budget_seconds` per prompt (default: the seconds best-of-N at `--online_budget` is predicted to take on
   this machine), each arm planning N0 from the measured seconds model; each run timed for real. The command and
   the machine are printed and recorded with the results.
6. With `--seed_sets K`, K disjoint sets of `--num_candidates` seeds are recorded in one table and steps 2-5 run on
   each set on its own (the first set's results are also the top-level keys of the JSON).

Costs: one candidate step is 2 NFE under CFG; one reward call (decode + judge of one image) costs `--reward_cost`
NFE-equivalents. Seconds: online runs are measured; offline arms carry an estimate from the recording's measured
seconds per NFE and per scored image, and the share of best-of-N's seconds TTSnap needs is predicted by the cost
model `measure_cost` fits (a fixed part per denoiser call and per scoring, plus a part per row and per image).

Runtime with `--num_candidates 32` (64 prompts x 32 seeds x 20 steps, CFG 5, both noise-aware forms): recording
81,920 NFE plus 40,960 decoded previews, each scored by three judges, took 7.6 minutes on 2 CPU cores; the grid
search (1,661 schedules per preview reward) 2.5 s each; the online runs (4 prompts x 7 arms) about 40 s.
Output: a printed table, `--output` JSON and a PNG plot (`--plot`, default next to the JSON).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

import torch

from equal_seconds import arm_costs, command_line, equal_seconds, machine, print_equal_seconds  # the sibling script

from noisekit.search.budget import PruningSchedule, default_schedule, plan_best_of_n, plan_ttsnap
from noisekit.search.calibrate import (TrajectoryTable, bon_equivalent, calibrate_schedule, evaluate,
                                       expected_best_of_n, grid_search, kendall_tau, omega, record_table,
                                       save_schedule, schedule_grid, simulate)
from noisekit.rewards import ignore_sigma, load_reward
from noisekit.core.sampler import Sampler
from noisekit.search.strategies import best_of_n, search
from noisekit.search.timing import search_shape
from noisekit.shapes.dataset import heldout_scenes
from noisekit.results import write_json

REWARD = "shapes-judge"
BASE, NOISE_AWARE, LATENT = "base", "noise-aware", "latent-twin"
TINY_DEFAULTS = dict(num_prompts=6, num_candidates=16, steps=10, online_prompts=2, iterations=10,
                     grid_iterations=2)
DEFAULTS = dict(num_prompts=64, num_candidates=16, steps=20, online_prompts=4, iterations=50, grid_iterations=10)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-t2i", help="diffusers pipeline folder")
    parser.add_argument("--judge_path", default=None, help="shapes-judge folder (default: assets/shapes-judge)")
    parser.add_argument("--preview_reward", default="auto", choices=["auto", "none", NOISE_AWARE],
                        help="none: previews scored by the clean judge only (TTSnap's un-tuned baseline); "
                             "noise-aware: also by the noise-aware judge (--noise_aware_path or the "
                             "shapes-judge-noise-aware asset); auto: noise-aware when one is found")
    parser.add_argument("--noise_aware_path", default=None,
                        help="trained noise-aware folder (training/train_noise_aware_reward.py writes "
                             "OUTPUT_DIR/noise-aware)")
    parser.add_argument("--noise_aware_mode", default="both", choices=["sigma", "stages", "both"],
                        help="the sigma-conditioned model (preview reward `noise-aware`), the per-stage checkpoints "
                             "(`noise-aware-stages`), or both in one recording")
    parser.add_argument("--latent_preview", default="auto",
                        help="auto: on shapes-t2i, also score previews with the judge's latent twin "
                             "(`shapes-judge-latent`, reads x0 latents, no decode); none; or a twin folder "
                             "(training/train_latent_twin.py) for another model")
    parser.add_argument("--num_prompts", type=int, default=None, help="held-out prompts, half calibrate (64)")
    parser.add_argument("--num_candidates", type=int, default=None, help="seeds recorded per prompt (16)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (20)")
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0, help="candidates use seeds S, S+1, ...")
    parser.add_argument("--seed_sets", type=int, default=1,
                        help="disjoint sets of --num_candidates seeds (S.., S+n.., ...), recorded once, each "
                             "calibrated and reported on its own")
    parser.add_argument("--reward_cost", type=int, default=1, help="NFE-equivalents per reward call")
    parser.add_argument("--micro_batch_size", type=int, default=64, help="candidates per denoiser batch")
    parser.add_argument("--max_budget", type=int, default=None,
                        help="largest budget of the grid (default: the most the pool allows TTSnap's default)")
    parser.add_argument("--grid_budget", type=int, default=None,
                        help="budget the schedule grid search optimises (default: the grid's middle budget)")
    parser.add_argument("--iterations", type=int, default=None, help="Monte-Carlo subsets per budget (50)")
    parser.add_argument("--grid_iterations", type=int, default=None, help="Monte-Carlo subsets in the grid (10)")
    parser.add_argument("--top_k", type=int, default=5, help="grid-search schedules reported on held-out")
    parser.add_argument("--online_prompts", type=int, default=None, help="held-out prompts run online (4)")
    parser.add_argument("--online_budget", type=int, default=None, help="default: the grid's largest budget")
    parser.add_argument("--budget_seconds", type=float, default=None,
                        help="equal-seconds budget per prompt for every arm (default: the predicted seconds of "
                             "best-of-N at --online_budget NFE on this machine)")
    parser.add_argument("--draft_steps", type=int, default=None, help="cheap drafts' steps (default steps // 5)")
    parser.add_argument("--draft_finish", type=int, default=4, help="cheap drafts finished at full steps")
    parser.add_argument("--table", default=None,
                        help="trajectory table file: loaded when it exists (same prompts, seeds), else written")
    parser.add_argument("--save_schedule", default=None,
                        help="calibrate the noise-aware judge's schedule on the calibration half "
                             "(`calibrate_schedule`, sigma units) and write it to this folder's schedule.json")
    parser.add_argument("--save_schedule_kind", default=None,
                        help="whose previews --save_schedule calibrates for (base, noise-aware, latent-twin; "
                             "default: noise-aware when recorded, else base)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--plot", default=None, help="PNG of reward vs budget and tau vs step (default: "
                                                     "--output with .png)")
    parser.add_argument("--tiny", action="store_true",
                        help="random-weight tiny pipeline and judge (a smoke test of the script, not evidence)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(input_args)
    for name, value in (TINY_DEFAULTS if args.tiny else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.num_prompts < 2 or args.num_candidates < 2 or args.steps < 4 or args.seed_sets < 1:
        parser.error("--num_prompts and --num_candidates must be >= 2, --steps >= 4 and --seed_sets >= 1.")
    if args.online_prompts > args.num_prompts - args.num_prompts // 2:
        parser.error("--online_prompts must not exceed the held-out half of --num_prompts.")
    if args.reward_cost < 0 or args.micro_batch_size < 1 or args.iterations < 1 or args.grid_iterations < 1:
        parser.error("--reward_cost must be >= 0; --micro_batch_size, --iterations, --grid_iterations >= 1.")
    if args.draft_steps is None:
        args.draft_steps = max(2, args.steps // 5)
    if not 1 <= args.draft_steps < args.steps or args.draft_finish < 1:
        parser.error("--draft_steps must lie in [1, --steps) and --draft_finish be >= 1.")
    if args.budget_seconds is not None and not (math.isfinite(args.budget_seconds) and args.budget_seconds > 0):
        parser.error(f"--budget_seconds must be a number of seconds > 0, got {args.budget_seconds}.")
    return args


def log(args, *parts):
    if not args.quiet:
        print(*parts, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------- loading


def load_models(args, workdir):
    """`(pipe, judge, {preview kind: noise-aware judge} (empty without one), description)`."""
    from noisekit.sources import load_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        from noisekit.rewards.noise_aware import DistilledRewardModel
        from noisekit.shapes.judge import ShapesJudge
        from noisekit.testing import tiny_sd_pipeline

        pipe = tiny_sd_pipeline().to(device)
        torch.manual_seed(args.seed)
        judge_dir = os.path.join(workdir, "judge")
        ShapesJudge().save_pretrained(judge_dir)  # random weights; 16 x 16 images are resized to 64 by its transform
        judge = load_reward(REWARD, path=judge_dir).to(device).eval()
        naj = None
        if args.preview_reward != "none":
            student = DistilledRewardModel(REWARD, {"path": judge_dir}, "sigma")
            with torch.no_grad():  # the adapter starts at zero (= the teacher); make it differ from the base
                student.adapter.conv_out.weight.normal_(0, 0.05)
            student.save_pretrained(os.path.join(workdir, "noise-aware"))
            naj = {NOISE_AWARE: load_reward("noise-aware", path=os.path.join(workdir, "noise-aware")).to(device)
                   .eval()}
        return pipe, judge, naj or {}, {"model": "tiny_sd_pipeline (random)", "judge": "ShapesJudge (random)",
                                        "noise_aware": "random sigma adapter" if naj else None}

    model = args.model
    if not os.path.isdir(model) and model == "assets/shapes-t2i":
        model = "shapes-t2i"  # the asset, found through $NOISEKIT_ASSETS too (clear error when missing)
    pipe = load_pipeline(model, device=device, dtype=torch.float32)
    judge_kwargs = {"path": args.judge_path} if args.judge_path else {}
    judge = load_reward(REWARD, **judge_kwargs).to(device).eval()
    naj, source = None, None
    if args.preview_reward != "none":
        from noisekit.shapes.assets import assets_dir

        source = args.noise_aware_path or str(assets_dir() / "shapes-judge-noise-aware")
        if os.path.isdir(source):
            modes = ("sigma", "stages") if args.noise_aware_mode == "both" else (args.noise_aware_mode,)
            naj = {NOISE_AWARE if mode == "sigma" else f"{NOISE_AWARE}-stages":
                   load_reward("noise-aware", path=source, mode=mode, teacher_kwargs=judge_kwargs or None).to(device)
                   .eval() for mode in modes}
        elif args.preview_reward == NOISE_AWARE or args.noise_aware_path:
            raise FileNotFoundError(f"no noise-aware judge at {source}; train one with "
                                    f"training/train_noise_aware_reward.py or use --preview_reward none.")
    twin = None
    if args.latent_preview == "auto" and os.path.basename(os.path.normpath(model)) == "shapes-t2i" \
            and not args.judge_path:  # the shipped twin was trained on shapes-t2i's trajectories
        twin = load_reward("shapes-judge-latent")
    elif args.latent_preview not in ("auto", "none"):
        twin = load_reward("shapes-judge-latent", path=args.latent_preview, teacher_path=args.judge_path)
    if twin is not None:
        naj = {**(naj or {}), LATENT: twin.to(device).eval()}
    noise_aware = any(kind.startswith(NOISE_AWARE) for kind in naj or {})
    return pipe, judge, naj or {}, {"model": args.model, "judge": args.judge_path or "assets/shapes-judge",
                                    "noise_aware": source if noise_aware else None,
                                    "noise_aware_mode": args.noise_aware_mode if noise_aware else None,
                                    "latent_preview": (args.latent_preview if args.latent_preview != "auto"
                                                       else "shapes-judge-latent") if twin is not None else None}


def record(args, sampler, judge, naj, seeds):
    """The trajectory table (rewards `base`, and `noise-aware` when given) and the recording's timings."""
    kinds = [BASE] + list(naj)
    if args.table and os.path.exists(args.table):
        table = TrajectoryTable.load(args.table)
        if table.prompts != sampler.prompts or list(table.seeds) != list(seeds) or sorted(table.scores) != sorted(kinds):
            raise ValueError(f"{args.table} holds other prompts, seeds or rewards ({sorted(table.scores)}) than "
                             f"this run ({kinds}); delete it or pass another --table.")
        log(args, f"loaded the trajectory table {args.table}")
        return table, {"loaded": args.table}
    from tqdm.auto import tqdm

    rewards = {kind: judge for kind in kinds}  # the final image is judged by the clean judge for every kind
    previews = {BASE: ignore_sigma(judge), **naj}
    nfe, denoiser = sampler.nfe, sampler.denoiser_seconds
    began = time.perf_counter()
    with tqdm(total=len(sampler.prompts), desc="record", disable=args.quiet, file=sys.stderr) as progress:
        table = record_table(sampler, rewards, seeds, preview_rewards=previews,
                             micro_batch_size=args.micro_batch_size, progress=progress)
    seconds = time.perf_counter() - began
    nfe, denoiser = sampler.nfe - nfe, sampler.denoiser_seconds - denoiser
    scored = len(sampler.prompts) * len(seeds) * sampler.num_steps  # decoded images (previews + finals)
    timing = {"seconds": round(seconds, 2), "nfe": nfe, "denoiser_seconds": round(denoiser, 2),
              "images_scored": scored, "preview_rewards": kinds,
              "seconds_per_nfe": denoiser / max(nfe, 1),
              # decode + every reward of one image (with a noise-aware judge: two models per preview)
              "seconds_per_scored_image": (seconds - denoiser) / scored}
    if args.table:
        os.makedirs(os.path.dirname(os.path.abspath(args.table)), exist_ok=True)
        table.save(args.table)
    return table, timing


def view(table, kind):
    """A one-reward table of preview kind `kind` (its final column is the clean judge's either way)."""
    return TrajectoryTable(table.prompts, table.seeds, table.sigmas, table.nfe_per_step, {REWARD: table.scores[kind]})


# -------------------------------------------------------------------------------------------------- analysis


def realised(cost, n, steps, keep):
    """`(nfe, reward_calls, total cost, survivor counts)` of best-of-N (`steps=()`) or TTSnap from n candidates."""
    if steps:
        nfe, calls, counts = cost.ttsnap(n, steps, keep)
    else:
        (nfe, calls), counts = cost.best_of_n(n), [n]
    return nfe, calls, cost.realised(n, steps, keep), counts


def candidate_count(cost, budget, steps, keep):
    try:
        return plan_ttsnap(budget, cost, steps, keep) if steps else plan_best_of_n(budget, cost)
    except ValueError:
        return 0


def budget_grid(args, cost, default_steps, default_keep, pool):
    """Whole multiples (>= 2) of one best-of-N candidate's cost, up to the most the pool allows both best-of-N
    and TTSnap's default schedule (or `--max_budget`)."""
    unit = realised(cost, 1, (), ())[2]
    largest = args.max_budget or min(pool * unit, realised(cost, pool, default_steps, default_keep)[2])
    budgets = [m * unit for m in range(2, pool + 1) if m * unit <= largest]
    if len(budgets) < 3:
        raise ValueError(f"the pool of {pool} seeds allows budgets up to {largest} NFE-equivalents, fewer than three "
                         f"multiples (>= 2) of one best-of-N candidate ({unit}); Omega needs three. Record more "
                         f"seeds (--num_candidates).")
    return unit, budgets


def curve_over_n(table, steps, keep, cost, iterations, seed, seconds_of=None):
    """TTSnap's (or, with `steps=()`, best-of-N's) mean final reward for every candidate count 1..pool, with
    TTSnap's Monte-Carlo subsets, and each count's realised cost and predicted seconds (`seconds_of(n, steps,
    keep)`, None without it): `[(n, nfe, cost, reward, seconds)]`."""
    pool, rows = len(table.seeds), torch.arange(len(table.prompts))
    final = table.scores[REWARD][:, :, -1].double()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for n in range(1, pool + 1):
        if not steps:
            reward = expected_best_of_n(final, n)  # exact
        else:
            reward = 0.0
            for _ in range(iterations if n < pool else 1):
                ids = torch.randperm(pool, generator=generator)[:n].sort().values
                best, _ = simulate(table, ids, steps, keep)
                reward += float(final[rows, best].mean())
            reward /= iterations if n < pool else 1
        nfe, _, total, _ = realised(cost, n, steps, keep)
        out.append((n, nfe, total, reward, seconds_of(n, steps, keep) if seconds_of else None))
    return out


def match_share(curve, target, bon_nfe, bon_cost, bon_seconds=None):
    """The cost, NFE and predicted seconds at which the curve's best-so-far reward first reaches `target`,
    interpolated linearly between candidate counts, as shares of best-of-N's; None when the pool's largest N0 falls
    short."""
    best, previous = -math.inf, None
    for n, nfe, total, reward, seconds in curve:
        best = max(best, reward)
        if best >= target:
            f = 1.0 if previous is None or best == previous[3] else (target - previous[3]) / (best - previous[3])
            at = lambda i, now: now if previous is None else previous[i] + f * (now - previous[i])  # noqa: E731
            out = {"n0": n, "cost_share": at(2, total) / bon_cost, "nfe_share": at(1, nfe) / bon_nfe}
            if seconds is not None and bon_seconds:
                out["seconds_share"] = at(4, seconds) / bon_seconds
            return out
        previous = (n, nfe, total, best, seconds)
    return None


def fits(schedule, cost, table, budgets):
    steps = schedule.steps(table.num_steps, table.sigmas)
    first, last = (candidate_count(cost, b, steps, schedule.keep) for b in (budgets[0], budgets[-1]))
    return first >= 1 and last <= len(table.seeds)


def tune(args, calibration, heldout, cost, budgets, default):
    """Grid search on the calibration half; returns `(tuned schedule, report)`."""
    grid = [default] + [s for s in schedule_grid(calibration.num_steps) if s != default]
    grid = [s for s in grid if fits(s, cost, calibration, budgets)]
    budget = args.grid_budget or budgets[len(budgets) // 2]
    began = time.perf_counter()
    top = grid_search(calibration, heldout, budget, grid, args.reward_cost, args.grid_iterations, args.seed,
                      args.top_k)
    first = top[0]["schedule"]
    tuned = PruningSchedule(tuple(first["points"]), tuple(first["keep"]), first["unit"])
    return tuned, {"budget": budget, "schedules_searched": len(grid), "iterations": args.grid_iterations,
                   "seconds": round(time.perf_counter() - began, 2), "top": top}


def arm_report(table, schedule, cost, budgets, unit, bon_means, args, timing, seconds_of=None, bon_seconds_of=None):
    """Everything offline about one arm on the held-out table; `seconds_of(n, steps, keep)` predicts a run's
    seconds from the measured cost model of its preview reward (`bon_seconds_of`: best-of-N's)."""
    steps = schedule.steps(table.num_steps, table.sigmas) if schedule is not None else ()
    keep = schedule.keep if schedule is not None else ()
    means, counts = evaluate(table, budgets, schedule, args.reward_cost, args.iterations, args.seed)
    rewards = [float(v) for v in means[REWARD]]
    rows = []
    for budget, n, reward in zip(budgets, counts, rewards):
        nfe, calls, total, survivors = realised(cost, n, steps, keep)
        rows.append({"budget": budget, "n": n, "survivors": survivors, "nfe": nfe, "reward_calls": calls,
                     "cost": total, "reward": reward, "bon_equivalent_n": bon_equivalent(table, reward),
                     "seconds_est": (nfe * timing["seconds_per_nfe"] + calls * timing["seconds_per_scored_image"]
                                     if "seconds_per_nfe" in timing else None)})
    report = {"schedule": schedule.to_dict() if schedule is not None else None, "steps": list(steps),
              "budgets": rows}
    if bon_means is not None:
        try:
            report["omega"] = omega(budgets, rewards, bon_means)
        except ValueError as error:
            report["omega"], report["omega_error"] = None, str(error)
        curve = curve_over_n(table, steps, keep, cost, args.iterations, args.seed, seconds_of)
        bon_curve = curve_over_n(table, (), (), cost, args.iterations, args.seed, bon_seconds_of)
        report["curve_over_n0"] = [{"n0": n, "nfe": nfe, "cost": total, "reward": r, "seconds_predicted": sec}
                                   for n, nfe, total, r, sec in curve]
        report["match_best_of_n"] = []
        for n in sorted({plan_best_of_n(b, cost) for b in budgets}):  # best-of-N's N at each budget
            _, bon_nfe, bon_cost, target, bon_seconds = bon_curve[n - 1]
            report["match_best_of_n"].append({"best_of_n": n, "reward": target, "nfe": bon_nfe, "cost": bon_cost,
                                              "seconds_predicted": bon_seconds,
                                              "ttsnap": match_share(curve, target, bon_nfe, bon_cost,
                                                                    bon_seconds)})
    return rewards, report


def save_calibrated(args, table, calibration_rows, cost, budgets, models, write=True):
    """`calibrate_schedule` on the calibration half (`--save_schedule_kind`'s previews; default: noise-aware when
    recorded, else base) over the budget grid; written as `schedule.json` into `--save_schedule` when `write`."""
    kind = args.save_schedule_kind or (NOISE_AWARE if NOISE_AWARE in table.scores else BASE)
    if kind not in table.scores:
        raise ValueError(f"--save_schedule_kind {kind!r} was not recorded; this run's previews: "
                         f"{sorted(table.scores)}.")
    calibration = view(table, kind).split(calibration_rows)
    schedule, report = calibrate_schedule(calibration, budgets=budgets, cost=cost, iterations=args.grid_iterations,
                                          refine_iterations=args.iterations, seed=args.seed)
    record = {"model": models["model"], "preview_reward": kind, "num_steps": table.num_steps,
              "table": f"{len(calibration_rows)} calibration prompts x {len(table.seeds)} seeds",
              "budgets": budgets, "schedule_steps": report["schedule_steps"],
              "objective": report["objective"], "default_objective": report.get("default_objective"),
              "best_of_n_objective": report["best_of_n_objective"],
              "sigmas": [s if math.isfinite(s) else None for s in table.sigmas]}
    path = save_schedule(args.save_schedule, schedule, calibration=record) if write else None
    log(args, f"calibrated schedule {report['schedule_steps']}" + (f" written to {path}" if write else ""))
    return {"path": path, "schedule": schedule.to_dict(), **record}


def perfect_previews(table):
    """A one-reward table whose every step scores the final image: pruning with perfect previews."""
    final = table.scores[BASE][:, :, -1:]
    return TrajectoryTable(table.prompts, table.seeds, table.sigmas, table.nfe_per_step,
                           {REWARD: final.expand_as(table.scores[BASE]).contiguous()})


def taus(table, kind):
    scores = table.scores[kind]
    final = scores[:, :, -1]
    return [kendall_tau(scores[:, :, s], final) for s in range(table.num_steps)]


# ---------------------------------------------------------------------------------------------------- online


def online(args, pipe, judge, naj, prompts, arms, budget, table_held, seeds):
    """One online run per arm on `prompts` (held-out rows 0.. of `table_held`), at `budget`, timed."""
    with torch.no_grad():
        sampler = Sampler(pipe, prompts, num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    rewards = {REWARD: judge}
    out = {}
    for name, (kind, schedule) in arms.items():
        table = view(table_held, kind).split(range(len(prompts)))
        steps = schedule.steps(table.num_steps, table.sigmas) if schedule is not None else ()
        keep = schedule.keep if schedule is not None else ()
        previews = {REWARD: naj[kind]} if kind in naj else None
        runs, seconds = [], 0.0
        for p in range(len(prompts)):
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            if schedule is None:
                result = best_of_n(sampler, p, rewards, seeds=args.seed, budget=budget, reward_cost=args.reward_cost,
                                   micro_batch_size=args.micro_batch_size)
            else:
                result = search(sampler, p, rewards, seeds=args.seed, budget=budget, schedule=schedule,
                                preview_rewards=previews, reward_cost=args.reward_cost,
                                micro_batch_size=args.micro_batch_size)
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - began
            seconds += elapsed
            n = len(result.candidates)
            best, _ = simulate(table.split([p]), range(n), steps, keep)  # the offline replay of the same seeds
            offline_seed = seeds[int(best[0])]
            runs.append({"prompt": prompts[p], "n": n, "counts": list(result.counts), "nfe": result.nfe,
                         "reward_calls": result.reward_calls, "cost": result.cost, "seconds": round(elapsed, 3),
                         **{f"{part}_seconds": round(result.seconds[part], 3) for part in ("denoiser", "decode",
                                                                                           "reward")},
                         "best_seed": result.best.seed, "reward": result.best.final_scores[REWARD],
                         "offline_seed": offline_seed,
                         "offline_reward": float(table.scores[REWARD][p, int(best[0]), -1])})
        count = len(runs)
        out[name] = {"budget": budget, "prompts": count, "runs": runs,
                     "nfe_per_prompt": sum(r["nfe"] for r in runs) / count,
                     "cost_per_prompt": sum(r["cost"] for r in runs) / count,
                     "seconds_per_prompt": seconds / count,
                     **{f"{part}_seconds_per_prompt": sum(r[f"{part}_seconds"] for r in runs) / count
                        for part in ("denoiser", "decode", "reward")},
                     "reward": sum(r["reward"] for r in runs) / count,
                     "offline_reward": sum(r["offline_reward"] for r in runs) / count,
                     "same_pick": sum(r["best_seed"] == r["offline_seed"] for r in runs) / count,
                     "within_budget": all(r["cost"] <= budget for r in runs)}
    return out


# ------------------------------------------------------------------------------------------------ reporting


def fmt(value, spec=".3f", none="-"):
    return none if value is None or (isinstance(value, float) and math.isinf(value)) else format(value, spec)


def schedule_text(schedule):
    if schedule is None:
        return "-"
    return f"{list(schedule['points'])}x{[round(a, 2) for a in schedule['keep']]}"


def print_report(result):
    cfg, off = result["config"], result["offline"]
    budgets = off["budgets"]
    print(f"\ncommand: {result['command']}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()))
    print(f"\nheld-out {cfg['heldout_prompts']} prompts x {cfg['num_candidates']} seeds, {cfg['steps']} steps, "
          f"CFG {cfg['guidance_scale']} ({cfg['nfe_per_step']} NFE/step), {cfg['reward_cost']} NFE-eq per reward "
          f"call; one best-of-N candidate = {off['candidate_cost']} NFE-eq; calibration {cfg['calibration_prompts']} "
          f"prompts")
    head = f"{'arm':28s} {'schedule':28s} {'Omega%':>7s} " + " ".join(f"{'B=' + str(b):>14s}" for b in budgets)
    print("mean final judge reward at budget B (N or N0 | realised cost):")
    print(head)
    for name, arm in off["arms"].items():
        cells = " ".join(f"{fmt(r['reward']):>6s} {r['n']:>2d}|{r['cost']:<4d}" for r in arm["budgets"])
        print(f"{name:28s} {schedule_text(arm['schedule']):28s} {fmt(arm.get('omega'), '+7.1f', '      -'):>7s} "
              f"{cells}")
    print("best-of-N-equivalent N at each budget:")
    for name, arm in off["arms"].items():
        print(f"  {name:26s} " + " ".join(f"{fmt(r['bon_equivalent_n'], '.2f', '>' + str(cfg['num_candidates'])):>6s}"
                                          for r in arm["budgets"]))
    print("cost share (NFE share, predicted seconds share) TTSnap needs to match best-of-N's reward (exact E[max "
          "of N]):")
    for name, arm in off["arms"].items():
        if name == "best_of_n":
            continue
        cells = []
        for m in arm["match_best_of_n"]:
            t = m["ttsnap"]
            cells.append(f"N={m['best_of_n']}: " + ("  n/a (pool too small)" if t is None else
                                                    f"{t['cost_share']:.2f} ({t['nfe_share']:.2f}, "
                                                    f"{fmt(t.get('seconds_share'), '.2f')} s)"))
        print(f"  {name:26s} " + "  ".join(cells))
    if "perfect_previews" in off:
        bound = off["perfect_previews"]
        print(f"  {'bound: perfect previews':26s} {schedule_text(bound['schedule'])}: " + "  ".join(
            f"N={m['best_of_n']}: {fmt(m['ttsnap'] and m['ttsnap']['nfe_share'], '.2f', 'n/a')} NFE"
            for m in bound["match_best_of_n"]))
    if off.get("calibration_prompts"):
        print("the same untuned arms on the calibration prompts (Omega; NFE share to match best-of-N):")
        for name, arm in off["calibration_prompts"].items():
            print(f"  {name:26s} {fmt(arm['omega'], '+7.1f', '      -')} " + "  ".join(
                f"N={m['best_of_n']}: {fmt(m['ttsnap'] and m['ttsnap']['nfe_share'], '.2f', 'n/a')}"
                for m in arm["match_best_of_n"]))
    print("Kendall tau (per prompt, mean) of step-s preview scores vs final reward, held-out:")
    for kind, values in off["kendall_tau"].items():
        print(f"  {kind:12s} " + " ".join(f"s{s}:{v:+.2f}" for s, v in enumerate(values[:-1])))
    for kind, grid in off["grid_search"].items():
        bon = grid["top"][0]["best_of_n"]
        print(f"grid search ({kind}): {grid['schedules_searched']} schedules at B={grid['budget']} in "
              f"{grid['seconds']}s; top on calibration -> held-out (best-of-N {fmt(bon['calibration'])} -> "
              f"{fmt(bon['heldout'])}):")
        for row in grid["top"]:
            print(f"  {schedule_text(row['schedule']):30s} {fmt(row['calibration'])} -> {fmt(row['heldout'])}")
    if result.get("online"):
        first = next(iter(result["online"].values()))
        print(f"online, {first['prompts']} held-out prompts at B={first['budget']}:")
        print(f"  {'arm':34s} {'NFE/prompt':>10s} {'cost/prompt':>11s} {'s/prompt':>9s} {'denoiser':>9s} "
              f"{'decode':>7s} {'reward s':>8s} {'reward':>7s} {'offline':>7s} {'same pick':>9s}")
        for name, run in result["online"].items():
            print(f"  {name:34s} {run['nfe_per_prompt']:10.1f} {run['cost_per_prompt']:11.1f} "
                  f"{run['seconds_per_prompt']:9.3f} {run['denoiser_seconds_per_prompt']:9.3f} "
                  f"{run['decode_seconds_per_prompt']:7.3f} {run['reward_seconds_per_prompt']:8.3f} "
                  f"{run['reward']:7.3f} {run['offline_reward']:7.3f} {run['same_pick']:9.2f}")
    if result.get("equal_seconds"):
        print_equal_seconds(result["equal_seconds"])
    print("targets:", json.dumps(result["targets"]))


def targets(arms):
    """The search targets on the noise-aware and latent arms (or, without one, the base arms: measured, not the
    target)."""
    judged = (f"ttsnap/{NOISE_AWARE}", f"ttsnap/{LATENT}")
    names = [n for n in arms if n.startswith(judged)] or [n for n in arms if n != "best_of_n"]
    out = {"reward": "noise-aware or latent" if names[0].startswith(judged) else
           "base only (no noise-aware judge: the targets are for the noise-aware reward)"}
    for name in names:
        arm = arms[name]
        shares = {m["best_of_n"]: (round(m["ttsnap"]["nfe_share"], 3) if m["ttsnap"] else None)
                  for m in arm["match_best_of_n"] if m["best_of_n"] > 1}
        seconds = {m["best_of_n"]: (round(m["ttsnap"]["seconds_share"], 3)
                                    if m["ttsnap"] and "seconds_share" in m["ttsnap"] else None)
                   for m in arm["match_best_of_n"] if m["best_of_n"] > 1}
        reached = [v for v in shares.values() if v is not None]
        value = arm.get("omega")
        out[name] = {"omega": None if value is None else round(value, 2),
                     "omega_ge_15": value is not None and value >= 15,
                     # per best-of-N size of the grid: TTSnap's NFE / best-of-N's NFE at equal reward (None: the
                     # pool's largest N0 does not reach it)
                     "nfe_share_by_n": shares,
                     "nfe_share_le_0.6": bool(reached) and len(reached) == len(shares) and max(reached) <= 0.6,
                     # the same from the measured seconds model (per call and per row), predicted for each run
                     "seconds_share_by_n": seconds,
                     "seconds_share_le_0.6": (all(v is not None for v in seconds.values()) and bool(seconds)
                                              and max(seconds.values()) <= 0.6)}
    return out


def plot(path, result):
    """Reward vs budget (held-out, offline) and Kendall tau vs step, drawn with PIL."""
    from PIL import Image, ImageDraw

    colors = [(0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
              (140, 86, 75), (227, 119, 194)]
    image = Image.new("RGB", (1100, 460), "white")
    draw = ImageDraw.Draw(image)

    def panel(box, series, title, xlabel):
        x0, y0, x1, y1 = box
        xs = [x for _, pts in series for x, _ in pts]
        ys = [y for _, pts in series for _, y in pts if y is not None and math.isfinite(y)]
        if not xs or not ys:
            return
        lo_x, hi_x = min(xs), max(xs)
        lo_y, hi_y = min(ys), max(ys)
        pad = (hi_y - lo_y) * 0.08 or 0.01
        lo_y, hi_y = lo_y - pad, hi_y + pad
        sx = lambda x: x0 + (x - lo_x) / ((hi_x - lo_x) or 1) * (x1 - x0)  # noqa: E731
        sy = lambda y: y1 - (y - lo_y) / (hi_y - lo_y) * (y1 - y0)  # noqa: E731
        draw.rectangle(box, outline=(120, 120, 120))
        draw.text((x0, y0 - 28), title, fill="black")
        draw.text(((x0 + x1) // 2 - 40, y1 + 18), xlabel, fill="black")
        for k in range(5):
            y = lo_y + k * (hi_y - lo_y) / 4
            draw.text((x0 - 56, sy(y) - 6), f"{y:.4g}", fill="black")
        for x in sorted(set(xs)):
            draw.text((sx(x) - 8, y1 + 4), f"{x:g}", fill="black")
        for i, (label, pts) in enumerate(series):
            color = colors[i % len(colors)]
            pts = [(sx(x), sy(y)) for x, y in pts if y is not None and math.isfinite(y)]
            if len(pts) > 1:
                draw.line(pts, fill=color, width=2)
            for px, py in pts:
                draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color)
            draw.text((x0 + 8, y0 + 6 + 14 * i), label, fill=color)

    off = result["offline"]
    panel((80, 50, 560, 400), [(name, [(r["budget"], r["reward"])
                                       for r in arm["budgets"]]) for name, arm in off["arms"].items()],
          "held-out mean final reward vs budget (NFE-equivalents)", "budget")
    panel((660, 50, 1070, 400), [(kind, list(enumerate(v))) for kind, v in off["kendall_tau"].items()],
          "Kendall tau of step-s preview vs final", "step s")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path)


# ------------------------------------------------------------------------------------------------------- main


def columns(table, first, count):
    """The table restricted to seeds `first .. first + count - 1` of its columns (one seed set)."""
    return TrajectoryTable(table.prompts, list(table.seeds[first : first + count]), table.sigmas, table.nfe_per_step,
                           {n: v[:, first : first + count] for n, v in table.scores.items()})


def seconds_model(costs, kind, table, micro_batch_size):
    """`seconds_of(n, steps, keep)`: a run's seconds predicted by the measured cost model of preview kind `kind`."""
    cost = costs.get(kind, costs[BASE])

    def seconds_of(n, steps, keep):
        return cost.seconds(search_shape(n, steps, keep, num_steps=table.num_steps, nfe_per_step=table.nfe_per_step,
                                         num_rewards=1, micro_batch_size=micro_batch_size))
    return seconds_of


def other_half(table, arms, rows, cost, budgets, unit, args, costs):
    """The arms that no prompt tuned (best-of-N and the paper's schedule) on the calibration prompts `rows`: how
    much the held-out shares move with the prompts they are measured on."""
    out, bon_means = {}, None
    bon_seconds = seconds_model(costs, BASE, table, args.micro_batch_size)
    for name, (kind, schedule) in arms.items():
        if schedule is not None and not name.endswith("/default"):
            continue
        rewards, report = arm_report(view(table, kind).split(rows), schedule, cost, budgets, unit, bon_means, args,
                                     costs.get("record", {}), seconds_model(costs, kind, table, args.micro_batch_size),
                                     bon_seconds)
        if schedule is None:
            bon_means = rewards
        else:
            out[name] = {"omega": report.get("omega"), "match_best_of_n": report["match_best_of_n"]}
    return out


def seed_set(args, pipe, judge, naj, prompts, table, costs, rows, models, save):
    """Calibration, offline report, online runs and equal seconds on one seed set (`table`'s columns); with `save`,
    the calibrated schedule is written to `--save_schedule`."""
    calibration_rows, heldout_rows = rows
    seeds = list(table.seeds)
    kinds = list(table.scores)
    cost = view(table, BASE).cost_model(args.reward_cost)
    default = default_schedule(1, table.num_steps)
    default_steps = default.steps(table.num_steps, table.sigmas)
    unit, budgets = budget_grid(args, cost, default_steps, default.keep, len(seeds))
    log(args, f"seeds {seeds[0]}..{seeds[-1]}: budgets {budgets} (one best-of-N candidate = {unit}); grid search "
              f"and offline evaluation")

    arms, grids = {"best_of_n": (BASE, None)}, {}
    for kind in kinds:
        t = view(table, kind)
        tuned, grids[kind] = tune(args, t.split(calibration_rows), t.split(heldout_rows), cost, budgets, default)
        arms[f"ttsnap/{kind}/default"] = (kind, default)
        arms[f"ttsnap/{kind}/tuned"] = (kind, tuned)

    shipped = None
    if args.save_schedule:  # every set calibrates and reports the schedule; the first set's is written
        shipped = save_calibrated(args, table, calibration_rows, cost, budgets, models, write=save)
        arms[f"ttsnap/{shipped['preview_reward']}/calibrated"] = (shipped["preview_reward"],
                                                                   PruningSchedule(**shipped["schedule_steps"]))
    offline = {"seeds": [seeds[0], seeds[-1]], "budgets": budgets, "candidate_cost": unit, "arms": {},
               "grid_search": grids, "shipped": shipped, "kendall_tau": {kind: taus(table.split(heldout_rows), kind) for kind in kinds},
               "kendall_tau_all_prompts": {kind: taus(table, kind) for kind in kinds}, "sigmas": table.sigmas}
    evaluation_began = time.perf_counter()
    bon_means, bon_seconds = None, seconds_model(costs, BASE, table, args.micro_batch_size)
    for name, (kind, schedule) in arms.items():
        held = view(table, kind).split(heldout_rows)
        rewards, report = arm_report(held, schedule, cost, budgets, unit, bon_means, args, costs.get("record", {}),
                                     seconds_model(costs, kind, table, args.micro_batch_size), bon_seconds)
        if schedule is None:
            bon_means = rewards
            report.pop("omega", None)
        offline["arms"][name] = report
    # the bound on any preview reward: each step's preview scored as its final image (tau 1 at every step)
    perfect = perfect_previews(table)
    tuned, _ = tune(args, perfect.split(calibration_rows), perfect.split(heldout_rows), cost, budgets, default)
    _, offline["perfect_previews"] = arm_report(perfect.split(heldout_rows), tuned, cost, budgets, unit, bon_means,
                                                args, costs.get("record", {}),
                                                seconds_model(costs, BASE, table, args.micro_batch_size), bon_seconds)
    offline["calibration_prompts"] = other_half(table, arms, calibration_rows, cost, budgets, unit, args, costs)
    offline["evaluation_seconds"] = round(time.perf_counter() - evaluation_began, 2)

    online_budget = args.online_budget or budgets[-1]
    online_runs, same_seconds = {}, None
    if args.online_prompts > 0:
        log(args, f"online runs: {args.online_prompts} prompts x {len(arms)} arms at B={online_budget}")
        table_held = table.split(heldout_rows)
        online_prompts = [prompts[i] for i in heldout_rows[: args.online_prompts]]
        online_runs = online(args, pipe, judge, naj, online_prompts, arms, online_budget, table_held, seeds)
        log(args, f"equal seconds: {args.online_prompts} prompts x {len(arms) + 1} arms")
        same_seconds = equal_seconds(args, pipe, judge, naj, online_prompts, arms, args.budget_seconds,
                                     default_nfe=online_budget, reward=REWARD,
                                     costs={k: v for k, v in costs.items() if k != "record"})
    return {"seeds": offline["seeds"], "offline": offline, "online": online_runs, "equal_seconds": same_seconds,
            "targets": targets(offline["arms"])}


def main(args):
    began = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="bench_search_")
    torch.manual_seed(args.seed)
    pipe, judge, naj, models = load_models(args, workdir)
    prompts = [scene.caption for scene in heldout_scenes(args.num_prompts)]
    rows = (list(range(args.num_prompts // 2)), list(range(args.num_prompts // 2, args.num_prompts)))
    seeds = list(range(args.seed, args.seed + args.seed_sets * args.num_candidates))
    load_seconds = time.perf_counter() - began
    log(args, f"recording {len(prompts)} prompts x {len(seeds)} seeds x {args.steps} steps "
              f"({len(prompts) * len(seeds) * args.steps} candidate-steps, previews: "
              f"{' + '.join([BASE, *naj])})")
    with torch.no_grad():
        sampler = Sampler(pipe, prompts, num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    table, record_timing = record(args, sampler, judge, naj, seeds)
    costs = {**arm_costs(sampler, judge, naj, args.micro_batch_size), "record": record_timing}
    sets = []
    for index in range(args.seed_sets):
        first = index * args.num_candidates
        set_args = argparse.Namespace(**{**vars(args), "seed": args.seed + first})
        sets.append(seed_set(set_args, pipe, judge, naj, prompts, columns(table, first, args.num_candidates), costs,
                             rows, models, save=bool(args.save_schedule) and index == 0))
    calibration_rows, heldout_rows = rows
    result = {
        "command": command_line(),
        "machine": machine(pipe.device),
        "config": {**models, "tiny": args.tiny, "num_prompts": args.num_prompts,
                   "calibration_prompts": len(calibration_rows), "heldout_prompts": len(heldout_rows),
                   "num_candidates": args.num_candidates, "steps": args.steps,
                   "guidance_scale": args.guidance_scale, "nfe_per_step": table.nfe_per_step, "seed": args.seed,
                   "reward_cost": args.reward_cost, "micro_batch_size": args.micro_batch_size,
                   "iterations": args.iterations, "grid_iterations": args.grid_iterations,
                   "scheduler": type(pipe.scheduler).__name__, "device": str(pipe.device),
                   "torch_threads": torch.get_num_threads(),
                   "prompts_calibration": [prompts[i] for i in calibration_rows],
                   "prompts_heldout": [prompts[i] for i in heldout_rows]},
        "timing": {"load_seconds": round(load_seconds, 2), "record": record_timing},
        "cost_models": {k: v.to_dict() for k, v in costs.items() if k != "record"},
        **{key: sets[0][key] for key in ("offline", "online", "equal_seconds", "targets")},  # the first set
        "seed_sets": sets,
    }
    result["timing"]["total_seconds"] = round(time.perf_counter() - began, 2)
    for index, one in enumerate(sets):
        print(f"\n=== seed set {index + 1} of {len(sets)}: seeds {one['seeds'][0]}..{one['seeds'][1]}")
        print_report({**result, **one})
    print(f"total {result['timing']['total_seconds']:.1f}s (record {record_timing.get('seconds', 0)}s)")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, result)
        print(f"wrote {args.output}")
    plot_path = args.plot or (os.path.splitext(args.output)[0] + ".png" if args.output else None)
    if plot_path:
        plot(plot_path, result)
        print(f"wrote {plot_path}")
    return result


if __name__ == "__main__":
    main(parse_args())
