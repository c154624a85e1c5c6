"""The shapes world's quality table: held-out prompts, 20 steps, CFG 5, one image per prompt and seed.

    python benchmarks/shapes_quality.py --model assets/shapes-t2i --judge assets/shapes-judge --output QUALITY.json
    python benchmarks/shapes_quality.py --model shapes-flow --judge assets/shapes-judge --guidance_scale 5

Every attribute is read twice: by the learned judge and by the non-learned pixel check (which validates the
judge; their agreement is reported). Also: border brightness for black / white backgrounds, and the diversity of
an under-specified prompt over 16 seeds.
"""

import argparse
import json
import os
import time
from collections import defaultdict

import numpy as np
import torch

from noisekit import sample, seed_noise, zero_snr
from noisekit.sources import load_pipeline
from noisekit.shapes.captions import parse_caption
from noisekit.shapes.dataset import heldout_scenes
from noisekit.shapes.judge import INDEX, ShapesJudge, presence_index
from noisekit.shapes.pixelcheck import border_brightness, read_image, relation_holds


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--judge", required=True)
    parser.add_argument("--num_prompts", type=int, default=200)
    parser.add_argument("--seeds_per_prompt", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--guidance_rescale", type=float, default=0.0)
    parser.add_argument("--zero_snr", choices=["ztsnr", "trailing"], help="apply noisekit.zero_snr first")
    parser.add_argument("--output", help="write the table as JSON here")
    return parser.parse_args(input_args)


def to_pixels(images):
    return torch.stack([torch.from_numpy(np.asarray(i)).permute(2, 0, 1).float() / 127.5 - 1 for i in images])


def report(result, path=None):
    """Print an evidence result as JSON and, with `path`, write it there (whole or not at all)."""
    print(json.dumps(result, indent=2))
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(path + ".tmp", path)


def judge_reading(logits, row):
    return {head: INDEX[head][int(logits[head][row].argmax())] for head in INDEX} | {
        "count": int(logits["count"][row].argmax()) + 1, "presence": logits["presence"][row].sigmoid() > 0.5}


def generate(pipe, prompts, seeds, args):
    images = []
    for start in range(0, len(prompts), 64):
        chunk = slice(start, start + 64)
        noise = seed_noise(pipe, seeds[chunk])
        images += sample(pipe, prompts[chunk], noise, num_inference_steps=args.steps,
                         guidance_scale=args.guidance_scale, guidance_rescale=args.guidance_rescale).images
    return images


def score(prompts, images, judge):
    """Per attribute: `[judge correct, pixel check correct, judge == pixel check]` over images that state it."""
    with torch.no_grad():
        logits = judge(to_pixels(images))
    tally = defaultdict(lambda: np.zeros(3))
    counts = defaultdict(int)
    for row, (prompt, image) in enumerate(zip(prompts, images)):
        parsed = parse_caption(prompt)
        seen, read = judge_reading(logits, row), read_image(image)
        if "background" in parsed:
            want = parsed["background"]
            tally["background"] += [seen["background"] == want, read["background"] == want,
                                    seen["background"] == read["background"]]
            counts["background"] += 1
        if len(parsed["objects"]) == 1:
            obj, found = parsed["objects"][0], (read["objects"][0] if read["objects"] else {})
            stated = {"color": obj["color"], "shape": obj["shape"], "size": obj.get("size"),
                      "position": parsed.get("position")}
            for name, want in stated.items():
                if want is None:
                    continue
                tally[name] += [seen[name] == want, found.get(name) == want, seen[name] == found.get(name)]
                counts[name] += 1
        else:
            first, second = parsed["objects"]
            judged = all(bool(seen["presence"][presence_index(o["color"], o["shape"])]) for o in (first, second))
            match = lambda o: [f for f in read["objects"] if f["color"] == o["color"] and f["shape"] == o["shape"]]  # noqa: E731
            a, b = match(first), match(second)
            both = bool(a and b)
            tally["two objects present"] += [judged, both, judged == both]
            counts["two objects present"] += 1
            holds = both and relation_holds(parsed["relation"], a[0], b[0])
            tally["relation"] += [np.nan, holds, np.nan]
            counts["relation"] += 1
    return {name: {"n": counts[name], "judge": tally[name][0] / counts[name], "pixel": tally[name][1] / counts[name],
                   "agreement": tally[name][2] / counts[name]} for name in counts}


def main(args):
    torch.manual_seed(0)
    began = time.time()
    pipe = load_pipeline(args.model)  # a shapes asset name or a folder; UNet or flow
    if args.zero_snr:
        zero_snr(pipe, mode=args.zero_snr)
    judge = ShapesJudge.from_pretrained(args.judge).eval()
    scenes = heldout_scenes(args.num_prompts)
    prompts = [s.caption for s in scenes for _ in range(args.seeds_per_prompt)]
    seeds = [seed for _ in scenes for seed in range(args.seeds_per_prompt)]
    images = generate(pipe, prompts, seeds, args)
    table = score(prompts, images, judge)

    brightness = {}
    for background in ("black", "white"):
        rows = [i for i, p in enumerate(prompts) if p.endswith(f"on a {background} background")]
        values = [border_brightness(images[i]) for i in rows]
        brightness[background] = {"n": len(rows), "median": float(np.median(values)), "max": float(np.max(values)),
                                  "min": float(np.min(values))}

    diverse = generate(pipe, ["a red circle"] * 16, list(range(16)), args)
    reads = [read_image(i) for i in diverse]
    found = [r["objects"][0] for r in reads if r["objects"]]
    diversity = {"images": 16, "with an object": len(found),
                 "distinct positions": len({o["position"] for o in found}),
                 "distinct sizes": len({o["size"] for o in found}),
                 "distinct backgrounds": len({r["background"] for r in reads})}
    result = {"model": args.model, "zero_snr": args.zero_snr, "guidance_rescale": args.guidance_rescale,
              "scheduler": dict(pipe.scheduler.config), "prompts": args.num_prompts, "seeds_per_prompt": args.seeds_per_prompt,
              "steps": args.steps, "guidance_scale": args.guidance_scale, "attributes": table,
              "border_brightness": brightness, "diversity_a_red_circle": diversity,
              "seconds": round(time.time() - began, 1)}
    print(f"{'attribute':<22}{'n':>5}{'judge':>8}{'pixel':>8}{'agree':>8}")
    for name, row in table.items():
        print(f"{name:<22}{row['n']:>5}{row['judge']:>8.1%}{row['pixel']:>8.1%}{row['agreement']:>8.1%}")
    print("border brightness", json.dumps(brightness))
    print("diversity of 'a red circle'", json.dumps(diversity))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(parse_args())
