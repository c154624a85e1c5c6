"""GPU timings on an SDXL-architecture pipeline with random weights (nothing downloaded), in one run.

    bash benchmarks/gpu_check.sh            # on a CUDA machine; under 10 minutes on one H100
    python benchmarks/gpu_check.py --tiny   # the same code paths on a tiny SDXL-shaped pipeline, on CPU

Per dtype (float16, bfloat16), at 1024 x 1024 (128 x 128 latents), 20 steps, CFG 5:
- candidates per second: the stock pipeline called once per seed, noisekit best-of-N, noisekit TTSnap (the
  paper's default schedule), the reward being a random-weight open_clip ViT-L-14 (real architecture and cost);
- the sampler's overhead: the denoising loop over the time spent inside the UNet;
- NPNet's overhead: the official SDXL-size NPNet (30.5M parameters) per image against a 50-step generation's UNet.

Then FLUX.1-dev-architecture (random weights, the real 11.9B transformer and 16-channel VAE; shallow T5) in
bfloat16 at 1024 x 1024 (4096 packed tokens), guidance 3.5 embedded (1 NFE per step): the same candidates per
second and the sampler's overhead over the transformer. No NPNet exists for FLUX (noisekit refuses golden noise
there), so that row records the refusal instead of a time. `--families` picks sdxl, flux or both.
"""

import argparse
import json
import platform
import time

import open_clip
import torch

from noisekit import Sampler, sample, seed_noise
from noisekit.transforms.npnet import NoisePromptNet
from noisekit.transforms.golden import golden_noise
from noisekit.rewards.clip import ClipReward
from noisekit.search.strategies import search
from noisekit.core.families import adapter_for
from noisekit.testing import (flux_architecture_pipeline, sdxl_architecture_pipeline, tiny_flux_pipeline,
                              tiny_sdxl_pipeline)

PROMPT = "a photograph of a lighthouse on a cliff at dusk"


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny SDXL-shaped pipeline and reward (checks the script)")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--num_candidates", type=int, default=8)
    parser.add_argument("--micro_batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families", default="sdxl,flux", help="sdxl, flux or both")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(input_args)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    began = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - began, result


def clip_reward(tiny, device, dtype):
    name = "ViT-B-32" if tiny else "ViT-L-14"
    model = open_clip.create_model(name, pretrained=None)
    return ClipReward(model.eval(), open_clip.get_tokenizer(name), "cosine", 16).to(device=device, dtype=dtype)


@torch.no_grad()
def measure(pipe, reward, npnet, args, device):
    n, settings = args.num_candidates, dict(num_inference_steps=args.steps, guidance_scale=5.0)
    noise = seed_noise(pipe, range(n))
    row = {}
    pipe(PROMPT, latents=noise[:1].to(device, pipe.unet.dtype), **settings)  # warm-up (kernels, allocator)

    seconds, _ = timed(lambda: [pipe(PROMPT, latents=noise[i:i + 1].to(device, pipe.unet.dtype), **settings)
                                for i in range(n)], device)
    row["stock pipe() per seed, candidates/s"] = n / seconds
    out = measure_noisekit(row, Sampler(pipe, [PROMPT], **settings), pipe, reward, noise, args, device, "UNet",
                           settings)
    embeds = pipe.encode_prompt(PROMPT, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    golden_noise(npnet, noise[:1].to(device), embeds.float())  # warm-up
    npnet_seconds, _ = timed(lambda: [golden_noise(npnet, noise[i:i + 1].to(device), embeds.float()) for i in range(n)],
                             device)
    fifty = 50 * out.denoiser_seconds / (args.steps * n)  # one image's 50-step UNet time (CFG included)
    row["NPNet s per image"] = npnet_seconds / n
    row["NPNet share of a 50-step generation's UNet time"] = (npnet_seconds / n) / fifty
    return row


def measure_noisekit(row, sampler, pipe, reward, noise, args, device, denoiser, settings):
    """Into `row`: best-of-N and TTSnap candidates per second and NFE, and the sampler's loop against the time
    spent inside the denoiser. Returns the sampler's `SampleOutput`."""
    n = len(noise)
    for strategy, schedule in (("best_of_n", ()), ("ttsnap", None)):
        seconds, result = timed(lambda: search(sampler, 0, {"clip": reward}, seeds=list(range(n)), num_candidates=n,
                                               schedule=schedule, micro_batch_size=args.micro_batch_size), device)
        row[f"noisekit {strategy}, candidates/s"] = n / seconds
        row[f"noisekit {strategy}, NFE"] = result.nfe
    loop, out = timed(lambda: sample(pipe, PROMPT, noise, micro_batch_size=args.micro_batch_size,
                                     output_type="latent", **settings), device)
    row["sampler loop s"], row[f"{denoiser} s inside the loop"] = loop, out.denoiser_seconds
    row[f"sampler overhead over {denoiser}"] = loop / out.denoiser_seconds - 1
    return out


@torch.no_grad()
def measure_flux(pipe, reward, args, device, size):
    """FLUX timings: the stock call per seed on the same packed latents, best-of-N, TTSnap, the sampler's loop."""
    n, settings = args.num_candidates, dict(num_inference_steps=args.steps, guidance_scale=3.5)
    adapter = adapter_for(pipe)
    noise = seed_noise(pipe, range(n), height=size, width=size)
    latents = adapter.pack(noise).to(device, pipe.transformer.dtype)
    call = dict(height=size, width=size, **settings)
    pipe(PROMPT, latents=latents[:1], **call)  # warm-up (kernels, allocator)
    seconds, _ = timed(lambda: [pipe(PROMPT, latents=latents[i:i + 1], **call) for i in range(n)], device)
    row = {"stock pipe() per seed, candidates/s": n / seconds}
    out = measure_noisekit(row, Sampler(pipe, [PROMPT], height=size, width=size, **settings), pipe, reward, noise,
                           args, device, "transformer", settings)
    row["NFE per candidate"] = out.nfe // n
    row["NPNet"] = "refused: no NPNet exists for flow-matching transformers"
    return row


def run_sdxl(args, device, results):
    base = tiny_sdxl_pipeline() if args.tiny else sdxl_architecture_pipeline()
    if args.tiny:
        npnet = NoisePromptNet(sample_size=8, text_embed_dim=64, max_text_tokens=77,
                               swin_kwargs={"img_size": 32, "patch_size": 4, "window_size": 4, "embed_dim": 16,
                                            "depths": [1, 1], "num_heads": [1, 2], "num_classes": 0})
    else:
        npnet = NoisePromptNet()  # the official SDXL configuration
    npnet = npnet.eval().to(device)
    results["pipeline"] = "tiny SDXL-shaped" if args.tiny else "SDXL architecture, random weights, 1024x1024"
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        if device.type == "cpu":
            dtype = torch.float32  # half precision on CPU measures nothing useful
        pipe = base.to(device, dtype)
        results["dtypes"][str(dtype)] = measure(pipe, clip_reward(args.tiny, device, dtype), npnet, args, device)
        print(json.dumps({str(dtype): results["dtypes"][str(dtype)]}, indent=2), flush=True)
        if device.type == "cpu":
            break
    del base, pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_flux(args, device, results):
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    with torch.device(device):  # initialise the 11.9B transformer on the GPU, not in host memory
        pipe = tiny_flux_pipeline() if args.tiny else flux_architecture_pipeline()
    pipe = pipe.to(device, dtype)
    size = 32 if args.tiny else 1024
    row = measure_flux(pipe, clip_reward(args.tiny, device, dtype), args, device, size)
    results["flux"] = {"pipeline": "tiny FLUX-shaped" if args.tiny else
                       "FLUX.1-dev architecture, random weights, 1024x1024", "dtype": str(dtype), **row}
    print(json.dumps({"flux": results["flux"]}, indent=2), flush=True)


def main(args):
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    began = time.time()
    families = args.families.split(",")
    unknown = set(families) - {"sdxl", "flux"}
    if unknown:
        raise SystemExit(f"--families takes sdxl and flux, got {sorted(unknown)}")
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
               "candidates": args.num_candidates, "steps": args.steps, "dtypes": {}}
    if "sdxl" in families:
        run_sdxl(args, device, results)
    if "flux" in families:
        run_flux(args, device, results)
    results["seconds"] = round(time.time() - began, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(parse_args())
