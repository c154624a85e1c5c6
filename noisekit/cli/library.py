"""`noisekit library build|query|info`.

Examples:
    noisekit library build --num_seeds 10000 --output lib                  # the shapes world, with its CLIP
    accelerate launch -m noisekit library build --num_seeds 100000 --output lib --model ORG/NAME \\
        --clip ViT-B-32:openai                                             # disjoint shards per process
    noisekit library query lib --text "a red circle" --attribute brightness=low --top_k 4 --json
    noisekit library info lib
"""

import json

from ..shapes.assets import PIPELINE_ASSETS
from ..sources import resolve


def register(commands):
    """Register `library` with its `build`, `query` and `info` subcommands on `commands` (argparse subparsers)."""
    library = commands.add_parser("library", help="NoiseQuery: a noise library built once, queried by text/attributes")
    actions = library.add_subparsers(dest="library_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="build, finish (--resume) or grow a library")
    build.add_argument("--model", default=None, help="diffusers folder, hub id, or shapes asset (default shapes-t2i)")
    build.add_argument("--num_seeds", type=int, required=True, help="seeds seed_start..seed_start+N-1")
    build.add_argument("--output", required=True, help="library folder")
    build.add_argument("--resume", action="store_true", help="finish an interrupted build or grow the library")
    build.add_argument("--seed_start", type=int, default=0)
    build.add_argument("--steps", type=int, default=20, help="DDIM steps per posterior")
    build.add_argument("--height", type=int, default=None)
    build.add_argument("--width", type=int, default=None)
    build.add_argument("--clip", default="auto", help="open_clip source for text queries: shapes-clip, "
                       "local-dir:FOLDER, hf-hub:ORG/REPO, ARCH:TAG, or none (auto: shapes-clip for the shapes world)")
    build.add_argument("--extractors", default="color,sharpness,texture,shape", help="attribute extractors")
    build.add_argument("--shard_size", type=int, default=256)
    build.add_argument("--batch_size", type=int, default=16)
    build.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument("--json", action="store_true", help="print the library's info as JSON")
    build.set_defaults(run=run_build)

    query = actions.add_parser("query", help="seeds for a text and/or attribute targets")
    query.add_argument("library", help="library folder")
    query.add_argument("--text", default=None)
    query.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE",
                       help="e.g. brightness=high, lab_l=p20, hfe=0.1..0.3, color=red, color=#1e90ff, shape=img.png")
    query.add_argument("--top_k", type=int, default=1)
    query.add_argument("--mode", default="rerank", choices=["rerank", "weighted"])
    query.add_argument("--rerank_k", type=int, default=100, help="semantic candidates re-ranked by attributes")
    query.add_argument("--weight", action="append", default=[], metavar="NAME=W", help="term weight (text or NAME)")
    query.add_argument("--exclude", default="", help="comma-separated seeds never to return")
    query.add_argument("--temperature", type=float, default=0.0, help="> 0: sample instead of the top-k")
    query.add_argument("--sample_seed", type=int, default=None)
    query.add_argument("--json", action="store_true", help="machine-readable output")
    query.set_defaults(run=run_query)

    info = actions.add_parser("info", help="size, model, posterior settings and features of a library")
    info.add_argument("library", help="library folder")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=run_info)


def clip_source(args):
    if args.clip != "auto":
        return None if args.clip == "none" else args.clip
    if args.model is None or args.model in PIPELINE_ASSETS:
        return "shapes-clip"
    raise ValueError("--clip must be given for a model outside the shapes world: an open_clip source "
                     "(ViT-B-32:openai, local-dir:FOLDER, hf-hub:ORG/REPO) or 'none' (no text queries).")


def run_build(args):
    from tqdm.auto import tqdm

    from ..library import NoiseLibrary, build_library, clip_extractor, get_extractor
    from ..runs import process_group
    from ..sources import load_pipeline

    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    extractors = [get_extractor(n) for n in names]
    source = clip_source(args)
    group = process_group(device=args.device)  # one process, or this one's place under `accelerate launch`
    process_index, num_processes, barrier = group.index, group.count, group.barrier
    pipe = load_pipeline(args.model, device=group.device)
    if source is not None:
        extractors.append(clip_extractor(source, device=pipe.device))
    with tqdm(total=args.num_seeds // num_processes, desc="posteriors", unit="seed",
              disable=args.quiet or process_index != 0) as progress:
        build_library(pipe, args.output, args.num_seeds, args.seed_start, extractors, args.steps, args.height,
                      args.width, args.shard_size, args.batch_size, args.resume, process_index, num_processes,
                      model_id=args.model or "shapes-t2i", barrier=barrier, progress=progress)
    if process_index == 0:
        print_info(NoiseLibrary.load(args.output).info(), args.json)


def parse_weights(items):
    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--weight must be NAME=NUMBER, got {item!r}.") from None
    return weights


def run_query(args):
    from ..library import NoiseLibrary

    try:
        exclude = [int(s) for s in args.exclude.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--exclude must be comma-separated integer seeds, got {args.exclude!r}.") from None
    library = NoiseLibrary.load(resolve(args.library, kind="library")[0])
    result = library.query(args.text, args.attribute, args.top_k, args.mode, args.rerank_k,
                           parse_weights(args.weight), exclude, args.temperature, args.sample_seed)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    names = list(result.terms)
    print("rank  seed          score  " + "  ".join(f"{n:>12}" for n in names))
    for rank, (seed, score) in enumerate(zip(result.seeds, result.scores)):
        terms = "  ".join(f"{result.terms[n][rank]:12.4f}" for n in names)
        print(f"{rank:4d}  {seed:<12d} {score:7.4f}  {terms}")


def print_info(info, as_json):
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def run_info(args):
    from ..library import NoiseLibrary

    print_info(NoiseLibrary.load(resolve(args.library, kind="library")[0]).info(), args.json)
