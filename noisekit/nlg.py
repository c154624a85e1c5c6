"""Noise Level Guidance (Mannering et al., "Noise-Level Diffusion Guidance: Well Begun is Half Done").

NLG refines the initial noise before sampling with the model's own guidance signal at the start of the schedule.
It runs K iterations of:

    d = eps(n, t, cond) - eps(n, t, uncond)        one batched [uncond; cond] UNet call (2 NFE per image)
    d <- d * min(1, c / ||d||)                      per-sample L2 clip (c = 0.5)
    n <- n - eta * d + sqrt(s2) * xi,  xi ~ N(0, I) (eta = 1, s2 = 1e-3, xi from the caller's generators)
    n <- n * sqrt(D) / ||n||                        back to the norm of unit-variance noise

Faithful defaults: K = 20, t = T - 1, c = 0.5, eta = 1, s2 = 1e-3. v and sample predictions are converted to
epsilon with alpha_bar from `alphas_cumprod` (eps = alpha * v + sigma * x), not from a scheduler's state.

Better than the reference: at zero terminal SNR (and for flow matching at sigma = 1) eps(x_T) = x_T for every
prompt, so d = 0 identically; `timestep="auto"` then evaluates at the timestep whose SNR is closest to SD 1.x's
terminal SNR (0.004682; t = 880 on the rescaled SD schedule). The injected noise is fresh every iteration (the
official script re-injects one fixed vector), the caller's tensor is never modified, the arithmetic is float32,
`relative_clip` scales the clip with sqrt(D), and every iteration's |d|, clipping and cosine to the start noise
are returned.
"""

from dataclasses import dataclass, field

import torch

from .families import check_supported, encode
from .noise import vae_scale_factor
from .recipe import register_transform
from .weights import module_hash

SD_TERMINAL_SNR = 0.004682
ZERO_SNR = 1e-6


@dataclass
class NLGOutput:
    noise: torch.Tensor  # refined unit-variance noise (N, C, h, w), float32, CPU
    timestep: int
    nfe: int
    diagnostics: list = field(default_factory=list)  # per iteration: {"norm_d", "clipped", "cosine_to_start"}


def evaluation_timestep(scheduler, timestep="auto"):
    """The timestep NLG evaluates at: `T - 1`, or for zero-terminal-SNR schedules the one with SD's terminal SNR."""
    alphas_cumprod = scheduler.alphas_cumprod.double()
    last = len(alphas_cumprod) - 1
    if timestep == "auto":
        terminal = alphas_cumprod[-1] / (1 - alphas_cumprod[-1])
        if terminal >= ZERO_SNR:
            return last
        snr = alphas_cumprod / (1 - alphas_cumprod)
        return int((snr.log() - torch.tensor(SD_TERMINAL_SNR).log()).abs().argmin())
    if isinstance(timestep, bool) or not isinstance(timestep, int) or not 0 <= timestep <= last:
        raise ValueError(f"`timestep` must be 'auto' or an integer in [0, {last}], got {timestep!r}.")
    return timestep


def _epsilon(prediction_type, output, x, alpha, sigma):
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha * output + sigma * x
    if prediction_type == "sample":
        return (x - alpha * output) / sigma
    raise ValueError(f"NLG supports epsilon, v_prediction and sample models, got {prediction_type!r}.")


@torch.no_grad()
def noise_level_guidance(pipe, prompt, noise, num_iterations=20, step_size=1.0, clip=0.5, relative_clip=None,
                         noise_variance=1e-3, renormalize=True, timestep="auto", negative_prompt=None,
                         generator=None, micro_batch_size=None):
    """Refine unit-variance `noise` `(N, C, h, w)` for `prompt` (one, or one per row) with NLG; returns `NLGOutput`.

    Args:
        generator: one CPU `torch.Generator` per row for the injected noise (required when `noise_variance > 0`).
        clip / relative_clip: the per-sample L2 clip of d: `clip` absolute (0.5, the paper's), or, when
            `relative_clip` is given, `relative_clip * sqrt(D)` so the edit does not shrink with resolution.
        timestep: `"auto"` (T - 1, moved below T at zero terminal SNR) or an integer training timestep.
        micro_batch_size: candidates per UNet batch (all when `None`). Batched kernels round differently from
            single ones, so bit-exact replay of one candidate needs `micro_batch_size=1` (what `apply_nlg` uses).

    Examples:
        >>> noise = noisekit.seed_noise(pipe, [0, 1])
        >>> gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        >>> refined = noisekit.noise_level_guidance(pipe, "a red circle", noise, generator=gens).noise
        >>> image = pipe("a red circle", latents=refined[:1]).images[0]
    """
    check_supported(pipe)
    if not isinstance(num_iterations, int) or num_iterations < 0:
        raise ValueError(f"`num_iterations` must be a non-negative integer, got {num_iterations!r}.")
    if noise_variance > 0 and (generator is None or len(generator) != len(noise)):
        raise ValueError(f"`generator` must hold one CPU generator per noise row ({len(noise)}) for the injected "
                         "noise; pass noise_variance=0 to inject none.")
    prompts = [prompt] * len(noise) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(noise):
        raise ValueError(f"`prompt` must be one prompt or one per noise row ({len(noise)}), got {len(prompts)}.")
    t = evaluation_timestep(pipe.scheduler, timestep)
    distinct = list(dict.fromkeys(prompts))
    factor = vae_scale_factor(pipe)
    height, width = noise.shape[-2] * factor, noise.shape[-1] * factor
    conditioning = encode(pipe, distinct, negative_prompt, True, height, width)
    prompt_index = torch.tensor([distinct.index(p) for p in prompts], device=pipe._execution_device)
    hidden, added = conditioning.unet_inputs(prompt_index, guided=True)
    alpha_bar = pipe.scheduler.alphas_cumprod[t].double()
    alpha, sigma = float(alpha_bar.sqrt()), float((1 - alpha_bar).sqrt())
    dims = noise[0].numel()
    threshold = clip if relative_clip is None else relative_clip * dims**0.5

    start = noise.detach().to("cpu", torch.float32).clone()
    size = micro_batch_size or len(noise)
    refined, per_batch = [], []
    for first in range(0, len(noise), size):
        rows = slice(first, first + size)
        n, diagnostics = _refine(pipe, start[rows], hidden[_cfg_rows(rows, len(noise))],
                                 {k: v[_cfg_rows(rows, len(noise))] for k, v in added.items()} if added else None,
                                 t, alpha, sigma, threshold, num_iterations, step_size, noise_variance, renormalize,
                                 generator[rows] if generator is not None else None)
        refined.append(n)
        per_batch.append(diagnostics)
    diagnostics = [{key: [v for batch in per_batch for v in batch[i][key]] for key in per_batch[0][i]}
                   for i in range(num_iterations)]
    return NLGOutput(torch.cat(refined), t, 2 * len(noise) * num_iterations, diagnostics)


def _cfg_rows(rows, count):
    """Rows of a [uncond; cond] batch of `count` candidates that belong to the candidates `rows`."""
    indices = torch.arange(count)[rows]
    return torch.cat([indices, indices + count])


def _refine(pipe, start, hidden, added, t, alpha, sigma, threshold, num_iterations, step_size, noise_variance,
            renormalize, generator):
    prediction_type = pipe.scheduler.config.prediction_type
    dims = start[0].numel()
    timestep = torch.tensor(t, device=pipe._execution_device)
    n, diagnostics = start.clone(), []
    for _ in range(num_iterations):
        x = torch.cat([n, n]).to(pipe._execution_device, pipe.unet.dtype)
        output = pipe.unet(x, timestep, encoder_hidden_states=hidden, added_cond_kwargs=added, return_dict=False)[0]
        eps = _epsilon(prediction_type, output.float().cpu(), x.float().cpu(), alpha, sigma)
        uncond, cond = eps.chunk(2)
        d = cond - uncond
        norm = d.flatten(1).norm(dim=1)
        scale = torch.clamp(threshold / norm.clamp_min(1e-12), max=1.0)
        n = n - step_size * d * scale.view(-1, 1, 1, 1)
        if noise_variance > 0:
            xi = torch.cat([torch.randn((1, *n.shape[1:]), generator=g, dtype=torch.float32) for g in generator])
            n = n + noise_variance**0.5 * xi
        if renormalize:
            n = n * (dims**0.5 / n.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        diagnostics.append({"norm_d": norm.tolist(), "clipped": (norm > threshold).tolist(),
                            "cosine_to_start": torch.nn.functional.cosine_similarity(n.flatten(1), start.flatten(1))
                            .tolist()})
    return n, diagnostics


NLG_DEFAULTS = dict(num_iterations=20, step_size=1.0, clip=0.5, relative_clip=None, noise_variance=1e-3,
                    renormalize=True, timestep="auto", negative_prompt=None)


def nlg_generator_seed(seed):
    """The seed of the generator that injects NLG's noise for a candidate of seed `seed` (its own stream)."""
    return (seed * 6364136223846793005 + 1442695040888963407) % 2**63


def apply_nlg(pipe, prompt, noise, recipes, **params):
    """NLG as a recipe transform: generators come from the recipes' seeds, each recipe records the step, and
    candidates are refined one at a time so that each replays bit for bit on its own."""
    params = {**NLG_DEFAULTS, **params}
    unknown = set(params) - set(NLG_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown NLG parameters {sorted(unknown)}; allowed: {sorted(NLG_DEFAULTS)}.")
    generators = [torch.Generator().manual_seed(nlg_generator_seed(r.seed)) for r in recipes]
    out = noise_level_guidance(pipe, prompt, noise, generator=generators, micro_batch_size=1, **params)
    prompts = [prompt] * len(noise) if isinstance(prompt, str) else list(prompt)
    weights = module_hash(pipe.unet)
    new = [r.then("nlg", {**params, "prompt": p, "timestep_used": out.timestep}, weights, result=row[None])
           for r, p, row in zip(recipes, prompts, out.noise)]
    return out, new


def _replay_nlg(noise, params, weights_hash=None, seed=None, pipe=None, **_):
    if pipe is None:
        raise ValueError("replaying an NLG step needs the pipeline: recipe.replay(pipe=pipe).")
    if weights_hash is not None and module_hash(pipe.unet) != weights_hash:
        raise ValueError(f"this pipeline's UNet (hash {module_hash(pipe.unet)}) is not the one the recipe used "
                         f"({weights_hash}).")
    params = dict(params)
    prompt = params.pop("prompt")
    params.pop("timestep_used")
    generator = [torch.Generator().manual_seed(nlg_generator_seed(seed))]
    return noise_level_guidance(pipe, prompt, noise, generator=generator, micro_batch_size=1, **params).noise


register_transform("nlg", _replay_nlg)
