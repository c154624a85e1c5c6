"""Collect an NPNet noise prompt dataset (NPD) by re-denoise sampling -> `output_dir/{prompts.jsonl,shards/}`.

    python training/collect_npd.py --pretrained_model_name_or_path assets/shapes-t2i-eps --dataset shapes \\
        --num_prompts 20000 --reward shapes-judge --output_dir runs/npd-shapes
    accelerate launch training/collect_npd.py ...   # process k of N collects shards k, k + N, ...
    # SDXL as in the paper: --prompt_file prompts.txt --resolution 1024 --dtype float16 --reward hpsv2.1 \\
    #     --reward_path HPS_v2.1_compressed.pt
    # SD3 / FLUX.1-dev: the same flags; pairs are canonical (16, h, w) noise, re-denoised by Euler steps of the
    #     pipeline's own flow schedule (exact inversion), sampled with its own scheduler

Per (prompt, seed): x_T = the seed's canonical noise (`noisekit.seed_noise`); one DDIM step with CFG omega_l = 5.5
at the first timestep of an N = 10 step schedule, then one DDIM inversion step with omega_w = 1.0 back to x'_T
(`noisekit.transforms.npd`: the official code's inversion indexing by default, `--exact_inversion` for the exact inverse).
Both x_T and x'_T are then sampled with the pipeline (N steps, CFG `--guidance_scale`, omega_l by default, DDIM
as the official code unless `--keep_scheduler`) and both images are scored with a registry reward; the pair is
kept when reward(x'_T) - reward(x_T) > `--margin` (0, strict, as the official filter).

Items (prompt, seed) are numbered 0, 1, ...: item i has prompt i // seeds_per_prompt and seed seed_offset + i
(or the seed of its JSONL line). Shard s holds items [s * shard_size, (s + 1) * shard_size): its kept pairs in
`shards/shard-XXXXX.safetensors` (`noisekit.transforms.npd.SHARD_KEYS`) and every pair's record (rewards, kept) in
`shards/shard-XXXXX.jsonl`. Files are written to a temporary name and renamed (the safetensors last), so a
restart skips finished shards and redoes the rest; `records.jsonl` gathers all records once every shard exists.
A restart with other settings in the same `output_dir` is refused (`collection.json`).
"""

import argparse
import hashlib
import json
import os
import sys

import torch
from accelerate import Accelerator
from diffusers import DDIMScheduler, DiffusionPipeline
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from noisekit.core.families import encode  # noqa: E402
from noisekit.core.noise import seed_noise  # noqa: E402
from noisekit.transforms.npd import re_denoise, shard_name  # noqa: E402
from noisekit.rewards import load_reward  # noqa: E402
from noisekit.core.sampler import sample  # noqa: E402
from noisekit.sources import absent_components  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_model_name_or_path", required=True,
                        help="diffusers pipeline folder (SD/SDXL, SD3, FLUX.1-dev)")
    parser.add_argument("--output_dir", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt_file", help=".txt (one prompt a line) or .jsonl with 'prompt'/'caption' (+ 'seed')")
    source.add_argument("--dataset", choices=["shapes"], help="shapes-world training captions (held-out excluded)")
    parser.add_argument("--num_prompts", type=int, default=None,
                        help="prompt file: its first N lines; shapes (required): the distinct captions of N scenes")
    parser.add_argument("--data_seed", type=int, default=1, help="shapes dataset seed (as the shapes trainers)")
    parser.add_argument("--seeds_per_prompt", type=int, default=1)
    parser.add_argument("--seed_offset", type=int, default=0)
    parser.add_argument("--num_inference_steps", type=int, default=10)
    parser.add_argument("--denoising_guidance_scale", type=float, default=5.5, help="omega_l")
    parser.add_argument("--inversion_guidance_scale", type=float, default=1.0, help="omega_w")
    parser.add_argument("--exact_inversion", action="store_true",
                        help="invert t1 -> t0 exactly instead of the official code's indexing (flow-matching "
                        "pipelines always invert exactly: the official indexing is DDIM's)")
    parser.add_argument("--guidance_scale", type=float, default=None, help="for sampling both images (omega_l)")
    parser.add_argument("--keep_scheduler", action="store_true",
                        help="sample with the pipeline's own scheduler (default: DDIM from its config; "
                        "flow-matching pipelines always keep their own)")
    parser.add_argument("--resolution", type=int, default=None, help="image side (the pipeline's default)")
    parser.add_argument("--reward", required=True, help="a noisekit.rewards registry name")
    parser.add_argument("--reward_path", default=None, help="the reward's weights (its `path=`)")
    parser.add_argument("--reward_kwargs", type=json.loads, default={}, help="JSON of other reward options")
    parser.add_argument("--margin", type=float, default=0.0, help="keep pairs with reward gain > margin")
    parser.add_argument("--shard_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8, help="items per denoiser batch")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="pipeline dtype")
    parser.add_argument("--storage_dtype", choices=["float32", "float16"], default="float32")
    return parser.parse_args(input_args)


def shapes_prompts(data_seed, count):
    """The captions of `render_scenes(data_seed, count, exclude=heldout_captions())` (same scene walk, no
    pixels), distinct, in order."""
    from noisekit.shapes.dataset import heldout_captions
    from noisekit.shapes.scenes import sample_scene

    heldout, captions, index = heldout_captions(), [], 0
    while len(captions) < count:
        scene = sample_scene(data_seed, index)
        index += 1
        if scene.caption not in heldout:
            captions.append(scene.caption)
    return list(dict.fromkeys(captions))


def load_items(args):
    """`(prompts, items)`: distinct prompts and the (prompt_index, seed) list."""
    if args.dataset == "shapes":
        if args.num_prompts is None:
            raise ValueError("`--dataset shapes` needs `--num_prompts` (scenes to read captions from).")
        prompts, seeds = shapes_prompts(args.data_seed, args.num_prompts), None
    else:
        with open(args.prompt_file) as f:
            lines = [line.strip() for line in f if line.strip()]
        if args.prompt_file.endswith((".jsonl", ".json")):
            rows = [json.loads(line) for line in lines]
            texts = [row.get("prompt", row.get("caption")) for row in rows]
            seeds = [row["seed"] for row in rows] if all("seed" in row for row in rows) else None
        else:
            texts, seeds = lines, None
        if args.num_prompts is not None:
            texts, seeds = texts[: args.num_prompts], seeds[: args.num_prompts] if seeds else None
        if seeds is not None:  # one item per line, its own seed
            prompts = list(dict.fromkeys(texts))
            return prompts, [(prompts.index(t), int(s)) for t, s in zip(texts, seeds)]
        prompts = list(dict.fromkeys(texts))
    items = [(i // args.seeds_per_prompt, args.seed_offset + i)
             for i in range(len(prompts) * args.seeds_per_prompt)]
    return prompts, items


def shards_of_process(num_shards, process_index, num_processes):
    return list(range(process_index, num_shards, num_processes))


def is_flow_model(path):
    """Whether the pipeline folder's scheduler is flow matching (read from its config, no weights)."""
    from noisekit.core.schedule import is_flow
    from noisekit.sources import load_scheduler

    return is_flow(load_scheduler(path))


def inversion_of(args, flow):
    return "exact" if args.exact_inversion or flow else "official"


def collection_config(args, prompts, items, flow=False):
    digest = hashlib.sha256(json.dumps([prompts, items]).encode()).hexdigest()[:16]
    keys = ("pretrained_model_name_or_path", "num_inference_steps", "denoising_guidance_scale",
            "inversion_guidance_scale", "exact_inversion", "guidance_scale", "keep_scheduler", "resolution",
            "reward", "reward_path", "reward_kwargs", "margin", "shard_size", "dtype", "storage_dtype")
    config = {key: getattr(args, key) for key in keys}
    config.update(inversion=inversion_of(args, flow), items_hash=digest,
                  num_prompts=len(prompts), num_items=len(items))
    return config


def write_atomic(path, writer):
    partial = path + ".partial"
    writer(partial)
    os.replace(partial, path)


def write_json(path, obj, lines=False):
    def writer(partial):
        with open(partial, "w") as f:
            if lines:
                f.writelines(json.dumps(row) + "\n" for row in obj)
            else:
                json.dump(obj, f, indent=2)

    write_atomic(path, writer)


def prepare_output(args, accelerator, prompts, items, flow=False):
    """Write (or check) `collection.json` and `prompts.jsonl` on the main process."""
    config = collection_config(args, prompts, items, flow)
    path = os.path.join(args.output_dir, "collection.json")
    if accelerator.is_main_process:
        os.makedirs(os.path.join(args.output_dir, "shards"), exist_ok=True)
        if not os.path.exists(path):
            write_json(os.path.join(args.output_dir, "prompts.jsonl"),
                       [{"prompt_index": i, "prompt": p} for i, p in enumerate(prompts)], lines=True)
            write_json(path, config)
    accelerator.wait_for_everyone()
    with open(path) as f:
        old = json.load(f)
    changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    if changed:
        raise ValueError(f"{args.output_dir} was collected with other settings ({', '.join(changed)}); "
                         "resume with the same ones or use another --output_dir.")
    return config


def collect_shard(pipe, reward, args, prompts, shard_items, height, width, inversion):
    """Re-denoise sampling, sampling and scoring of one shard's items -> `(tensors, records)`."""
    guidance = args.denoising_guidance_scale if args.guidance_scale is None else args.guidance_scale
    storage = DTYPES[args.storage_dtype]
    parts, records = {k: [] for k in ("source", "target", "reward_source", "reward_target")}, []
    for start in range(0, len(shard_items), args.batch_size):
        batch = shard_items[start : start + args.batch_size]
        local = list(dict.fromkeys(p for p, _ in batch))  # this batch's distinct prompts
        local_index = [local.index(p) for p, _ in batch]
        texts = [prompts[p] for p, _ in batch]
        noise = seed_noise(pipe, [s for _, s in batch], height, width)
        conditioning = encode(pipe, [prompts[p] for p in local], None, True, height, width)
        result = re_denoise(pipe, [prompts[p] for p in local], noise, local_index, args.num_inference_steps,
                            args.denoising_guidance_scale, args.inversion_guidance_scale, inversion, conditioning)
        out = sample(pipe, texts * 2, torch.cat([noise, result.target]), num_inference_steps=args.num_inference_steps,
                     guidance_scale=guidance)
        with torch.no_grad():
            scores = reward(out.images, texts * 2).float().cpu()
        parts["source"].append(noise)
        parts["target"].append(result.target)
        parts["reward_source"].append(scores[: len(batch)])
        parts["reward_target"].append(scores[len(batch) :])
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    gain = tensors["reward_target"] - tensors["reward_source"]
    keep = gain > args.margin
    for (prompt_index, seed), before, after, kept in zip(shard_items, tensors["reward_source"].tolist(),
                                                         tensors["reward_target"].tolist(), keep.tolist()):
        records.append({"prompt_index": prompt_index, "prompt": prompts[prompt_index], "seed": seed,
                        "reward_source": before, "reward_target": after, "kept": kept})
    stored = {
        "source": tensors["source"][keep].to(storage).contiguous(),
        "target": tensors["target"][keep].to(storage).contiguous(),
        "prompt_index": torch.tensor([p for p, _ in shard_items], dtype=torch.int64)[keep],
        "seed": torch.tensor([s for _, s in shard_items], dtype=torch.int64)[keep],
        "reward_source": tensors["reward_source"][keep].contiguous(),
        "reward_target": tensors["reward_target"][keep].contiguous(),
    }
    return stored, records


def main(args):
    accelerator = Accelerator()
    prompts, items = load_items(args)
    if not items:
        raise ValueError("no (prompt, seed) items to collect.")
    flow = is_flow_model(args.pretrained_model_name_or_path)
    config = prepare_output(args, accelerator, prompts, items, flow)
    folder = os.path.join(args.output_dir, "shards")
    num_shards = -(-len(items) // args.shard_size)
    todo = [s for s in shards_of_process(num_shards, accelerator.process_index, accelerator.num_processes)
            if not os.path.exists(os.path.join(folder, shard_name(s) + ".safetensors"))]
    accelerator.print(f"{len(items)} items of {len(prompts)} prompts in {num_shards} shards; this process: "
                      f"{len(todo)} to do", flush=True)
    if todo:
        pipe = DiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path, dtype=DTYPES[args.dtype],
                                                 **absent_components(args.pretrained_model_name_or_path))
        if not args.keep_scheduler and not flow:  # a flow model's own Euler sampler is already deterministic
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe = pipe.to(accelerator.device)
        pipe.set_progress_bar_config(disable=True)
        height = width = args.resolution
        kwargs = dict(args.reward_kwargs, **({"path": args.reward_path} if args.reward_path else {}))
        reward = load_reward(args.reward, device=accelerator.device, **kwargs)
        if hasattr(reward, "eval"):
            reward.eval()
    for shard in todo:
        shard_items = items[shard * args.shard_size : (shard + 1) * args.shard_size]
        tensors, records = collect_shard(pipe, reward, args, prompts, shard_items, height, width,
                                         config["inversion"])
        base = os.path.join(folder, shard_name(shard))
        write_json(base + ".jsonl", records, lines=True)
        metadata = {"num_records": str(len(records)), "num_kept": str(len(tensors["seed"])),
                    "inversion": config["inversion"], "margin": str(args.margin)}
        write_atomic(base + ".safetensors", lambda p: save_file(tensors, p, metadata=metadata))  # noqa: B023
        print(f"[process {accelerator.process_index}] shard {shard}: kept {len(tensors['seed'])}/{len(records)}",
              flush=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        done = all(os.path.exists(os.path.join(folder, shard_name(s) + ".safetensors")) for s in range(num_shards))
        if done:
            records = []
            for shard in range(num_shards):
                with open(os.path.join(folder, shard_name(shard) + ".jsonl")) as f:
                    records += [json.loads(line) for line in f if line.strip()]
            write_json(os.path.join(args.output_dir, "records.jsonl"), records, lines=True)
            kept = sum(r["kept"] for r in records)
            print(f"kept {kept}/{len(records)} pairs (margin {args.margin}); records in "
                  f"{os.path.join(args.output_dir, 'records.jsonl')}", flush=True)
    return config


if __name__ == "__main__":
    main(parse_args())
