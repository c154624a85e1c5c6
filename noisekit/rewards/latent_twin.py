"""A latent twin of the shapes judge: its attribute heads read from x0 *latents*, with no VAE decode.

The shapes judge is a pixel CNN (`features`) followed by linear attribute heads; its reward is the mean
probability the heads give to what the prompt states. `LatentTwin` replaces only the pixel CNN: a small CNN over
x0 latents `(C, h, w)` (unpacked, scaled by the VAE's `scaling_factor`) that predicts the judge's 256 features,
FiLM-conditioned on the preview's noise level. The heads and the prompt parsing stay the teacher's, so the twin
needs no prompt to learn and reads every held-out prompt as the teacher does.

It is trained by `training/train_latent_twin.py` in two parts: on rendered scenes (sigma = 0), to match the
judge's features and head probabilities of the same image; and on a model's trajectories, where the x0 latent of
step s (and its sigma) must predict the judge's reading of the *final* image (TTSnap's self-distillation). A folder
holds the twin (`config.json`, `diffusion_pytorch_model.safetensors`, `TRAINING.json`); the heads come from the
judge it names (`teacher_path`, default `assets/shapes-judge`). Registry name: `shapes-judge-latent`.
"""

import os

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .base import check_prompts, check_sigma
from .latent import FiLM, check_latent_shape, sigma_features


class TwinBlock(nn.Module):
    """conv, GroupNorm, SiLU, strided conv, FiLM by sigma, SiLU: one resolution stage of the twin."""

    def __init__(self, channels_in, channels_out, stride, sigma_width):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm = nn.GroupNorm(8, channels_out)
        self.down = nn.Conv2d(channels_out, channels_out, 3, padding=1, stride=stride)
        self.film = FiLM(sigma_width, channels_out)

    def forward(self, hidden, condition):
        hidden = self.down(nn.functional.silu(self.norm(self.conv(hidden))))
        return nn.functional.silu(self.film(hidden, condition))


class LatentTwin(ModelMixin, ConfigMixin):
    """x0 latents `(B, C, h, w)` and sigma `(B,)` -> the teacher judge's features `(B, feature_width)`.

    Three stages (`width`, 2 `width`, 2 `width` channels; h -> h/2 -> h/4), then a linear layer to the features.

    Args:
        latent_channels, sample_size (`int`): the latent shape it reads.
        width (`int`): channels of the first stage.
        feature_width (`int`): the teacher's feature width (256 for `ShapesJudge`).
        frequencies (`int`): sinusoidal features of log(1 + sigma).
        teacher (`str`): the reward whose heads it feeds (recorded; the heads are loaded from the teacher).
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, sample_size: int = 16, width: int = 64, feature_width: int = 256,
                 frequencies: int = 8, teacher: str = "shapes-judge"):
        super().__init__()
        if sample_size % 4:
            raise ValueError(f"`sample_size` must be a multiple of 4 (two stride-2 stages), got {sample_size}.")
        sigma_width = 4 * frequencies
        self.register_buffer("sigma_frequencies", 2.0 ** torch.arange(frequencies).float(), persistent=False)
        self.sigma_embed = nn.Sequential(nn.Linear(2 * frequencies, sigma_width), nn.SiLU())
        self.blocks = nn.ModuleList([TwinBlock(latent_channels, width, 1, sigma_width),
                                     TwinBlock(width, 2 * width, 2, sigma_width),
                                     TwinBlock(2 * width, 2 * width, 2, sigma_width)])
        self.hidden = nn.Linear(2 * width * (sample_size // 4) ** 2, feature_width)

    def forward(self, latents, sigma):
        latents = latents.to(self.dtype)
        condition = self.sigma_embed(sigma_features(sigma.to(latents.device), self.sigma_frequencies)
                                     .to(latents.dtype))
        hidden = latents
        for block in self.blocks:
            hidden = block(hidden, condition)
        return nn.functional.silu(self.hidden(hidden.flatten(1)))


def twin_loss(twin, heads_of, latents, sigma, target_features, target_logits):
    """MSE to the teacher's features plus, per head, the KL divergence (softmax heads) or binary cross-entropy
    (the multi-label `presence` head) to the teacher's probabilities."""
    features = twin(latents, sigma)
    loss = nn.functional.mse_loss(features, target_features)
    for name, logits in heads_of(features).items():
        target = target_logits[name]
        if name == "presence":
            loss = loss + nn.functional.binary_cross_entropy_with_logits(logits, target.sigmoid())
        else:
            loss = loss + nn.functional.kl_div(logits.log_softmax(-1), target.log_softmax(-1), log_target=True,
                                               reduction="batchmean")
    return loss


class LatentTwinReward(nn.Module):
    """The shapes judge's reward of x0 latents: `LatentTwin` features through the judge's own heads.

    Called as `reward(latents, prompts, sigma=None) -> (B,)` float32 in [0, 1] (the teacher's scale), latents
    `(B, C, h, w)` as the sampler's x0 previews are.

    Attributes:
        scores_latents (`bool`): True; a search hands it x0 latents instead of decoded images.
    """

    scores_latents = True
    noise_aware = True
    needs_prompts = True

    def __init__(self, twin, judge, batch_size=256):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        self.twin, self.judge, self.batch_size = twin.eval(), judge.eval(), batch_size
        config = twin.config
        self.latent_shape = (config.latent_channels, config.sample_size, config.sample_size)

    @property
    def device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def forward(self, latents, prompts=None, sigma=None):
        from ..shapes.judge import parse_prompts, reward_of_logits

        count = check_latent_shape(latents, self.latent_shape)
        prompts = check_prompts(prompts, count)
        parsed = parse_prompts(prompts)  # once, before any compute
        sigma = check_sigma(sigma, count)
        scores = [torch.zeros(0)]
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            features = self.twin(latents[start:stop].to(self.device, torch.float32), sigma[start:stop].to(self.device))
            logits = self.judge.head_logits(features.float())
            scores.append(reward_of_logits(logits, prompts[start:stop], parsed=parsed[start:stop]).float().cpu())
        return torch.cat(scores)


def load_shapes_judge_latent(path=None, teacher_path=None, batch_size=256):
    """The shapes judge's latent twin: `assets/shapes-judge-latent` (or the folder `path`, written by
    `training/train_latent_twin.py`), with the heads of `assets/shapes-judge` (or `teacher_path`).

    Examples:
        >>> reward = load_reward("shapes-judge-latent")
        >>> reward(x0_latents, prompts, sigma=2.5)   # no VAE decode
    """
    from ..shapes.assets import assets_dir
    from ..shapes.judge import ShapesJudge

    folder = path or str(assets_dir() / "shapes-judge-latent")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"shapes-judge-latent: {folder!r} holds no twin (config.json); train one with "
                                f"training/train_latent_twin.py.")
    twin = LatentTwin.from_pretrained(folder, low_cpu_mem_usage=False, torch_dtype=torch.float32)
    judge = ShapesJudge.from_pretrained(teacher_path or str(assets_dir() / "shapes-judge"))
    return LatentTwinReward(twin, judge, batch_size)


__all__ = ["LatentTwin", "LatentTwinReward", "load_shapes_judge_latent", "twin_loss"]
