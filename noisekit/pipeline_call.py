"""What the `noisekit.pipelines` classes do on a call: run the noise plan per prompt, then sample.

Kept out of the pipeline files so that SD and SDXL share it; each pipeline file holds only its class (diffusers
loads a `custom_pipeline=` file as a standalone module with one pipeline class in it).
"""

from dataclasses import dataclass, replace

import torch
from diffusers.utils import BaseOutput

from .noise import seed_generators
from .plan import NoisePlan, prepare_noise


@dataclass
class NoisekitPipelineOutput(BaseOutput):
    """`images` as the stock pipeline returns them; `recipes[i]` (a dict) replays the noise of image i; `nfe` counts
    every denoiser evaluation of the call, noise stages included."""

    images: object
    recipes: list
    nfe: int


def resolve_plan(pipe, noise_plan):
    plan = noise_plan or NoisePlan()
    if not isinstance(plan, NoisePlan):
        raise ValueError(f"`noise_plan` must be a noisekit.plan.NoisePlan or None, got {type(plan).__name__}.")
    if plan.npnet is True:  # the pipeline's own NPNet component
        if getattr(pipe, "npnet", None) is None:
            raise ValueError("`noise_plan.npnet=True` uses the pipeline's `npnet` component, but it has none; "
                             "pass npnet=NoisePromptNet... to from_pipe/from_pretrained or a loaded net in the plan.")
        plan = replace(plan, npnet=pipe.npnet)
    return plan


def call_with_plan(pipe, stock_call, prompt, seeds, noise_plan, height, width, **kwargs):
    """For each prompt: canonical noise of `seeds` -> the plan's stages -> `stock_call(latents=...)`."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    seeds = list(range(1)) if seeds is None else list(seeds)
    plan = resolve_plan(pipe, noise_plan)
    images, recipes, nfe = [], [], 0
    steps_factor = 2 if kwargs.get("guidance_scale", 7.5) > 1 else 1
    for text in prompts:
        noise, prompt_recipes, stage_nfe = prepare_noise(pipe, text, seeds, plan, height, width)
        latents = noise.to(pipe._execution_device, pipe.unet.dtype)
        used = [r.seed for r in prompt_recipes]
        out = stock_call(prompt=text, latents=latents, num_images_per_prompt=len(seeds), height=height, width=width,
                         generator=seed_generators(used, noise.shape[1:]), **kwargs)
        images += list(out.images) if isinstance(out.images, list) else [out.images]
        recipes += [r.to_dict() for r in prompt_recipes]
        nfe += stage_nfe + steps_factor * len(seeds) * len(pipe.scheduler.timesteps)
    if images and torch.is_tensor(images[0]):
        images = torch.cat(images)
    elif images and hasattr(images[0], "shape") and not hasattr(images[0], "save"):
        import numpy as np

        images = np.concatenate(images)
    return NoisekitPipelineOutput(images=images, recipes=recipes, nfe=nfe)
