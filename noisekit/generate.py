"""Images for prompts x seeds with their recipes: what `noisekit generate` and `noisekit demo` run."""

import json
import os
import time

from .noise import seed_generators
from .plan import prepare_noise
from .sampler import sample


def image_name(prompt_index, seed):
    return f"p{prompt_index:03d}_s{seed}.png"


def generate(pipe, prompts, seeds, num_inference_steps=20, guidance_scale=5.0, guidance_rescale=0.0,
             negative_prompt=None, micro_batch_size=None, progress=None, plan=None):
    """For every prompt, one image per seed (the same seeds for every prompt, so methods compare image by image).

    The noise stages of `plan` (a `NoisePlan`) run in the order library -> golden noise -> NLG. Returns one
    record per image: `{"prompt_index", "prompt", "seed", "image", "recipe", "nfe", "seconds"}` (NFE includes the
    noise stages).
    """
    records = []
    for prompt_index, prompt in enumerate(prompts):
        began = time.perf_counter()
        noise, recipes, stage_nfe = prepare_noise(pipe, prompt, seeds, plan)
        used = [r.seed for r in recipes]
        out = sample(pipe, prompt, noise, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                     guidance_rescale=guidance_rescale, negative_prompt=negative_prompt,
                     generator=seed_generators(used, noise.shape[1:]), micro_batch_size=micro_batch_size)
        seconds = (time.perf_counter() - began) / len(seeds)
        for seed, image, recipe in zip(used, out.images, recipes):
            records.append({"prompt_index": prompt_index, "prompt": prompt, "seed": seed, "image": image,
                            "recipe": recipe.to_dict(), "nfe": (out.nfe + stage_nfe) // len(seeds),
                            "seconds": round(seconds, 4)})
        if progress is not None:
            progress.update(1)
    return records


def write_results(records, output_dir, settings):
    """PNGs plus `results.json` (each record names its file); written to a temporary name, then renamed."""
    os.makedirs(output_dir, exist_ok=True)
    rows = []
    for record in records:
        name = image_name(record["prompt_index"], record["seed"])
        record["image"].save(os.path.join(output_dir, name))
        rows.append({**{k: v for k, v in record.items() if k != "image"}, "file": name})
    path = os.path.join(output_dir, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"settings": settings, "images": rows}, f, indent=2)
    os.replace(path + ".tmp", path)
    return path
