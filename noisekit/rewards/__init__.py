"""Reward models as a registry: `list_rewards()`, `load_reward(name, **kwargs)`, `add_reward(name, constructor)`.

| name | model | weights | scale |
|---|---|---|---|
| `clip` | open_clip, any architecture | pretrained tag or file | cosine, or 100 cos, or 2.5 max(cos, 0) |
| `pickscore` | CLIP ViT-H/14 (transformers) | `yuvalkirstain/PickScore_v1` | about 100 cos, ~18-24 |
| `hpsv2`, `hpsv2.1` | open_clip ViT-H-14, letterbox | `xswu/HPSv2` `HPS_v2*_compressed.pt` | cosine, ~0.2-0.35 |
| `hpsv2-ttsnap`, `hpsv2.1-ttsnap` | the same, TTSnap's centre crop | the same | the same |
| `aesthetic` | MLP on CLIP ViT-L/14 | `sac+logos+ava1-l14-linearMSE.pth` | AVA 1-10 |
| `imagereward` | BLIP + MLP (transformers) | `THUDM/ImageReward` `ImageReward.pt` | normalised, ~N(0, 1) |
| `shapes-judge` | `ShapesJudge` | `assets/shapes-judge` | probability, [0, 1] |
| `shapes-clip` | small open_clip | `assets/shapes-clip` | cosine |

Every reward is called as `reward(images, prompts) -> (B,)` (see `noisekit.rewards.base`).
"""

from .aesthetic import load_aesthetic
from .base import ImageTransform, NoiseAwareReward, Reward, ignore_sigma
from .clip import load_clip, load_hps
from .combine import RewardEnsemble, combine_scores, normalize_scores, rank_sum, top_positions
from .imagereward import load_imagereward
from .pickscore import load_pickscore
from .shapes import load_shapes_clip_reward, load_shapes_judge_reward

_REWARDS = {
    "clip": load_clip,
    "pickscore": load_pickscore,
    "hpsv2": lambda **kwargs: load_hps("hpsv2", **kwargs),
    "hpsv2.1": lambda **kwargs: load_hps("hpsv2.1", **kwargs),
    "hpsv2-ttsnap": lambda **kwargs: load_hps("hpsv2", preprocess="ttsnap", **kwargs),
    "hpsv2.1-ttsnap": lambda **kwargs: load_hps("hpsv2.1", preprocess="ttsnap", **kwargs),
    "aesthetic": load_aesthetic,
    "imagereward": load_imagereward,
    "shapes-judge": load_shapes_judge_reward,
    "shapes-clip": load_shapes_clip_reward,
}


def list_rewards():
    """Names of the registered rewards, sorted."""
    return sorted(_REWARDS)


def add_reward(name, constructor):
    """Register `constructor(**kwargs) -> reward` under `name` (a reward is a `NoiseAwareReward` or anything
    called as `reward(images, prompts, sigma=None) -> (B,)`). Names are unique: re-registering raises."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")
    if name in _REWARDS:
        raise ValueError(f"reward {name!r} is already registered; registered: {list_rewards()}.")
    if not callable(constructor):
        raise TypeError(f"`constructor` must be callable, got {type(constructor).__name__}.")
    _REWARDS[name] = constructor


def load_reward(name, device=None, dtype=None, **kwargs):
    """Build reward `name` once, with its weights, on `device` in `dtype`.

    Args:
        name (`str`): one of `list_rewards()`.
        device, dtype: passed to `.to()` after loading (default: CPU, float32).
        **kwargs: the reward's own options (`path=`, `batch_size=`, ...; see each loader's docstring).

    Examples:
        >>> reward = load_reward("hpsv2.1", path="ckpts/HPS_v2.1_compressed.pt", device="cuda", dtype=torch.float16)
        >>> scores = reward(images, "a photo of an astronaut riding a horse")
    """
    if name not in _REWARDS:
        raise ValueError(f"`name` must be one of {list_rewards()}, got {name!r}.")
    reward = _REWARDS[name](**kwargs)
    if device is not None or dtype is not None:
        reward = reward.to(device=device, dtype=dtype)
    return reward


from . import noise_aware  # noqa: E402,F401  (registers `noise-aware` and `shapes-judge-noise-aware`)

__all__ = [
    "ImageTransform", "NoiseAwareReward", "Reward", "RewardEnsemble", "add_reward", "combine_scores", "ignore_sigma",
    "list_rewards", "load_aesthetic", "load_clip", "load_hps", "load_imagereward", "load_pickscore", "load_reward",
    "load_shapes_clip_reward", "load_shapes_judge_reward", "normalize_scores", "rank_sum", "top_positions",
]
