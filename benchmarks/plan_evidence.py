"""The composed plan (library -> golden noise -> NLG -> search) against each method alone, at equal NFE.

    python benchmarks/plan_evidence.py --model shapes-flow --library runs/shapes-flow-library \\
        --npnet runs/npnet-flow-big/npnet --preview_reward_path runs/naj-flow/noise-aware \\
        --output benchmarks/results/plan_shapes-flow.json

Every arm is one `noisekit search` run (in this process) on the same held-out shapes prompts, with the same budget
per prompt in NFE-equivalents (`--budget_nfe`; a reward call is charged 1, `--cost_model fixed`, so the plan does
not depend on this machine's speed) and the same first seed. A noise method on its own spends the budget the only
way it can, as best-of-N over its noises; NLG's evaluations are charged to the budget, so it affords fewer
candidates. Arms:

- `best_of_n`: random seeds, best-of-N (the search alone);
- `ttsnap`: random seeds, TTSnap pruning with the noise-aware judge and its calibrated schedule;
- `library`, `golden`, `nlg`: that stage alone, then best-of-N;
- `composed`: library -> golden -> NLG -> TTSnap;
- `composed_without_nlg`: library -> golden -> TTSnap (NLG's evaluations spent on more candidates instead).

Reported per arm: the judge's mean reward of the chosen image, candidates and NFE-equivalents per prompt, and the
paired difference to `best_of_n` with its standard error and the share of prompts it wins. Runs resume per prompt
(each arm's folder under `--work_dir`).
"""

import argparse
import json
import math
import os
import sys

from noisekit.cli import main as noisekit
from noisekit.results import write_json
from noisekit.shapes.dataset import heldout_scenes


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-flow")
    parser.add_argument("--library", required=True, help="a noise library of --model")
    parser.add_argument("--npnet", required=True, help="an NPNet of --model")
    parser.add_argument("--preview_reward_path", required=True,
                        help="noise-aware judge folder trained on --model (with its schedule.json)")
    parser.add_argument("--num_prompts", type=int, default=48, help="held-out shapes prompts")
    parser.add_argument("--budget_nfe", type=int, default=205, help="NFE-equivalents per prompt (best-of-5 at 20 steps)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default="runs/plan_evidence")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(input_args)
    if args.num_prompts < 2 or args.budget_nfe < 1:
        parser.error("--num_prompts must be >= 2 and --budget_nfe >= 1.")
    return args


def arms(args):
    """`{arm: extra noisekit search flags}`."""
    library, golden, nlg = ["--library", args.library], ["--npnet", args.npnet], ["--nlg"]
    ttsnap = ["--strategy", "ttsnap", "--preview_reward", "noise-aware",
              "--reward_path", f"noise-aware={args.preview_reward_path}"]
    return {"best_of_n": [], "ttsnap": ttsnap, "library": library, "golden": golden, "nlg": nlg,
            "composed": [*library, *golden, *nlg, *ttsnap], "composed_without_nlg": [*library, *golden, *ttsnap]}


def run_arm(args, name, flags, prompt_file):
    out = os.path.join(args.work_dir, name)
    code = noisekit(["search", "--prompt_file", prompt_file, "--model", args.model, "--steps", str(args.steps),
                     "--seed", str(args.seed), "--budget_nfe", str(args.budget_nfe), "--reward_cost", "1",
                     "--output_dir", out, "--quiet", *flags])
    if code != 0:
        raise SystemExit(f"arm {name} failed (exit {code}); see the message above.")
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    rows = sorted(results["prompts"], key=lambda r: r["prompt_index"])
    return {"command_flags": flags, "rewards": [next(iter(r["best_scores"].values())) for r in rows],
            "candidates": [r["counts"][0] for r in rows], "cost": [r["cost"] for r in rows]}


def paired(rewards, baseline):
    diffs = [a - b for a, b in zip(rewards, baseline)]
    mean = sum(diffs) / len(diffs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return {"gain": mean, "gain_std_error": spread / math.sqrt(len(diffs)),
            "wins": sum(d > 0 for d in diffs) / len(diffs), "losses": sum(d < 0 for d in diffs) / len(diffs)}


def main(args):
    os.makedirs(args.work_dir, exist_ok=True)
    prompts = [scene.caption for scene in heldout_scenes(args.num_prompts)]
    prompt_file = os.path.join(args.work_dir, "prompts.txt")
    with open(prompt_file, "w") as f:
        f.write("\n".join(prompts) + "\n")
    report = {"command": " ".join(["python", *sys.argv]), "model": args.model, "prompts": len(prompts),
              "budget_nfe": args.budget_nfe, "steps": args.steps, "seed": args.seed, "arms": {}}
    for name, flags in arms(args).items():
        print(f"arm {name}", file=sys.stderr, flush=True)
        report["arms"][name] = run_arm(args, name, flags, prompt_file)
    baseline = report["arms"]["best_of_n"]["rewards"]
    print(f"{len(prompts)} held-out prompts, {args.budget_nfe} NFE-equivalents each, model {args.model}")
    print(f"{'arm':21s} {'reward':>7s} {'N':>5s} {'cost':>6s} {'vs best-of-N':>22s} {'wins':>5s}")
    for name, arm in report["arms"].items():
        count = len(arm["rewards"])
        arm.update(reward=sum(arm["rewards"]) / count, mean_candidates=sum(arm["candidates"]) / count,
                   mean_cost=sum(arm["cost"]) / count)
        if name != "best_of_n":
            arm["vs_best_of_n"] = paired(arm["rewards"], baseline)
        versus = arm.get("vs_best_of_n")
        print(f"{name:21s} {arm['reward']:7.3f} {arm['mean_candidates']:5.1f} {arm['mean_cost']:6.1f} "
              + (f"{versus['gain']:+10.3f} +- {versus['gain_std_error']:.3f} {versus['wins']:5.2f}" if versus else ""))
    if args.output:
        write_json(args.output, report)
        print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main(parse_args())
