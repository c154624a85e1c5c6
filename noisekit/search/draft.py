"""Cheap drafts: rank every seed by a short, low-step run of the same noise, then finish only the best at full steps.

The simplest alternative to pruning with previews: a 4-step run of a seed is a whole (rough) image, judged by the
clean reward as is, at a fifth of a 20-step candidate's denoiser cost. Its cost is counted as it is spent: the
drafts' NFE and reward calls plus the finished candidates'.

Examples:
    >>> drafts = Sampler(pipe, prompts, num_inference_steps=4, guidance_scale=5.0)
    >>> full = Sampler(pipe, prompts, num_inference_steps=20, guidance_scale=5.0)
    >>> result = cheap_draft(drafts, full, 0, judge, seeds=0, num_candidates=24, finish=4)
"""

from dataclasses import dataclass

import torch

from ..rewards.combine import rank_sum, top_positions
from .strategies import as_reward_dict, best_of_n


@dataclass
class DraftResult:
    """The finished search (`final`, its best is the pick), the drafts it ranked, and the total realised cost."""

    drafts: object  # SearchResult of the low-step runs
    final: object  # SearchResult of the finished seeds
    finished_seeds: list

    @property
    def best(self):
        return self.final.best

    @property
    def nfe(self):
        return self.drafts.nfe + self.final.nfe

    @property
    def reward_calls(self):
        return self.drafts.reward_calls + self.final.reward_calls

    @property
    def cost(self):
        return self.drafts.cost + self.final.cost


def draft_count(budget, *, draft_cost, full_cost, finish):
    """Drafts that fit `budget` once `finish` full candidates are paid for (costs per candidate, one unit)."""
    count = (budget - finish * full_cost) // draft_cost
    if count < finish:
        raise ValueError(f"budget {budget} does not fit {finish} drafts and {finish} finished candidates.")
    return int(count)


def cheap_draft(draft_sampler, full_sampler, prompt_index, rewards, *, seeds=0, num_candidates, finish,
                reward_cost=1, micro_batch_size=None):
    """Run `num_candidates` seeds with `draft_sampler` (few steps), keep the `finish` best by the clean rewards
    (rank sum for several), and run those seeds again with `full_sampler`; the pick is the best finished one.

    Both samplers must hold the same prompts; the same seed gives the same initial noise in both.
    """
    if not 1 <= finish <= num_candidates:
        raise ValueError(f"`finish` must lie in [1, num_candidates={num_candidates}], got {finish}.")
    if list(draft_sampler.prompts) != list(full_sampler.prompts):
        raise ValueError("`draft_sampler` and `full_sampler` must hold the same prompts.")
    rewards = as_reward_dict(rewards)
    drafts = best_of_n(draft_sampler, prompt_index, rewards, seeds=seeds, num_candidates=num_candidates,
                       reward_cost=reward_cost, micro_batch_size=micro_batch_size)
    scores = {n: torch.tensor([c.final_scores[n] for c in drafts.candidates], dtype=torch.float64) for n in rewards}
    keep = top_positions(rank_sum(scores), finish).tolist()
    chosen = [drafts.candidates[i].seed for i in keep]
    final = best_of_n(full_sampler, prompt_index, rewards, seeds=chosen, num_candidates=len(chosen),
                      reward_cost=reward_cost, micro_batch_size=micro_batch_size)
    return DraftResult(drafts, final, chosen)
