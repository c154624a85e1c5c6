"""What the `noisekit.pipelines` classes do on a call: run the noise plan per prompt, then sample.

Kept out of the pipeline files so that SD and SDXL share it; each pipeline file holds only its class (diffusers
loads a `custom_pipeline=` file as a standalone module with one pipeline class in it).
"""

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from diffusers.utils import BaseOutput

from .noise import seed_generators
from .npnet_noise import apply_npnet
from .plan import NoisePlan, prepare_noise
from .sampler import Sampler
from .search import search


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


def search_with_plan(pipe, prompts, seeds, plan, height, width, kwargs):
    """The plan's search stage: per prompt, the candidates are `seeds` (or the library's choice of as many), with
    golden noise applied, searched by `noisekit.search`; the best image of each prompt is returned."""
    options = dict(plan.search)
    if plan.nlg is not None:
        raise ValueError("a plan with both NLG and search is not supported yet: NLG's NFEs are not in the search "
                         "budget. Use one of them.")
    allowed = {"rewards", "strategy", "budget", "schedule", "preview_rewards", "reward_cost", "micro_batch_size"}
    if "rewards" not in options or set(options) - allowed:
        raise ValueError(f"`search` takes rewards (required) and {sorted(allowed - {'rewards'})}; got {sorted(options)}.")
    output_type = kwargs.pop("output_type", "pil")
    settings = {k: kwargs.pop(k) for k in ("num_inference_steps", "guidance_scale", "guidance_rescale",
                                           "negative_prompt") if k in kwargs}
    if kwargs:
        raise ValueError(f"with a search stage the call takes only {sorted(settings)} and output_type besides the "
                         f"plan; got {sorted(kwargs)}.")
    sampler = Sampler(pipe, prompts, height=height, width=width, **settings)
    strategy = options.pop("strategy", "best_of_n")
    if strategy not in ("best_of_n", "ttsnap"):
        raise ValueError(f"`search['strategy']` must be 'best_of_n' or 'ttsnap', got {strategy!r}.")
    schedule = () if strategy == "best_of_n" else options.pop("schedule", None)
    budget = options.pop("budget", None)
    images, recipes, nfe = [], [], 0
    for index, text in enumerate(prompts):
        pool = seeds
        if plan.library is not None:
            pool = [r.seed for r in prepare_noise(pipe, text, seeds, replace(plan, npnet=None), height, width)[1]]
        transform = None
        if plan.npnet is not None:
            transform = partial(apply_npnet, pipe, plan.npnet, text, resize=plan.npnet_resize)
        result = search(sampler, index, options["rewards"], seeds=pool,
                        num_candidates=None if budget is not None else len(pool), budget=budget, schedule=schedule,
                        preview_rewards=options.get("preview_rewards"), reward_cost=options.get("reward_cost", 1),
                        micro_batch_size=options.get("micro_batch_size"), noise_transform=transform,
                        strategy=strategy)
        images.append(result.best.image)
        recipes.append(result.best.recipe)
        nfe += result.nfe
    if output_type == "pt":
        images = torch.stack([torch.from_numpy(np.asarray(i)).permute(2, 0, 1).float() / 255 for i in images])
    elif output_type == "np":
        images = np.stack([np.asarray(i).astype(np.float32) / 255 for i in images])
    return NoisekitPipelineOutput(images=images, recipes=recipes, nfe=nfe)


def call_with_plan(pipe, stock_call, prompt, seeds, noise_plan, height, width, **kwargs):
    """For each prompt: canonical noise of `seeds` -> the plan's stages -> `stock_call(latents=...)`; with a search
    stage, the seeds are the candidates and each prompt returns its best image."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    seeds = list(range(1)) if seeds is None else list(seeds)
    plan = resolve_plan(pipe, noise_plan)
    if plan.search is not None:
        return search_with_plan(pipe, prompts, seeds, plan, height, width, kwargs)
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
        images = np.concatenate(images)
    return NoisekitPipelineOutput(images=images, recipes=recipes, nfe=nfe)
