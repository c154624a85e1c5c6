"""Noise-aware rewards distilled from a clean registry reward (TTSnap's self-distillation, arXiv 2511.22242).

A `DistilledRewardModel` is a copy of a registry reward (the *student*, same architecture, fine-tuned weights)
that scores x0 previews so as to predict the teacher's reward of the *final* image. Two forms, both trained by
`training/train_noise_aware_reward.py`:

- per-stage checkpoints (TTSnap's `Ct{s}`): one student per pruning step, `conditioning="none"`; the reward picks
  the checkpoint whose noise level is nearest the preview's (in log sigma);
- one sigma-conditioned model, `conditioning="sigma"`: the shared student reads its input through a residual
  convolutional adapter FiLM-modulated by log(1 + sigma), zero-initialised so it starts as the teacher. Sigma,
  not the step index, so one model serves any scheduler and step count.

A trained folder holds the sigma model (`config.json`, `diffusion_pytorch_model.safetensors`) and `stages/`
with one folder per stage plus `stages.json`. Registry names (registered when this module is imported):
`noise-aware` (`path=` required) and `shapes-judge-noise-aware` (`assets/shapes-judge-noise-aware`).
"""

import json
import math
import os

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .registry import load_reward
from .base import NoiseAwareReward

CONDITIONINGS = ("none", "sigma")
MODES = ("sigma", "stages")


SIGMA_MAX = 1e4  # zero-terminal-SNR schedules start at sigma = inf; beyond this the preview is all prediction


def finite_sigma(sigma):
    """`sigma` (a tensor or a number) capped at `SIGMA_MAX`, so inf reads as the noisiest level."""
    return sigma.clamp(max=SIGMA_MAX) if torch.is_tensor(sigma) else min(float(sigma), SIGMA_MAX)


class SigmaAdapter(nn.Module):
    """pixels `(B, 3, H, W)`, sigma `(B,)` -> pixels + conv(FiLM(conv(pixels), log1p(sigma))), zero at init."""

    def __init__(self, width=32, frequencies=8):
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(frequencies).float(), persistent=False)
        self.embed = nn.Sequential(nn.Linear(2 * frequencies, 4 * width), nn.SiLU(), nn.Linear(4 * width, 2 * width))
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, pixels, sigma):
        angles = torch.log1p(finite_sigma(sigma.float()))[:, None] * self.frequencies  # (B, F)
        scale, shift = self.embed(torch.cat([angles.sin(), angles.cos()], -1)).to(pixels.dtype).chunk(2, dim=-1)
        hidden = nn.functional.silu(self.conv_in(pixels))
        hidden = nn.functional.silu(hidden * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        return pixels + self.conv_out(hidden)


class DistilledRewardModel(ModelMixin, ConfigMixin):
    """A student copy of registry reward `teacher` (built with `teacher_kwargs`), optionally sigma-conditioned.

    Args:
        teacher (`str`): registry name of the clean reward; its loader builds the architecture.
        teacher_kwargs (`dict`): the loader's options (e.g. `{"path": ...}`); the teacher's weights are read once
            to build the student and then replaced by the saved ones.
        conditioning (`str`): `"none"` (a per-stage checkpoint) or `"sigma"`.
        stage_step, stage_sigma: the step and noise level a per-stage checkpoint was trained for.
        adapter_width (`int`): channels of the sigma adapter.
    """

    @register_to_config
    def __init__(self, teacher: str = "shapes-judge", teacher_kwargs: dict | None = None, conditioning: str = "sigma",
                 stage_step: int | None = None, stage_sigma: float | None = None, adapter_width: int = 32):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"`conditioning` must be one of {CONDITIONINGS}, got {conditioning!r}.")
        self.student = load_reward(teacher, **(teacher_kwargs or {}))
        self.adapter = SigmaAdapter(adapter_width) if conditioning == "sigma" else None

    def forward(self, pixels, prompts, sigma):
        """pixels from the teacher's `transform`, `B` prompts, sigma `(B,)` -> predicted final reward `(B,)`."""
        if self.adapter is not None:
            pixels = self.adapter(pixels, sigma.to(pixels.device))
        return self.student.score(pixels, prompts, sigma)


def load_model(folder, teacher_kwargs=None):
    """A `DistilledRewardModel` from `folder`; `teacher_kwargs` overrides the saved ones (e.g. a moved path)."""
    kwargs = {} if teacher_kwargs is None else {"teacher_kwargs": teacher_kwargs}
    # weights may be stored in float16 (the shipped asset); rewards run in float32
    return DistilledRewardModel.from_pretrained(folder, low_cpu_mem_usage=False, torch_dtype=torch.float32,
                                                **kwargs).eval()


class DistilledReward(NoiseAwareReward):
    """The noise-aware reward of one sigma-conditioned model, or of per-stage checkpoints picked by sigma.

    Scale: the teacher's (the student predicts the teacher's reward of the final image).
    """

    def __init__(self, models, stage_sigmas=None, batch_size=16):
        student = models[0].student
        super().__init__(student.transform, batch_size)
        self.needs_prompts = student.needs_prompts
        self.models = nn.ModuleList(models)
        self.stage_sigmas = None if stage_sigmas is None else [float(s) for s in stage_sigmas]

    def stage_of(self, sigma):
        """Index of the checkpoint whose sigma is nearest in log(sigma) (clean images go to the least noisy)."""
        level = lambda s: math.log(max(finite_sigma(s), 1e-6))  # noqa: E731
        distance = lambda s: abs(level(sigma) - level(s))  # noqa: E731
        return min(range(len(self.stage_sigmas)), key=lambda i: (distance(self.stage_sigmas[i]), i))

    def score(self, pixels, prompts, sigma):
        if self.stage_sigmas is None:
            return self.models[0](pixels, prompts, sigma)
        stages = torch.tensor([self.stage_of(s) for s in sigma.tolist()])
        out = torch.zeros(len(prompts), device=pixels.device)
        for stage in stages.unique().tolist():
            rows = (stages == stage).nonzero().flatten()
            out[rows.to(pixels.device)] = self.models[stage](pixels[rows.to(pixels.device)],
                                                             [prompts[i] for i in rows.tolist()],
                                                             sigma[rows.to(sigma.device)]).float()
        return out


def load_noise_aware_reward(path=None, mode="sigma", batch_size=16, teacher_kwargs=None):
    """A trained noise-aware reward folder (from `training/train_noise_aware_reward.py`).

    Args:
        path (`str`): the folder (`config.json` of the sigma model, `stages/stages.json`).
        mode (`str`): `"sigma"` (one sigma-conditioned model) or `"stages"` (TTSnap's per-stage checkpoints).
        teacher_kwargs (`dict`, *optional*): overrides the teacher loader's saved options.

    Examples:
        >>> reward = load_reward("noise-aware", path="runs/naj/noise-aware", mode="stages")
        >>> reward(previews, prompts, sigma=2.5)
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    if path is None or not os.path.isdir(path):
        raise FileNotFoundError(f"noise-aware reward: `path` {path!r} is not a folder; train one with "
                                f"training/train_noise_aware_reward.py (it writes OUTPUT_DIR/noise-aware).")
    if mode == "sigma":
        return DistilledReward([load_model(path, teacher_kwargs)], batch_size=batch_size)
    with open(os.path.join(path, "stages", "stages.json")) as f:
        stages = json.load(f)
    models = [load_model(os.path.join(path, "stages", s["folder"]), teacher_kwargs) for s in stages]
    return DistilledReward(models, [s["sigma"] for s in stages], batch_size)


def load_shapes_judge_noise_aware(path=None, mode="sigma", batch_size=16):
    """The noise-aware shapes judge: `assets/shapes-judge-noise-aware`, or the folder `path`."""
    from ..shapes.assets import assets_dir

    return load_noise_aware_reward(path or str(assets_dir() / "shapes-judge-noise-aware"), mode, batch_size)
