"""What every reward shares: the call contract, batching, image preprocessing, and finding weight files.

A reward is a `torch.nn.Module` called as `reward(images, prompts, sigma=None) -> (B,)` float32 scores, higher
is better. `images` is a list of PIL images or a `(B, 3, H, W)` tensor in [0, 1]; `prompts` a list of `B` strings
or one string for all images. A *noise-aware* reward (`NoiseAwareReward`) scores x0 previews taken at noise level
`sigma` (one float or one per image); a clean reward (`Reward`) is its `sigma = 0` case and refuses previews
unless wrapped in `ignore_sigma`, which scores them as if they were clean images, explicitly.
"""

import os
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation, used by most reward models
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}
_RESIZE_MODES = ("shortest", "squash", "longest")
_CROP_ROUNDINGS = ("round", "floor")


@dataclass(frozen=True)
class ImageTransform:
    """Resize, crop or pad, and normalise images to the `(B, 3, size, size)` pixels a reward model reads.

    `"shortest"` and `"squash"`: PIL images go through PIL's own resampling (as `torchvision.transforms.Resize` on
    a PIL image does, which is what open_clip, CLIP and BLIP preprocess with); tensors in [0, 1] are resized on
    their device with antialiasing and clamped to [0, 1], which matches the PIL path up to rounding.
    `"longest"` (the letterbox of the `hpsv2` package) works on float pixels for both: PIL images are converted to
    [0, 1] tensors first, resized with antialiasing and not clamped, as the official transform does.

    Args:
        size (`int`): side of the square input.
        mean, std (`tuple[float]`): per-channel normalisation applied after scaling to [0, 1].
        interpolation (`str`): `"bicubic"` or `"bilinear"`.
        resize_mode (`str`): `"shortest"` (shortest side to `size`, then centre crop), `"squash"` (to
            `size x size`, ignoring the aspect ratio) or `"longest"` (longest side to `size`, rounded, then padded
            with `fill` to a square, the extra pixel of an odd padding going right / bottom).
        crop_rounding (`str`): where the centre crop starts when the margin is odd: `"round"` (torchvision's
            `CenterCrop`: `round(margin / 2)`, halves to even, so 75 -> 38) or `"floor"` (transformers'
            `CLIPImageProcessor`: `margin // 2`, so 75 -> 37).
        fill (`float`): the `"longest"` padding value in [0, 1] pixel units, before normalisation.
    """

    size: int
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    crop_rounding: str = "round"
    fill: float = 0.0

    def __post_init__(self):
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"`interpolation` must be one of {tuple(_INTERPOLATIONS)}, got {self.interpolation!r}.")
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(f"`resize_mode` must be one of {_RESIZE_MODES}, got {self.resize_mode!r}.")
        if self.crop_rounding not in _CROP_ROUNDINGS:
            raise ValueError(f"`crop_rounding` must be one of {_CROP_ROUNDINGS}, got {self.crop_rounding!r}.")

    def _center_crop(self, image):
        if self.crop_rounding == "round":
            return TF.center_crop(image, self.size)
        _, height, width = TF.get_dimensions(image)
        return TF.crop(image, (height - self.size) // 2, (width - self.size) // 2, self.size, self.size)

    def _resize_crop(self, image, **kwargs):
        mode = _INTERPOLATIONS[self.interpolation]
        if self.resize_mode == "squash":
            return TF.resize(image, [self.size, self.size], interpolation=mode, **kwargs)
        return self._center_crop(TF.resize(image, self.size, interpolation=mode, **kwargs))

    def _letterbox(self, pixels):
        """Float `(..., 3, H, W)` -> `(..., 3, size, size)`: longest side to `size`, then padded."""
        height, width = pixels.shape[-2:]
        scale = self.size / max(height, width)
        new_height, new_width = round(height * scale), round(width * scale)  # Python's round, as hpsv2's
        if (new_height, new_width) != (height, width):
            pixels = TF.resize(pixels, [new_height, new_width], interpolation=_INTERPOLATIONS[self.interpolation],
                               antialias=True)
        # hpsv2 skips the padding when the longest side is already `size`, leaving a non-square input the
        # model cannot read; padding always gives the only result that runs
        pad_h, pad_w = self.size - new_height, self.size - new_width
        return TF.pad(pixels, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=self.fill)

    def _pixels(self, images, device):
        """`(B, 3, size, size)` float32 in [0, 1] (the letterbox may overshoot slightly, as hpsv2's does)."""
        if self.resize_mode == "longest":
            if isinstance(images, torch.Tensor):
                return self._letterbox(images.to(device, torch.float32))
            return torch.stack([self._letterbox(TF.pil_to_tensor(image.convert("RGB")).to(device, torch.float32)
                                                / 255) for image in images])
        if isinstance(images, torch.Tensor):
            return self._resize_crop(images.to(device, torch.float32), antialias=True).clamp(0, 1)
        pixels = torch.stack([TF.pil_to_tensor(self._resize_crop(image.convert("RGB"))) for image in images])
        return pixels.to(device, torch.float32) / 255

    def __call__(self, images, device=None, dtype=torch.float32):
        """`images` (list of PIL images or `(B, 3, H, W)` in [0, 1]) -> normalised `(B, 3, size, size)`."""
        return TF.normalize(self._pixels(images, device), self.mean, self.std).to(dtype)


def check_images(images):
    """The number of images; raises for anything but a list of PIL images or a `(B, 3, H, W)` tensor in [0, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"`images` as a tensor must be (B, 3, H, W), got shape {tuple(images.shape)}.")
        low, high = images.min().item(), images.max().item()
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(f"`images` as a tensor must lie in [0, 1], got values in [{low:.3f}, {high:.3f}] "
                             f"(map VAE output with `(x / 2 + 0.5).clamp(0, 1)`).")
        return images.shape[0]
    if isinstance(images, (list, tuple)) and all(isinstance(image, Image.Image) for image in images):
        return len(images)
    raise TypeError(f"`images` must be a list of PIL images or a (B, 3, H, W) tensor in [0, 1], "
                    f"got {type(images).__name__}.")


def check_prompts(prompts, count, needed=True):
    """`prompts` as a list of `count` strings (one string is repeated); `None` is allowed for prompt-free rewards."""
    if prompts is None and not needed:
        return [None] * count
    if isinstance(prompts, str):
        return [prompts] * count
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`prompts` must be a string or a list of strings, got {type(prompts).__name__}.")
    if len(prompts) != count:
        raise ValueError(f"`prompts` must hold one prompt per image ({count}), got {len(prompts)}.")
    return list(prompts)


def check_sigma(sigma, count):
    """`sigma` (None, a float or `count` values) -> float32 `(count,)` on the CPU; negative values raise."""
    sigma = torch.zeros(count) if sigma is None else torch.as_tensor(sigma, dtype=torch.float32).flatten().cpu()
    if sigma.numel() == 1:
        sigma = sigma.expand(count)
    if sigma.numel() != count or bool((sigma < 0).any()):
        raise ValueError(f"`sigma` must be one non-negative noise level or one per image ({count}), "
                         f"got {sigma.tolist()}.")
    return sigma


class NoiseAwareReward(nn.Module):
    """A reward of x0 previews that also reads each preview's noise level `sigma` (0 = a clean image).

    Subclasses set `transform` (an `ImageTransform`) and implement `score(pixels, prompts, sigma)` on one batch of
    preprocessed pixels; `forward` checks the inputs, batches and returns float32 `(B,)` on the model's device.
    Calls run under `torch.no_grad()`; for gradients, call `score` on `transform(images)` yourself.

    Attributes:
        noise_aware (`bool`): whether `sigma > 0` is meaningful.
        needs_prompts (`bool`): False for prompt-free rewards (the aesthetic predictor), which accept `None`.
        batch_size (`int`): images per forward pass of the model.
    """

    noise_aware = True
    needs_prompts = True
    scores_latents = False  # True for rewards of x0 latents (`noisekit.rewards.latent`): no decode before them

    def __init__(self, transform, batch_size=16):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        self.transform = transform
        self.batch_size = batch_size

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def score(self, pixels, prompts, sigma):
        """One batch: pixels `(b, 3, size, size)` from `transform`, `b` prompts, sigma `(b,)` -> `(b,)`."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images, prompts=None, sigma=None):
        count = check_images(images)
        prompts = check_prompts(prompts, count, needed=self.needs_prompts)
        sigma = check_sigma(sigma, count)
        if not self.noise_aware and bool((sigma > 0).any()):
            raise ValueError(f"{type(self).__name__} scores clean images only (sigma = 0), got sigma up to "
                             f"{sigma.max().item():.4g}; wrap it in `noisekit.rewards.ignore_sigma` to score "
                             f"x0 previews as if they were clean.")
        scores = [torch.zeros(0, device=self.device)]
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            pixels = self.transform(images[start:stop], self.device, self.dtype)
            batch_sigma = sigma[start:stop].to(self.device)
            scores.append(self.score(pixels, prompts[start:stop], batch_sigma).float().flatten())
        return torch.cat(scores)


def reads_latents(reward):
    """Whether `reward` scores x0 latents (a search hands it latents and skips the VAE decode) rather than images."""
    return bool(getattr(reward, "scores_latents", False))


class Reward(NoiseAwareReward):
    """A clean-image reward: the `sigma = 0` case of `NoiseAwareReward`. Implement `score_clean(pixels, prompts)`."""

    noise_aware = False

    def score_clean(self, pixels, prompts):
        raise NotImplementedError

    def score(self, pixels, prompts, sigma):
        return self.score_clean(pixels, prompts)


class ignore_sigma(NoiseAwareReward):  # noqa: N801  (reads as a function: `ignore_sigma(reward)`)
    """A noise-aware view of a clean reward that scores x0 previews at any sigma as clean images.

    This is the "clean verifier on previews" baseline of noise-aware pruning (TTSnap); it exists so that doing so
    is a visible choice.

    Examples:
        >>> preview_reward = ignore_sigma(load_reward("imagereward"))
        >>> preview_reward(previews, prompts, sigma=3.2)
    """

    def __init__(self, reward):
        super().__init__(reward.transform, reward.batch_size)
        self.reward = reward
        self.needs_prompts = reward.needs_prompts

    def score(self, pixels, prompts, sigma):
        return self.reward.score(pixels, prompts, torch.zeros_like(sigma))


def resolve_file(reward, path, repo_id, filename, hint=""):
    """A local weight file: `path` if given (it must exist), else `filename` of hub repo `repo_id` (cache or hub).

    Raises:
        FileNotFoundError: naming the file the reward needs and where to put it.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"reward {reward!r}: `path` {str(path)!r} is not a file; it needs {filename} "
                                    f"(from the hub repo {repo_id}). {hint}".strip())
        return str(path)
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, filename)
    except Exception as error:  # offline cache miss, no network, gated repo: all mean the file is not here
        raise FileNotFoundError(
            f"reward {reward!r} needs {filename} from the hub repo {repo_id}, which is not in the local Hugging Face "
            f"cache ({type(error).__name__}). Fetch it once with `huggingface-cli download {repo_id} {filename}`, "
            f"or pass `path=` to a local copy. {hint}".strip()) from error


def load_official_state_dict(path, unwrap=("state_dict",)):
    """`torch.load(path, weights_only=True)` of an official `.pt`/`.pth`, unwrapped from `{"state_dict": ...}`
    and from a `module.` (DistributedDataParallel) prefix on every key."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in unwrap:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
