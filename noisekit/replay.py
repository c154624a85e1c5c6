"""`noisekit replay`: regenerate the images of a `results.json` from their recipes and check them pixel by pixel.

It reads what `noisekit generate` or `noisekit search` wrote: the settings (model, schedule fix, steps, guidance,
micro-batch) and one recipe per image. Each recipe replays its noise (every transform, its checksum verified),
the noises of one prompt are sampled together in the original micro-batches, and each image is compared with the
file next to `results.json`. Search results replay their finished candidates (the pruned ones were never
denoised to the end); the chosen one is among them.
"""

import json
import os

import numpy as np
import torch
from PIL import Image

from .noise import seed_generators
from .recipe import NoiseRecipe
from .sampler import sample


def finished_records(results):
    """The image records of a `results.json`: every image of `generate`, the unpruned candidates of `search`."""
    if "images" in results:
        return results["images"]
    if "candidates" in results:
        return [c for c in results["candidates"] if c.get("pruned_at") is None]
    raise ValueError("a results.json holds `images` (noisekit generate) or `candidates` (noisekit search); "
                     f"this one has {sorted(results)}.")


def uses_transform(records, name):
    return any(step["name"] == name for r in records for step in r["recipe"]["transforms"])


@torch.no_grad()
def replay_results(path, output_dir=None, npnet_path=None, device=None, progress=None):
    """Regenerate every finished image of the `results.json` at `path` into `output_dir` (default: `replay/`
    beside it).

    Args:
        npnet_path: the NPNet of recipes with golden noise, if it moved (default: the path the settings record).

    Returns:
        `{"images", "identical", "max_pixel_difference", "output_dir", "mismatches": [file, ...]}`; an image is
        identical when every 8-bit pixel equals the original file's.
    """
    from .cli import load_npnet
    from .models import load_pipeline
    from .schedule import zero_snr

    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file {path!r} does not exist (noisekit generate/search write one).")
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    settings, records = results.get("settings", {}), finished_records(results)
    source_dir = os.path.dirname(os.path.abspath(path))
    output_dir = output_dir or os.path.join(source_dir, "replay")
    pipe = load_pipeline(settings.get("model"), device)
    if settings.get("zero_snr"):
        zero_snr(pipe, mode=settings["zero_snr"])
    if settings.get("scheduler") not in (None, type(pipe.scheduler).__name__):
        raise ValueError(f"the results were sampled with {settings['scheduler']}, this pipeline has "
                         f"{type(pipe.scheduler).__name__}.")
    npnet = None
    if uses_transform(records, "npnet"):
        npnet_path = npnet_path or settings.get("npnet")
        if not npnet_path:
            raise ValueError("the recipes use golden noise but the settings name no NPNet; pass --npnet PATH.")
        resize = any(s["params"].get("resize") for r in records for s in r["recipe"]["transforms"]
                     if s["name"] == "npnet")
        npnet = load_npnet(npnet_path, pipe, resize)
    os.makedirs(output_dir, exist_ok=True)
    report = {"images": 0, "identical": 0, "max_pixel_difference": 0, "output_dir": output_dir, "mismatches": []}
    for prompt_index in dict.fromkeys(r["prompt_index"] for r in records):
        group = [r for r in records if r["prompt_index"] == prompt_index]
        recipes = [NoiseRecipe.from_dict(r["recipe"]) for r in group]
        noise = torch.cat([recipe.replay(pipe=pipe, npnet=npnet) for recipe in recipes])
        out = sample(pipe, group[0]["prompt"], noise, num_inference_steps=settings["steps"],
                     guidance_scale=settings["guidance_scale"], guidance_rescale=settings.get("guidance_rescale", 0.0),
                     negative_prompt=settings.get("negative_prompt"),
                     generator=seed_generators([r.seed for r in recipes], noise.shape[1:]),
                     micro_batch_size=settings.get("batch_size"))
        for record, image in zip(group, out.images):
            image.save(os.path.join(output_dir, record["file"]))
            original = os.path.join(source_dir, record["file"])
            difference = pixel_difference(image, original)
            report["images"] += 1
            report["identical"] += difference == 0
            report["max_pixel_difference"] = max(report["max_pixel_difference"], difference)
            if difference != 0:
                report["mismatches"].append(record["file"])
        if progress is not None:
            progress.update(1)
    return report


def pixel_difference(image, original_path):
    """Largest 8-bit difference between `image` and the file (256 when the file is missing or another size)."""
    if not os.path.isfile(original_path):
        return 256
    a = np.asarray(image.convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(original_path).convert("RGB"), dtype=np.int16)
    return 256 if a.shape != b.shape else int(np.abs(a - b).max())
