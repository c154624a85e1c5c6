"""Images for prompts x seeds through a noise plan, with their recipes: what `noisekit generate` runs.

The run's prompts are encoded once; each prompt's candidates go library -> golden noise -> NLG -> sampler, and
each image's record carries its recipe, its NFE (the noise stages' included) and its seconds.
"""

import time

from .core.sampler import run_batches
from .plan import NoisePlan, prepare, run_sampler


def image_name(prompt_index, seed):
    return f"p{prompt_index:03d}_s{seed}.png"


def generate(pipe, prompts, seeds, *, num_inference_steps=20, guidance_scale=5.0, guidance_rescale=None,
             negative_prompt=None, micro_batch_size=None, progress=None, plan=None, height=None, width=None,
             output_type="pil"):
    """For every prompt, one image per seed (the same seeds for every prompt, so methods compare image by image).

    Returns one record per image: `{"prompt_index", "prompt", "seed", "image", "recipe", "nfe", "seconds",
    "batch"}` (`batch`: which micro-batch of its prompt it was sampled in).
    """
    plan = plan or NoisePlan()
    seeds = list(seeds)
    sampler = run_sampler(pipe, prompts, plan, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                          negative_prompt=negative_prompt, height=height, width=width)
    records = []
    for prompt_index in range(len(sampler.prompts)):
        records += generate_prompt(sampler, plan, prompt_index, seeds, micro_batch_size=micro_batch_size,
                                   output_type=output_type)
        if progress is not None:
            progress.update(1)
    return records, sampler


def generate_prompt(sampler, plan, prompt_index, seeds, *, micro_batch_size=None, output_type="pil"):
    """The records of one prompt of `sampler`: one per seed, in seed order (see `generate`)."""
    began = time.perf_counter()
    candidates = prepare(sampler, plan, prompt_index, list(seeds))
    out = run_batches(sampler, candidates.noise, prompt_index, candidates.generators(),
                      micro_batch_size=micro_batch_size, output_type=output_type)
    seconds = (time.perf_counter() - began) / len(candidates)
    nfe = (out.nfe + candidates.nfe) // len(candidates)
    prompt = sampler.prompts[prompt_index]
    return [{"prompt_index": prompt_index, "prompt": prompt, "seed": recipe.seed, "image": image,
             "recipe": recipe.to_dict(), "nfe": nfe, "seconds": round(seconds, 4),
             "batch": position // (micro_batch_size or len(candidates))}
            for position, (recipe, image) in enumerate(zip(candidates.recipes, out.images))]
