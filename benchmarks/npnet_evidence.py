"""Golden noise on the shapes world: judge reward with NPNet's golden noise against the random noise it came from.

    python benchmarks/npnet_evidence.py --npnet assets/shapes-npnet --output benchmarks/results/npnet_evidence.json

Held-out prompts (never in any training set, NPD collection included), 20 steps, CFG 5. Prompt i uses seeds 2i
and 2i + 1. Arms, per prompt:
- random: seed 2i as drawn (40 NFE);
- golden: NPNet applied to seed 2i's noise (40 NFE + one NPNet call, no denoiser call);
- best-of-2: seeds 2i and 2i + 1, the better by the judge itself (80 NFE): an upper bound for spending the
  same NFE as one extra sample on search instead.
Golden noise costs no NFE, so random noise *is* best-of-N at equal NFE (N = 1); its wall-clock overhead is
measured as a share of one 20-step generation, at batch 1 and at batch 16.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from noisekit import sample, seed_noise
from noisekit.sources import load_pipeline
from noisekit.transforms.npnet import NoisePromptNet
from noisekit.transforms.golden import apply_npnet
from noisekit.core.recipe import seed_recipes
from noisekit.rewards import load_reward
from noisekit.shapes.dataset import heldout_scenes
from shapes_quality import report  # noqa: E402  (the sibling script)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npnet", default="assets/shapes-npnet", help="a saved NoisePromptNet folder")
    parser.add_argument("--model", default=None, help="the pipeline it was trained for (default: shapes-t2i)")
    parser.add_argument("--num_prompts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--timing_repeats", type=int, default=5)
    parser.add_argument("--output", default=None)
    return parser.parse_args(input_args)


@torch.no_grad()
def rewards_for(pipe, judge, prompt, noise, args):
    images = sample(pipe, prompt, noise, num_inference_steps=args.steps, guidance_scale=args.guidance_scale).images
    return judge(images, [prompt] * len(images))


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@torch.no_grad()
def overhead(pipe, npnet, args):
    """Per image: NPNet (prompt encoding included) and a 20-step generation, at batch 1 and 16 (seconds)."""
    out = {}
    prompt = heldout_scenes(1)[0].caption
    for batch in (1, 16):
        noise = seed_noise(pipe, range(batch))
        recipes = seed_recipes(range(batch), noise.shape[1:])
        golden = median_seconds(lambda: apply_npnet(pipe, npnet, prompt, noise, recipes), args.timing_repeats)
        generation = median_seconds(lambda: sample(pipe, prompt, noise, num_inference_steps=args.steps,
                                                   guidance_scale=args.guidance_scale), args.timing_repeats)
        out[f"batch_{batch}"] = {"npnet_seconds_per_image": round(golden / batch, 5),
                                 "generation_seconds_per_image": round(generation / batch, 5),
                                 "npnet_share_of_generation": round(golden / generation, 4)}
    return out


@torch.no_grad()
def main(args):
    began = time.time()
    pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32)
    npnet = NoisePromptNet.from_pretrained(args.npnet).eval()
    judge = load_reward("shapes-judge")
    prompts = [s.caption for s in heldout_scenes(args.num_prompts)]
    random, golden, best2, cosine = [], [], [], []
    for index, prompt in enumerate(prompts):
        seeds = [2 * index, 2 * index + 1]
        noise = seed_noise(pipe, seeds)
        plain = rewards_for(pipe, judge, prompt, noise, args)
        refined, _ = apply_npnet(pipe, npnet, prompt, noise[:1], seed_recipes(seeds[:1], noise.shape[1:]))
        golden.append(float(rewards_for(pipe, judge, prompt, refined, args)[0]))
        random.append(float(plain[0]))
        best2.append(float(plain.max()))
        cosine.append(float(torch.nn.functional.cosine_similarity(refined.flatten(), noise[0].flatten(), dim=0)))
    random, golden, best2 = map(np.array, (random, golden, best2))
    nfe = 2 * args.steps
    result = {
        "npnet": args.npnet, "model": args.model or "shapes-t2i", "prompts": len(prompts), "steps": args.steps,
        "guidance_scale": args.guidance_scale, "parameters": sum(p.numel() for p in npnet.parameters()),
        "alpha": float(npnet.alpha), "beta": float(npnet.beta),
        "cosine_golden_vs_random_noise": round(float(np.mean(cosine)), 4),
        "arms": {"random": {"nfe_per_image": nfe, "mean_reward": round(float(random.mean()), 4)},
                 "golden": {"nfe_per_image": nfe, "mean_reward": round(float(golden.mean()), 4),
                            "win_rate_vs_random": round(float((golden > random).mean()), 4),
                            "loss_rate_vs_random": round(float((golden < random).mean()), 4),
                            "mean_gain": round(float((golden - random).mean()), 4),
                            "gain_std_error": round(float((golden - random).std(ddof=1) / np.sqrt(len(prompts))), 4)},
                 "best_of_2 (judge-selected)": {"nfe_per_image": 2 * nfe,
                                                "mean_reward": round(float(best2.mean()), 4)}},
        "overhead": overhead(pipe, npnet, args),
        "torch_threads": torch.get_num_threads(),
        "seconds": round(time.time() - began, 1),
    }
    report(result, args.output)


if __name__ == "__main__":
    main(parse_args())
