"""`noisekit demo`: seed search on the embedded shapes world, best-of-N by the shapes judge; a labelled grid."""

import os
import tempfile

from .common import DEMO_PROMPTS


def register(commands):
    parser = commands.add_parser("demo", help="seed search on the embedded shapes world: a labelled grid")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--num_candidates", type=int, default=8, help="seeds searched per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run)


def run(args):
    from . import search

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(DEMO_PROMPTS) + "\n")
    argv = ["--prompt_file", f.name, "--reward", "shapes-judge", "--strategy", "best_of_n",
            "--num_candidates", str(args.num_candidates), "--steps", str(args.steps), "--output_dir", args.output_dir,
            "--seed", str(args.seed)] + (["--quiet"] if args.quiet else [])
    try:
        import argparse

        parser = argparse.ArgumentParser(prog="noisekit demo")
        search.register(parser.add_subparsers(dest="command"))
        search_args = parser.parse_args(["search", *argv])
        return search_args.run(search_args)
    finally:
        os.unlink(f.name)
