"""The noise prompt dataset (NPD) of NPNet: re-denoise sampling, its inversion step, and the collected shards.

Re-denoise sampling (Zhou et al., "Golden Noise for Diffusion Models"; the official `forward_ours`): from the
unit-variance noise x_T, with DDIM timesteps t0 > t1 of an N-step schedule (N = 10 in the paper),

    eps_l = CFG_{omega_l}(eps(x_T, t0))          omega_l = 5.5
    x_t1  = DDIM step t0 -> t1 of x_T with eps_l
    eps_w = CFG_{omega_w}(eps(x_t1, t0))         omega_w = 1.0: the conditional prediction (not the unconditional),
                                                  evaluated at t0 on x_t1, as the official code does
    x'_T  = one DDIM inversion step of x_t1 with eps_w

The CFG gap omega_l > omega_w leaves prompt semantics in x'_T. Two inversion indexings (`inversion=`):

- `"official"` (default): the official code calls `DDIMInverseScheduler.step(eps_w, t1, x_t1)`, which since
  diffusers 0.22 maps alpha_bar[t1 - 1000 // N] -> alpha_bar[t1] (N = 10: 701 -> 801), not t1 -> t0. For an
  epsilon model on SD's schedule with N = 10 this is x'_T = 1.0789 x_T - 0.4158 eps_l + 0.3416 eps_w.
- `"exact"`: the inverse of the DDIM step, alpha_bar[t1] -> alpha_bar[t0]: x'_T = x_T + k (eps_w - eps_l),
  k = 0.3854 for N = 10 (the exact inverse when eps_w = eps_l).

`inversion_coefficients` gives both closed forms for epsilon models. Everything is computed in float32 with
float64 alpha_bar; the denoiser runs in the pipeline's dtype. Flow-matching pipelines (SD3, FLUX.1-dev) take the
same two steps as Euler steps of their own schedule (`noisekit.transforms.npd_flow`, exact inversion only).

Collected data (`training/collect_npd.py`) is a folder of `shards/shard-XXXXX.safetensors` (kept pairs:
`source`, `target` `(n, C, h, w)` canonical noise, `prompt_index`, `seed`, `reward_source`, `reward_target` `(n,)`), their
`shard-XXXXX.jsonl` records (every pair, kept or not) and `prompts.jsonl`; `load_npd` reads it back.
"""

import json
import os
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from ..core.edm import is_edm
from ..core.families import adapter_for, encode
from ..core.noise import vae_scale_factor
from .npd_flow import flow_re_denoise

INVERSIONS = ("official", "exact")


def ddim_alpha_bars(scheduler, num_inference_steps):
    """`(t0, t1, alpha_bar)` of a DDIM schedule: the first two timesteps and a float64 lookup
    `alpha_bar(t)` that returns the final alpha (DDIM's `final_alpha_cumprod`) for t < 0."""
    if num_inference_steps < 2:
        raise ValueError(f"re-denoise sampling needs at least 2 inference steps, got {num_inference_steps}.")
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(num_inference_steps)
    t0, t1 = int(ddim.timesteps[0]), int(ddim.timesteps[1])
    cumprod = ddim.alphas_cumprod.double()
    final = float(ddim.final_alpha_cumprod)

    def alpha_bar(t):
        return torch.tensor(final if t < 0 else float(cumprod[t]), dtype=torch.float64)

    return t0, t1, alpha_bar


def ddim_move(sample, model_output, alpha_bar_from, alpha_bar_to, prediction_type="epsilon", clip_sample=None):
    """One deterministic DDIM update of `sample`, read as lying at `alpha_bar_from`, to `alpha_bar_to`:
    `sqrt(a_to) x0 + sqrt(1 - a_to) eps` with (x0, eps) from `model_output` at `alpha_bar_from`. Denoising when
    `alpha_bar_to > alpha_bar_from`, inversion otherwise (the formula of `DDIMScheduler.step` and of
    `DDIMInverseScheduler.step`). Returns float32."""
    x, output = sample.float(), model_output.float()
    a, b = alpha_bar_from.sqrt().float(), (1 - alpha_bar_from).sqrt().float()
    if prediction_type == "epsilon":
        x0, eps = (x - b * output) / a, output
    elif prediction_type == "v_prediction":
        x0, eps = a * x - b * output, a * output + b * x
    elif prediction_type == "sample":
        x0, eps = output, (x - a * output) / b
    else:
        raise ValueError(f"DDIM supports prediction types epsilon, v_prediction and sample, got {prediction_type!r}.")
    if clip_sample:
        x0 = x0.clamp(-clip_sample, clip_sample)
    return alpha_bar_to.sqrt().float() * x0 + (1 - alpha_bar_to).sqrt().float() * eps


def _scheduler_options(scheduler):
    config = scheduler.config
    clip = config.get("clip_sample_range", 1.0) if config.get("clip_sample", False) else None
    return config.get("prediction_type", "epsilon"), clip


def denoise_step(scheduler, num_inference_steps, x_T, model_output):
    """The first DDIM step t0 -> t0 - 1000 // N (= t1) of `x_T`, as `DDIMScheduler.step(out, t0, x_T)`."""
    t0, _, alpha_bar = ddim_alpha_bars(scheduler, num_inference_steps)
    step = scheduler.config.num_train_timesteps // num_inference_steps
    prediction_type, clip = _scheduler_options(scheduler)
    return ddim_move(x_T, model_output, alpha_bar(t0), alpha_bar(t0 - step), prediction_type, clip)


def inversion_step(scheduler, num_inference_steps, x_t1, model_output, inversion="official"):
    """The inversion step of re-denoise sampling, from `x_t1` (where `denoise_step` landed) towards t0.

    `"official"`: `DDIMInverseScheduler.step(out, t1, x_t1)` of diffusers >= 0.22, alpha_bar[t1 - 1000 // N] ->
    alpha_bar[t1]. `"exact"`: alpha_bar[t0 - 1000 // N] -> alpha_bar[t0], the inverse of `denoise_step`.
    """
    if inversion not in INVERSIONS:
        raise ValueError(f"`inversion` must be one of {INVERSIONS}, got {inversion!r}.")
    t0, t1, alpha_bar = ddim_alpha_bars(scheduler, num_inference_steps)
    step = scheduler.config.num_train_timesteps // num_inference_steps
    prediction_type, clip = _scheduler_options(scheduler)
    if inversion == "official":
        # DDIMInverseScheduler: alpha_prod_t = alphas_cumprod[t1 - step] (its `initial_alpha_cumprod` below 0).
        start = alpha_bar(t1 - step) if t1 - step >= 0 else _initial_alpha(scheduler)
        return ddim_move(x_t1, model_output, start, alpha_bar(t1), prediction_type, clip)
    return ddim_move(x_t1, model_output, alpha_bar(t0 - step), alpha_bar(t0), prediction_type, clip)


def _initial_alpha(scheduler):
    set_alpha_to_zero = scheduler.config.get("set_alpha_to_zero", True)
    value = 0.0 if set_alpha_to_zero else float(DDIMScheduler.from_config(scheduler.config).alphas_cumprod[0])
    return torch.tensor(value, dtype=torch.float64)


def inversion_coefficients(scheduler, num_inference_steps, inversion="official"):
    """`(a, b, c)` with x'_T = a x_T + b eps_l + c eps_w for an epsilon model (closed form of `denoise_step` then
    `inversion_step`). SD's schedule, N = 10: official (1.0789, -0.4158, 0.3416), exact (1, -0.3854, 0.3854)."""
    t0, t1, alpha_bar = ddim_alpha_bars(scheduler, num_inference_steps)
    step = scheduler.config.num_train_timesteps // num_inference_steps
    a0, a1 = alpha_bar(t0), alpha_bar(t0 - step)
    # x_t1 = p x_T + q eps_l
    p = (a1 / a0).sqrt()
    q = (1 - a1).sqrt() - p * (1 - a0).sqrt()
    if inversion == "official":
        start = alpha_bar(t1 - step) if t1 - step >= 0 else _initial_alpha(scheduler)
        end = alpha_bar(t1)
    elif inversion == "exact":
        start, end = a1, a0
    else:
        raise ValueError(f"`inversion` must be one of {INVERSIONS}, got {inversion!r}.")
    r = (end / start).sqrt()
    c = (1 - end).sqrt() - r * (1 - start).sqrt()
    return float(r * p), float(r * q), float(c)


def guided_output(pipe, conditioning, latents, timestep, prompt_index, guidance_scale):
    """CFG denoiser output `uncond + w (cond - uncond)` for `latents` (float32 out). `guidance_scale == 1` runs
    the conditional half only: the official code's omega_w = 1 gives the conditional prediction."""
    guided = guidance_scale != 1.0
    dtype = conditioning.cond.dtype
    model_input = torch.cat([latents] * 2) if guided else latents
    hidden, added = conditioning.unet_inputs(prompt_index, guided)
    output = pipe.unet(model_input.to(pipe.unet.device, dtype), timestep, encoder_hidden_states=hidden,
                       timestep_cond=None, added_cond_kwargs=added, return_dict=False)[0].float()
    if not guided:
        return output
    uncond, cond = output.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@dataclass
class ReDenoise:
    target: torch.Tensor  # x'_T, float32 (B, C, h, w) on the CPU
    x_t1: torch.Tensor
    eps_l: torch.Tensor  # the guided outputs (the model's parametrisation: eps for epsilon models, flow velocity)
    eps_w: torch.Tensor
    timesteps: tuple  # (t0, t1)


@torch.no_grad()
def re_denoise(pipe, prompts, noise, prompt_index=None, num_inference_steps=10, denoise_guidance=5.5,
               inversion_guidance=1.0, inversion="official", conditioning=None):
    """Re-denoise sampling (the module docstring) of unit-variance `noise` `(B, C, h, w)` with a DDIM scheduler
    built from `pipe.scheduler`'s config, whatever scheduler the pipeline holds; flow-matching pipelines take
    Euler steps of their own schedule (`npd_flow`, `inversion="exact"` only).

    Args:
        prompts: the distinct prompts; `prompt_index` (int or one per row, default 0) picks each row's.
        conditioning: `noisekit.families.encode(pipe, prompts, None, True, height, width)`, to reuse it.

    Returns: a `ReDenoise` (float32 CPU tensors).

    Examples:
        >>> noise = seed_noise(pipe, [0, 1])
        >>> target = re_denoise(pipe, ["a red circle"], noise).target  # x'_T, the NPNet training target
    """
    adapter = adapter_for(pipe)
    if is_edm(pipe.scheduler):
        raise ValueError(f"re-denoise sampling takes DDIM steps on the model's betas; {type(pipe.scheduler).__name__} "
                         "is an EDM schedule in sigmas, which NPNet's data collection does not model.")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if prompt_index is None or isinstance(prompt_index, int):
        prompt_index = [prompt_index or 0] * len(noise)
    prompt_index = torch.as_tensor(prompt_index, dtype=torch.long)
    if conditioning is None:
        factor = vae_scale_factor(pipe)
        conditioning = encode(pipe, prompts, None, True, noise.shape[-2] * factor, noise.shape[-1] * factor)
    if adapter.flow:
        return ReDenoise(*flow_re_denoise(pipe, conditioning, noise, prompt_index, num_inference_steps,
                                          denoise_guidance, inversion_guidance, inversion))
    device = pipe._execution_device
    scheduler = pipe.scheduler
    t0, t1, _ = ddim_alpha_bars(scheduler, num_inference_steps)
    x_T = noise.to(device, torch.float32)
    index = prompt_index.to(device)
    # DDIM's `scale_model_input` and `init_noise_sigma` are the identity.
    eps_l = guided_output(pipe, conditioning, x_T, t0, index, denoise_guidance)
    x_t1 = denoise_step(scheduler, num_inference_steps, x_T, eps_l)
    eps_w = guided_output(pipe, conditioning, x_t1, t0, index, inversion_guidance)
    target = inversion_step(scheduler, num_inference_steps, x_t1, eps_w, inversion)
    cpu = lambda x: x.float().cpu()  # noqa: E731
    return ReDenoise(cpu(target), cpu(x_t1), cpu(eps_l), cpu(eps_w), (t0, t1))


# ---------------------------------------------------------------------------------------------- the stored NPD

SHARD_KEYS = ("source", "target", "prompt_index", "seed", "reward_source", "reward_target")


def shard_name(shard):
    return f"shard-{shard:05d}"


def read_prompts(data_dir):
    with open(os.path.join(data_dir, "prompts.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row["prompt"] for row in sorted(rows, key=lambda r: r["prompt_index"])]


def load_npd(data_dir, margin=None):
    """The kept pairs of a collected NPD folder: `(tensors, prompts)` where `tensors` maps `SHARD_KEYS` to
    concatenated CPU tensors (shard order) and `prompts` lists the prompts `prompt_index` refers to. `margin`
    optionally re-filters to `reward_target - reward_source > margin` (never looser than at collection)."""
    prompts = read_prompts(data_dir)
    folder = os.path.join(data_dir, "shards")
    names = sorted(n for n in os.listdir(folder) if n.startswith("shard-") and n.endswith(".safetensors"))
    if not names:
        raise ValueError(f"{data_dir} holds no shards (shards/shard-*.safetensors): run training/collect_npd.py.")
    parts = [load_file(os.path.join(folder, name)) for name in names]
    tensors = {key: torch.cat([part[key] for part in parts]) for key in SHARD_KEYS}
    if margin is not None:
        keep = tensors["reward_target"] - tensors["reward_source"] > margin
        tensors = {key: value[keep] for key, value in tensors.items()}
    return tensors, prompts
