"""NoiseQuery on the shapes world: does retrieved noise give the attribute a prompt leaves unstated?

    python benchmarks/library_evidence.py --output benchmarks/results/library_evidence.json

Prompts are the shapes world's held-out one-object captions (never in any training set) that leave an attribute
unstated; the target asks for it:

- `dark background` (captions without a background clause): retrieval asks `brightness=low` of the posteriors
  with the prompt as text (rerank mode); success = the pixel checker reads a black or navy background;
- `bright background`: the same with `brightness=high`; success = a white or beige background;
- `large` (captions without a size): retrieval is the text `a large ...`; success = the pixel checker reads
  size large;
- `small`: the same with `a small ...`; success = size small;
- `top left` (captions without a position): retrieval is the text `... in the top left ...`; success = the pixel
  checker reads the object's cell as top left.

Each prompt gets `--images` images from retrieved seeds and as many from random seeds (outside the library), all
sampled with the prompt as given (20 steps, CFG 5). A second experiment takes the full held-out captions and
compares text-only retrieval (text = the prompt) with random seeds by the shapes judge's reward. Build throughput
comes from the library's manifest; bytes per entry are the folder's size over its entries, against one float32
noise tensor.
"""

import argparse
import json
import os
import time

import numpy as np
import torch

from noisekit import sample, seed_noise
from noisekit.library import NoiseLibrary
from noisekit.library.store import committed_shards
from noisekit.sources import load_pipeline
from noisekit.rewards import load_reward
from noisekit.shapes.captions import parse_caption
from noisekit.shapes.dataset import heldout_scenes
from shapes_quality import report  # noqa: E402  (the sibling script)
from noisekit.shapes.pixelcheck import read_image
from noisekit.shapes.scenes import POSITIONS

RANDOM_SEED_START = 50_000_000  # random-arm seeds, far from any library's range


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", default="assets/shapes-library")
    parser.add_argument("--model", default=None, help="the library's pipeline (default: shapes-t2i)")
    parser.add_argument("--num_prompts", type=int, default=48, help="prompts per target")
    parser.add_argument("--num_reward_prompts", type=int, default=96, help="prompts of the text-only experiment")
    parser.add_argument("--targets", nargs="+", default=None, help="only these targets (default: all)")
    parser.add_argument("--images", type=int, default=4, help="images per prompt and arm")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--output", default=None)
    return parser.parse_args(input_args)


def one_object(scenes):
    return [(s, parse_caption(s.caption)) for s in scenes if len(parse_caption(s.caption)["objects"]) == 1]


def base_phrase(obj, size=None):
    from noisekit.shapes.scenes import with_article

    words = " ".join(w for w in (obj.get("size") if size is None else size, obj["color"], obj["shape"]) if w)
    return with_article(words)


def target_prompts(pairs, count):
    """`{target: [(prompt, retrieval_text, attributes)]}`: the held-out one-object captions that leave the
    target's attribute unstated, as they are."""
    out = {"dark background": [], "bright background": [], "large": [], "small": [], "top left": []}
    for scene, parsed in pairs:
        obj, prompt = parsed["objects"][0], scene.caption
        position = f" {POSITIONS[parsed['position']][1]}" if parsed.get("position") else ""
        background = f" on a {parsed['background']} background" if parsed.get("background") else ""
        if not background:
            out["dark background"].append((prompt, prompt, ("brightness=low",)))
            out["bright background"].append((prompt, prompt, ("brightness=high",)))
        if not obj.get("size"):
            out["large"].append((prompt, base_phrase(obj, size="large") + position + background, ()))
            out["small"].append((prompt, base_phrase(obj, size="small") + position + background, ()))
        if not position:
            out["top left"].append((prompt, base_phrase(obj) + f" {POSITIONS['top left'][1]}" + background, ()))
    return {target: rows[:count] for target, rows in out.items()}


SUCCESS = {
    "dark background": lambda reading: reading["background"] in ("black", "navy"),
    "bright background": lambda reading: reading["background"] in ("white", "beige"),
    "large": lambda reading: bool(reading["objects"]) and reading["objects"][0]["size"] == "large",
    "small": lambda reading: bool(reading["objects"]) and reading["objects"][0]["size"] == "small",
    "top left": lambda reading: bool(reading["objects"]) and reading["objects"][0]["position"] == "top left",
}


@torch.no_grad()
def images_of(pipe, prompt, noise, args):
    return sample(pipe, prompt, noise, num_inference_steps=args.steps, guidance_scale=args.guidance_scale).images


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


@torch.no_grad()
def main(args):
    began = time.time()
    pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32)
    library = NoiseLibrary.load(args.library)
    judge = load_reward("shapes-judge")
    pairs = one_object(heldout_scenes(200))
    random_counter = iter(range(RANDOM_SEED_START, RANDOM_SEED_START + 10**7))
    targets = {}
    for target, rows in target_prompts(pairs, args.num_prompts).items():
        if args.targets and target not in args.targets:
            continue
        hits = {"retrieved": [], "random": []}
        for prompt, text, attributes in rows:
            seeds = library.query(text=text, attributes=list(attributes), top_k=args.images).seeds
            randoms = [next(random_counter) for _ in range(args.images)]
            for arm, noise in (("retrieved", library.noise(seeds, pipe)), ("random", seed_noise(pipe, randoms))):
                hits[arm] += [SUCCESS[target](read_image(im)) for im in images_of(pipe, prompt, noise, args)]
        targets[target] = {"prompts": len(rows), "images_per_arm": len(hits["random"]),
                           "example": {"prompt": rows[0][0], "retrieval_text": rows[0][1],
                                       "attributes": list(rows[0][2])},
                           **{f"{arm}_success": round(float(np.mean(v)), 4) for arm, v in hits.items()}}
        print(target, json.dumps(targets[target]), flush=True)

    prompts = [s.caption for s in heldout_scenes(args.num_reward_prompts)]
    rewards = {"text-only retrieval": [], "random": []}
    for prompt in prompts:
        seeds = library.query(text=prompt, top_k=args.images).seeds
        randoms = [next(random_counter) for _ in range(args.images)]
        for arm, noise in (("text-only retrieval", library.noise(seeds, pipe)), ("random", seed_noise(pipe, randoms))):
            rewards[arm] += judge(images_of(pipe, prompt, noise, args), [prompt] * args.images).tolist()
    retrieved, randoms = np.array(rewards["text-only retrieval"]), np.array(rewards["random"])
    info = library.info()
    shards = committed_shards(args.library)
    build_seconds = sum(r.get("seconds", 0.0) for r in shards)
    result = {
        "library": args.library, "entries": len(library), "model": info["model"]["id"],
        "steps": args.steps, "guidance_scale": args.guidance_scale, "images_per_prompt": args.images,
        "unstated_attribute": targets,
        "judge_reward": {"prompts": len(prompts), "text_only_retrieval": round(float(retrieved.mean()), 4),
                         "random": round(float(randoms.mean()), 4),
                         "per_prompt_win_rate": round(float(
                             (retrieved.reshape(-1, args.images).mean(1) > randoms.reshape(-1, args.images).mean(1))
                             .mean()), 4)},
        "build": {"seconds": round(build_seconds, 1), "seeds_per_second": round(len(library) / build_seconds, 2),
                  "posterior_steps": info["posterior"]["num_inference_steps"]},
        "bytes_per_entry": {"shards": info["bytes_per_entry"],
                            "whole_folder": round(folder_bytes(args.library) / len(library), 1),
                            "float32_noise_tensor": info["float32_noise_bytes_per_entry"]},
        "seconds": round(time.time() - began, 1),
    }
    report(result, args.output)


if __name__ == "__main__":
    main(parse_args())
