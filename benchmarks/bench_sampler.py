"""Seconds per candidate: the stock pipeline vs noisekit's sampler, and the sampler's overhead over the denoiser.

    python benchmarks/bench_sampler.py --model shapes-t2i --num_candidates 32 --steps 20

In one run, on one pipeline and the same seeds: (a) `pipe()` once per seed, (b) `pipe()` with a batch of latents,
(c) `noisekit.sample` at micro-batch 1, 8 and 32. The overhead is the denoising loop's time (no VAE decode) over
the time spent inside the denoiser; the raw denoiser time is also measured alone, on the same batch shapes. Any
family: `--model shapes-flow` compares SD3's stock call with noisekit's (which runs its 256 zero T5 tokens as one).
"""

import argparse
import json
import platform
import time

import torch

from noisekit import sample, seed_noise
from noisekit.core.families import adapter_for
from noisekit.core.sampler import Sampler
from noisekit.sources import load_pipeline


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-t2i")
    parser.add_argument("--prompt", default="a large red circle in the top left on a black background")
    parser.add_argument("--num_candidates", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--micro_batch_sizes", default="1,8,32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=[None, "float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument("--json", help="also write the results here")
    return parser.parse_args(input_args)


def timed(fn, repeats, device):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return best, result


def raw_denoiser_seconds(pipe, sampler_noise, prompt, steps, guidance_scale, micro_batch_size, device):
    """The denoiser alone, through the family adapter: the same number of calls on the same batch shapes, no
    scheduler, no CFG arithmetic."""
    sampler = Sampler(pipe, [prompt], num_inference_steps=steps, guidance_scale=guidance_scale)
    adapter, total = sampler.adapter, 0.0
    for start in range(0, len(sampler_noise), micro_batch_size):
        chunk = sampler_noise[start : start + micro_batch_size]
        x = adapter.pack(chunk.to(device, sampler.dtype))
        x = torch.cat([x] * 2) if sampler.guided else x
        rows = [0] * len(chunk)
        t = sampler.timesteps[0]
        for _ in range(steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            adapter.denoise(x, t, sampler.conditioning, rows, sampler.guided, guidance_scale=guidance_scale)
            if device.type == "cuda":
                torch.cuda.synchronize()
            total += time.perf_counter() - began
    return total


@torch.no_grad()
def main(args):
    dtype = getattr(torch, args.dtype) if args.dtype else None
    pipe = load_pipeline(args.model, device=args.device, dtype=dtype)
    device = pipe._execution_device
    adapter = adapter_for(pipe)
    seeds = list(range(args.num_candidates))
    noise = seed_noise(pipe, seeds)
    settings = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    n = args.num_candidates
    rows = {}

    def per_seed():
        return [pipe(args.prompt, latents=adapter.stock_latents(noise[i : i + 1]).to(device, adapter.denoiser.dtype), output_type="pil",
                     **settings).images[0] for i in range(n)]

    rows["pipe() per seed"] = timed(per_seed, args.repeats, device)[0] / n
    rows["pipe() batched latents"] = timed(lambda: pipe(args.prompt, latents=adapter.stock_latents(noise).to(device, adapter.denoiser.dtype),
                                                        num_images_per_prompt=n, **settings), args.repeats,
                                           device)[0] / n
    overhead = {}
    for size in [int(s) for s in args.micro_batch_sizes.split(",")]:
        rows[f"noisekit.sample micro-batch {size}"] = timed(
            lambda: sample(pipe, args.prompt, noise, micro_batch_size=size, **settings), args.repeats, device)[0] / n
        loop, out = timed(lambda: sample(pipe, args.prompt, noise, micro_batch_size=size, output_type="latent",
                                         **settings), args.repeats, device)
        raw = raw_denoiser_seconds(pipe, noise, args.prompt, args.steps, args.guidance_scale, size, device)
        overhead[size] = {"loop_seconds": loop, "unet_seconds_inside": out.denoiser_seconds,
                          "unet_seconds_alone": raw, "overhead_vs_unet_alone": loop / raw - 1,
                          "overhead_vs_unet_inside": loop / out.denoiser_seconds - 1}

    base = rows["pipe() per seed"]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}"
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    print(f"model {args.model}, {n} candidates, {args.steps} steps, CFG {args.guidance_scale}, {machine}, "
          f"dtype {adapter.denoiser.dtype}")
    print(f"{'method':<34}{'s/candidate':>12}{'speed-up':>10}")
    for name, seconds in rows.items():
        print(f"{name:<34}{seconds:>12.4f}{base / seconds:>9.2f}x")
    print(f"{'micro-batch':<12}{'loop s':>10}{'denoiser s':>12}{'alone':>8}{'overhead':>10}")
    for size, o in overhead.items():
        print(f"{size:<12}{o['loop_seconds']:>10.3f}{o['unet_seconds_inside']:>12.3f}{o['unet_seconds_alone']:>8.3f}"
              f"{o['overhead_vs_unet_alone']:>9.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "machine": machine, "seconds_per_candidate": rows,
                       "overhead": overhead}, f, indent=2)


if __name__ == "__main__":
    main(parse_args())
