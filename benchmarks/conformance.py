"""Family conformance: `noisekit.sample` against the stock pipeline's own call for the same latents, per family.

    python benchmarks/conformance.py --output benchmarks/results/conformance.json

Every family's tiny random-weight pipeline (`noisekit.testing.families`, built offline from configs), 3 seeds,
4 steps, the family's guidance, float32 on the CPU; max |diff| of the images in [0, 1], the NFE noisekit counted,
and whether the seed's canonical noise, handed to the stock call as its `latents`, is the stock generator's own draw.
"""

import argparse
import platform

import torch

from noisekit import sample, seed_noise
from noisekit.core.families import adapter_for
from noisekit.core.noise import seed_generators
from noisekit.results import write_json
from noisekit.testing.families import ALL_BUILDERS, ALL_SETTINGS, STOCK_GUIDANCE

PROMPT, SEEDS, STEPS = "a red circle", [0, 1, 2], 4


def conformance(name, pipe, guidance_scale, size):
    noise = seed_noise(pipe, SEEDS, height=size, width=size)
    generators = lambda: seed_generators(SEEDS, noise.shape[1:])  # noqa: E731  (for schedulers that draw noise)
    ours = sample(pipe, PROMPT, noise, generator=generators(), num_inference_steps=STEPS,
                  guidance_scale=guidance_scale, output_type="np")
    adapter = adapter_for(pipe)
    height, width = adapter.image_size(noise)
    guidance = STOCK_GUIDANCE[name](guidance_scale) if name in STOCK_GUIDANCE else {"guidance_scale": guidance_scale}
    stock = pipe(prompt=[PROMPT] * len(SEEDS), latents=adapter.stock_latents(noise), generator=generators(),
                 num_inference_steps=STEPS, output_type="np", height=height, width=width, **guidance).images
    return {"pipeline": type(pipe).__name__, "max_abs_diff": float(abs(ours.images - stock).max()), "nfe": ours.nfe,
            "guidance_scale": guidance_scale, "size": size}


def main(args):
    families, settings = ALL_BUILDERS, ALL_SETTINGS
    rows = {}
    for name in args.families or families:
        torch.manual_seed(0)
        guidance_scale, _, size = settings[name]
        rows[name] = conformance(name, families[name](), guidance_scale, size)
        print(f"{name:<14} {rows[name]['pipeline']:<28} max |diff| {rows[name]['max_abs_diff']:.2e}  "
              f"NFE {rows[name]['nfe']}", flush=True)
    result = {"command": "python benchmarks/conformance.py", "machine": platform.platform(),
              "torch": torch.__version__, "seeds": SEEDS, "steps": STEPS, "families": rows}
    if args.output:
        write_json(args.output, result)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", help="default: every family")
    parser.add_argument("--output", help="write the table as JSON here")
    return parser.parse_args(input_args)


if __name__ == "__main__":
    main(parse_args())
