"""`noisekit generate`: images for prompts x seeds through the noise plan of the flags, with their recipes.

    noisekit generate "a red circle" --num_images 4 --npnet shapes-npnet --nlg
    accelerate launch -m noisekit generate --prompts geneval --num_images 4    # prompts split across processes
"""

import os
import time

from .common import (add_prompt_flags, add_sampling_flags, check_sampling_flags, load_run, open_run, read_prompts,
                     run_all, run_settings, sampler_settings, seeds_of)


def register(commands):
    parser = commands.add_parser("generate", help="images for prompts x seeds, with their recipes")
    add_prompt_flags(parser)
    parser.add_argument("--output_dir", default="outputs/generate")
    add_sampling_flags(parser)
    parser.set_defaults(run=run)


def run(args):
    import torch

    from ..generate import generate_prompt, image_name
    from ..plan import run_sampler
    from ..runs import describe

    began = time.perf_counter()
    prompts = read_prompts(args)
    seeds = seeds_of(args)
    check_sampling_flags(args)
    folder, group = open_run(args, "generate", prompts, ("images",))
    pipe, plan = load_run(args, device=group.device)
    with torch.no_grad():  # the run's prompts, encoded once (all of them in every process: the same encodings)
        sampler = run_sampler(pipe, prompts, plan, **sampler_settings(args))
    settings = run_settings(args, sampler)
    path = os.path.join(args.output_dir, "results.json")
    load_seconds = round(time.perf_counter() - began, 3)

    def work(index):
        rows = []
        with torch.no_grad():
            records = generate_prompt(sampler, plan, index, seeds, micro_batch_size=args.batch_size)
        for record in records:
            name = image_name(record["prompt_index"], record["seed"])
            record.pop("image").save(os.path.join(args.output_dir, name))
            rows.append({**record, "file": name})
        return {"images": rows}, len(rows), sum(r["nfe"] for r in rows)

    finished = run_all(args, folder, group, work, settings, desc="prompts", load_seconds=load_seconds)
    if finished is None:  # not the main process
        return 0
    _, throughput = finished
    print(f"wrote {path} and index.html")
    print(describe(throughput))
    return 0
