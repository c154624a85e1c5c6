"""`noisekit generate`: images for prompts x seeds through the noise plan of the flags, with their recipes.

    noisekit generate "a red circle" --num_images 4 --npnet shapes-npnet --nlg
"""

import os

from .common import add_sampling_flags, check_sampling_flags, load_run, read_prompts, run_settings, seeds_of


def register(commands):
    parser = commands.add_parser("generate", help="images for prompts x seeds, with their recipes")
    parser.add_argument("prompt", nargs="?", help="the prompt (or use --prompt_file)")
    parser.add_argument("--prompt_file", help="one prompt per line")
    parser.add_argument("--output_dir", default="outputs/generate")
    add_sampling_flags(parser)
    parser.set_defaults(run=run)


def run(args):
    import torch
    from tqdm.auto import tqdm

    from ..generate import generate, image_name
    from ..results import check_output_dir, write_json

    prompts = read_prompts(args)
    seeds = seeds_of(args)
    check_sampling_flags(args)
    check_output_dir(args.output_dir)
    pipe, plan = load_run(args)
    with torch.no_grad(), tqdm(total=len(prompts), desc="prompts", disable=args.quiet) as progress:
        records, sampler = generate(pipe, prompts, seeds, num_inference_steps=args.steps,
                                    guidance_scale=args.guidance_scale, guidance_rescale=args.guidance_rescale,
                                    negative_prompt=args.negative_prompt, micro_batch_size=args.batch_size,
                                    progress=progress, plan=plan, height=args.height, width=args.width)
    rows = []
    for record in records:
        name = image_name(record["prompt_index"], record["seed"])
        record.pop("image").save(os.path.join(args.output_dir, name))
        rows.append({**record, "file": name})
    path = os.path.join(args.output_dir, "results.json")
    write_json(path, {"settings": run_settings(args, sampler), "images": rows})
    print(f"wrote {path}")
