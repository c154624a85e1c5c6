"""`noisekit search`: seed search (best-of-N or TTSnap pruning) with reward models; writes `best.png` per prompt,
`grid.png` with every candidate's scores, and `results.json` with one record per candidate.

    noisekit search "a red circle on a white background" --reward shapes-judge --strategy ttsnap --budget_nfe 800
    noisekit search "a red circle on a white background" --strategy ttsnap --budget_seconds 5

Costs: a reward call (decode + score of one image) is charged the NFE-equivalents measured at the start of the run
(`--cost_model measured`, the default: a few denoiser steps and decode + reward calls are timed, once per run folder)
or a constant (`--cost_model fixed`, `--reward_cost`, 1 by default: the accounting of earlier runs).
`--budget_seconds` plans N0 from the measured seconds (one step of one batch and one scoring of a batch, each a
fixed part plus a part per row or image, timed at one candidate and at the micro-batch size): the largest N0 whose
run is predicted to fit. It is recorded as NFE-equivalents too.
"""

import json
import math
import os
import time

from .common import (UserError, add_prompt_flags, add_sampling_flags, check_sampling_flags, load_run, open_run,
                     read_prompts, run_all, run_settings, sampler_settings)

STRATEGIES = ("best_of_n", "ttsnap")
COST_MODELS = ("measured", "fixed")  # `noisekit.search.timing.COST_MODELS`
FIXED_REWARD_COST = 1  # `noisekit.search.timing.FIXED_REWARD_COST`: the CLI imports no torch before it must
BUDGET_FLAGS = ("--num_candidates", "--budget_nfe", "--budget_seconds")


def number(text):
    """An int when the text is one (`--reward_cost 1` stays 1), else a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def register(commands):
    """Register `search` on an argparse subparsers object."""
    parser = commands.add_parser("search", help="seed search with rewards: best-of-N or TTSnap pruning")
    add_prompt_flags(parser)
    parser.add_argument("--output_dir", default="outputs/search")
    parser.add_argument("--reward", default="shapes-judge", help="reward NAME[,NAME...] (several: by rank sum)")
    parser.add_argument("--reward_path", action="append", default=[], metavar="NAME=PATH",
                        help="weights of a reward (repeatable), passed to its loader as path=")
    parser.add_argument("--preview_reward", default=None,
                        help="noise-aware reward(s) for x0 previews, one per --reward (default: the clean rewards "
                             "scoring previews as clean images)")
    parser.add_argument("--strategy", default="best_of_n", choices=STRATEGIES)
    parser.add_argument("--num_candidates", type=int, default=None, help="N (best-of-N) or N0 (TTSnap); default 8")
    parser.add_argument("--budget_nfe", type=int, default=None,
                        help="budget per prompt in NFE-equivalents (denoiser evaluations + reward calls)")
    parser.add_argument("--budget_seconds", type=float, default=None,
                        help="budget per prompt in seconds: N0 is the largest whose run the measured seconds "
                             "predict to fit")
    parser.add_argument("--cost_model", default=None, choices=COST_MODELS,
                        help="what a reward call is charged: measured (default; timed at the start of the run) or "
                             "fixed (--reward_cost, 1 unless given; the accounting of earlier runs)")
    parser.add_argument("--reward_cost", type=number, default=None,
                        help="NFE-equivalents charged per reward call with --cost_model fixed (given alone, it "
                             "selects fixed)")
    parser.add_argument("--schedule", default=None, help="TTSnap pruning points, e.g. 2,6,11 (default: the paper's)")
    parser.add_argument("--keep", default=None, help="TTSnap keep ratios, e.g. 0.4,0.4,0.5")
    parser.add_argument("--schedule_unit", default="step", choices=["step", "sigma"])
    parser.add_argument("--schedule_name", default="calibrated", choices=["calibrated", "paper"],
                        help="without --schedule: the schedule calibrated for the preview reward where one ships "
                             "beside it (calibrated), else TTSnap's default (paper)")
    parser.add_argument("--cost_formula", default="exact", choices=["exact", "expected", "official"],
                        help="how --budget_nfe becomes N0; only exact never overspends")
    parser.add_argument("--json", action="store_true", help="print the per-prompt summary as JSON")
    add_sampling_flags(parser)
    parser.set_defaults(run=run_search, num_images=None)
    return parser


def _names(text, flag):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"{flag} must list distinct names separated by commas, got {text!r}.")
    return names


def load_rewards(args, device):
    from ..rewards import list_rewards, load_reward
    from ..rewards import noise_aware  # noqa: F401  (registers the noise-aware rewards)
    from ..rewards.base import reads_latents

    paths = {}
    for item in args.reward_path:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--reward_path must be NAME=PATH, got {item!r}.")
        paths[name] = path
    names = _names(args.reward, "--reward")
    previews = _names(args.preview_reward, "--preview_reward") if args.preview_reward else None
    for name in names + (previews or []) + list(paths):
        if name not in list_rewards():
            raise UserError(f"reward {name!r} is not registered; choose from {list_rewards()}.")
    if previews is not None and len(previews) != len(names):
        raise UserError(f"--preview_reward must give one reward per --reward ({len(names)}), got {len(previews)}.")

    def build(name):
        if name not in paths:
            return load_reward(name, device=device)
        try:
            return load_reward(name, device=device, path=paths[name])
        except OSError as error:  # a folder that is not there is looked for on the hub: say which flag named it
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"--reward_path {name}={paths[name]}: cannot load it ({first})") from None

    rewards = {n: build(n).eval() for n in names}
    latent = [n for n, reward in rewards.items() if reads_latents(reward)]
    if latent:
        raise UserError(f"--reward {latent[0]} scores x0 latents, not final images; give it as --preview_reward (with "
                        "--strategy ttsnap) beside a clean image reward as --reward.")
    preview_rewards = None if previews is None else {n: build(p).eval() for n, p in zip(names, previews)}
    for name, reward in zip(previews or [], (preview_rewards or {}).values()):
        if not reads_latents(reward) and not getattr(reward, "noise_aware", False):
            raise UserError(f"--preview_reward {name} scores clean images only; leave --preview_reward out to score "
                            "the previews with --reward as if they were clean (TTSnap's baseline), or give a "
                            "noise-aware or latent reward.")
    return rewards, preview_rewards


def shipped_schedule_of(args):
    """The calibrated schedule shipped beside a lone preview reward (`schedule.json` in its folder), unless
    `--schedule_name paper` asks for TTSnap's default."""
    from ..search.calibrate import schedule_for_reward

    if args.schedule_name != "calibrated" or not args.preview_reward or "," in args.preview_reward:
        return None
    name = args.preview_reward.strip()
    paths = dict(item.partition("=")[::2] for item in args.reward_path)
    return schedule_for_reward(name, path=paths.get(name))


def schedule_of(args, num_rewards, num_steps):
    from ..search.budget import PruningSchedule, default_schedule

    if args.schedule is None and args.keep is None:
        return shipped_schedule_of(args) or default_schedule(num_rewards, num_steps)
    if args.schedule is None or args.keep is None:
        raise UserError("give --schedule and --keep together (or neither, for the paper's default).")
    try:
        cast = int if args.schedule_unit == "step" else float
        points = [cast(v) for v in args.schedule.split(",")]
        keep = [float(v) for v in args.keep.split(",")]
    except ValueError:
        raise UserError(f"--schedule must be comma-separated {args.schedule_unit}s and --keep comma-separated "
                        f"ratios, got {args.schedule!r} and {args.keep!r}.") from None
    return PruningSchedule(points, keep, args.schedule_unit)


def check_budget_flags(args):
    """One of --num_candidates, --budget_nfe and --budget_seconds, each in its range; the cost model resolved."""
    given = [flag for flag in BUDGET_FLAGS if getattr(args, flag[2:]) is not None]
    if len(given) > 1:
        raise UserError(f"give one of {', '.join(BUDGET_FLAGS)}, not {' and '.join(given)}.")
    if args.num_candidates is not None and args.num_candidates < 1:
        raise UserError(f"--num_candidates must be >= 1, got {args.num_candidates}.")
    if args.budget_nfe is not None and args.budget_nfe < 1:
        raise UserError(f"--budget_nfe must be >= 1, got {args.budget_nfe}.")
    seconds = args.budget_seconds
    if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
        raise UserError(f"--budget_seconds must be a number of seconds > 0 (the budget per prompt), got {seconds}.")
    if args.cost_model is None:
        args.cost_model = "fixed" if args.reward_cost is not None else "measured"
    if args.cost_model == "measured" and args.reward_cost is not None:
        raise UserError("--reward_cost applies to --cost_model fixed; measured times the reward calls itself.")
    if args.reward_cost is not None and (not math.isfinite(args.reward_cost) or args.reward_cost < 0):
        raise UserError(f"--reward_cost must be a number >= 0 (NFE-equivalents per reward call), got "
                        f"{args.reward_cost}.")


def check_args(args):
    if args.num_images is not None:
        raise UserError("--num_images does not apply to search; use --num_candidates N, --budget_nfe B or "
                        "--budget_seconds S.")
    check_sampling_flags(args)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}.")
    if args.steps < 2:
        raise UserError(f"--steps must be >= 2 for search, got {args.steps}.")
    check_budget_flags(args)
    if args.strategy == "best_of_n" and (args.schedule or args.keep or args.preview_reward):
        raise UserError("--schedule, --keep and --preview_reward apply to --strategy ttsnap only.")


def cell_label(record):
    """`seed: stage scores > final scores`, first reward only when there are several (the grid is small); for a
    candidate's record (or the candidate)."""
    record = record.to_dict() if hasattr(record, "to_dict") else record

    def first(scores):
        value = next(iter(scores.values()))
        return "nan" if value is None else f"{value:.2f}"

    parts = [first(stage["scores"]) for stage in record["stages"]]
    parts.append(first(record["final_scores"]) if record["final_scores"] else "x")
    return ("*" if record["best"] else "") + f"{record['seed']}: " + ">".join(parts)


def save_prompt(result, index, num_prompts, output_dir):
    """Write one prompt's images; returns its candidate records and summary (with the file names)."""
    from ..generate import image_name

    best_file = "best.png" if num_prompts == 1 else f"best_p{index:03d}.png"
    result.best.image.save(os.path.join(output_dir, best_file))
    records = []
    for candidate in result.candidates:
        name = image_name(index, candidate.seed)
        if candidate.pruned_at is not None:
            name = name.replace(".png", f"_x0_step{candidate.pruned_at}.png")
        candidate.image.save(os.path.join(output_dir, name))
        records.append({**candidate.to_dict(), "file": name, **({"best_file": best_file} if candidate.best else {})})
    return records, {**result.summary(), "best_file": best_file}


def run_search(args):
    import torch

    from ..plan import SearchStage, replace_stage, run_sampler, search_prompt
    from ..search.previews import decode_pruned_previews
    from ..runs import describe

    began = time.perf_counter()
    check_args(args)
    prompts = read_prompts(args)
    folder, group = open_run(args, "search", prompts, ("prompts", "candidates"))
    pipe, plan = load_run(args, device=group.device)
    rewards, preview_rewards = load_rewards(args, pipe.device)
    with torch.no_grad():  # the run's prompts, encoded once (all of them in every process: the same encodings)
        sampler = run_sampler(pipe, prompts, plan, **sampler_settings(args))
    schedule = schedule_of(args, len(rewards), sampler.num_steps) if args.strategy == "ttsnap" else ()
    cost = run_cost(args, folder, group, sampler, preview_rewards if schedule else None, rewards)
    fixed = FIXED_REWARD_COST if args.reward_cost is None else args.reward_cost
    budget_nfe = args.budget_nfe if args.budget_seconds is None else cost.budget_nfe(args.budget_seconds)
    count = None if budget_nfe is not None else args.num_candidates or 8
    stage = SearchStage(rewards, args.strategy, count, args.budget_nfe, schedule or None, preview_rewards,
                        reward_cost=None if cost is not None else fixed, formula=args.cost_formula,
                        micro_batch_size=args.batch_size, budget_seconds=args.budget_seconds, cost=cost)
    plan = replace_stage(plan, search=stage)
    settings = {**run_settings(args, sampler), "strategy": args.strategy, "rewards": list(rewards),
                "preview_rewards": args.preview_reward, "schedule": schedule.to_dict() if schedule else None,
                "num_candidates": args.num_candidates, "budget_seconds": args.budget_seconds,
                "budget_nfe": budget_nfe,  # with --budget_seconds, the NFE-equivalents it became
                "reward_cost": cost.reward_cost if cost is not None else fixed,
                "final_reward_cost": cost.final_reward_cost if cost is not None else fixed,
                "cost_model": cost.to_dict() if cost is not None else {"name": "fixed", "reward_cost": fixed},
                "cost_formula": args.cost_formula}
    path = os.path.join(args.output_dir, "results.json")
    load_seconds = round(time.perf_counter() - began, 3)

    def work(index):
        start = time.perf_counter()
        result = search_prompt(sampler, plan, index, args.seed)
        decode_pruned_previews(sampler, result)  # latent preview rewards left them undecoded; files need images
        records, summary = save_prompt(result, index, len(prompts), args.output_dir)
        summary = {**summary, "seconds": round(time.perf_counter() - start, 3)}
        timed = {part: result.seconds[part] for part in ("denoiser", "decode", "reward")}
        return {"prompts": [summary], "candidates": records}, len(result.candidates), result.nfe, timed

    finished = run_all(args, folder, group, work, settings, desc="search", load_seconds=load_seconds)
    if finished is None:  # not the main process
        return 0
    results, throughput = finished
    write_grid(results, args.output_dir)
    if args.json:
        print(json.dumps({"results": path, "prompts": results["prompts"], "throughput": throughput}, indent=2))
    else:
        print(f"wrote {os.path.join(args.output_dir, 'grid.png')}, {path} and index.html")
        print(describe_cost(settings))
        print(describe(throughput))
    return 0


def run_cost(args, folder, group, sampler, preview_rewards, rewards):
    """The run's `TimedCost`, or `None` for the fixed model without a seconds budget (nothing to time). Measured
    once per run folder, on the main process, with the rewards that score previews when the search prunes; a resumed
    run and every process of the run plan from the same measurement."""
    import torch

    from ..runs import shared_record
    from ..search.timing import TimedCost, measure_cost

    if args.cost_model == "fixed" and args.budget_seconds is None:
        return None

    def measure():
        with torch.no_grad():  # the larger probe is the run's micro-batch, the largest batch it steps
            return measure_cost(sampler, preview_rewards or rewards, final_rewards=rewards if preview_rewards else None,
                                **({"num_candidates": max(2, args.batch_size)} if args.batch_size else {})).to_dict()

    cost = TimedCost.from_dict(shared_record(folder, group, "cost", measure))
    if args.cost_model == "fixed":
        return cost.as_fixed(FIXED_REWARD_COST if args.reward_cost is None else args.reward_cost)
    return cost


def describe_cost(settings):
    """One line: what a reward call was charged and, with a seconds budget, the NFE-equivalents it became."""
    model = settings["cost_model"]
    final = settings.get("final_reward_cost", settings["reward_cost"])
    line = (f"cost: a reward call = {settings['reward_cost']} NFE-equivalents" if final == settings["reward_cost"]
            else f"cost: a preview's reward call = {settings['reward_cost']}, a final image's = {final} NFE-equivalents")
    line += f" ({model['name']}"
    if "seconds_per_nfe" in model:
        split = final != settings["reward_cost"] and model.get("seconds_per_final_call")
        line += (f"; timed here: {model['seconds_per_nfe'] * 1e3:.3g} ms per NFE, "
                 f"{model['seconds_per_reward_call'] * 1e3:.3g} ms per "
                 + (f"preview reward call, {model['seconds_per_final_call'] * 1e3:.3g} ms per final decode + reward "
                    "call" if split else "decode + reward call"))
    line += ")"
    if settings["budget_seconds"] is not None:
        line += (f"; {settings['budget_seconds']:g} s per prompt, {settings['budget_nfe']} NFE-equivalents at the "
                 "seconds per NFE; N0 is planned from each call's measured seconds, fixed parts included")
        if model.get("headroom"):
            line += f", {model['headroom']:.0%} of the seconds left free for timings that drift"
    return line


def write_grid(results, output_dir):
    """`grid.png` from the merged results: a row per prompt, each candidate's image (read back from its file)."""
    from PIL import Image

    from ..grid import labelled_grid

    rows, labels = {}, {}
    for record in results["candidates"]:
        with Image.open(os.path.join(output_dir, record["file"])) as image:
            rows.setdefault(record["prompt_index"], []).append(image.convert("RGB"))
        labels.setdefault(record["prompt_index"], []).append(cell_label(record))
    summaries = results["prompts"]
    grid_labels = [f"p{s['prompt_index']}: {s['prompt'][:40]} | cost {s['cost']}" +
                   (f"/{s['budget']}" if s["budget"] else "") + f" | best seed {s['best_seed']}" for s in summaries]
    order = [s["prompt_index"] for s in summaries]
    labelled_grid([rows[i] for i in order], grid_labels, [labels[i] for i in order]).save(
        os.path.join(output_dir, "grid.png"))
