"""How well a search's seconds are predicted: the measured cost model (interpolated between the probe's batch sizes,
final images timed apart) against the affine line of the same probe, on real searches of the shapes world.

    OMP_NUM_THREADS=2 python benchmarks/bench_seconds_model.py --model shapes-t2i \
        --output benchmarks/results/seconds_model_shapes-t2i.json
    OMP_NUM_THREADS=2 python benchmarks/bench_seconds_model.py --model shapes-flow \
        --output benchmarks/results/seconds_model_shapes-flow.json

One probe (`measure_cost`, the search's micro-batch as its largest size) per preview reward. Then, on held-out
prompts:

1. Prediction (arms interleaved, so that the machine's drift falls on all alike): every arm (best-of-N; TTSnap with the paper's schedule and with one stage at step 8 keeping 40 %,
   previews scored by the judge on decoded previews and, on shapes-t2i, by its latent twin) runs at every N0 of
   `--counts`; each run's wall-clock seconds are divided by what each model predicts for it.
2. Budgets: every arm plans N0 for `--budget_seconds` with each model and runs; a run over its budget counts.
3. Drift: the probe again at the end, each size's step seconds over the first probe's.

"affine" is the same probe read as a line through its smallest and largest batch, with one scoring cost for
previews and final images and no headroom, as the cost model planned before sizes, final images and timing noise
were measured ("measured" plans leave the default 10 % headroom free).
"""

import argparse
import dataclasses
import time

import torch

from equal_seconds import command_line, machine  # the sibling script

from noisekit.core.clock import synchronize
from noisekit.core.sampler import Sampler
from noisekit.results import write_json
from noisekit.rewards import load_reward
from noisekit.search.budget import PruningSchedule, default_schedule
from noisekit.search.strategies import search
from noisekit.search.timing import measure_cost, plan_by_seconds, search_shape
from noisekit.shapes.dataset import heldout_scenes
from noisekit.sources import load_pipeline

JUDGE = "shapes-judge"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-t2i", help="shapes-t2i, shapes-flow or a pipeline folder")
    parser.add_argument("--prompts", type=int, default=4, help="held-out prompts")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8, 12, 16, 24, 32], help="N0 of part 1")
    parser.add_argument("--budget_seconds", type=float, nargs="+", default=[0.75, 1.25, 2.5], help="part 2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--micro_batch_size", type=int, default=32)
    parser.add_argument("--output", default=None, help="JSON file of the results")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.steps < 2 or args.micro_batch_size < 2 or min(args.counts) < 1:
        parser.error("--prompts and --counts must be >= 1, --steps and --micro_batch_size >= 2.")
    return args


def affine(cost):
    """The same probe as one line per part, one scoring cost for previews and final images, and no headroom."""
    return dataclasses.replace(cost, step_seconds=(), scoring_seconds=(), final_scoring_seconds=(), headroom=0.0)


def arms(sampler, judge, twin):
    """`{name: (preview rewards or None, schedule)}`: `()` is best-of-N."""
    single = PruningSchedule((8,), (0.4,))
    out = {"best_of_n": (None, ()), "ttsnap/judge/paper": (None, default_schedule(1, sampler.num_steps)),
           "ttsnap/judge/step8": (None, single)}
    if twin is not None:
        out["ttsnap/twin/paper"] = ({JUDGE: twin}, default_schedule(1, sampler.num_steps))
        out["ttsnap/twin/step8"] = ({JUDGE: twin}, single)
    return out


def timed_search(sampler, prompt_index, judge, previews, schedule, count, args):
    synchronize(sampler.device)
    began = time.perf_counter()
    search(sampler, prompt_index, {JUDGE: judge}, seeds=1000 * prompt_index, num_candidates=count, schedule=schedule,
           preview_rewards=previews, micro_batch_size=args.micro_batch_size, output_type="pt")
    synchronize(sampler.device)
    return time.perf_counter() - began


def shape_of(sampler, schedule, args):
    steps = () if schedule == () else schedule.steps(sampler.num_steps)
    keep = () if schedule == () else schedule.keep
    return lambda n: search_shape(n, steps, keep, num_steps=sampler.num_steps, nfe_per_step=sampler.nfe_per_step,
                                  num_rewards=1, micro_batch_size=args.micro_batch_size)


def summary(ratios):
    return {"mean": sum(ratios) / len(ratios), "min": min(ratios), "max": max(ratios), "runs": len(ratios)}


@torch.no_grad()
def main(argv=None):
    args = parse_args(argv)
    began = time.perf_counter()
    pipe = load_pipeline(args.model, dtype=torch.float32)
    judge = load_reward(JUDGE).eval()
    twin = load_reward("shapes-judge-latent").eval() if args.model.rstrip("/").endswith("shapes-t2i") else None
    prompts = [scene.caption for scene in heldout_scenes(args.prompts)]
    sampler = Sampler(pipe, prompts, num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    search(sampler, 0, {JUDGE: judge}, num_candidates=2, schedule=())  # warm-up, as a run's first search
    costs = {"judge": measure_cost(sampler, judge, num_candidates=args.micro_batch_size)}
    if twin is not None:
        costs["twin"] = measure_cost(sampler, {JUDGE: twin}, final_rewards={JUDGE: judge},
                                     num_candidates=args.micro_batch_size)
    models = {name: {"measured": cost, "affine": affine(cost)} for name, cost in costs.items()}
    result = {"command": command_line(), "machine": machine(pipe.device), "model": args.model, "prompts": prompts,
              "steps": args.steps, "micro_batch_size": args.micro_batch_size,
              "costs": {name: cost.to_dict() for name, cost in costs.items()}, "prediction": {}, "budgets": {}}
    plans = {arm: (previews, schedule, "twin" if previews is not None else "judge", shape_of(sampler, schedule, args))
             for arm, (previews, schedule) in arms(sampler, judge, twin).items()}
    runs = {arm: [] for arm in plans}
    for count in args.counts:  # arms interleaved, so that the machine's drift falls on all of them alike
        for p in range(len(prompts)):
            for arm, (previews, schedule, kind, shape) in plans.items():
                wall = timed_search(sampler, p, judge, previews, schedule, count, args)
                runs[arm].append({"n0": count, "prompt": p, "seconds": round(wall, 4),
                                  **{f"{m}_predicted": round(c.seconds(shape(count)), 4)
                                     for m, c in models[kind].items()}})
    for arm, (_, _, kind, _) in plans.items():
        result["prediction"][arm] = {
            "runs": runs[arm], **{m: summary([r["seconds"] / r[f"{m}_predicted"] for r in runs[arm]])
                                  for m in models[kind]}}
        print(f"{arm:22s} actual / predicted: " + "; ".join(
            f"{m} mean {result['prediction'][arm][m]['mean']:.3f} max {result['prediction'][arm][m]['max']:.3f}"
            for m in models[kind]), flush=True)
    for budget in args.budget_seconds:
        for arm, (previews, schedule, kind, shape) in plans.items():
            for m, cost in models[kind].items():
                try:
                    count = plan_by_seconds(cost, budget, shape, limit=4 * args.micro_batch_size)
                except ValueError as error:
                    result["budgets"].setdefault(arm, {})[f"{budget}/{m}"] = {"error": str(error)}
                    continue
                walls = [timed_search(sampler, p, judge, previews, schedule, count, args) for p in range(len(prompts))]
                result["budgets"].setdefault(arm, {})[f"{budget}/{m}"] = {
                    "budget_seconds": budget, "model": m, "n0": count, "seconds": [round(w, 4) for w in walls],
                    "over": sum(w > budget for w in walls) / len(walls), "slowest": round(max(walls), 4)}
                print(f"{arm:22s} {budget:g} s, {m:8s}: N0 {count:3d}, slowest {max(walls):.3f} s, "
                      f"over {sum(w > budget for w in walls)}/{len(walls)}", flush=True)
    # the same probe again: how far this machine's step times drifted while the searches ran
    again = measure_cost(sampler, judge, num_candidates=args.micro_batch_size)
    result["drift"] = {str(rows): round(after / before, 4)
                       for (rows, before), (_, after) in zip(costs["judge"].step_seconds, again.step_seconds)}
    print("step seconds at the end over the start, by rows: " + ", ".join(
        f"{rows}: {ratio:.2f}" for rows, ratio in result["drift"].items()))
    result["seconds"] = round(time.perf_counter() - began, 1)
    if args.output:
        write_json(args.output, result)
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
