"""`noisekit search`: seed search (best-of-N or TTSnap pruning) with reward models; writes `best.png` per prompt,
`grid.png` with every candidate's scores, and `results.json` with one record per candidate.

    noisekit search "a red circle on a white background" --reward shapes-judge --strategy ttsnap --budget_nfe 800
"""

import json
import os
import time

from .cli import UserError, add_sampling_flags, read_prompts

STRATEGIES = ("best_of_n", "ttsnap")


def add_search(commands):
    """Register `search` on an argparse subparsers object."""
    parser = commands.add_parser("search", help="seed search with rewards: best-of-N or TTSnap pruning")
    parser.add_argument("prompt", nargs="?", help="the prompt (or use --prompt_file)")
    parser.add_argument("--prompt_file", help="one prompt per line")
    parser.add_argument("--output_dir", default="outputs/search")
    parser.add_argument("--reward", default="shapes-judge", help="reward NAME[,NAME...] (several: by rank sum)")
    parser.add_argument("--reward_path", action="append", default=[], metavar="NAME=PATH",
                        help="weights of a reward (repeatable), passed to its loader as path=")
    parser.add_argument("--preview_reward", default=None,
                        help="noise-aware reward(s) for x0 previews, one per --reward (default: the clean rewards "
                             "scoring previews as clean images)")
    parser.add_argument("--strategy", default="best_of_n", choices=STRATEGIES)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--num_candidates", type=int, default=None, help="N (best-of-N) or N0 (TTSnap); default 8")
    group.add_argument("--budget_nfe", type=int, default=None,
                       help="budget per prompt in NFE-equivalents (denoiser evaluations + reward calls)")
    parser.add_argument("--reward_cost", type=int, default=1, help="NFE-equivalents charged per reward call")
    parser.add_argument("--schedule", default=None, help="TTSnap pruning points, e.g. 2,6,11 (default: the paper's)")
    parser.add_argument("--keep", default=None, help="TTSnap keep ratios, e.g. 0.4,0.4,0.5")
    parser.add_argument("--schedule_unit", default="step", choices=["step", "sigma"])
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
    from .rewards import list_rewards, load_reward
    from .rewards import noise_aware  # noqa: F401  (registers the noise-aware rewards)

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
    build = lambda n: load_reward(n, device=device, **({"path": paths[n]} if n in paths else {}))  # noqa: E731
    rewards = {n: build(n).eval() for n in names}
    preview_rewards = None if previews is None else {n: build(p).eval() for n, p in zip(names, previews)}
    return rewards, preview_rewards


def schedule_of(args, num_rewards, num_steps):
    from .budget import PruningSchedule, default_schedule

    if args.schedule is None and args.keep is None:
        return default_schedule(num_rewards, num_steps)
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


def check_args(args):
    if args.num_images is not None:
        raise UserError("--num_images does not apply to search; use --num_candidates N or --budget_nfe B.")
    if args.nlg:
        raise UserError("--nlg is not supported by search yet (its NFEs are not in the search budget); run "
                        "`noisekit generate --nlg` instead.")
    if args.attribute and not args.library:
        raise UserError("--attribute needs --library PATH.")
    if args.library and args.num_candidates is None:
        raise UserError("--library with search needs --num_candidates N (the library picks the N seeds).")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}.")
    if args.steps < 2:
        raise UserError(f"--steps must be >= 2 for search, got {args.steps}.")
    if args.num_candidates is not None and args.num_candidates < 1:
        raise UserError(f"--num_candidates must be >= 1, got {args.num_candidates}.")
    if args.reward_cost < 0:
        raise UserError(f"--reward_cost must be >= 0, got {args.reward_cost}.")
    if args.strategy == "best_of_n" and (args.schedule or args.keep or args.preview_reward):
        raise UserError("--schedule, --keep and --preview_reward apply to --strategy ttsnap only.")


def cell_label(candidate):
    """`seed: stage scores > final scores`, first reward only when there are several (the grid is small)."""
    first = lambda scores: f"{next(iter(scores.values())):.2f}"  # noqa: E731
    parts = [first(stage["scores"]) for stage in candidate.stages]
    parts.append(first(candidate.final_scores) if candidate.final_scores else "x")
    return ("*" if candidate.best else "") + f"{candidate.seed}: " + ">".join(parts)


def run_search(args):
    import torch
    from tqdm.auto import tqdm

    from functools import partial

    from . import __version__
    from .cli import apply_schedule_flags, load_npnet
    from .generate import image_name
    from .library import library_noise
    from .npnet_noise import apply_npnet
    from .grid import labelled_grid
    from .models import load_pipeline
    from .sampler import Sampler
    from .search import search

    check_args(args)
    prompts = read_prompts(args)
    pipe = load_pipeline(args.model, args.device)
    guidance_rescale = apply_schedule_flags(pipe, args)
    rewards, preview_rewards = load_rewards(args, pipe.device)
    npnet = load_npnet(args.npnet, pipe, args.npnet_resize) if args.npnet else None
    with torch.no_grad():  # prompts are encoded once here; `search` runs under no_grad itself
        sampler = Sampler(pipe, prompts, args.steps, args.guidance_scale, guidance_rescale, args.negative_prompt)
    schedule = schedule_of(args, len(rewards), sampler.num_steps) if args.strategy == "ttsnap" else ()
    count = args.num_candidates if args.budget_nfe is None else None
    if count is None and args.budget_nfe is None:
        count = 8
    os.makedirs(args.output_dir, exist_ok=True)
    records, summaries, rows, labels = [], [], [], []
    with tqdm(total=len(prompts), desc="search", disable=args.quiet) as progress:
        for index in range(len(prompts)):
            began = time.perf_counter()
            seeds = args.seed
            if args.library:  # NoiseQuery chooses the candidates' seeds
                seeds = library_noise(pipe, args.library, args.attribute, prompt=prompts[index],
                                      seeds_needed=count)[2].seeds
            transform = partial(apply_npnet, pipe, npnet, prompts[index], resize=args.npnet_resize) if npnet else None
            result = search(sampler, index, rewards, seeds=seeds, num_candidates=count, budget=args.budget_nfe,
                            schedule=schedule, preview_rewards=preview_rewards, reward_cost=args.reward_cost,
                            formula=args.cost_formula, micro_batch_size=args.batch_size, strategy=args.strategy,
                            noise_transform=transform)
            best_file = "best.png" if len(prompts) == 1 else f"best_p{index:03d}.png"
            result.best.image.save(os.path.join(args.output_dir, best_file))
            for candidate in result.candidates:
                name = image_name(index, candidate.seed)
                if candidate.pruned_at is not None:
                    name = name.replace(".png", f"_x0_step{candidate.pruned_at}.png")
                candidate.image.save(os.path.join(args.output_dir, name))
                records.append({**candidate.to_dict(), "file": name,
                                **({"best_file": best_file} if candidate.best else {})})
            rows.append([c.image for c in result.candidates])
            labels.append([cell_label(c) for c in result.candidates])
            summaries.append({**result.summary(), "best_file": best_file,
                              "seconds": round(time.perf_counter() - began, 3)})
            progress.update(1)
    grid_labels = [f"p{i}: {s['strategy']} cost {s['cost']}" + (f"/{s['budget']}" if s["budget"] else "") +
                   f" best seed {s['best_seed']}" for i, s in enumerate(summaries)]
    labelled_grid(rows, grid_labels, labels).save(os.path.join(args.output_dir, "grid.png"))
    settings = {"model": args.model or "shapes-t2i", "steps": args.steps, "guidance_scale": args.guidance_scale,
                "guidance_rescale": guidance_rescale, "negative_prompt": args.negative_prompt,
                "zero_snr": args.zero_snr, "npnet": args.npnet, "library": args.library,
                "attributes": args.attribute, "scheduler": type(pipe.scheduler).__name__, "strategy": args.strategy,
                "rewards": list(rewards), "preview_rewards": args.preview_reward, "reward_cost": args.reward_cost,
                "schedule": schedule.to_dict() if schedule else None, "budget_nfe": args.budget_nfe,
                "num_candidates": args.num_candidates, "cost_formula": args.cost_formula, "seed": args.seed,
                "batch_size": args.batch_size,
                "noisekit": __version__}
    path = os.path.join(args.output_dir, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"settings": settings, "prompts": summaries, "candidates": records}, f, indent=2)
    os.replace(path + ".tmp", path)
    if args.json:
        print(json.dumps({"results": path, "prompts": summaries}, indent=2))
    else:
        print(f"wrote {os.path.join(args.output_dir, 'grid.png')} and {path}")
    return summaries
