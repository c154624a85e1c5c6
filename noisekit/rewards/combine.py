"""Combining rewards of different scales: per-prompt ranks (default) or per-prompt z-scores, never raw sums.

Each reward's scores are first made comparable *within the candidates of one prompt*: ranks scaled to [0, 1]
(ties share their mean rank; a lone candidate gets 0.5), or z-scores (a group with no spread gets 0). The
combined score is the weighted mean of these over rewards, so it only orders candidates of the same prompt.
"""

import torch
from torch import nn

from .base import check_images, check_prompts

METHODS = ("rank", "zscore")


def _groups(prompts, count):
    if prompts is None:
        return [list(range(count))]
    prompts = check_prompts(prompts, count)
    index = {}
    for i, prompt in enumerate(prompts):
        index.setdefault(prompt, []).append(i)
    return list(index.values())


def _ranks(values):
    """Ranks in [0, 1] (0 = lowest), ties averaged."""
    if len(values) == 1:
        return torch.full_like(values, 0.5)
    below = (values[None, :] < values[:, None]).sum(1).double()
    equal = (values[None, :] == values[:, None]).sum(1).double()
    return ((below + (equal - 1) / 2) / (len(values) - 1)).to(values.dtype)


def _zscores(values):
    spread = values.std(unbiased=False)
    return torch.zeros_like(values) if spread == 0 else (values - values.mean()) / spread


def _integer_ranks(values):
    """Ranks along the last axis, 0 = lowest, ties averaged (half-integers, so sums of them are exact)."""
    below = (values[..., None, :] < values[..., :, None]).sum(-1).double()
    equal = (values[..., None, :] == values[..., :, None]).sum(-1).double()
    return below + (equal - 1) / 2


def finite_mask(scores):
    """`(..., n)` bool: True where a candidate's score is finite under every reward of `{name: (..., n)}`."""
    values = [torch.as_tensor(v) for v in scores.values()]
    return torch.stack([torch.isfinite(v) for v in values]).all(0)


def rank_sum(scores):
    """One float64 score per candidate from `{name: (..., n)}` (last axis: candidates): the raw scores of a lone
    reward, else the mean over rewards of each candidate's rank in [0, 1] (0 = worst, ties averaged), which
    orders candidates as TTSnap's sum of ranks does. Leading axes are independent groups (prompts).

    The ranks are summed as exact half-integers and divided once, so candidates with equal rank sums get equal
    scores (dividing each rank by `n - 1` first would leave rounding residue that breaks such ties arbitrarily).
    A candidate with a NaN or infinite score under any reward failed: it gets -inf, below every other candidate
    (a reward that returns +inf or NaN has broken, it has not found the best image).
    """
    values = [torch.as_tensor(v).double() for v in scores.values()]
    shapes = {name: tuple(v.shape) for name, v in zip(scores, values)}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"`scores` must hold one shape for every reward, got {shapes}.")
    finite = finite_mask(scores)
    failed = torch.tensor(float("-inf"), dtype=torch.float64)
    values = [v.where(torch.isfinite(v), failed) for v in values]  # failures rank lowest under each reward
    if len(values) == 1:
        return values[0]
    n = values[0].shape[-1]
    if n == 1:
        return torch.full_like(values[0], 0.5).where(finite, failed)
    total = sum(_integer_ranks(v) for v in values)
    return (total / ((n - 1) * len(values))).where(finite, failed)


def top_positions(values, count):
    """Positions (along the last axis) of the `count` highest `values`, ties to the earlier position, in position
    order; `(..., count)` long tensor. NaN counts as the lowest value (torch's sort would put it first)."""
    values = torch.as_tensor(values)
    if values.is_floating_point():
        values = values.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    order = torch.sort(values, dim=-1, descending=True, stable=True).indices
    return order[..., :count].sort(dim=-1).values


def normalize_scores(scores, prompts=None, method="rank"):
    """One reward's `(B,)` scores made comparable across rewards, within each prompt's candidates.

    Args:
        scores (`torch.Tensor`): `(B,)` scores of one reward.
        prompts (`list[str]`, *optional*): the prompt of each candidate; candidates with equal prompts form a
            group. `None`: all candidates are one group.
        method (`str`): `"rank"` or `"zscore"`.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    scores = torch.as_tensor(scores, dtype=torch.float64).detach().cpu().flatten()
    out = torch.empty_like(scores)
    for group in _groups(prompts, len(scores)):
        values = scores[group]
        out[group] = _ranks(values) if method == "rank" else _zscores(values)
    return out.float()


def combine_scores(scores, prompts=None, method="rank", weights=None):
    """Weighted mean over rewards of their per-prompt ranks or z-scores, `(B,)` float32 on the CPU.

    Args:
        scores (`dict[str, torch.Tensor]`): reward name -> `(B,)` scores.
        prompts (`list[str]`, *optional*): prompt of each candidate (groups for ranking); `None` = one group.
        method (`str`): `"rank"` (scores in [0, 1]) or `"zscore"`.
        weights (`dict[str, float]`, *optional*): per-reward weights (default: equal); normalised to sum 1.

    Examples:
        >>> combine_scores({"imagereward": ir, "hpsv2.1": hps}, prompts, weights={"imagereward": 2, "hpsv2.1": 1})
    """
    if not isinstance(scores, dict) or not scores:
        raise ValueError(f"`scores` must be a non-empty dict of reward name -> (B,) scores, got {type(scores)}.")
    weights = {name: 1.0 for name in scores} if weights is None else dict(weights)
    if set(weights) != set(scores):
        raise ValueError(f"`weights` must name exactly the rewards in `scores` {sorted(scores)}, got "
                         f"{sorted(weights)}.")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"`weights` must be non-negative with a positive sum, got {weights}.")
    sizes = {name: torch.as_tensor(s).numel() for name, s in scores.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every reward must score the same candidates, got sizes {sizes}.")
    total = sum(weights.values())
    return sum(weights[name] / total * normalize_scores(s, prompts, method) for name, s in scores.items())


class RewardEnsemble(nn.Module):
    """Several rewards as one: `ensemble(images, prompts, sigma=None)` -> combined `(B,)` (see `combine_scores`).

    Noise-aware members get `sigma`; clean members refuse `sigma > 0` as on their own. The combined score is
    relative to the candidates of the same prompt in the same call.

    Examples:
        >>> members = {"imagereward": load_reward("imagereward"), "pickscore": load_reward("pickscore")}
        >>> ensemble = RewardEnsemble(members)
        >>> best = ensemble(images, prompt).argmax()
    """

    def __init__(self, rewards, method="rank", weights=None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
        self.rewards = nn.ModuleDict(rewards)
        self.method = method
        self.weights = weights

    def scores(self, images, prompts=None, sigma=None):
        """Each member's own scores: `{name: (B,)}` on the CPU."""
        return {name: reward(images, prompts, sigma=sigma).cpu() for name, reward in self.rewards.items()}

    def forward(self, images, prompts=None, sigma=None):
        count = check_images(images)
        groups = None if prompts is None else check_prompts(prompts, count)
        return combine_scores(self.scores(images, prompts, sigma), groups, self.method, self.weights)
