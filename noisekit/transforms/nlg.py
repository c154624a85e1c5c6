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

EDM-scheduled UNets (Playground v2.5) evaluate at a sigma of their own training grid (`"auto"`: sigma_max, SNR
1 / sigma_max^2 > 0) on the sample the sampler starts from (`init_noise_sigma` x n), preconditioned by the scheduler
(c_in, c_noise), and d is the difference of eps = (x - x0) / sigma with x0 from the scheduler's `precondition_outputs`.

`official=True` reproduces the official script where it deviates, for matching published numbers: one injected
vector drawn once and re-injected at every iteration (its RNG state is restored around each draw), the v -> eps
conversion with the t = 0 sigma (what `scheduler.sigmas[0]` holds before `set_timesteps`, as in its first batch),
and latents held in float16 between iterations (it runs the UNet on `.half()` latents).
"""

from dataclasses import dataclass, field

import torch

from ..core.candidates import Candidates
from ..core.edm import edm_epsilon, is_edm, training_sigma
from ..core.families import adapter_for
from ..core.recipe import register_transform
from ..core.sampler import Sampler
from ..core.schedule import is_flow
from ..core.weights import module_hash

SD_TERMINAL_SNR = 0.004682
ZERO_SNR = 1e-6


@dataclass
class NLGOutput:
    noise: torch.Tensor  # refined unit-variance noise (N, C, h, w), float32, CPU
    timestep: int
    nfe: int
    diagnostics: list = field(default_factory=list)  # per iteration: {"norm_d", "clipped", "cosine_to_start"}


def flow_level(t, num_train_timesteps=1000):
    """Flow matching: the noise level s of training timestep `t` (s = t / T) and the `(alpha, sigma)` NLG converts
    with: x_t = (1 - s) x0 + s eps, so eps = x_t + (1 - s) v (`_epsilon`'s "flow")."""
    s = t / num_train_timesteps
    return 1.0 - s, s


def evaluation_timestep(scheduler, timestep="auto"):
    """The timestep NLG evaluates at: `T - 1`, or for zero-terminal-SNR schedules the one with SD's terminal SNR
    (EDM: `T - 1` is sigma_max, whose SNR is above zero).
    Flow matching starts at s = 1 where eps(x) = x for every prompt, so "auto" takes the s whose SNR
    ((1 - s) / s)^2 is SD's terminal SNR: s = 1 / (1 + sqrt(0.004682)) = 0.936, t = 936."""
    if is_flow(scheduler):
        last = scheduler.config.num_train_timesteps - 1
        if timestep == "auto":
            return round(scheduler.config.num_train_timesteps / (1 + SD_TERMINAL_SNR**0.5))
        if isinstance(timestep, bool) or not isinstance(timestep, int) or not 1 <= timestep <= last:
            raise ValueError(f"`timestep` must be 'auto' or an integer in [1, {last}] for flow matching (SNR > 0), "
                             f"got {timestep!r}.")
        return timestep
    if is_edm(scheduler):
        last = scheduler.config.num_train_timesteps - 1
        if timestep == "auto":
            return last
        if isinstance(timestep, bool) or not isinstance(timestep, int) or not 0 <= timestep <= last:
            raise ValueError(f"`timestep` must be 'auto' or an integer in [0, {last}], got {timestep!r}.")
        return timestep
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
    if prediction_type == "flow":
        return x + alpha * output
    raise ValueError(f"NLG supports epsilon, v_prediction and sample models, got {prediction_type!r}.")


@torch.no_grad()
def noise_level_guidance(pipe, prompt, noise, *, num_iterations=20, step_size=1.0, clip=0.5, relative_clip=None,
                         noise_variance=1e-3, renormalize=True, timestep="auto", negative_prompt=None,
                         generator=None, micro_batch_size=None, conditioning=None, prompt_index=None, official=False):
    """Refine unit-variance `noise` `(N, C, h, w)` for `prompt` (one, or one per row) with NLG; returns `NLGOutput`.

    Args:
        generator: one CPU `torch.Generator` per row for the injected noise (required when `noise_variance > 0`).
        clip / relative_clip: the per-sample L2 clip of d: `clip` absolute (0.5, the paper's), or, when
            `relative_clip` is given, `relative_clip * sqrt(D)` so the edit does not shrink with resolution.
        timestep: `"auto"` (T - 1, moved below T at zero terminal SNR) or an integer training timestep.
        micro_batch_size: candidates per UNet batch (all when `None`). Batched kernels round differently from
            single ones, so replaying one candidate exactly as it ran needs `micro_batch_size=1` (what the NLG
            stage uses).
        conditioning, prompt_index: an already encoded run (`Sampler.conditioning`, with unconditional rows)
            and each row's prompt in it; `prompt` and `negative_prompt` are then not encoded again.
        official (`bool`): reproduce the official script's deviations (module docstring); off by default.

    Examples:
        >>> noise = noisekit.seed_noise(pipe, [0, 1])
        >>> gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        >>> refined = noisekit.noise_level_guidance(pipe, "a red circle", noise, generator=gens).noise
        >>> image = pipe("a red circle", latents=refined[:1]).images[0]
    """
    adapter = adapter_for(pipe)
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 0:
        raise ValueError(f"`num_iterations` must be a non-negative integer, got {num_iterations!r}.")
    if noise_variance > 0 and (generator is None or len(generator) != len(noise)):
        raise ValueError(f"`generator` must hold one CPU generator per noise row ({len(noise)}) for the injected "
                         "noise; pass noise_variance=0 to inject none.")
    t = evaluation_timestep(pipe.scheduler, timestep)
    if conditioning is None:
        prompts = [prompt] * len(noise) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(noise):
            raise ValueError(f"`prompt` must be one prompt or one per noise row ({len(noise)}), got {len(prompts)}.")
        distinct = list(dict.fromkeys(prompts))
        height, width = adapter.image_size(noise)
        conditioning = adapter.encode(distinct, negative_prompt, True, height, width)
        prompt_index = [distinct.index(p) for p in prompts]
    if not conditioning.has_uncond:
        raise ValueError("NLG needs the unconditional rows of the conditioning (encode with CFG or with_uncond).")
    edm = is_edm(pipe.scheduler)
    if official and edm:
        raise ValueError("`official=True` reproduces the official NLG script for VP UNets; EDM-scheduled UNets have "
                         "no official reference.")
    if edm:
        alpha, sigma = 1.0, training_sigma(pipe.scheduler, t)
    elif adapter.flow:
        if official:
            raise ValueError("`official=True` reproduces the official NLG script for UNets; flow models have no "
                             "official reference.")
        alpha, sigma = flow_level(t, pipe.scheduler.config.num_train_timesteps)
    else:
        alpha_bar = pipe.scheduler.alphas_cumprod[0 if official else t].double()
        alpha, sigma = float(alpha_bar.sqrt()), float((1 - alpha_bar).sqrt())
    dims = noise[0].numel()
    threshold = clip if relative_clip is None else relative_clip * dims**0.5

    start = noise.detach().to("cpu", torch.float32).clone()
    size = micro_batch_size or len(noise)
    index = torch.as_tensor(list(prompt_index), dtype=torch.long, device=adapter.device)
    refined, per_batch = [], []
    for first in range(0, len(noise), size):
        rows = slice(first, first + size)
        def denoise(x, rows=rows):  # in the denoiser's layout (FLUX packs), back to (B, C, h, w)
            if edm:
                return _edm_denoise(adapter, x, sigma, conditioning, index[rows])
            return adapter.unpack(adapter.denoise(adapter.pack(x), t_tensor(t, adapter), conditioning, index[rows],
                                                  True))
        n, diagnostics = _refine(adapter, denoise, start[rows], alpha, sigma, threshold, num_iterations, step_size,
                                 noise_variance, renormalize, generator[rows] if generator is not None else None,
                                 official)
        refined.append(n)
        per_batch.append(diagnostics)
    diagnostics = [{key: [v for batch in per_batch for v in batch[i][key]] for key in per_batch[0][i]}
                   for i in range(num_iterations)]
    return NLGOutput(torch.cat(refined), t, 2 * len(noise) * num_iterations, diagnostics)


def t_tensor(t, adapter):
    return torch.tensor(float(t) if adapter.flow else t, device=adapter.device)


def _edm_denoise(adapter, n, sigma, conditioning, prompt_index):
    """eps at `sigma` of the sample the sampler starts from, `init_noise_sigma` x n, through the scheduler's
    preconditioning (the stock loop's c_in and c_noise timestep)."""
    scheduler = adapter.pipe.scheduler
    x = n.float() * scheduler.init_noise_sigma
    level = torch.tensor(sigma, dtype=torch.float32, device=adapter.device)
    model_input = scheduler.precondition_inputs(x, level).to(adapter.dtype)
    output = adapter.denoise(model_input, scheduler.precondition_noise(level), conditioning, prompt_index, True)
    return edm_epsilon(scheduler, output, x, sigma)


def _injected(generator, shape):
    return torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generator])


def _refine(adapter, denoise, start, alpha, sigma, threshold, num_iterations, step_size, noise_variance,
            renormalize, generator, official=False):
    scheduler = adapter.pipe.scheduler
    # `_edm_denoise` already gives epsilon
    prediction_type = "flow" if adapter.flow else "epsilon" if is_edm(scheduler) else scheduler.config.prediction_type
    dims = start[0].numel()
    n, diagnostics = start.clone(), []
    fixed = _injected(generator, n.shape[1:]) if official and noise_variance > 0 else None
    for _ in range(num_iterations):
        x = torch.cat([n, n]).to(adapter.device, adapter.dtype)
        output = denoise(x)
        eps = _epsilon(prediction_type, output.float().cpu(), x.float().cpu(), alpha, sigma)
        uncond, cond = eps.chunk(2)
        d = cond - uncond
        norm = d.flatten(1).norm(dim=1)
        scale = torch.clamp(threshold / norm.clamp_min(1e-12), max=1.0)
        n = n - step_size * d * scale.view(-1, 1, 1, 1)
        if noise_variance > 0:
            xi = fixed if fixed is not None else _injected(generator, n.shape[1:])
            n = n + noise_variance**0.5 * xi
        if renormalize:
            n = n * (dims**0.5 / n.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        if official:
            n = n.half().float()
        diagnostics.append({"norm_d": norm.tolist(), "clipped": (norm > threshold).tolist(),
                            "cosine_to_start": torch.nn.functional.cosine_similarity(n.flatten(1), start.flatten(1))
                            .tolist()})
    return n, diagnostics


NLG_DEFAULTS = dict(num_iterations=20, step_size=1.0, clip=0.5, relative_clip=None, noise_variance=1e-3,
                    renormalize=True, timestep="auto", negative_prompt=None, official=False)


def nlg_generator_seed(seed):
    """The seed of the generator that injects NLG's noise for a candidate of seed `seed` (its own stream)."""
    return (seed * 6364136223846793005 + 1442695040888963407) % 2**63


def check_params(params):
    """The paper's defaults completed with `params`; unknown names are refused."""
    unknown = set(params) - set(NLG_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown NLG parameters {sorted(unknown)}; allowed: {sorted(NLG_DEFAULTS)}.")
    return {**NLG_DEFAULTS, **params}


def nfe_per_candidate(params):
    """Denoiser evaluations NLG spends on one candidate: a batched [uncond; cond] call per iteration."""
    return 2 * check_params(params)["num_iterations"]


def nlg_stage(sampler, candidates, **params):
    """The NLG stage: each candidate refined with the run's conditioning (encoded once, the run's negative prompt
    as the unconditional branch), its injected noise drawn from a generator of its own seed, one candidate at a
    time so that each replays alone as it ran; each recipe records the step, and the NFE is charged."""
    params = check_params({**params, "negative_prompt": sampler.negative_prompt})
    generators = [torch.Generator().manual_seed(nlg_generator_seed(s)) for s in candidates.seeds]
    options = {k: v for k, v in params.items() if k != "negative_prompt"}
    out = noise_level_guidance(sampler.pipe, None, candidates.noise, generator=generators, micro_batch_size=1,
                               conditioning=sampler.conditioning, prompt_index=candidates.prompt_index, **options)
    weights = module_hash(sampler.adapter.denoiser)
    recipes = [r.then("nlg", {**params, "prompt": sampler.prompts[i], "timestep_used": out.timestep}, weights,
                      result=row[None], ran_on=next(sampler.adapter.denoiser.parameters()))
               for r, i, row in zip(candidates.recipes, candidates.prompt_index, out.noise)]
    return candidates.transformed(out.noise, recipes, out.nfe)


def apply_nlg(pipe, prompt, noise, recipes, **params):
    """NLG as a recipe transform on noise rows (see `nlg_stage`); returns `(NLGOutput, recipes)`."""
    params = check_params(params)
    prompts = [prompt] * len(noise) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(noise):
        raise ValueError(f"`prompt` must be one prompt or one per noise row ({len(noise)}), got {len(prompts)}.")
    distinct = list(dict.fromkeys(prompts))
    height, width = adapter_for(pipe).image_size(noise)
    sampler = Sampler(pipe, distinct, num_inference_steps=1, guidance_scale=1.0, height=height, width=width,
                      negative_prompt=params["negative_prompt"], with_uncond=True)
    candidates = Candidates(noise.float().cpu(), recipes, [distinct.index(p) for p in prompts])
    options = {k: v for k, v in params.items() if k != "negative_prompt"}
    out = nlg_stage(sampler, candidates, **options)
    return NLGOutput(out.noise, out.recipes[0].transforms[-1]["params"]["timestep_used"], out.nfe), list(out.recipes)


def _replay_nlg(noise, params, weights_hash=None, seed=None, pipe=None, **_):
    if pipe is None:
        raise ValueError("replaying an NLG step needs the pipeline: recipe.replay(pipe=pipe).")
    denoiser = adapter_for(pipe).denoiser
    if weights_hash is not None and module_hash(denoiser) != weights_hash:
        raise ValueError(f"this pipeline's denoiser (hash {module_hash(denoiser)}) is not the one the recipe used "
                         f"({weights_hash}).")
    params = dict(params)
    prompt = params.pop("prompt")
    params.pop("timestep_used")
    generator = [torch.Generator().manual_seed(nlg_generator_seed(seed))]
    return noise_level_guidance(pipe, prompt, noise, generator=generator, micro_batch_size=1, **params).noise


register_transform("nlg", _replay_nlg)
