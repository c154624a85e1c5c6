"""NLG on the shapes world: judge reward with and without NLG, and best-of-N at the same total NFE.

    python benchmarks/nlg_evidence.py --model assets/shapes-t2i-eps --judge assets/shapes-judge

Held-out prompts, the same seeds for every arm, 20 steps, CFG 5. Per image: baseline = 40 NFE; NLG (K = 20)
adds 40 NFE, so its budget equals best-of-2 (two seeds, the judge picks). Best-of-N is selected *by the judge
itself*, so it is an upper bound for what a reward-driven search gets at that cost, not a blind method like NLG.
"""

import argparse
import time

import numpy as np
import torch

from noisekit import apply_nlg, sample, seed_noise
from noisekit.core.recipe import seed_recipes
from noisekit.shapes.dataset import heldout_scenes
from noisekit.shapes.judge import ShapesJudge, judge_reward
from noisekit.sources import load_pipeline
from shapes_quality import report, to_pixels  # noqa: E402  (the sibling script; run from benchmarks/ or the root)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--judge", required=True)
    parser.add_argument("--num_prompts", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--guidance_rescale", type=float, default=0.0)
    parser.add_argument("--nlg_iterations", type=int, default=20)
    parser.add_argument("--output", help="write the results as JSON here")
    return parser.parse_args(input_args)


@torch.no_grad()
def rewards_for(pipe, judge, prompt, noise, args):
    images = sample(pipe, prompt, noise, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                    guidance_rescale=args.guidance_rescale).images
    return judge_reward(judge, to_pixels(images), [prompt] * len(images))


@torch.no_grad()
def main(args):
    began = time.time()
    pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32)  # UNet or flow
    judge = ShapesJudge.from_pretrained(args.judge).eval()
    prompts = [s.caption for s in heldout_scenes(args.num_prompts)]
    base, nlg, best2, timestep = [], [], [], None
    for index, prompt in enumerate(prompts):
        seeds = [2 * index, 2 * index + 1]
        noise = seed_noise(pipe, seeds)
        plain = rewards_for(pipe, judge, prompt, noise, args)
        refined, _ = apply_nlg(pipe, prompt, noise[:1], seed_recipes(seeds[:1], noise.shape[1:]),
                               num_iterations=args.nlg_iterations)
        timestep = refined.timestep
        nlg.append(float(rewards_for(pipe, judge, prompt, refined.noise, args)[0]))
        base.append(float(plain[0]))
        best2.append(float(plain.max()))
    base, nlg, best2 = map(np.array, (base, nlg, best2))
    nfe = 2 * args.steps
    result = {"model": args.model, "prompts": len(prompts), "steps": args.steps, "guidance_scale": args.guidance_scale,
              "nlg_timestep": timestep,
              "arms": {"baseline": {"nfe_per_image": nfe, "mean_reward": base.mean()},
                       "nlg": {"nfe_per_image": nfe + 2 * args.nlg_iterations, "mean_reward": nlg.mean(),
                               "win_rate_vs_baseline": float((nlg > base).mean()),
                               "tie_rate": float((nlg == base).mean())},
                       "best_of_2 (judge-selected)": {"nfe_per_image": 2 * nfe, "mean_reward": best2.mean()}},
              "seconds": round(time.time() - began, 1)}
    report(result, args.output)


if __name__ == "__main__":
    main(parse_args())
