"""`inspect_schedule`: what a diffusers scheduler will really do, and what is wrong with it (Lin et al. 2023)."""

import copy
import json
from dataclasses import asdict, dataclass, field

import torch

from .edm import is_edm
from .schedule import base_betas, is_flow

ZERO_SNR = 1e-6  # a terminal SNR below this counts as zero (the clamps give 5.96e-8 and 4.9e-8)


@dataclass
class ScheduleReport:
    scheduler: str
    prediction_type: str
    num_train_timesteps: int
    terminal_alpha_bar: float
    terminal_sqrt_alpha_bar: float
    terminal_snr: float
    zero_terminal_snr: bool
    rescale_betas_zero_snr: bool
    clamp: float | None  # alpha_bar_T kept above 0 so that sigma_max is finite
    timestep_spacing: str | None
    init_noise_sigma: float
    num_inference_steps: int | None = None
    timesteps: list | None = None
    first_timestep: int | None = None
    first_snr: float | None = None
    starts_at_last_timestep: bool | None = None
    trailing_extra_negative_timestep: bool | None = None
    ddim_prev_timestep_mismatches: int | None = None
    share_of_sigmas_above_original_max: float | None = None
    flow_shift: float | None = None  # flow matching: the static shift, or mu under dynamic shifting
    dynamic_shifting: bool | None = None
    sigmas: list | None = None  # flow matching: the noise levels of the steps (1 = pure noise); EDM: VE sigmas
    sigma_data: float | None = None  # EDM: the data std its preconditioning assumes
    problems: list = field(default_factory=list)  # errors: sampling will break
    warnings: list = field(default_factory=list)  # sampling works, but worse than it could

    def to_dict(self):
        return asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self):
        lines = [f"{self.scheduler} ({self.prediction_type}, {self.num_train_timesteps} training steps)",
                 f"  terminal sqrt(alpha_bar_T) {self.terminal_sqrt_alpha_bar:.6g}, SNR_T {self.terminal_snr:.4g}"
                 f"{' (zero terminal SNR)' if self.zero_terminal_snr else ''}",
                 f"  rescale_betas_zero_snr {self.rescale_betas_zero_snr}, clamp "
                 f"{'none' if self.clamp is None else f'{self.clamp:.6g}'}, spacing {self.timestep_spacing}, "
                 f"init_noise_sigma {self.init_noise_sigma:.6g}"]
        if self.num_inference_steps is not None:
            shown = self.timesteps if len(self.timesteps) <= 12 else self.timesteps[:6] + ["..."] + self.timesteps[-3:]
            lines += [f"  {self.num_inference_steps} steps -> {len(self.timesteps)} timesteps: {shown}",
                      f"  first timestep {self.first_timestep} (SNR {self.first_snr:.4g}), starts at the last "
                      f"training timestep: {self.starts_at_last_timestep}"]
            if self.sigma_data is not None:
                shown = [round(v, 4) for v in self.sigmas]
                lines.append(f"  EDM sigmas (sigma_data {self.sigma_data:.4g}): "
                             f"{shown if len(shown) <= 12 else shown[:6] + ['...']}")
            elif self.sigmas is not None:
                shown = [round(v, 4) for v in self.sigmas]
                lines.append(f"  flow sigmas ({'dynamic shift, mu' if self.dynamic_shifting else 'shift'} "
                             f"{self.flow_shift:.4g}): {shown if len(shown) <= 12 else shown[:6] + ['...']}")
            if self.share_of_sigmas_above_original_max is not None:
                lines.append(f"  share of sigmas above the original sigma_max: "
                             f"{self.share_of_sigmas_above_original_max:.0%}")
        lines += [f"  PROBLEM: {p}" for p in self.problems] + [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def inspect_schedule(scheduler, num_inference_steps=None, mu=None):
    """Report on `scheduler` (a diffusers scheduler; not modified) and, with `num_inference_steps`, its timesteps.
    `mu`: the dynamic shift of a flow-matching scheduler (FLUX, SD3.5 at some sizes); the pipeline sets it from
    the image size, so without it the report uses the scheduler's largest (`max_image_seq_len` tokens).

    Examples:
        >>> print(inspect_schedule(pipe.scheduler, 20))
    """
    config = scheduler.config
    if is_edm(scheduler):
        return _inspect_edm(scheduler, num_inference_steps)
    if is_flow(scheduler):  # FlowMatch schedulers, and DPM-Solver on flow sigmas (SANA)
        return _inspect_flow(scheduler, num_inference_steps, mu)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    terminal = float(alphas_cumprod[-1])
    snr = terminal / (1 - terminal) if terminal < 1 else float("inf")
    zero = snr < ZERO_SNR
    report = ScheduleReport(
        scheduler=type(scheduler).__name__, prediction_type=config.get("prediction_type", "epsilon"),
        num_train_timesteps=config.num_train_timesteps, terminal_alpha_bar=terminal,
        terminal_sqrt_alpha_bar=terminal**0.5, terminal_snr=snr, zero_terminal_snr=zero,
        rescale_betas_zero_snr=bool(config.get("rescale_betas_zero_snr", False)),
        clamp=terminal if zero and terminal > 0 else None, timestep_spacing=config.get("timestep_spacing"),
        init_noise_sigma=float(scheduler.init_noise_sigma))
    if zero and report.prediction_type == "epsilon":
        report.problems.append("epsilon prediction with zero terminal SNR: x0 = (x_T - sigma eps) / alpha_T divides "
                               "by ~0 at the first step; use a v-prediction model or noisekit.zero_snr(pipe, "
                               "mode='trailing').")
    if num_inference_steps is not None:
        _inspect_timesteps(report, scheduler, num_inference_steps, alphas_cumprod)
    return report


def _inspect_timesteps(report, scheduler, n, alphas_cumprod):
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(n)
    timesteps = [int(round(float(t))) for t in probe.timesteps]
    T = report.num_train_timesteps
    first = timesteps[0]
    alpha_bar = float(alphas_cumprod[min(max(first, 0), T - 1)])
    report.num_inference_steps, report.timesteps, report.first_timestep = n, timesteps, first
    report.first_snr = alpha_bar / (1 - alpha_bar) if alpha_bar < 1 else float("inf")
    report.starts_at_last_timestep = first == T - 1
    if not report.starts_at_last_timestep:
        report.warnings.append(f"sampling starts at t = {first}, not {T - 1}: the first step sees SNR "
                               f"{report.first_snr:.4g} while the input is pure noise; use trailing spacing.")
    order = getattr(probe, "order", 1)
    expected = n if order == 1 else None
    extra = any(t < 0 for t in timesteps) or (expected is not None and len(timesteps) > expected and
                                               report.timestep_spacing == "trailing")
    report.trailing_extra_negative_timestep = extra
    if extra:
        report.problems.append(f"trailing spacing with {n} steps yields {len(timesteps)} timesteps ending at "
                               f"{timesteps[-1]} (the np.arange rounding bug); noisekit's sampler drops the extra "
                               "one, the stock pipeline does not. Prefer n dividing T.")
    if report.scheduler.startswith("DDIM") and report.timestep_spacing in ("trailing", "linspace"):
        jump = T // n
        wrong = sum(1 for a, b in zip(timesteps, timesteps[1:]) if a - jump != b)
        report.ddim_prev_timestep_mismatches = wrong
        if wrong:
            report.warnings.append(f"DDIM steps to t - {jump} but the next timestep differs at {wrong} of "
                                   f"{len(timesteps) - 1} steps ({report.timestep_spacing} spacing with n not "
                                   "dividing T); use n in 10, 20, 25, 40, 50.")
    config = scheduler.config
    if config.get("use_karras_sigmas") or config.get("use_exponential_sigmas") or config.get("use_beta_sigmas"):
        original = torch.cumprod(1 - base_betas(dict(config)).double(), 0)
        original_max = float(((1 - original[-1]) / original[-1]).sqrt())
        sigmas = probe.sigmas[:-1].double()
        report.share_of_sigmas_above_original_max = float((sigmas > original_max).double().mean())
        if report.zero_terminal_snr:
            report.warnings.append(f"{report.share_of_sigmas_above_original_max:.0%} of the Karras/exponential sigmas "
                                   f"lie above the original sigma_max {original_max:.3g}, leaving few steps for "
                                   "the informative range.")


def _inspect_flow(scheduler, n, mu):
    """Flow matching: x_t = (1 - s) x0 + s eps from s = 1, so the terminal SNR ((1 - s) / s)^2 is zero by
    construction and the first step sees pure noise; the shift (or mu) decides how the steps spread over s."""
    config = scheduler.config
    dynamic = bool(config.get("use_dynamic_shifting", False))
    if dynamic and mu is None:
        mu = config.get("max_shift", 1.15)  # the pipelines' calculate_shift at max_image_seq_len tokens
    report = ScheduleReport(
        scheduler=type(scheduler).__name__, prediction_type="flow", num_train_timesteps=config.num_train_timesteps,
        terminal_alpha_bar=0.0, terminal_sqrt_alpha_bar=0.0, terminal_snr=0.0, zero_terminal_snr=True,
        rescale_betas_zero_snr=False, clamp=None, timestep_spacing=None, init_noise_sigma=1.0,
        flow_shift=float(mu if dynamic else config.get("shift", config.get("flow_shift", 1.0))),
        dynamic_shifting=dynamic)
    if dynamic:
        tokens = config.get("max_image_seq_len", 4096)
        report.warnings.append(f"dynamic shifting: mu {mu:.4g} is the pipeline's at {tokens} latent tokens; "
                               "smaller images shift less.")
    if n is not None:
        probe = copy.deepcopy(scheduler)
        probe.set_timesteps(n, mu=mu) if dynamic else probe.set_timesteps(n)
        sigmas = [float(v) for v in probe.sigmas[:-1]]
        report.num_inference_steps, report.sigmas = n, sigmas
        report.timesteps = [int(round(float(t))) for t in probe.timesteps]
        report.first_timestep, report.first_snr = report.timesteps[0], ((1 - sigmas[0]) / sigmas[0]) ** 2
        # FlowMatch starts at s = 1 (t = T); DPM-Solver's flow sigmas at s(T - 1), just below it
        report.starts_at_last_timestep = report.first_timestep >= config.num_train_timesteps - 1
        report.trailing_extra_negative_timestep = False
    return report


def _inspect_edm(scheduler, n):
    """EDM: x = x0 + sigma eps from sigma_max, so the terminal SNR is 1 / sigma_max^2 (above zero by design; no
    betas to rescale) and the timesteps are c_noise = log(sigma) / 4, reported unrounded."""
    config = scheduler.config
    terminal = 1.0 / (1.0 + config.sigma_max**2)  # alpha_bar of the VP process with the same SNR
    report = ScheduleReport(
        scheduler=type(scheduler).__name__, prediction_type=config.get("prediction_type", "epsilon"),
        num_train_timesteps=config.num_train_timesteps, terminal_alpha_bar=terminal,
        terminal_sqrt_alpha_bar=terminal**0.5, terminal_snr=1.0 / config.sigma_max**2, zero_terminal_snr=False,
        rescale_betas_zero_snr=False, clamp=None, timestep_spacing=None,
        init_noise_sigma=float(scheduler.init_noise_sigma), sigma_data=float(config.sigma_data))
    if n is not None:
        probe = copy.deepcopy(scheduler)
        probe.set_timesteps(n)
        sigmas = [float(v) for v in probe.sigmas[:-1]]
        report.num_inference_steps, report.sigmas = n, sigmas
        report.timesteps = [round(float(t), 4) for t in probe.timesteps]
        report.first_timestep, report.first_snr = report.timesteps[0], 1.0 / sigmas[0] ** 2
        report.starts_at_last_timestep = abs(sigmas[0] - config.sigma_max) <= 1e-4 * config.sigma_max
        report.trailing_extra_negative_timestep = False
    return report
