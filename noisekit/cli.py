"""`noisekit`: the command line. Thin: it parses, calls the library and writes files.

A user mistake is one line on stderr and exit status 2, never a traceback.
"""

import argparse
import json
import os
import sys

from . import __version__

DEMO_PROMPTS = [
    "a large red circle on a black background",
    "a small yellow square on a navy background",
    "a blue triangle on a white background",
    "a large green cross on a beige background",
    "an orange circle above a purple square",
    "a red circle",
]


class UserError(Exception):
    """A mistake in the command line or its inputs, reported as one line."""


def read_prompts(args):
    if args.prompt_file:
        if args.prompt:
            raise UserError("give a PROMPT or --prompt_file, not both.")
        if not os.path.isfile(args.prompt_file):
            raise UserError(f"--prompt_file {args.prompt_file!r} does not exist.")
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
        if not prompts:
            raise UserError(f"--prompt_file {args.prompt_file!r} holds no prompts (one per line).")
        return prompts
    if not args.prompt:
        raise UserError("give a PROMPT or --prompt_file FILE.")
    return [args.prompt]


def seeds_of(args):
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}.")
    if args.num_images < 1:
        raise UserError(f"--num_images must be >= 1, got {args.num_images}.")
    return list(range(args.seed, args.seed + args.num_images))


def add_sampling_flags(parser):
    parser.add_argument("--model", default=None, help="diffusers folder, hub id, or shapes asset (default shapes-t2i)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds S..S+N-1 are used for every prompt")
    parser.add_argument("--num_images", type=int, default=4, help="images (seeds) per prompt")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--guidance_rescale", type=float, default=None, help="CFG rescale phi (0; 0.7 with --zero_snr)")
    parser.add_argument("--negative_prompt", default=None)
    parser.add_argument("--batch_size", type=int, default=None, help="candidates per denoiser batch")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--zero_snr", nargs="?", const="ztsnr", choices=["ztsnr", "trailing"],
                        help="fix the schedule: ztsnr (rescaled + trailing + CFG rescale 0.7; v-prediction models) "
                             "or trailing (spacing only, any model)")
    library = parser.add_argument_group("noise library (NoiseQuery)")
    library.add_argument("--library", default=None,
                         help="draw the noises from this library folder (seeds come from it); shapes-library is the "
                              "shipped one")
    library.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE",
                         help="attribute target for --library, e.g. brightness=high, color=red (repeatable)")
    golden = parser.add_argument_group("golden noise (NPNet)")
    golden.add_argument("--npnet", default=None, help="NPNet: an official .pth/.safetensors file or a saved folder "
                                                      "(shapes-npnet is the shipped one)")
    golden.add_argument("--npnet_resize", action="store_true",
                        help="allow latents of another size than the NPNet's (Gaussian-preserving resize)")
    nlg = parser.add_argument_group("noise level guidance")
    nlg.add_argument("--nlg", action="store_true", help="refine each noise with NLG before sampling")
    nlg.add_argument("--nlg_iterations", type=int, default=20)
    nlg.add_argument("--nlg_step_size", type=float, default=1.0)
    nlg.add_argument("--nlg_clip", type=float, default=0.5, help="per-sample L2 clip of the guidance difference")
    nlg.add_argument("--nlg_relative_clip", type=float, default=None, help="clip at this times sqrt(D) instead")
    nlg.add_argument("--nlg_noise_variance", type=float, default=1e-3)
    nlg.add_argument("--nlg_timestep", default="auto", help="'auto' or a training timestep")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def apply_schedule_flags(pipe, args):
    """`--zero_snr` on the loaded pipeline; returns the CFG rescale to use (0.7 after `--zero_snr` unless given)."""
    from .schedule import zero_snr

    if args.zero_snr:
        zero_snr(pipe, mode=args.zero_snr)
        if args.guidance_rescale is None:
            return getattr(pipe, "noisekit_guidance_rescale", 0.0)
    return args.guidance_rescale or 0.0


def nlg_params(args):
    if not args.nlg:
        return None
    timestep = args.nlg_timestep
    if timestep != "auto":
        if not timestep.isdigit():
            raise UserError(f"--nlg_timestep must be 'auto' or a training timestep, got {timestep!r}.")
        timestep = int(timestep)
    if args.nlg_iterations < 0:
        raise UserError(f"--nlg_iterations must be >= 0, got {args.nlg_iterations}.")
    return {"num_iterations": args.nlg_iterations, "step_size": args.nlg_step_size, "clip": args.nlg_clip,
            "relative_clip": args.nlg_relative_clip, "noise_variance": args.nlg_noise_variance, "timestep": timestep}


def load_npnet(path, pipe, resize):
    from .npnet import NoisePromptNet, check_fit

    if os.path.isdir(path):
        npnet = NoisePromptNet.from_pretrained(path)
        check_fit(npnet, pipe, resize=resize)
    elif os.path.isfile(path):
        npnet = NoisePromptNet.from_official_checkpoint(path, pipe=pipe, resize=resize)
    else:
        raise UserError(f"--npnet {path!r} is neither a checkpoint file nor a saved NPNet folder.")
    return npnet.eval().to(pipe.device)


def run_generate(args, prompts=None):
    import torch
    from tqdm.auto import tqdm

    from .generate import generate, write_results
    from .models import load_pipeline
    from .plan import NoisePlan

    prompts = prompts or read_prompts(args)
    seeds = seeds_of(args)
    if args.attribute and not args.library:
        raise UserError("--attribute needs --library PATH.")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}.")
    nlg = nlg_params(args)
    pipe = load_pipeline(args.model, args.device)
    guidance_rescale = apply_schedule_flags(pipe, args)
    npnet = load_npnet(args.npnet, pipe, args.npnet_resize) if args.npnet else None
    with torch.no_grad(), tqdm(total=len(prompts), desc="prompts", disable=args.quiet) as progress:
        library = {"path": args.library, "attributes": args.attribute} if args.library else None
        plan = NoisePlan(npnet=npnet, npnet_resize=args.npnet_resize, nlg=nlg, library=library)
        records = generate(pipe, prompts, seeds, args.steps, args.guidance_scale, guidance_rescale,
                           args.negative_prompt, args.batch_size, progress, plan)
    settings = {"model": args.model or "shapes-t2i", "steps": args.steps, "guidance_scale": args.guidance_scale,
                "guidance_rescale": guidance_rescale, "negative_prompt": args.negative_prompt,
                "zero_snr": args.zero_snr, "nlg": nlg, "npnet": args.npnet, "library": args.library,
                "attributes": args.attribute, "scheduler": type(pipe.scheduler).__name__,
                "batch_size": args.batch_size, "noisekit": __version__}
    path = write_results(records, args.output_dir, settings)
    return records, path


def run_demo(args):
    """Seed search on the embedded shapes world: best-of-N by the shapes judge for a handful of prompts."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(DEMO_PROMPTS) + "\n")
    argv = ["search", "--prompt_file", f.name, "--reward", "shapes-judge", "--strategy", "best_of_n",
            "--num_candidates", str(args.num_candidates), "--steps", str(args.steps), "--output_dir", args.output_dir,
            "--seed", str(args.seed)] + (["--quiet"] if args.quiet else [])
    try:
        search_args = build_parser().parse_args(argv)
        search_args.run(search_args)
    finally:
        os.unlink(f.name)


def run_replay(args):
    """Regenerate a results.json's images from their recipes; exit status 1 when any pixel differs."""
    from tqdm.auto import tqdm

    from .replay import replay_results

    with tqdm(desc="prompts", disable=args.quiet) as progress:
        report = replay_results(args.results, args.output_dir, args.npnet, args.device, progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"replayed {report['images']} images into {report['output_dir']}: {report['identical']} identical, "
              f"largest pixel difference {report['max_pixel_difference']}")
    return 0 if report["identical"] == report["images"] else 1


def quiet_libraries():
    """diffusers and transformers draw loading bars and warnings on stderr; the CLI keeps stderr for errors."""
    import warnings

    import diffusers
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def build_parser():
    parser = argparse.ArgumentParser(prog="noisekit", description="The initial noise of diffusion as a tool.")
    parser.add_argument("--version", action="version", version=f"noisekit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    generate = commands.add_parser("generate", help="images for prompts x seeds, with their recipes")
    generate.add_argument("prompt", nargs="?", help="the prompt (or use --prompt_file)")
    generate.add_argument("--prompt_file", help="one prompt per line")
    generate.add_argument("--output_dir", default="outputs/generate")
    add_sampling_flags(generate)
    generate.set_defaults(run=lambda a: print(f"wrote {run_generate(a)[1]}"))

    demo = commands.add_parser("demo", help="seed search on the embedded shapes world: a labelled grid")
    demo.add_argument("--output_dir", default="outputs/demo")
    demo.add_argument("--num_candidates", type=int, default=8, help="seeds searched per prompt")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=20)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=run_demo)

    replay = commands.add_parser("replay", help="regenerate the images of a results.json from their recipes")
    replay.add_argument("results", help="results.json written by noisekit generate or search")
    replay.add_argument("--output_dir", default=None, help="where the replayed images go (default: replay/ beside it)")
    replay.add_argument("--npnet", default=None, help="the NPNet of golden-noise recipes (default: the recorded path)")
    replay.add_argument("--device", default=None)
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.add_argument("--quiet", action="store_true")
    replay.set_defaults(run=run_replay)

    from .library_cli import add_library
    from .schedule_cli import add_inspect_schedule
    from .search_cli import add_search

    add_search(commands)
    add_library(commands)
    add_inspect_schedule(commands)
    return parser


SHIPPED = {"library": "shapes-library", "npnet": "shapes-npnet"}  # flag -> the asset its name may stand for


def resolve_assets(args):
    """`--library shapes-library`, `--npnet shapes-npnet`: a shipped asset's name stands for its folder."""
    from .shapes.assets import asset_path

    for flag, asset in SHIPPED.items():
        if getattr(args, flag, None) == asset and not os.path.exists(asset):
            setattr(args, flag, str(asset_path(asset)))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    quiet_libraries()
    try:
        resolve_assets(args)
        status = args.run(args)
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"noisekit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout stopped early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
