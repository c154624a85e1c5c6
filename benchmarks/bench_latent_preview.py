"""Seconds per preview call on one batch of shapes-t2i x0 previews: the latent reward on the x0 latents against the
VAE decode plus the image-preview reward on the decoded previews (what a TTSnap pruning step spends per candidate),
with one denoiser evaluation for scale.

    OMP_NUM_THREADS=1 python benchmarks/bench_latent_preview.py --output benchmarks/results/latent_preview.json
"""

import argparse
import platform
import statistics
import sys
import time

import torch

from noisekit import Sampler
from noisekit.core.candidates import from_seeds
from noisekit.results import write_json
from noisekit.rewards import load_reward
from noisekit.search.scoring import decode_in_pieces, step_sigmas
from noisekit.shapes.assets import load_shapes_pipeline

PROMPT = "a large red circle in the top left on a black background"


def median_seconds(function, repeats):
    """Median wall-clock seconds of `function()` over `repeats` runs, after one untimed warm-up."""
    function()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@torch.no_grad()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_candidates", type=int, default=32)
    parser.add_argument("--step", type=int, default=6, help="loop index of the preview (20 steps)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    pipe = load_shapes_pipeline()
    sampler = Sampler(pipe, [PROMPT], num_inference_steps=20, guidance_scale=5.0)
    batch = sampler.start_candidates(from_seeds(sampler.shape, range(args.num_candidates), 0))
    x0 = batch.run(args.step + 1, {args.step})[args.step]
    sigma = step_sigmas(sampler)[args.step]
    prompts = [PROMPT] * len(x0)
    latent = load_reward("shapes-judge-latent").eval()
    image = load_reward("shapes-judge-noise-aware").eval()
    noise = batch.state
    timestep = sampler.timesteps[args.step + 1]
    seconds = {  # each over the whole batch, decoded to PIL as a search decodes its previews
        "latent_reward": median_seconds(lambda: latent(x0, prompts, sigma=sigma), args.repeats),
        "decode": median_seconds(lambda: decode_in_pieces(sampler, x0), args.repeats),
        "decode_plus_image_reward": median_seconds(
            lambda: image(decode_in_pieces(sampler, x0), prompts, sigma=sigma), args.repeats),
        "denoiser_step": median_seconds(
            lambda: sampler.call_denoiser(torch.cat([noise] * 2), timestep, batch.prompt_index), args.repeats),
    }
    per_call = {name: value / len(x0) for name, value in seconds.items() if name != "denoiser_step"}
    per_call["nfe"] = seconds["denoiser_step"] / (2 * len(x0))  # one CFG step on B candidates is 2B NFE
    record = {"command": " ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_latent_preview.py",
                                  *(sys.argv[1:] if argv is None else argv)]),
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "num_candidates": len(x0), "step": args.step, "sigma": sigma,
              "batch_seconds": {k: round(v, 5) for k, v in seconds.items()},
              "seconds_per_preview_call": {k: round(v, 6) for k, v in per_call.items()},
              "speedup": round(per_call["decode_plus_image_reward"] / per_call["latent_reward"], 2)}
    print(record)
    if args.output:
        write_json(args.output, record)


if __name__ == "__main__":
    main()
