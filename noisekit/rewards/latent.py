"""Noise-aware rewards that score x0 *latents* (and their noise level sigma) with no VAE decode.

A TTSnap preview reward normally reads the decoded x0 preview. On a small model the decode can cost more than a
denoiser call, so a `LatentReward` scores the x0 latents the sampler already holds; the search hands them over
and skips the decode (`scores_latents = True`). The final, clean reward still judges decoded images.

`LatentRewardModel` is a small CNN over latents `(C, h, w)` (unpacked, in the denoiser's scaled units), FiLM-
conditioned on log(1 + sigma) and on the prompt (a bag of hashed word uni- and bigrams). It is distilled from a
clean registry reward by `training/train_noise_aware_reward.py --student latent` with TTSnap's self-distillation
and clean-to-noisy curriculum. It cannot start as a copy of the teacher (the teacher reads pixels), so it is
initialised at random (seeded) and then trained first on the *final* latents at sigma = 0 to predict the
teacher's reward of their decoded images (a warm-up stage that stands in for the copy), before the noisy stages.

A trained folder holds the sigma model (`config.json`, `diffusion_pytorch_model.safetensors`) and `stages/` with
one per-stage checkpoint per folder plus `stages.json`. Registry name: `noise-aware-latent` (`path=` required).
For the shapes judge, whose prompt handling is a parser, `latent_twin.py` learns its image features instead:
the registry's `shapes-judge-latent`.
"""

import json
import math
import os
import re
import zlib

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .base import check_prompts, check_sigma
from .noise_aware import CONDITIONINGS, MODES, finite_sigma


def prompt_ngrams(prompt):
    """The lower-case words of `prompt` and their bigrams ("red circle", "top left"): order-light but enough to
    tell which colour goes with which shape; an empty prompt is one `<empty>` token."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return grams or ["<empty>"]


def hashed_ids(prompts, buckets):
    """`(ids, offsets)` for `nn.EmbeddingBag`: each n-gram hashed with CRC32 (stable across processes, unlike
    Python's `hash`) into `buckets`."""
    ids, offsets = [], []
    for prompt in prompts:
        offsets.append(len(ids))
        ids += [zlib.crc32(gram.encode()) % buckets for gram in prompt_ngrams(prompt)]
    return torch.tensor(ids), torch.tensor(offsets)


def sigma_features(sigma, frequencies):
    """Sinusoidal features of log(1 + sigma) `(B, 2 * len(frequencies))`; inf reads as the noisiest level."""
    angles = torch.log1p(finite_sigma(sigma.float()))[:, None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], -1)


def check_latent_shape(latents, shape):
    """The batch size of `latents`, which must be `(B, *shape)` x0 latents; anything else raises, naming both."""
    if not torch.is_tensor(latents) or latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(shape):
        got = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise ValueError(f"`latents` must be x0 latents of shape (B, {', '.join(map(str, shape))}) "
                         f"(this reward reads latents, not images), got {got}.")
    return latents.shape[0]


class FiLM(nn.Module):
    """`(B, D)` condition -> `h * (1 + scale) + shift` over the channels of `h` `(B, C, ...)`, zero at init."""

    def __init__(self, condition_width, channels):
        super().__init__()
        self.linear = nn.Linear(condition_width, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden, condition):
        scale, shift = self.linear(condition).chunk(2, dim=-1)
        view = (-1, hidden.shape[1]) + (1,) * (hidden.ndim - 2)
        return hidden * (1 + scale.view(view)) + shift.view(view)


class Block(nn.Module):
    """Residual conv block: GroupNorm, SiLU, conv, then FiLM by sigma (when conditioned)."""

    def __init__(self, channels, sigma_width):
        super().__init__()
        self.norm = nn.GroupNorm(4, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = FiLM(sigma_width, channels) if sigma_width else None

    def forward(self, hidden, sigma_features):
        out = self.conv(nn.functional.silu(self.norm(hidden)))
        if self.film is not None:
            out = self.film(out, sigma_features)
        return hidden + out


class LatentRewardModel(ModelMixin, ConfigMixin):
    """Predicts the teacher's reward of the final image from an x0 latent, its prompt and (optionally) sigma.

    Latents `(B, C, h, w)` -> conv 3x3 to `width` -> residual block -> stride-2 conv to `2 width` (h/2 x w/2) ->
    + learned position embedding -> FiLM by the prompt -> residual block -> attention pooling with a query from
    the prompt, and mean pooling -> MLP with the prompt features -> score. Sigma enters every block by FiLM.

    Args:
        latent_channels, sample_size (`int`): the latent shape it reads (`(C, sample_size, sample_size)`).
        width (`int`): channels of the first block (the second has twice as many).
        text_buckets, text_width (`int`): hashed n-gram vocabulary and its embedding width.
        conditioning (`str`): `"sigma"` (one model for every noise level) or `"none"` (a per-stage checkpoint).
        teacher (`str`), teacher_kwargs (`dict`): the clean reward it was distilled from (recorded, not loaded:
            the scale of its scores is the teacher's).
        stage_step, stage_sigma: the step and noise level a per-stage checkpoint was trained for.
        frequencies (`int`): sinusoidal features of log(1 + sigma).
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, sample_size: int = 16, width: int = 24, text_buckets: int = 256,
                 text_width: int = 48, conditioning: str = "sigma", teacher: str = "shapes-judge",
                 teacher_kwargs: dict | None = None, stage_step: int | None = None, stage_sigma: float | None = None,
                 frequencies: int = 8):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"`conditioning` must be one of {CONDITIONINGS}, got {conditioning!r}.")
        if sample_size % 2:
            raise ValueError(f"`sample_size` must be even (one stride-2 stage), got {sample_size}.")
        inner = 2 * width
        sigma_width = 4 * frequencies if conditioning == "sigma" else 0
        self.register_buffer("sigma_frequencies", 2.0 ** torch.arange(frequencies).float(), persistent=False)
        self.sigma_embed = (nn.Sequential(nn.Linear(2 * frequencies, sigma_width), nn.SiLU())
                            if sigma_width else None)
        self.text_embed = nn.EmbeddingBag(text_buckets, text_width, mode="mean")
        self.text_mlp = nn.Sequential(nn.Linear(text_width, text_width), nn.SiLU())
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        self.block_in = Block(width, sigma_width)
        self.down = nn.Conv2d(width, inner, 3, padding=1, stride=2)
        self.position = nn.Parameter(torch.zeros(1, inner, sample_size // 2, sample_size // 2))
        self.text_film = FiLM(text_width, inner)
        self.block_out = Block(inner, sigma_width)
        self.norm_out = nn.GroupNorm(4, inner)
        self.query = nn.Linear(text_width, inner)
        self.head = nn.Sequential(nn.Linear(2 * inner + text_width, inner), nn.SiLU(), nn.Linear(inner, 1))

    def encode_prompts(self, prompts):
        ids, offsets = hashed_ids(prompts, self.config.text_buckets)
        return self.text_mlp(self.text_embed(ids.to(self.device), offsets.to(self.device)))

    def forward(self, latents, prompts, sigma):
        """latents `(B, C, h, w)`, `B` prompts, sigma `(B,)` -> predicted final reward `(B,)`."""
        latents = latents.to(self.dtype)
        condition = None
        if self.sigma_embed is not None:
            condition = self.sigma_embed(sigma_features(sigma.to(latents.device), self.sigma_frequencies)
                                         .to(latents.dtype))
        text = self.encode_prompts(list(prompts)).to(latents.dtype)
        hidden = self.block_in(self.conv_in(latents), condition)
        hidden = self.down(nn.functional.silu(hidden)) + self.position
        hidden = self.block_out(self.text_film(hidden, text), condition)
        hidden = nn.functional.silu(self.norm_out(hidden)).flatten(2)  # (B, D, h/2 * w/2)
        # the prompt asks where to look (a position phrase, a colour): attention pooling over the grid
        weights = torch.einsum("bd,bdn->bn", self.query(text), hidden) / math.sqrt(hidden.shape[1])
        pooled = torch.einsum("bn,bdn->bd", weights.softmax(-1), hidden)
        return self.head(torch.cat([pooled, hidden.mean(-1), text], -1)).squeeze(-1)


def load_latent_model(folder):
    """A `LatentRewardModel` from `folder`, in float32 (the shipped weights may be float16)."""
    return LatentRewardModel.from_pretrained(folder, low_cpu_mem_usage=False, torch_dtype=torch.float32).eval()


def nearest_stage(sigma, stage_sigmas):
    """Index of the stage whose sigma is nearest `sigma` in log(sigma) (clean latents go to the least noisy)."""
    level = lambda s: math.log(max(finite_sigma(s), 1e-6))  # noqa: E731
    return min(range(len(stage_sigmas)), key=lambda i: (abs(level(sigma) - level(stage_sigmas[i])), i))


class LatentReward(nn.Module):
    """The noise-aware reward of x0 latents: one sigma-conditioned model, or per-stage checkpoints picked by sigma.

    Called as `reward(latents, prompts, sigma=None) -> (B,)` float32, with latents `(B, C, h, w)` as the sampler's
    x0 previews are (unpacked, scaled by the VAE's `scaling_factor`). Scale: the teacher's.

    Attributes:
        scores_latents (`bool`): True; a search hands it x0 latents instead of decoded images.
    """

    scores_latents = True
    noise_aware = True
    needs_prompts = True

    def __init__(self, models, stage_sigmas=None, batch_size=64):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        self.models = nn.ModuleList(models)
        self.stage_sigmas = None if stage_sigmas is None else [float(s) for s in stage_sigmas]
        self.batch_size = batch_size
        config = models[0].config
        self.latent_shape = (config.latent_channels, config.sample_size, config.sample_size)

    @property
    def device(self):
        return next(self.parameters()).device

    def check_latents(self, latents):
        return check_latent_shape(latents, self.latent_shape)

    def score(self, latents, prompts, sigma):
        if self.stage_sigmas is None:
            return self.models[0](latents, prompts, sigma)
        stages = torch.tensor([nearest_stage(s, self.stage_sigmas) for s in sigma.tolist()])
        out = torch.zeros(len(prompts), device=latents.device)
        for stage in stages.unique().tolist():
            rows = (stages == stage).nonzero().flatten()
            out[rows.to(out.device)] = self.models[stage](latents[rows.to(latents.device)],
                                                          [prompts[i] for i in rows.tolist()],
                                                          sigma[rows.to(sigma.device)]).float()
        return out

    @torch.no_grad()
    def forward(self, latents, prompts=None, sigma=None):
        count = self.check_latents(latents)
        prompts = check_prompts(prompts, count)
        sigma = check_sigma(sigma, count)
        scores = [torch.zeros(0, device=self.device)]
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            batch = latents[start:stop].to(self.device, torch.float32)
            scores.append(self.score(batch, prompts[start:stop], sigma[start:stop].to(self.device)).float())
        return torch.cat(scores)


def load_latent_reward(path=None, mode="sigma", batch_size=64):
    """A trained latent noise-aware reward folder (`training/train_noise_aware_reward.py --student latent`).

    Args:
        path (`str`): the folder (`config.json` of the sigma model, `stages/stages.json`).
        mode (`str`): `"sigma"` (one sigma-conditioned model) or `"stages"` (per-stage checkpoints).

    Examples:
        >>> reward = load_reward("noise-aware-latent", path="runs/najl/noise-aware-latent")
        >>> reward(x0_latents, prompts, sigma=2.5)
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    if path is None or not os.path.isdir(path):
        raise FileNotFoundError(f"latent noise-aware reward: `path` {path!r} is not a folder; train one with "
                                f"training/train_noise_aware_reward.py --student latent (it writes "
                                f"OUTPUT_DIR/noise-aware-latent).")
    if mode == "sigma":
        return LatentReward([load_latent_model(path)], batch_size=batch_size)
    with open(os.path.join(path, "stages", "stages.json")) as f:
        stages = json.load(f)
    models = [load_latent_model(os.path.join(path, "stages", s["folder"])) for s in stages]
    return LatentReward(models, [s["sigma"] for s in stages], batch_size)
