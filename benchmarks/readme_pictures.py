"""The README's picture per method, from the shapes world (CPU, about a minute). Writes `docs/*.png`.

    python benchmarks/readme_pictures.py --output_dir docs

Every row of a sheet uses the same seeds, so a column compares one noise with and without the method:
- `zero_snr.png`: `shapes-t2i-eps` (SD 1.x schedule) against `shapes-t2i` (v-prediction, zero terminal SNR) on
  black- and white-background prompts;
- `nlg.png`: `shapes-t2i-eps` without and with Noise Level Guidance (K = 20);
- `npnet.png`: random noise and its golden noise (`assets/shapes-npnet`);
- `noisequery.png`: `a red circle` from random seeds and from seeds a library retrieves for `top left`,
  `large` and `dark background` (`assets/shapes-library`);
- `search.png`: TTSnap with the noise-aware judge, every candidate labelled with its stage scores.
"""

import argparse
import os

import torch

from noisekit import apply_nlg, sample, seed_noise
from noisekit.grid import labelled_grid
from noisekit.sources import load_pipeline
from noisekit.core.recipe import seed_recipes
from noisekit.shapes.assets import asset_path

SEEDS = list(range(6))


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="docs")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    return parser.parse_args(input_args)


def images(pipe, prompt, noise, args, guidance_rescale=0.0):
    return sample(pipe, prompt, noise, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                  guidance_rescale=guidance_rescale).images


def zero_snr_sheet(eps, ztsnr, args):
    rows, labels = [], []
    for prompt in ("a large red circle on a black background", "a small blue square on a white background"):
        noise = seed_noise(eps, SEEDS)
        rows += [images(eps, prompt, noise, args), images(ztsnr, prompt, noise, args)]
        labels += [f"shapes-t2i-eps: {prompt}", f"shapes-t2i (zero SNR): {prompt}"]
    return labelled_grid(rows, labels)


def nlg_sheet(eps, args):
    prompt = "a yellow triangle above a blue circle"
    noise = seed_noise(eps, SEEDS)
    refined, _ = apply_nlg(eps, prompt, noise, seed_recipes(SEEDS, noise.shape[1:]))
    return labelled_grid([images(eps, prompt, noise, args), images(eps, prompt, refined.noise, args)],
                         [f"random noise: {prompt}", "the same noise after NLG (K = 20)"])


def npnet_sheet(pipe, args):
    from noisekit.transforms.npnet import NoisePromptNet
    from noisekit.transforms.golden import apply_npnet

    npnet = NoisePromptNet.from_pretrained(asset_path("shapes-npnet")).eval()
    prompt = "a green cross to the left of a red square on a white background"
    noise = seed_noise(pipe, SEEDS)
    golden, _ = apply_npnet(pipe, npnet, prompt, noise, seed_recipes(SEEDS, noise.shape[1:]))
    return labelled_grid([images(pipe, prompt, noise, args), images(pipe, prompt, golden, args)],
                         [f"random noise: {prompt}", "its golden noise (NPNet)"])


def noisequery_sheet(pipe, args):
    from noisekit.library import NoiseLibrary

    library = NoiseLibrary.load(str(asset_path("shapes-library")))
    prompt = "a red circle"
    rows = [images(pipe, prompt, seed_noise(pipe, [10**6 + s for s in SEEDS]), args)]
    labels = [f"random seeds: {prompt}"]
    for label, text, attributes in (("top left", "a red circle in the top left", []),
                                     ("large", "a large red circle", []),
                                     ("dark background", prompt, ["brightness=low"])):
        seeds = library.query(text=text, attributes=attributes, top_k=len(SEEDS)).seeds
        rows.append(images(pipe, prompt, library.noise(seeds, pipe), args))
        labels.append(f"library seeds for '{label}': {prompt}")
    return labelled_grid(rows, labels)


def search_sheet(pipe, args):
    from noisekit.search.budget import CostModel
    from noisekit.rewards import load_reward
    from noisekit.core.sampler import Sampler
    from noisekit.search.strategies import search
    from noisekit.cli.search import cell_label

    prompt = "a small purple triangle in the top left on a beige background"
    sampler = Sampler(pipe, [prompt], num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    result = search(sampler, 0, {"shapes-judge": load_reward("shapes-judge")}, seeds=0, num_candidates=16,
                    preview_rewards={"shapes-judge": load_reward("shapes-judge-noise-aware")}, strategy="ttsnap")
    cells = result.candidates
    rows = [[c.image for c in cells[:8]], [c.image for c in cells[8:]]]
    labels = [[cell_label(c) for c in cells[:8]], [cell_label(c) for c in cells[8:]]]
    cost = CostModel.for_sampler(sampler)
    title = f"TTSnap, 16 candidates, cost {result.cost} NFE (best-of-16: {cost.realised(16)})"
    return labelled_grid(rows, [f"{title}: {prompt}", "x = pruned at the previewed stage, * = chosen"], labels)


@torch.no_grad()
def main(args):
    os.makedirs(args.output_dir, exist_ok=True)
    eps = load_pipeline("shapes-t2i-eps", device="cpu", dtype=torch.float32)
    pipe = load_pipeline(None, device="cpu", dtype=torch.float32)
    sheets = {"zero_snr": lambda: zero_snr_sheet(eps, pipe, args), "nlg": lambda: nlg_sheet(eps, args),
              "npnet": lambda: npnet_sheet(pipe, args), "noisequery": lambda: noisequery_sheet(pipe, args),
              "search": lambda: search_sheet(pipe, args)}
    for name, make in sheets.items():
        path = os.path.join(args.output_dir, f"{name}.png")
        make().save(path)
        print("wrote", path, flush=True)


if __name__ == "__main__":
    main(parse_args())
