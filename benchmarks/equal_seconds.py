"""Seed search at equal seconds: best-of-N, TTSnap and cheap drafts given the same wall-clock budget per prompt.

Used by `bench_search.py` (run from the repository root or from benchmarks/). Every arm gets the same seconds per
prompt; each converts them to NFE-equivalents through one measurement of the machine (`measure_cost`): the seconds of
one denoiser evaluation are shared by all arms, and a reward call is charged what its own reward measured (the
clean judge for best-of-N and the drafts, the noise-aware judge for TTSnap's previews when it scores them). Each run
is then timed for real, so an arm that spends more than its share (scheduler, Python) shows it.
"""

import dataclasses
import os
import platform
import shlex
import sys
import time

import torch

from noisekit.core.clock import synchronize
from noisekit.core.sampler import Sampler
from noisekit.search.draft import cheap_draft
from noisekit.search.strategies import best_of_n, search
from noisekit.search.timing import measure_cost, search_shape

PARTS = ("denoiser", "decode", "reward")


def command_line():
    """The command as it was run (`python benchmarks/bench_search.py ...`), quoted for a shell."""
    return " ".join(shlex.quote(part) for part in ["python", *sys.argv])


def machine(device):
    """Where the seconds were measured."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "device": str(device)}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def arm_costs(full, judge, naj, micro_batch_size):
    """`{preview kind: TimedCost}`: one denoiser timing for every arm, each kind's own preview scoring, and the
    judge's scoring of the final images (the base probe's); the probe's largest batch is the runs' micro-batch."""
    base = measure_cost(full, judge, num_candidates=micro_batch_size)
    costs = {"base": base}
    for kind, reward in naj.items():
        own = measure_cost(full, reward, num_candidates=micro_batch_size)
        costs[kind] = dataclasses.replace(base, seconds_per_reward_call=own.seconds_per_reward_call, probe=own.probe,
                                          seconds_per_scoring=own.seconds_per_scoring,
                                          scoring_seconds=own.scoring_seconds,
                                          final_scoring_seconds=base.scoring_seconds,
                                          seconds_per_final_call=base.seconds_per_reward_call)
    return costs


def run_arm(name, kind, schedule, samplers, prompt_index, rewards, naj, budget_seconds, cost, args):
    """One arm on one prompt: the result, timed."""
    full, drafts = samplers
    synchronize(full.device)
    began = time.perf_counter()
    if name == "cheap_draft":
        result = cheap_draft(drafts, full, prompt_index, rewards, seeds=args.seed, budget_seconds=budget_seconds,
                             cost=cost, finish=args.draft_finish, micro_batch_size=args.micro_batch_size)
    elif schedule is None:
        result = best_of_n(full, prompt_index, rewards, seeds=args.seed, budget_seconds=budget_seconds, cost=cost,
                           micro_batch_size=args.micro_batch_size)
    else:
        previews = {name_: naj[kind] for name_ in rewards} if kind in naj else None
        result = search(full, prompt_index, rewards, seeds=args.seed, budget_seconds=budget_seconds, cost=cost,
                        schedule=schedule, preview_rewards=previews, micro_batch_size=args.micro_batch_size)
    synchronize(full.device)
    return result, time.perf_counter() - began


def equal_seconds(args, pipe, judge, naj, prompts, arms, budget_seconds=None, default_nfe=None, reward="reward",
                  costs=None):
    """Every arm of `arms` (`{name: (preview kind, schedule or None)}`) plus cheap drafts on `prompts` at the same
    seconds per prompt (`budget_seconds`, default: what `default_nfe` denoiser evaluations take here); `costs`
    (`arm_costs`) when already measured."""
    with torch.no_grad():
        full = Sampler(pipe, prompts, num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
        drafts = Sampler(pipe, prompts, num_inference_steps=args.draft_steps, guidance_scale=args.guidance_scale)
    costs = costs or arm_costs(full, judge, naj, args.micro_batch_size)
    if budget_seconds is None:  # what best-of-N at `default_nfe` is predicted to take here
        count = max(1, default_nfe // (full.num_steps * full.nfe_per_step + 1))
        budget_seconds = round(costs["base"].seconds(search_shape(
            count, (), (), num_steps=full.num_steps, nfe_per_step=full.nfe_per_step, num_rewards=1,
            micro_batch_size=args.micro_batch_size)), 3)
    rewards = {reward: judge}
    arms = {**arms, "cheap_draft": ("base", None)}
    out = {"budget_seconds": budget_seconds, "prompts": prompts, "draft_steps": args.draft_steps,
           "draft_finish": args.draft_finish, "costs": {k: c.to_dict() for k, c in costs.items()}, "arms": {}}
    runs, errors = {name: [] for name in arms}, {}
    for p in range(len(prompts)):  # arms interleaved prompt by prompt, so that the machine's drift falls on all alike
        for name, (kind, schedule) in arms.items():
            if name in errors:
                continue
            try:
                result, wall = run_arm(name, kind, schedule, (full, drafts), p, rewards, naj, budget_seconds,
                                       costs.get(kind, costs["base"]), args)
            except ValueError as error:  # the budget does not buy this arm one run (e.g. drafts + finished ones)
                errors[name] = str(error)
                continue
            n = len(result.drafts.candidates) if name == "cheap_draft" else len(result.candidates)
            runs[name].append({"prompt": prompts[p], "n": n, "budget_nfe": result.budget, "nfe": result.nfe,
                               "reward_calls": result.reward_calls, "cost": result.cost, "seconds": round(wall, 3),
                               **{f"{part}_seconds": round(result.seconds[part], 3) for part in PARTS},
                               "best_seed": result.best.seed, "reward": result.best.final_scores[reward]})
    for name, (kind, _) in arms.items():
        cost, arm_runs = costs.get(kind, costs["base"]), runs[name]
        if name in errors:
            out["arms"][name] = {"reward_cost": cost.reward_cost, "error": errors[name]}
            continue
        out["arms"][name] = {"reward_cost": cost.reward_cost, "budget_nfe": arm_runs[0]["budget_nfe"],
                             "n": mean(arm_runs, "n"), "reward": mean(arm_runs, "reward"),
                             "seconds_per_prompt": mean(arm_runs, "seconds"),
                             **{f"{part}_seconds_per_prompt": mean(arm_runs, f"{part}_seconds") for part in PARTS},
                             "over_seconds": sum(r["seconds"] > budget_seconds for r in arm_runs) / len(arm_runs),
                             "slowest_seconds": round(max(r["seconds"] for r in arm_runs), 4),
                             "runs": arm_runs}
    return out


def mean(runs, key):
    return sum(run[key] for run in runs) / len(runs)


def print_equal_seconds(section):
    """The equal-seconds table."""
    print(f"equal seconds: {section['budget_seconds']:g} s per prompt, {len(section['prompts'])} held-out prompts "
          f"(cheap drafts: {section['draft_steps']} steps, {section['draft_finish']} finished)")
    print(f"  {'arm':34s} {'NFE-eq/call':>11s} {'budget':>7s} {'N':>6s} {'reward':>7s} {'s/prompt':>9s} "
          f"{'denoiser':>9s} {'decode':>7s} {'reward s':>8s} {'over':>5s}")
    for name, arm in section["arms"].items():
        if "error" in arm:
            print(f"  {name:34s} {arm['reward_cost']:11.3f} not run: {arm['error']}")
            continue
        print(f"  {name:34s} {arm['reward_cost']:11.3f} {arm['budget_nfe']:7d} {arm['n']:6.1f} {arm['reward']:7.3f} "
              f"{arm['seconds_per_prompt']:9.3f} {arm['denoiser_seconds_per_prompt']:9.3f} "
              f"{arm['decode_seconds_per_prompt']:7.3f} {arm['reward_seconds_per_prompt']:8.3f} "
              f"{arm['over_seconds']:5.2f}")
