"""What every subcommand shares: prompts and seeds from the command line, the sampling and noise-plan flags, and
the one error type for a user's mistake."""

import os

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


def add_prompt_flags(parser):
    parser.add_argument("prompt", nargs="?", help="the prompt (or use --prompt_file or --prompts)")
    parser.add_argument("--prompt_file", help="one prompt per line")
    parser.add_argument("--prompts", default=None, metavar="SET[:CATEGORY]",
                        help="a prompt set by name: drawbench|pickscore|hpd|geneval|t2i-compbench, optionally "
                             "with a category (e.g. geneval:counting)")
    parser.add_argument("--prompts_path", default=None,
                        help="your copy of a set that is not shipped (DrawBench's CSV), for --prompts")


def read_prompts(args):
    given = [flag for flag, value in (("PROMPT", args.prompt), ("--prompt_file", args.prompt_file),
                                      ("--prompts", args.prompts)) if value is not None]
    if len(given) > 1:
        raise UserError(f"give one of PROMPT, --prompt_file or --prompts, not {' and '.join(given)}.")
    if args.prompts_path and not args.prompts:
        raise UserError("--prompts_path needs --prompts SET (the set the file holds).")
    if args.prompts is not None:
        return prompt_set(args.prompts, args.prompts_path)
    if args.prompt_file:
        if not os.path.isfile(args.prompt_file):
            raise UserError(f"--prompt_file {args.prompt_file!r} does not exist.")
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
        if not prompts:
            raise UserError(f"--prompt_file {args.prompt_file!r} holds no prompts (one per line).")
        return prompts
    if args.prompt is None:
        raise UserError("give a PROMPT, --prompt_file FILE or --prompts SET (an empty PROMPT \"\" is an "
                        "unconditional image).")
    return [args.prompt]


def prompt_set(name, path):
    from ..prompt_sets import list_prompt_sets, load_prompt_set

    set_name = name.partition(":")[0].strip().lower()
    if path is None and set_name in list_prompt_sets() and set_name not in list_prompt_sets(shipped_only=True):
        raise UserError(f"--prompts {set_name} is not shipped (its source states no licence); add --prompts_path "
                        "FILE, your copy of its CSV (columns Prompts,Category).")
    prompts = load_prompt_set(name, path=path)
    if not prompts:
        raise UserError(f"--prompts {name!r} holds no prompts.")
    return prompts


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
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (the model's default)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (the model's default)")
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


def check_sampling_flags(args):
    """The sampling flags' values, checked before anything is loaded."""
    import math

    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}.")
    if not math.isfinite(args.guidance_scale) or args.guidance_scale < 0:
        raise UserError(f"--guidance_scale must be a finite number >= 0, got {args.guidance_scale}.")
    if args.guidance_rescale is not None and not 0 <= args.guidance_rescale <= 1:
        raise UserError(f"--guidance_rescale must lie in [0, 1], got {args.guidance_rescale}.")
    for flag in ("batch_size", "height", "width"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be a positive integer, got {value}.")
    if args.attribute and not args.library:
        raise UserError("--attribute needs --library PATH.")


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


def load_run(args, *, device=None):
    """The pipeline (schedule fixed by --zero_snr) and the noise plan of the flags, without a search stage;
    `device` (a process's own, under accelerate) overrides --device."""
    from ..core.schedule import zero_snr
    from ..plan import LibraryStage, NoisePlan
    from ..sources import load_npnet, load_pipeline, resolve

    nlg = nlg_params(args)
    library = None
    if args.library:
        library = LibraryStage(resolve(args.library, kind="library")[0], tuple(args.attribute))
    pipe = load_pipeline(args.model, device=device or args.device)
    if args.zero_snr:
        zero_snr(pipe, mode=args.zero_snr)
    npnet = load_npnet(args.npnet, pipe, resize=args.npnet_resize, height=args.height,
                       width=args.width) if args.npnet else None
    return pipe, NoisePlan(library=library, npnet=npnet, npnet_resize=args.npnet_resize, nlg=nlg)


def sampler_settings(args):
    return {"num_inference_steps": args.steps, "guidance_scale": args.guidance_scale,
            "guidance_rescale": args.guidance_rescale, "negative_prompt": args.negative_prompt,
            "height": args.height, "width": args.width}


def run_settings(args, sampler):
    """What `results.json` records of the run: the names the user gave (asset names, not folders) and every
    setting a replay needs."""
    from ..version import __version__

    return {"model": args.model or "shapes-t2i", **sampler.settings(), "zero_snr": args.zero_snr,
            "nlg": nlg_params(args), "npnet": args.npnet, "npnet_resize": args.npnet_resize,
            "library": args.library, "attributes": args.attribute, "batch_size": args.batch_size,
            "seed": args.seed, "noisekit": __version__}


# Flags that change neither the images nor the scores: a run resumed with other values of these is the same run.
NOT_RUN_SETTINGS = ("prompt", "prompt_file", "prompts", "prompts_path", "output_dir", "device", "quiet", "json",
                    "run", "command")


def command_settings(args, command, prompts):
    """What identifies a run for resuming: the command, its flags (asset names as given) and its prompts."""
    from ..runs import prompts_digest
    from ..version import __version__

    flags = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_RUN_SETTINGS}
    flags["model"] = args.model or "shapes-t2i"
    return {"command": command, **flags, "prompts": prompts_digest(prompts), "num_prompts": len(prompts),
            "noisekit": __version__}


def open_run(args, command, prompts, lists):
    """The run folder of this command, refused when it holds another run; this process's place in the run."""
    from ..results import check_output_dir
    from ..runs import RunFolder, process_group

    check_output_dir(args.output_dir)
    folder = RunFolder(args.output_dir, settings=command_settings(args, command, prompts), num_prompts=len(prompts),
                       lists=lists)
    folder.check()
    return folder, process_group(device=args.device)


def run_all(args, folder, group, work, settings, *, desc, load_seconds):
    """Every prompt of this process's share through `work`, `results.json` rewritten after each one (an
    interrupted run keeps every finished prompt), then, on the main process, the merged results with the run's
    throughput. Returns `(results, throughput)` on the main process, `None` on the others."""
    from tqdm.auto import tqdm

    from ..results import write_json
    from ..runs import run_prompts

    path = os.path.join(folder.output_dir, "results.json")
    write = lambda: write_json(path, folder.merge(settings=settings))  # noqa: E731
    with tqdm(desc=desc, unit="prompt", disable=args.quiet or not group.is_main) as progress:
        pending, _ = run_prompts(folder, group, work, on_done=write, progress=progress)
    if not group.is_main:
        return None
    return finish_run(folder, group, settings, pending=pending, load_seconds=load_seconds)


def finish_run(folder, group, settings, *, pending, load_seconds):
    """On the main process, once every process is done: `results.json` merged with the run's throughput, and
    `index.html`. Returns the results and this invocation's throughput."""
    from ..report import write_report
    from ..results import write_json
    from ..runs import gather_throughput

    throughput = gather_throughput(folder, group, pending=pending, load_seconds=load_seconds)
    recorded = throughput
    if not throughput["prompts_run"]:  # a finished run run again: keep the throughput of the run that did the work
        recorded = folder.previous_throughput() or throughput
    results = folder.merge(settings=settings, throughput=recorded)
    write_json(os.path.join(folder.output_dir, "results.json"), results)
    write_report(folder.output_dir)
    return results, throughput


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
