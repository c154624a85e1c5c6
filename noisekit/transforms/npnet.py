"""NPNet, the noise prompt network of Zhou et al., "Golden Noise for Diffusion Models: A Learning Framework".

NPNet maps a unit-variance initial noise x_T and the target model's own prompt embedding c to a "golden" noise:

    e        = AdaGroupNorm(x_T, flatten(c))                   the prompt enters as 4 scales + 4 shifts
    x~'_T    = SVDNoiseUnet(x_T)                                 singular values of x_T re-predicted, U and V kept
    x^_T     = NoiseTransformer(x_T + e)                         Swin residual branch
    x'_T     = x~'_T + (2 sigmoid(alpha) - 1) e + beta x^_T      alpha = beta = 0 at init, so x'_T = x~'_T

(the paper's x'_pred = alpha e + x~'_T + beta x^_T). The layers and state-dict names are the official code's
(github.com/xie-lab-ml/Golden-Noise-for-Diffusion-Models), so its checkpoints load with
`NoisePromptNet.from_official_checkpoint`. Golden noise in a pipeline, at any size: `noisekit.npnet_noise`.
"""

import os

import timm
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.normalization import AdaGroupNorm
from safetensors.torch import load_file
from torch import nn

from ..core.families import adapter_for
from ..core.noise import latent_shape

OFFICIAL_SWIN = "swin_tiny_patch4_window7_224"
# A 19k-parameter Swin for small worlds (the shapes world: 4 x 16 x 16 latents): 32 x 32 input, 4 x 4 patches,
# windows of 4, two stages, no classifier head; its features come out as (B, 4, 4, 32), so `upconv` takes 4 rows.
SMALL_SWIN = {"img_size": 32, "patch_size": 4, "window_size": 4, "embed_dim": 16, "depths": [1, 1],
              "num_heads": [1, 2], "num_classes": 0}


class SVDAttention(nn.Module):
    """timm's multi-head self-attention as the official code copies it: no qkv bias, no qk-norm, no dropout."""

    def __init__(self, dim, num_heads=8):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens):
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, dim / heads)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


def channel_grid(channels):
    """`(a, c)`: the C latent channels tiled as an a x c grid of blocks, a the largest divisor of C <= sqrt(C)
    (4 -> 2 x 2 as the official code; 16 -> 4 x 4 for SD3 / FLUX; 32 -> 4 x 8)."""
    rows = max(d for d in range(1, int(channels**0.5) + 1) if channels % d == 0)
    return rows, channels // rows


class SVDNoiseUnet(nn.Module):
    """Singular-value predictor: the C channels tiled a x c into an (a s x c s) matrix M = U diag(S) V^H (4
    channels: 2 x 2, a 2s x 2s matrix, as the official code); tokens mlp1(U^T) + mlp2(V^H) + mlp3(S), each
    mapped to k = min(a, c) s, self-attention over the k singular indices, mean, mlp4, plus S."""

    def __init__(self, sample_size=128, hidden_dim=64, mlp_dim=1024, num_heads=8, channels=4):
        super().__init__()
        self.grid = channel_grid(channels)
        rows, cols = self.grid[0] * sample_size, self.grid[1] * sample_size
        dim = min(rows, cols)  # singular values of the (rows x cols) matrix
        self.mlp1 = nn.Sequential(nn.Linear(rows, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
        self.mlp2 = nn.Sequential(nn.Linear(cols, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
        self.mlp3 = nn.Sequential(nn.Linear(dim, dim))
        self.attention = SVDAttention(dim, num_heads)
        self.bn = nn.BatchNorm2d(dim)  # unused in the official forward; kept so official checkpoints load
        self.mlp4 = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))

    def forward(self, x):
        batch, channels, side, _ = x.shape
        a, c = self.grid
        # "b (a c) h w -> b (a h) (c w)": channel c * i + j becomes the block (i, j) of M (official: a = c = 2).
        matrix = x.reshape(batch, a, c, side, side).permute(0, 1, 3, 2, 4).reshape(batch, a * side, c * side)
        # Reduced SVD: for the official square M it equals the full one; U (B, as, k), S (B, k), V^H (B, k, cs).
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        tokens = self.mlp1(u.transpose(1, 2)) + self.mlp2(vh) + self.mlp3(s).unsqueeze(1)  # (B, k, k)
        tokens = self.attention(tokens).mean(1)  # (B, k)
        new_s = self.mlp4(tokens) + s  # the residual on the singular values
        pred = u @ torch.diag_embed(new_s) @ vh  # (B, as, cs)
        return pred.reshape(batch, a, side, c, side).permute(0, 1, 3, 2, 4).reshape(batch, channels, side, side)


class NoiseTransformer(nn.Module):
    """Residual predictor: nearest resize to the Swin input size, 1x1 conv C -> 3, timm Swin `forward_features`,
    nearest resize back, 1x1 conv -> C (C = 4 in the official code).

    Official quirk, reproduced: timm >= 0.9 returns NHWC features (B, r, r, F) (r = 7, F = 768 for Swin-T), which
    the official code resizes as if NCHW, so the r token rows act as channels and the (r, F) plane is resampled
    to the latent size (every ~6th feature, each row repeated). Hence `upconv` has r input channels.
    """

    def __init__(self, sample_size=128, swin_name=OFFICIAL_SWIN, swin_kwargs=None, channels=4):
        super().__init__()
        self.sample_size = sample_size
        # pretrained=False: checkpoints overwrite Swin; ImageNet initialisation for training is the trainer's job.
        self.swin = timm.create_model(swin_name, pretrained=False, **(swin_kwargs or {}))
        self.swin_image_size = tuple(self.swin.patch_embed.img_size)
        rows = self.swin.layers[-1].output_resolution[0]
        self.downconv = nn.Conv2d(channels, 3, kernel_size=1)
        self.upconv = nn.Conv2d(rows, channels, kernel_size=1)

    def forward(self, x):
        x = F.interpolate(x, size=self.swin_image_size, mode="nearest")  # (B, C, 224, 224)
        x = self.downconv(x)  # (B, 3, 224, 224)
        x = self.swin.forward_features(x)  # NHWC (B, 7, 7, 768), read below as NCHW (B, C=7, H=7, W=768)
        x = F.interpolate(x, size=(self.sample_size, self.sample_size), mode="nearest")  # (B, 7, s, s)
        return self.upconv(x)  # (B, C, s, s)


class NoisePromptNet(ModelMixin, ConfigMixin):
    """NPNet: golden noise x'_T from unit-variance noise x_T `(B, C, s, s)` and prompt embeddings `(B, T, D)`.

    The official SDXL configuration is the default (C = 4, s = 128, T = 77, D = 2048: CLIP-L and OpenCLIP-bigG
    penultimate states concatenated, Swin-T; 30,470,427 parameters). For other models set `latent_channels`,
    `sample_size` (latent side), `max_text_tokens` and `text_embed_dim` (SD3: 16 channels, 77 + 256 tokens of
    width 4096; FLUX.1: 16 channels, 512 + 1 tokens of width 4096, see `FluxAdapter.prompt_sequence`); a small
    residual branch is any timm Swin through `swin_kwargs`.

    Args:
        sample_size: latent side s the net is built for (square latents only; other sizes go through the Gaussian
            resize of `noisekit.transforms.golden.golden_noise`).
        latent_channels: C; the SVD branch tiles the channels as `channel_grid(C)` (4: 2 x 2, as the official
            code), the prompt enters as C scales and C shifts.
        text_embed_dim / max_text_tokens: D and T of the target pipeline's prompt sequence
            (`noisekit.transforms.golden.prompt_embeddings`).
        svd_hidden_dim, svd_mlp_dim, svd_num_heads: widths of mlp1/mlp2, of mlp4 and the attention heads.
        swin_name / swin_kwargs: the timm model (and overrides) of the residual branch.

    Examples:
        >>> net = NoisePromptNet(sample_size=16, text_embed_dim=64, max_text_tokens=32, swin_kwargs=SMALL_SWIN)
        >>> golden = net.eval()(noise, prompt_embeds)  # (B, 4, 16, 16), float32
    """

    @register_to_config
    def __init__(self, sample_size: int = 128, latent_channels: int = 4, text_embed_dim: int = 2048,
                 max_text_tokens: int = 77, svd_hidden_dim: int = 64, svd_mlp_dim: int = 1024, svd_num_heads: int = 8,
                 swin_name: str = OFFICIAL_SWIN, swin_kwargs: dict | None = None):
        super().__init__()
        if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
            raise ValueError(f"`latent_channels` must be a positive integer, got {latent_channels!r}.")
        singular = min(channel_grid(latent_channels)) * sample_size  # singular values of the tiled matrix
        if singular % svd_num_heads:
            raise ValueError(f"`svd_num_heads` must divide the {singular} singular values of {latent_channels} "
                             f"channels of {sample_size} x {sample_size}, got {svd_num_heads}.")
        self.unet_svd = SVDNoiseUnet(sample_size, svd_hidden_dim, svd_mlp_dim, svd_num_heads, latent_channels)
        self.unet_embedding = NoiseTransformer(sample_size, swin_name, swin_kwargs, latent_channels)
        self.text_embedding = AdaGroupNorm(max_text_tokens * text_embed_dim, latent_channels, num_groups=1, eps=1e-6)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, noise, prompt_embeds):
        """Args: `noise` `(B, C, s, s)`, `prompt_embeds` `(B, T, D)` or `(1, T, D)` (one prompt for all rows).
        Returns the golden noise `(B, C, s, s)` in float32 (the official code computes in float32 throughout)."""
        self._check_inputs(noise, prompt_embeds)
        x = noise.float()
        embeds = prompt_embeds.float().flatten(1).expand(len(x), -1)  # (B, T * D)
        e = self.text_embedding(x, embeds)  # group_norm(x) * (1 + scale) + shift, (B, C, s, s)
        svd_out = self.unet_svd(x)  # (B, C, s, s)
        res_out = self.unet_embedding(x + e)  # (B, C, s, s)
        return svd_out + (2 * torch.sigmoid(self.alpha) - 1) * e + self.beta * res_out

    def _check_inputs(self, noise, prompt_embeds):
        side, tokens, width = self.config.sample_size, self.config.max_text_tokens, self.config.text_embed_dim
        channels = self.config.latent_channels
        if noise.ndim != 4 or tuple(noise.shape[1:]) != (channels, side, side):
            raise ValueError(f"`noise` must have shape (B, {channels}, {side}, {side}) (this NPNet's size; other "
                             f"sizes go through noisekit.transforms.golden.golden_noise), got {tuple(noise.shape)}.")
        if prompt_embeds.ndim != 3 or tuple(prompt_embeds.shape[1:]) != (tokens, width) \
                or len(prompt_embeds) not in (1, len(noise)):
            raise ValueError(f"`prompt_embeds` must have shape (1 or {len(noise)}, {tokens}, {width}), got "
                             f"{tuple(prompt_embeds.shape)}.")
        if self.dtype != torch.float32:
            raise ValueError(f"NPNet runs in float32 (its SVD needs it); this one is {self.dtype}: call .float().")

    @classmethod
    def from_official_checkpoint(cls, path, pipe=None, height=None, width=None, resize=False, **config):
        """Load an official NPNet checkpoint: the `.pth` dict {"unet_svd", "unet_embedding", "embeeding" (sic),
        "alpha", "beta"} (read with `weights_only=True`), or a flat safetensors conversion with `embeeding.*`
        (LucipherDev) or `text_embedding.*` (asagi4) keys.

        The official nets (SDXL, DreamShaper-XL, Hunyuan-DiT's `dit.pth` with D = 1024) and nets of this class saved in
        that layout load alike: `latent_channels` (C = prompt projection outputs / 2), `sample_size` and
        `text_embed_dim` are read from the weights (D = linear in-features / `max_text_tokens`);
        other `config` keys (`max_text_tokens`, `swin_name`, `swin_kwargs`, ...) describe the architecture. With
        `pipe`, the checkpoint must fit it (`check_fit`), or a clear ValueError is raised.
        """
        state = official_state_dict(path)
        tokens = config.get("max_text_tokens", 77)
        if any(state[key].ndim != 2 for key in _SIZED):
            shapes = {key: tuple(state[key].shape) for key in _SIZED}
            raise ValueError(f"{path} is not an NPNet checkpoint: its layers {shapes} should be 2-D weight matrices.")
        in_features = state["text_embedding.linear.weight"].shape[1]
        if in_features % tokens:
            raise ValueError(f"{path}: the prompt projection takes {in_features} features, not a multiple of "
                             f"`max_text_tokens` = {tokens}.")
        channels = state["text_embedding.linear.weight"].shape[0] // 2  # C scales and C shifts
        inferred = {"latent_channels": channels,
                    "sample_size": state["unet_svd.mlp1.0.weight"].shape[1] // channel_grid(channels)[0],
                    "text_embed_dim": in_features // tokens,
                    "svd_hidden_dim": state["unet_svd.mlp1.0.weight"].shape[0],
                    "svd_mlp_dim": state["unet_svd.mlp4.0.weight"].shape[0]}
        for key, value in inferred.items():
            if key in config and config[key] != value:
                raise ValueError(f"{path} holds an NPNet with {key}={value}, but `{key}`={config[key]} was given.")
        model = cls(**{**config, **inferred})
        branch = (f"residual branch {model.config.swin_name} {model.config.swin_kwargs or ''}(pass its "
                  "`swin_name`/`swin_kwargs` if it has another)")
        try:
            loaded = model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches; torch's message spans lines
            raise ValueError(f"{path} does not fit an NPNet with {branch}: {_one_line(error)}") from None
        missing, unexpected = loaded.missing_keys, loaded.unexpected_keys
        if missing or unexpected:
            raise ValueError(f"{path} does not hold a whole NPNet with {branch}: {len(missing)} weights missing "
                             f"{missing[:3]}{'...' if len(missing) > 3 else ''}, {len(unexpected)} unexpected "
                             f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''}.")
        model.eval()
        if pipe is not None:
            check_fit(model, pipe, height, width, resize)
        return model


_SIZED = ("unet_svd.mlp1.0.weight", "unet_svd.mlp4.0.weight", "text_embedding.linear.weight")


def _one_line(error, limit=300):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _read_checkpoint(path):
    """The tensors of a `.safetensors` file or a `.pth` (tensors only: `weights_only=True`, so code in a pickle
    is never run); an unreadable file (empty, truncated, random bytes, another format) is one ValueError."""
    try:
        if path.endswith(".safetensors"):
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types (EOFError, KeyError, SafetensorError...)
        kind = "a safetensors file" if path.endswith(".safetensors") else "a torch.save'd dict of tensors"
        raise ValueError(f"{path} is not a readable NPNet checkpoint ({kind} was expected; "
                         f"{type(error).__name__}: {_one_line(error, 120)}).") from None


def official_state_dict(path):
    """An official NPNet checkpoint (any of the three circulating layouts) as this class's flat state dict."""
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be an NPNet checkpoint file (.pth or .safetensors), got {path!r}.")
    if path.endswith(".safetensors"):
        flat = _read_checkpoint(path)
    else:
        nested = _read_checkpoint(path)
        parts = {"unet_svd", "unet_embedding", "embeeding", "alpha", "beta"}
        if not isinstance(nested, dict) or set(nested) != parts:
            found = sorted(map(str, nested)) if isinstance(nested, dict) else type(nested).__name__
            raise ValueError(f"{path}: an official NPNet .pth is a dict with keys {sorted(parts)}, found {found}.")
        if not all(isinstance(nested[part], dict) for part in ("unet_svd", "unet_embedding", "embeeding")):
            raise ValueError(f"{path}: an official NPNet .pth holds a state dict under each of unet_svd, "
                             "unet_embedding and embeeding.")
        flat = {"alpha": nested["alpha"], "beta": nested["beta"]}
        for part in ("unet_svd", "unet_embedding", "embeeding"):
            flat.update({f"{part}.{key}": value for key, value in nested[part].items()})
    state = {("text_embedding." + key[len("embeeding."):] if key.startswith("embeeding.") else key): value
             for key, value in flat.items()}
    required = ("unet_svd.mlp1.0.weight", "unet_svd.mlp4.0.weight", "text_embedding.linear.weight", "alpha", "beta")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"{path} is not an NPNet checkpoint: it lacks {missing}.")
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} is not an NPNet checkpoint: it holds values other than tensors.")
    return {key: value.float() if value.is_floating_point() else value for key, value in state.items()}


def prompt_embeddings(pipe, prompts, height=None, width=None):
    """`(P, T, D)`: what NPNet reads of each prompt, one row per prompt: the adapter's `prompt_sequence` of the
    positive conditioning (SD/SDXL: `pipe.encode_prompt(p)[0]`, as the official code feeds it; SD3: the joint
    CLIP + T5 sequence; FLUX.1: the T5 sequence plus CLIP's pooled embedding as one last token)."""
    adapter = adapter_for(pipe)
    conditioning = adapter.encode(list(prompts), None, False, height, width)
    return adapter.prompt_sequence(conditioning, list(range(len(prompts))))


def pipeline_text_shape(pipe):
    """`(T, D)` of the pipeline's prompt sequence (`prompt_embeddings`), read off the empty prompt's encoding."""
    with torch.no_grad():
        return tuple(prompt_embeddings(pipe, [""]).shape[1:])


def check_fit(npnet, pipe, height=None, width=None, resize=False, *, text_shape=None, check_text=True):
    """Raise a ValueError unless `npnet` fits `pipe`: same prompt tokens and text width, the same latent channel
    count, and, unless `resize`, latents at `height` x `width` (the pipeline's default size when `None`) of the
    trained size. `text_shape` `(T, D)`, when the caller has encoded prompts already, saves encoding one;
    `check_text=False` leaves the text to the golden-noise stage, which checks it on the run's own encodings."""
    config = npnet.config
    channels, latent_height, latent_width = latent_shape(pipe, height, width)
    if channels != config.latent_channels:
        raise ValueError(f"this NPNet takes {config.latent_channels}-channel latents, the pipeline's "
                         f"{type(pipe).__name__} has {channels}: it was trained for another model family.")
    tokens, text_width = (text_shape or pipeline_text_shape(pipe)) if check_text else (
        config.max_text_tokens, config.text_embed_dim)
    if (tokens, text_width) != (config.max_text_tokens, config.text_embed_dim):
        raise ValueError(f"this NPNet takes prompt embeddings of {config.max_text_tokens} x {config.text_embed_dim}, "
                         f"but the pipeline's {type(pipe).__name__} encodes prompts to {tokens} x {text_width}: it "
                         "was trained for another text encoder.")
    side = config.sample_size
    if not resize and (latent_height, latent_width) != (side, side):
        raise ValueError(f"this NPNet was trained for {side} x {side} latents, the pipeline's are {latent_height} x "
                         f"{latent_width}; pass a matching `height`/`width`, or `resize=True` for the Gaussian "
                         "resize of noisekit.transforms.golden.golden_noise.")
