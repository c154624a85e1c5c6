"""Zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

`rescale_zero_terminal_snr` is Algorithm 1. `zero_snr(pipe)` applies the paper's fixes to a pipeline's
scheduler: rescaled betas (diffusers' flag, or `trained_betas` with a clamp for schedulers without it), trailing
timestep spacing, and CFG rescale; it refuses epsilon models, for which zero terminal SNR is undefined.
`inspect_schedule` reports what a scheduler will actually do.

The clamp: sigma-based schedulers cannot take alpha_bar_T = 0 (sigma_max would be infinite). diffusers sets
alpha_bar_T = 2**-24 (sigma_max = 4096); ComfyUI and A1111 use 4.8973451890853435e-08 (sigma_max = 4518.8).
"""

import math

import numpy as np
import torch

from .edm import is_edm

CLAMPS = {"diffusers": 2.0**-24, "comfyui": 4.8973451890853435e-08}
MODES = ("ztsnr", "trailing")


def rescale_zero_terminal_snr(betas):
    """Algorithm 1: shift and scale sqrt(alpha_bar) so that sqrt(alpha_bar_T) = 0 and sqrt(alpha_bar_1) is kept."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    alphas_bar_sqrt = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1 - alphas).float()


def clamped_betas(betas, clamp="diffusers"):
    """Zero-terminal-SNR betas whose last beta encodes the clamp: beta_T = 1 - eps / alpha_bar_{T-1}, so that
    alpha_bar_T = eps exactly. For schedulers without `rescale_betas_zero_snr`, passed as `trained_betas`."""
    eps = _clamp_value(clamp)
    rescaled = rescale_zero_terminal_snr(betas).double()
    alphas_bar = torch.cumprod(1 - rescaled, dim=0)
    rescaled[-1] = 1 - eps / alphas_bar[-2]
    return rescaled.float()


def _clamp_value(clamp):
    if isinstance(clamp, str):
        if clamp not in CLAMPS:
            raise ValueError(f"`clamp` must be one of {sorted(CLAMPS)} or a float in (0, 1e-3], got {clamp!r}.")
        return CLAMPS[clamp]
    if not 0 < clamp <= 1e-3:
        raise ValueError(f"`clamp` must be one of {sorted(CLAMPS)} or a float in (0, 1e-3], got {clamp!r}.")
    return float(clamp)


def base_betas(config):
    """The betas a scheduler config describes, before any rescaling."""
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32)
    n, start, end = config["num_train_timesteps"], config["beta_start"], config["beta_end"]
    schedule = config["beta_schedule"]
    if schedule == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    if schedule == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    raise ValueError(f"beta_schedule {schedule!r} is not one of linear, scaled_linear, squaredcos_cap_v2.")


def trailing_timesteps(num_inference_steps, num_train_timesteps=1000):
    """Trailing spacing with exactly n entries, none negative: T-1, ..., T/n - 1 (Table 2)."""
    ratio = num_train_timesteps / num_inference_steps
    steps = np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64)[:num_inference_steps] - 1
    return steps


def zero_snr(pipe, mode="ztsnr", guidance_rescale=0.7, force=False, clamp="diffusers"):
    """Apply the paper's schedule fixes to `pipe` in place and return it.

    Args:
        mode (`str`): `"ztsnr"` (default): rescaled zero-terminal-SNR schedule + trailing spacing + CFG rescale,
            for v-prediction models trained (or fine-tuned) on it. `"trailing"`: trailing spacing only, which
            helps any model, epsilon ones included.
        guidance_rescale (`float`): the CFG rescale phi that noisekit's sampler and pipelines use by default
            afterwards (`pipe.noisekit_guidance_rescale`); 0.7 as the paper recommends.
        force (`bool`): allow `"ztsnr"` on an epsilon model (its first step divides by zero or amplifies errors
            4096x; only for experiments).
        clamp: alpha_bar_T for sigma-based schedulers without diffusers' flag: `"diffusers"` (2**-24),
            `"comfyui"` (4.8973e-8) or a float.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"`guidance_rescale` must lie in [0, 1], got {guidance_rescale!r}.")
    scheduler = pipe.scheduler
    if is_edm(scheduler):
        raise ValueError(f"zero_snr does not apply to EDM schedules ({type(scheduler).__name__}): they are in sigmas "
                         "(Karras, sigma_min to sigma_max), not betas, and their sampling steps need no respacing.")
    if is_flow(scheduler):
        raise ValueError(f"zero_snr does not apply to flow matching ({type(scheduler).__name__}): sampling already "
                         "starts at sigma = 1, pure noise, where the SNR is zero by construction.")
    config = dict(scheduler.config)
    overrides = {}
    if "timestep_spacing" in config:
        # steps_offset is left as is: trailing spacing ignores it, and SD pipelines reset 0 to 1 with a warning.
        overrides["timestep_spacing"] = "trailing"
    elif mode == "trailing":
        raise ValueError(f"{type(scheduler).__name__} has no `timestep_spacing`; trailing spacing cannot be set.")
    if mode == "ztsnr":
        if config.get("prediction_type") == "epsilon" and not force:
            raise ValueError(
                "zero terminal SNR needs a v-prediction (or sample-prediction) model: at t = T the input is pure "
                "noise, so an epsilon model's x0 = (x_T - sigma_T * eps) / alpha_T divides by alpha_T = 0 (DDIM, "
                "DDPM: NaN, black images) or amplifies every error 4096x (Euler, DPM-Solver, UniPC clamp "
                "alpha_bar_T to 2**-24). Use mode='trailing' for this model, fine-tune it with "
                "training/finetune_vpred_ztsnr.py, or pass force=True to experiment anyway.")
        if "rescale_betas_zero_snr" in config and (clamp == "diffusers" or not _uses_sigmas(scheduler)):
            overrides["rescale_betas_zero_snr"] = True
        else:
            overrides["trained_betas"] = clamped_betas(base_betas(config), clamp).tolist()
            overrides["rescale_betas_zero_snr"] = False if "rescale_betas_zero_snr" in config else None
            overrides = {k: v for k, v in overrides.items() if v is not None}
        pipe.noisekit_guidance_rescale = guidance_rescale
    pipe.scheduler = type(scheduler).from_config(config, **overrides)
    return pipe


def _uses_sigmas(scheduler):
    return hasattr(scheduler, "sigmas") or "use_karras_sigmas" in scheduler.config


def is_flow(scheduler):
    """A flow-matching schedule (x_t = (1 - s) x0 + s eps): FlowMatch* schedulers, or flow sigmas/predictions."""
    config = scheduler.config
    if is_edm(scheduler):  # sigmas without alphas_cumprod too, but VE
        return False
    return ((hasattr(scheduler, "sigmas") and not hasattr(scheduler, "alphas_cumprod"))
            or bool(config.get("use_flow_sigmas")) or config.get("prediction_type") == "flow_prediction")
