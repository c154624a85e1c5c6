"""TTSnap's published reward trajectories as noisekit `TrajectoryTable`s, and the accounting its notebooks use.

TTSnap (arXiv 2511.22242) publishes, for FLUX.1-dev and RealVisXL-V4 (SDXL) at 512x512 and 20 Euler steps, the
reward of 200 trajectories of each of 200 validation prompts at every step, for ImageReward (`imr`), PickScore
(`pic`) and HPS (`hps`): `base` (the un-tuned reward on each step's decoded x0 preview) and `naft` (its
noise-aware fine-tune, one checkpoint per step). The layout, under the folder its simulation reads
(`simulation/values`):

    {model}_{reward}_val_{kind}/p{P}_i{N}_s{step:02d}.yaml    # one file per step

Each file maps a prompt index to the list of its N trajectories' rewards. `naft` folders only hold the steps a
noise-aware checkpoint exists for (FLUX: 0-14; SDXL: 0-14 for ImageReward, 3-14 for the others); the other steps
take the `base` values, as TTSnap's loader does. The last step is the final image, judged by the clean reward.

Costs follow TTSnap's notebooks: 9.9 TFLOPs per denoiser step and 1.2 per reward call, for both models.
`official_cost_model` states them in units of 0.1 TFLOPs, so noisekit's integer accounting (`CostModel`,
`plan_ttsnap(formula="exact")`) applies unchanged; budgets are then 10x TTSnap's TFLOP budgets.

Examples:
    >>> table = read_official_values("TTSnap/simulation/values", model="flux", reward="hps")
    >>> calibration, heldout = table.split(range(100)), table.split(range(100, 200))
"""

import math
import os

import torch

from .budget import CostModel
from .calibrate import TrajectoryTable

MODELS = ("flux", "sdxl")
REWARDS = ("hps", "imr", "pic")
KINDS = ("base", "naft")
REWARD_NAMES = {"hps": "HPS", "imr": "ImageReward", "pic": "PickScore"}
NFE_PER_STEP = {"flux": 1, "sdxl": 2}  # FLUX.1-dev is guidance-distilled; RealVisXL runs CFG 5
STEP_TFLOPS, CALL_TFLOPS = 9.9, 1.2  # TTSnap's notebooks, both models
COST_UNIT_TFLOPS = 0.1  # `official_cost_model`'s unit: makes both costs whole numbers


def step_file(root, *, model, reward, kind, step, num_prompts=200, num_images=200):
    """Path of one step's YAML file in TTSnap's layout."""
    return os.path.join(str(root), f"{model}_{reward}_val_{kind}", f"p{num_prompts}_i{num_images}_s{step:02d}.yaml")


def read_step(path, *, num_images=None):
    """One step's rewards `(P, N)` float32, rows in the order of the sorted prompt keys (as TTSnap's loader)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml reads a file in ~0.2 s, pure Python in ~10
    with open(path) as f:
        values = yaml.load(f, Loader=loader)
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{path} is not a mapping of prompt -> rewards.")
    rows = [values[key] for key in sorted(values)]
    widths = {len(row) if isinstance(row, list) else -1 for row in rows}
    if len(widths) != 1 or -1 in widths or (num_images is not None and widths != {num_images}):
        raise ValueError(f"{path}: every prompt must list {num_images or 'the same number of'} rewards, "
                         f"got lengths {sorted(widths)}.")
    return torch.tensor(rows, dtype=torch.float32)


def noise_aware_steps(root, *, model, reward, num_prompts=200, num_images=200, num_steps=20):
    """The steps (below the last) that have a noise-aware (`naft`) file; the others fall back to `base`."""
    return [s for s in range(num_steps - 1) if os.path.exists(step_file(
        root, model=model, reward=reward, kind="naft", step=s, num_prompts=num_prompts, num_images=num_images))]


def read_official_values(root, *, model, reward, kind="naft", num_prompts=200, num_images=200, num_steps=20):
    """A `TrajectoryTable` of one model and reward from TTSnap's `simulation/values` folder.

    Args:
        root: the `values` folder.
        model (`str`): `"flux"` or `"sdxl"`.
        reward (`str`): `"hps"`, `"imr"` or `"pic"`; the table's one reward is named so, in TTSnap's raw scale.
        kind (`str`): preview rewards: `"naft"` (noise-aware where a checkpoint exists, else base) or `"base"`.
        num_prompts, num_images, num_steps: the sizes in the file names (200, 200, 20).

    Returns:
        `TrajectoryTable` with prompts `"p000"`..., seeds = trajectory ids 0..N-1, sigmas of `official_sigmas`
        and the final column (step T - 1) from the clean `base` reward.
    """
    for name, value, allowed in (("model", model, MODELS), ("reward", reward, REWARDS), ("kind", kind, KINDS)):
        if value not in allowed:
            raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
    sizes = dict(num_prompts=num_prompts, num_images=num_images)
    base_dir = os.path.dirname(step_file(root, model=model, reward=reward, kind="base", step=0, **sizes))
    if not os.path.isdir(base_dir):
        raise FileNotFoundError(f"no TTSnap values folder {base_dir}; pass the `simulation/values` folder of "
                                f"TTSnap's repository.")
    noise_aware = set(noise_aware_steps(root, model=model, reward=reward, num_steps=num_steps, **sizes))
    columns = []
    for step in range(num_steps):
        source = "naft" if kind == "naft" and step in noise_aware else "base"
        path = step_file(root, model=model, reward=reward, kind=source, step=step, **sizes)
        if not os.path.exists(path):
            raise FileNotFoundError(f"missing {path} (step {step} of {num_steps}).")
        columns.append(read_step(path, num_images=num_images))
    scores = torch.stack(columns, dim=-1)
    if scores.shape[0] != num_prompts:
        raise ValueError(f"{base_dir} holds {scores.shape[0]} prompts, its file names say {num_prompts}.")
    prompts = [f"p{i:03d}" for i in range(num_prompts)]
    return TrajectoryTable(prompts, list(range(num_images)), official_sigmas(model, num_steps),
                           NFE_PER_STEP[model], {reward: scores})


def official_cost_model(num_steps=20):
    """TTSnap's accounting as a `CostModel` in units of 0.1 TFLOPs: 99 per candidate step, 12 per reward call."""
    return CostModel(num_steps, round(STEP_TFLOPS / COST_UNIT_TFLOPS), round(CALL_TFLOPS / COST_UNIT_TFLOPS))


def official_scale(reward, values):
    """Rewards on the scale TTSnap's notebooks print: ImageReward normalised, HPS x 100, PickScore raw."""
    if reward == "imr":
        return (values - 0.16717362830052426) / 1.0333394966054072  # ImageReward's published mean and std
    if reward == "hps":
        return values * 100
    return values


def official_sigmas(model, num_steps=20):
    """Noise level of each step's preview (the sigma the x0 estimate is taken at) for TTSnap's samplers at 512^2.

    FLUX.1-dev: flow-matching Euler, sigmas linspace(1, 1/T, T) time-shifted by mu = 0.63 (the dynamic shift of
    1024 image tokens). RealVisXL: Euler over SDXL's scaled-linear betas (0.00085-0.012), `leading` spacing with
    offset 1, sigma = sqrt((1 - alpha_bar) / alpha_bar) (SDXL's scheduler config, assumed for RealVisXL).
    """
    if model == "flux":
        tokens = (512 // 16) ** 2
        mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
        base = [1.0 - i * (1.0 - 1.0 / num_steps) / (num_steps - 1) for i in range(num_steps)]
        return [math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0)) for s in base]
    if model == "sdxl":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        alpha_bar = torch.cumprod(1.0 - betas, 0)
        ratio = 1000 // num_steps
        timesteps = [i * ratio + 1 for i in reversed(range(num_steps))]
        return [float(((1 - alpha_bar[t]) / alpha_bar[t]).sqrt()) for t in timesteps]
    raise ValueError(f"`model` must be one of {MODELS}, got {model!r}.")
