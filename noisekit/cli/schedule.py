"""`noisekit inspect-schedule`."""

import json


def register(commands):
    parser = commands.add_parser("inspect-schedule", help="what a model's scheduler really does, and its problems")
    parser.add_argument("--model", default=None, help="diffusers folder, hub id, or shapes asset (default shapes-t2i)")
    parser.add_argument("--num_inference_steps", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run_inspect_schedule)


def run_inspect_schedule(args):
    from ..core.inspect_schedule import inspect_schedule
    from ..sources import load_scheduler

    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise ValueError(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}.")
    report = inspect_schedule(load_scheduler(args.model), args.num_inference_steps)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
