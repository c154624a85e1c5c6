"""A batched, prunable sampler that runs candidates through a diffusers pipeline's own parts.

`Sampler` encodes each prompt once and owns the settings; `Trajectories` is a batch of candidates in flight
with its own copy of the scheduler. It gives the stock pipeline's results for the same latents (the loop below
is the one of `StableDiffusionPipeline.__call__` / `StableDiffusionXLPipeline.__call__`), and adds what search
needs: candidates can be dropped between steps, x0 (Tweedie) previews are returned at chosen steps, and every
denoiser evaluation is counted (NFE; a CFG step on B candidates counts 2B).

Step `i` means the `i`-th pass of the loop over `scheduler.timesteps` (0-based): its preview comes from the
`i + 1`-th denoiser evaluation. Heun-type schedulers evaluate twice per timestep, so their loop is longer.
"""

import copy
import inspect
import math
import time
from dataclasses import dataclass, field

import torch

from .clock import Clock
from .edm import is_edm
from .families import adapter_for
from .schedule import trailing_timesteps
from .x0 import predict_x0  # noqa: F401  (re-exported)


def rescale_guidance(guided, cond, guidance_rescale):
    """CFG rescale (Lin et al. 2023, Sec. 3.4): match the std of the guided prediction to the conditional one,
    then mix by `guidance_rescale`. A zero std (a constant prediction) is left unscaled instead of dividing by 0."""
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    ratio = torch.where(std_guided > 0, std_cond / std_guided, torch.ones_like(std_guided))
    rescaled = guided * ratio
    return guidance_rescale * rescaled + (1 - guidance_rescale) * guided


def _is_candidate_tensor(value, like):
    return torch.is_tensor(value) and value.shape == like.shape


def _select_rows(obj, rows, like):
    """Index every per-candidate tensor held by `obj` (a scheduler's multistep history, Heun's first-order
    sample, ...) with `rows`. Per-candidate means: shaped exactly like the current latents."""
    for name, value in list(vars(obj).items()):
        if _is_candidate_tensor(value, like):
            setattr(obj, name, value[rows])
        elif isinstance(value, list) and any(_is_candidate_tensor(v, like) for v in value):
            setattr(obj, name, [v[rows] if _is_candidate_tensor(v, like) else v for v in value])


@dataclass
class SampleOutput:
    images: object  # list of PIL images, or a tensor / array for other `output_type`s
    latents: torch.Tensor
    nfe: int
    previews: dict = field(default_factory=dict)  # step -> x0 latents (N, C, h, w), float32
    denoiser_seconds: float = 0.0
    seconds: float = 0.0
    decode_seconds: float = 0.0


def default_guidance_rescale(pipe):
    """The CFG rescale phi a pipeline is sampled with unless the caller gives one: 0.7 after `zero_snr(pipe)`
    (the paper's recommendation, recorded on the pipeline), else 0 as in the stock pipelines."""
    return getattr(pipe, "noisekit_guidance_rescale", 0.0)


class Sampler:
    """Prompts encoded once, plus the sampling settings shared by every batch of candidates: the run's context.

    Args:
        pipe: a diffusers pipeline of a family noisekit has an adapter for (`noisekit.core.families`).
        prompts (`list[str]`): the distinct prompts; candidates refer to them by index.
        num_inference_steps, guidance_scale, negative_prompt, eta: as in the stock pipelines (CFG is on when
            `guidance_scale > 1`).
        guidance_rescale (`float`, *optional*): CFG rescale phi; `None` takes the pipeline's default (0.7 after
            `zero_snr`, else 0).
        height, width: image size in pixels (the pipeline's default when `None`).
        with_uncond (`bool`): also encode the unconditional rows when CFG is off (NLG needs them).
    """

    def __init__(self, pipe, prompts, *, num_inference_steps=50, guidance_scale=7.5, guidance_rescale=None,
                 negative_prompt=None, eta=0.0, height=None, width=None, with_uncond=False):
        self.adapter = adapter_for(pipe)
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompts` must be a non-empty list of strings, got {prompts!r}.")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a finite number >= 0, got {guidance_scale!r}.")
        guidance_rescale = default_guidance_rescale(pipe) if guidance_rescale is None else guidance_rescale
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"`guidance_rescale` must lie in [0, 1], got {guidance_rescale!r}.")
        self.pipe = self.adapter.pipe  # for a modular pipeline, the classic one the adapter serves
        self.prompts = list(prompts)
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.guidance_rescale = guidance_rescale
        self.negative_prompt = negative_prompt
        self.guided = self.adapter.guided(guidance_scale)
        self.device = pipe._execution_device
        default_height, default_width = self.adapter.default_size()
        self.height, self.width = height or default_height, width or default_width
        self.shape = self.adapter.latent_shape(self.height, self.width)
        self.conditioning = self.adapter.encode(self.prompts, negative_prompt, self.guided or with_uncond,
                                                self.height, self.width)
        self.dtype = self.conditioning.cond.dtype
        self.scheduler = copy.deepcopy(pipe.scheduler)
        self.adapter.set_timesteps(self.scheduler, num_inference_steps, self.device, self.shape)
        if (self.scheduler.timesteps < 0).any() and not is_edm(self.scheduler):  # EDM's c_noise = log(sigma) / 4
            # Trailing spacing's rounding bug gives n + 1 timesteps ending at -1 for 62 values of n (DDIM would
            # then read alphas_cumprod[-1] = alpha_bar_T); see `inspect_schedule`. Schedulers that take explicit
            # timesteps get the n correct ones; DDIM, which does not, drops the extra one.
            correct = trailing_timesteps(num_inference_steps, self.scheduler.config.num_train_timesteps)
            if "timesteps" in inspect.signature(self.scheduler.set_timesteps).parameters:
                self.scheduler.set_timesteps(timesteps=correct.tolist(), device=self.device)
            elif not hasattr(self.scheduler, "sigmas"):
                self.scheduler.timesteps = self.scheduler.timesteps[self.scheduler.timesteps >= 0]
            elif _drop_last_timestep(self.scheduler, correct):
                pass  # UniPC: the n correct timesteps are the first n, and each sigma is a function of its timestep
            else:
                raise ValueError(f"{type(self.scheduler).__name__} yields a -1 timestep with trailing spacing at "
                                 f"{num_inference_steps} steps and takes no explicit timesteps; use another step "
                                 "count (one that divides the training steps).")
        self.timesteps = self.scheduler.timesteps
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        self.step_kwargs = {"eta": eta} if "eta" in accepted else {}
        self.takes_generator = "generator" in accepted
        self.nfe = 0
        self.clock = Clock(self.device)  # seconds in the denoiser, the VAE decode and (timed by search) rewards

    @property
    def denoiser_seconds(self):
        return self.clock.seconds["denoiser"]

    @property
    def decode_seconds(self):
        return self.clock.seconds["decode"]

    @property
    def num_steps(self):
        """Passes of the denoising loop (timesteps; twice per timestep for Heun-type schedulers)."""
        return len(self.timesteps)

    @property
    def nfe_per_step(self):
        return self.adapter.nfe_per_step(self.guided)

    def latent_shape(self):
        return self.shape

    def settings(self):
        """What a replay needs to sample again (JSON-serialisable)."""
        return {"steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "guidance_rescale": self.guidance_rescale, "negative_prompt": self.negative_prompt,
                "height": self.height, "width": self.width, "scheduler": type(self.scheduler).__name__}

    def start(self, noise, prompt_index=0, generators=None):
        """A batch of candidates from unit-variance `noise` `(B, C, h, w)`; `prompt_index` is an int or one per
        candidate; `generators` is one CPU generator per candidate (for stochastic schedulers) or `None`."""
        return Trajectories(self, noise, prompt_index, generators)

    def start_candidates(self, candidates, rows=None):
        """A batch of `Candidates` (or of their positions `rows`) in flight."""
        rows = list(range(len(candidates))) if rows is None else list(rows)
        generators = candidates.generators()
        return Trajectories(self, candidates.noise[rows], [candidates.prompt_index[i] for i in rows],
                            [generators[i] for i in rows])

    def call_denoiser(self, model_input, timestep, prompt_index):
        with self.clock.time("denoiser"):
            output = self.adapter.denoise(model_input, timestep, self.conditioning, prompt_index, self.guided,
                                          guidance_scale=self.guidance_scale)
        self.nfe += model_input.shape[0]
        return output

    def decode(self, latents, output_type="pil"):
        with self.clock.time("decode"):
            return self.adapter.decode(latents, output_type)


def _drop_last_timestep(scheduler, correct):
    """Drop trailing spacing's extra `-1` timestep (the last) and its sigma, keeping the final sigma, when that
    leaves exactly the correct timesteps; returns whether it did."""
    timesteps, sigmas = scheduler.timesteps, scheduler.sigmas
    if len(sigmas) != len(timesteps) + 1 or timesteps[:-1].cpu().tolist() != correct.tolist():
        return False
    scheduler.timesteps = timesteps[:-1]
    scheduler.sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    scheduler.num_inference_steps = len(scheduler.timesteps)
    return True


class Trajectories:
    """Candidates in flight: latents, their prompt rows, generators and a private scheduler state."""

    def __init__(self, sampler, noise, prompt_index, generators):
        shape = sampler.latent_shape()
        if noise.ndim != 4 or tuple(noise.shape[1:]) != shape:
            raise ValueError(f"`noise` must have shape (B, {', '.join(map(str, shape))}) for this pipeline at "
                             f"{sampler.height}x{sampler.width}, got {tuple(noise.shape)}.")
        count = noise.shape[0]
        if isinstance(prompt_index, int):
            prompt_index = [prompt_index] * count
        prompt_index = torch.as_tensor(prompt_index, dtype=torch.long)
        if len(prompt_index) != count or prompt_index.min() < 0 or prompt_index.max() >= len(sampler.prompts):
            raise ValueError(f"`prompt_index` must give one index in [0, {len(sampler.prompts)}) per candidate.")
        if generators is not None and len(generators) != count:
            raise ValueError(f"`generators` must hold one generator per candidate ({count}), got {len(generators)}.")
        self.sampler = sampler
        self.scheduler = copy.deepcopy(sampler.scheduler)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        # `state`: the latents in the denoiser's layout (FLUX packs 2x2 patches); flow schedulers start at 1.
        self.state = sampler.adapter.pack(noise.to(sampler.device, sampler.adapter.latents_dtype or sampler.dtype))
        self.state = self.state * getattr(self.scheduler, "init_noise_sigma", 1.0)
        self.prompt_index = prompt_index.to(sampler.device)
        self.generators = list(generators) if generators is not None else None
        self.rows = torch.arange(count)  # which of the starting candidates are still here
        self.step_index = 0

    def __len__(self):
        return len(self.rows)

    @property
    def latents(self):
        """The current latents `(B, C, h, w)` (unpacked from the denoiser's layout)."""
        return self.sampler.adapter.unpack(self.state)

    @property
    def done(self):
        return self.step_index >= self.sampler.num_steps

    def step(self, preview=False):
        """One pass of the denoising loop for every candidate; returns the x0 preview when `preview`."""
        sampler, scheduler, t = self.sampler, self.scheduler, self.sampler.timesteps[self.step_index]
        model_input = torch.cat([self.state] * 2) if sampler.guided else self.state
        if hasattr(scheduler, "scale_model_input"):
            model_input = scheduler.scale_model_input(model_input, t)
        output = sampler.call_denoiser(model_input, t, self.prompt_index)
        if sampler.guided:
            uncond, cond = output.chunk(2)
            output = sampler.adapter.guide(uncond, cond, sampler.guidance_scale)
            if sampler.guidance_rescale > 0:
                output = rescale_guidance(output, cond, sampler.guidance_rescale)
        x0 = None
        if preview:
            x0 = sampler.adapter.x0(scheduler, output, model_input[-len(self):], self.step_index, t)
        kwargs = dict(sampler.step_kwargs)
        if sampler.takes_generator:
            kwargs["generator"] = self.generators
        self.state = scheduler.step(output, t, self.state, **kwargs, return_dict=False)[0]
        self.step_index += 1
        return x0

    def run(self, until=None, preview_steps=()):
        """Step until loop index `until` (exclusive; the end when `None`); returns `{step: x0}` for the steps
        of `preview_steps` that were passed."""
        until = self.sampler.num_steps if until is None else min(until, self.sampler.num_steps)
        previews = {}
        while self.step_index < until:
            index = self.step_index
            x0 = self.step(preview=index in preview_steps)
            if x0 is not None:
                previews[index] = x0
        return previews

    def keep(self, rows):
        """Keep only the candidates at positions `rows` (indices or a boolean mask into the current batch)."""
        rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"`rows` must index the {len(self)} candidates in flight, got {rows.tolist()}.")
        like = self.state
        _select_rows(self.scheduler, rows.to(like.device), like)
        self.state = like[rows.to(like.device)]
        self.prompt_index = self.prompt_index[rows.to(self.prompt_index.device)]
        if self.generators is not None:
            self.generators = [self.generators[i] for i in rows.tolist()]
        self.rows = self.rows[rows.cpu()]

    def decode(self, output_type="pil"):
        return self.sampler.decode(self.latents, output_type)


@torch.no_grad()
def sample(pipe, prompt, noise, *, num_inference_steps=50, guidance_scale=7.5, guidance_rescale=None,
           negative_prompt=None, eta=0.0, generator=None, preview_steps=(), micro_batch_size=None,
           output_type="pil"):
    """Denoise `noise` with `pipe`'s own parts; the images equal `pipe(prompt, latents=noise, ...)`'s.

    Args:
        pipe: a pipeline of a family noisekit serves (SD 1.x/2.x, SDXL, LCM UNets, SD3, FLUX.1).
        prompt (`str` or `list[str]`): one prompt for every candidate, or one per candidate.
        noise (`torch.Tensor`): unit-variance noise `(N, C, H/f, W/f)`, e.g. from `seed_noise` (unpacked for FLUX:
            the adapter packs it; `pipe()` takes `adapter_for(pipe).pack(noise)`); the image size
            follows from its shape.
        generator: one CPU `torch.Generator` per candidate for stochastic schedulers (see `seed_generators`).
        preview_steps: loop indices at which to return x0 previews.
        micro_batch_size: candidates per denoiser batch (all at once when `None`); results do not depend on it
            beyond float rounding of batched kernels.

    Returns:
        `SampleOutput` with images, final latents, NFE, previews and timings.

    Examples:
        >>> noise = noisekit.seed_noise(pipe, range(4))
        >>> out = noisekit.sample(pipe, "a red circle", noise, num_inference_steps=20, guidance_scale=5.0)
        >>> out.images[0].save("best.png"), out.nfe
    """
    began = time.perf_counter()
    count = noise.shape[0]
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if len(prompts) not in (1, count):
        raise ValueError(f"`prompt` must be one prompt or one per candidate ({count}), got {len(prompts)}.")
    distinct = list(dict.fromkeys(prompts))
    prompt_index = [distinct.index(p) for p in prompts] * (count if len(prompts) == 1 else 1)
    if isinstance(generator, torch.Generator):
        generator = [generator]
    height, width = adapter_for(pipe).image_size(noise)
    sampler = Sampler(pipe, distinct, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                      guidance_rescale=guidance_rescale, negative_prompt=negative_prompt, eta=eta, height=height,
                      width=width)
    return run_batches(sampler, noise, prompt_index, generator, preview_steps=preview_steps,
                       micro_batch_size=micro_batch_size, output_type=output_type, began=began)


def run_batches(sampler, noise, prompt_index, generators=None, *, preview_steps=(), micro_batch_size=None,
                output_type="pil", began=None):
    """Denoise `noise` with an already built `Sampler`, `micro_batch_size` candidates per denoiser batch (all at
    once when `None`); returns `SampleOutput` with what this call spent."""
    began = time.perf_counter() if began is None else began
    count = noise.shape[0]
    prompt_index = [prompt_index] * count if isinstance(prompt_index, int) else list(prompt_index)
    size = micro_batch_size or count
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`micro_batch_size` must be a positive integer, got {micro_batch_size!r}.")
    nfe, denoiser_seconds, decode_seconds = sampler.nfe, sampler.denoiser_seconds, sampler.decode_seconds
    images, latents, previews = [], [], {}
    for start in range(0, count, size):
        rows = slice(start, start + size)
        batch = sampler.start(noise[rows], prompt_index[rows], generators[rows] if generators is not None else None)
        for step, x0 in batch.run(preview_steps=set(preview_steps)).items():
            previews.setdefault(step, []).append(x0)
        latents.append(batch.latents)
        images.append(batch.decode(output_type))
    images = _concat(images)
    previews = {step: torch.cat(parts) for step, parts in previews.items()}
    return SampleOutput(images, torch.cat(latents), sampler.nfe - nfe, previews,
                        sampler.denoiser_seconds - denoiser_seconds, time.perf_counter() - began,
                        sampler.decode_seconds - decode_seconds)


def _concat(parts):
    if isinstance(parts[0], list):
        return [image for part in parts for image in part]
    if torch.is_tensor(parts[0]):
        return torch.cat(parts)
    import numpy as np

    return np.concatenate(parts)
