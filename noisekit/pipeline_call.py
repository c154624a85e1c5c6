"""What the `noisekit.pipelines` classes do on a call: the noise plan per prompt, then the stock call (or a search).

Kept out of the pipeline files so that SD and SDXL share it; each pipeline file holds only its class (diffusers
loads a `custom_pipeline=` file as a standalone module with one pipeline class in it).
"""

import contextlib
import inspect
import json
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from diffusers.utils import BaseOutput

from .core.families import adapter_for
from .core.sampler import default_guidance_rescale
from .plan import NoisePlan, prepare, run_sampler, search_prompt

SET_BY_NOISEKIT = ("latents", "generator", "num_images_per_prompt")
SEARCH_SETTINGS = ("num_inference_steps", "guidance_scale", "guidance_rescale", "negative_prompt")


@dataclass
class NoisekitPipelineOutput(BaseOutput):
    """`images` as the stock pipeline returns them; `recipes[i]` (a dict) replays the noise of image i; `nfe` counts
    every denoiser evaluation of the call, noise stages included."""

    images: object
    recipes: list
    nfe: int


class SavesAsStock:
    """A noisekit pipeline saves under its stock parent's class name, with its `npnet` component beside the
    stock ones: `DiffusionPipeline.from_pretrained` then loads the folder as the stock pipeline (diffusers only
    resolves class names it knows), and noisekit's loaders (`noisekit.sources.load_pipeline`, `--model`) load it
    as the noisekit class, NPNet included."""

    def save_pretrained(self, save_directory, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        path = os.path.join(save_directory, "model_index.json")
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        index["_class_name"] = self.stock_class().__name__
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)

    @classmethod
    def stock_class(cls):
        return next(base for base in cls.__mro__[1:] if base.__module__.startswith("diffusers."))


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


@contextlib.contextmanager
def counting_nfe(denoiser):
    """Counts the rows the denoiser evaluates while the block runs (`count[0]`): NFE as spent, whatever the
    guidance scale, guidance embedding or step count."""
    count = [0]

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        count[0] += sample.shape[0]

    handle = denoiser.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def check_call(kwargs):
    for name in SET_BY_NOISEKIT:
        if name in kwargs:
            raise ValueError(f"`{name}` is set by noisekit from `seeds` and the noise plan; pass `seeds=[...]` "
                             f"instead of `{name}`.")


def as_output_type(images, output_type):
    """PIL images -> the stock pipelines' other output types ("pt": (N, 3, H, W) in [0, 1]; "np": (N, H, W, 3))."""
    if output_type == "pil":
        return images
    arrays = np.stack([np.asarray(i).astype(np.float32) / 255 for i in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) if output_type == "pt" else arrays


def search_with_plan(pipe, prompts, seeds, plan, height, width, kwargs):
    """The plan's search stage: per prompt, its candidates (seeds or the library's choice) after golden noise and
    NLG, searched; the best image of each prompt is returned in `output_type`."""
    output_type = kwargs.pop("output_type", "pil")
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"`output_type` must be one of pil, np, pt, latent, got {output_type!r}.")
    settings = {k: kwargs.pop(k) for k in SEARCH_SETTINGS if k in kwargs}
    if kwargs:
        raise ValueError(f"with a search stage the call takes only {list(SEARCH_SETTINGS)} and output_type besides "
                         f"the plan; got {sorted(kwargs)}.")
    sampler = run_sampler(pipe, prompts, plan, height=height, width=width, **settings)
    stage = plan.search
    budgeted = stage.budget is not None or stage.budget_seconds is not None
    if stage.num_candidates is None and not budgeted:
        plan = replace(plan, search=replace(stage, num_candidates=len(seeds)))
    # a budget with one seed S searches S, S+1, ... as far as the budget reaches
    first = seeds[0] if budgeted and len(seeds) == 1 else seeds
    results = [search_prompt(sampler, plan, index, first) for index in range(len(prompts))]
    if output_type == "latent":
        images = torch.cat([r.best.latents for r in results])
    else:
        images = as_output_type([r.best.image for r in results], output_type)
    return NoisekitPipelineOutput(images=images, recipes=[r.best.recipe for r in results],
                                  nfe=sum(r.nfe for r in results))


def call_with_plan(pipe, stock_call, prompt, seeds, noise_plan, height, width, **kwargs):
    """For each prompt: its candidates through the plan's noise stages -> `stock_call(latents=...)`; with a search
    stage, the seeds are the candidates and each prompt returns its best image."""
    check_call(kwargs)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    seeds = [0] if seeds is None else list(seeds)
    plan = resolve_plan(pipe, noise_plan)
    if "guidance_rescale" in inspect.signature(stock_call).parameters:  # SD3 and FLUX take none
        kwargs.setdefault("guidance_rescale", default_guidance_rescale(pipe))
    if plan.search is not None:
        return search_with_plan(pipe, prompts, seeds, plan, height, width, kwargs)
    settings = {k: kwargs.pop(k) for k in ("negative_prompt",) if k in kwargs}
    if "guidance_scale" in kwargs:
        settings["guidance_scale"] = kwargs["guidance_scale"]
    # prompts encoded once: the stock call gets their embeddings, with the negative prompt's when CFG is on
    sampler = run_sampler(pipe, prompts, plan, height=height, width=width, **settings)
    adapter = adapter_for(pipe)
    images, recipes, nfe = [], [], 0
    for index in range(len(prompts)):
        candidates = prepare(sampler, plan, index, seeds)
        latents = adapter.stock_latents(candidates.noise.to(pipe._execution_device, adapter.dtype))
        with counting_nfe(adapter.denoiser) as count:
            out = stock_call(latents=latents, num_images_per_prompt=len(candidates), height=height, width=width,
                             generator=candidates.generators(),
                             **adapter.call_embeds(sampler.conditioning, index, len(candidates)),
                             **kwargs)
        images += list(out.images) if isinstance(out.images, list) else [out.images]
        recipes += [r.to_dict() for r in candidates.recipes]
        nfe += candidates.nfe + count[0]
    if images and torch.is_tensor(images[0]):
        images = torch.cat(images)
    elif images and hasattr(images[0], "shape") and not hasattr(images[0], "save"):
        images = np.concatenate(images)
    return NoisekitPipelineOutput(images=images, recipes=recipes, nfe=nfe)
