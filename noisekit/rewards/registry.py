"""The reward registry: `list_rewards()`, `load_reward(name, **kwargs)`, `add_reward(name, constructor)`."""

import importlib

# The registry as data: name -> "module:loader" (with fixed options), imported only when the reward is loaded, so
# that a loader may itself load other rewards by name (the noise-aware rewards load their teacher).
_REWARDS = {
    "clip": ("noisekit.rewards.clip:load_clip", {}),
    "pickscore": ("noisekit.rewards.pickscore:load_pickscore", {}),
    "hpsv2": ("noisekit.rewards.clip:load_hps", {"version": "hpsv2"}),
    "hpsv2.1": ("noisekit.rewards.clip:load_hps", {"version": "hpsv2.1"}),
    "hpsv2-ttsnap": ("noisekit.rewards.clip:load_hps", {"version": "hpsv2", "preprocess": "ttsnap"}),
    "hpsv2.1-ttsnap": ("noisekit.rewards.clip:load_hps", {"version": "hpsv2.1", "preprocess": "ttsnap"}),
    "aesthetic": ("noisekit.rewards.aesthetic:load_aesthetic", {}),
    "imagereward": ("noisekit.rewards.imagereward:load_imagereward", {}),
    "shapes-judge": ("noisekit.rewards.shapes:load_shapes_judge_reward", {}),
    "shapes-clip": ("noisekit.rewards.shapes:load_shapes_clip_reward", {}),
    "noise-aware": ("noisekit.rewards.noise_aware:load_noise_aware_reward", {}),
    "shapes-judge-noise-aware": ("noisekit.rewards.noise_aware:load_shapes_judge_noise_aware", {}),
    "noise-aware-latent": ("noisekit.rewards.latent:load_latent_reward", {}),
    "shapes-judge-latent": ("noisekit.rewards.latent_twin:load_shapes_judge_latent", {}),
}


def _constructor(entry):
    if callable(entry):
        return entry
    target, options = entry
    module, _, function = target.partition(":")
    loader = getattr(importlib.import_module(module), function)
    return lambda **kwargs: loader(**options, **kwargs)


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
    reward = _constructor(_REWARDS[name])(**kwargs)
    if device is not None or dtype is not None:
        reward = reward.to(device=device, dtype=dtype)
    return reward
