"""Cheap drafts: rank every seed by a short, low-step run of the same noise, then finish only the best at full steps.

The simplest alternative to pruning with previews: a 4-step run of a seed is a whole (rough) image, judged by the
clean reward as is, at a fifth of a 20-step candidate's denoiser cost. Its cost is counted as it is spent: the
drafts' NFE and reward calls plus the finished candidates'.

Examples:
    >>> drafts = Sampler(pipe, prompts, num_inference_steps=4, guidance_scale=5.0)
    >>> full = Sampler(pipe, prompts, num_inference_steps=20, guidance_scale=5.0)
    >>> result = cheap_draft(drafts, full, 0, judge, seeds=0, num_candidates=24, finish=4)
    >>> result = cheap_draft(drafts, full, 0, judge, budget_seconds=20.0, cost=measure_cost(full, judge), finish=4)
"""

import functools
from dataclasses import dataclass

import torch

from ..rewards.combine import rank_sum, top_positions
from .budget import CostModel
from .strategies import MAX_CANDIDATES, MICRO_BATCH, as_reward_dict, best_of_n, check_candidate_count, resolve_budget
from .timing import plan_by_seconds, search_shape


@dataclass
class DraftResult:
    """The finished search (`final`, its best is the pick), the drafts it ranked, and the total realised cost."""

    drafts: object  # SearchResult of the low-step runs
    final: object  # SearchResult of the finished seeds
    finished_seeds: list
    budget: int | None = None  # NFE-equivalents (from `budget_seconds` when that was given)
    budget_seconds: float | None = None

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

    @property
    def seconds(self):
        """Wall-clock seconds by part (denoiser, decode, reward, search) of the drafts and the finish together."""
        return {part: self.drafts.seconds[part] + self.final.seconds[part] for part in self.final.seconds}


def draft_shape(draft_sampler, full_sampler, num_candidates, *, num_rewards, finish, micro_batch_size):
    """The `RunShape` of `num_candidates` drafts and `finish` finished candidates."""
    shape = functools.partial(search_shape, steps=(), keep=(), num_rewards=num_rewards,
                              micro_batch_size=micro_batch_size)
    return (shape(num_candidates, num_steps=draft_sampler.num_steps, nfe_per_step=draft_sampler.nfe_per_step)
            + shape(finish, num_steps=full_sampler.num_steps, nfe_per_step=full_sampler.nfe_per_step))


def candidate_cost(sampler, reward_cost, num_rewards):
    """What one candidate run to the end of `sampler`'s loop and scored costs, in NFE-equivalents."""
    cost = CostModel.for_sampler(sampler, reward_cost, num_rewards)
    return cost.realised(1)


def draft_count(budget, *, draft_cost, full_cost, finish):
    """Drafts that fit `budget` once `finish` full candidates are paid for (costs per candidate, one unit)."""
    count = int((budget - finish * full_cost) // draft_cost)
    if count < finish:
        raise ValueError(f"budget {budget} does not fit {finish} drafts and {finish} finished candidates.")
    return count


def cheap_draft(draft_sampler, full_sampler, prompt_index, rewards, *, seeds=0, num_candidates=None, budget=None,
                budget_seconds=None, finish, reward_cost=None, cost=None, micro_batch_size=None):
    """Run `num_candidates` seeds with `draft_sampler` (few steps), keep the `finish` best by the clean rewards
    (rank sum for several), and run those seeds again with `full_sampler`; the pick is the best finished one.

    Both samplers must hold the same prompts; the same seed gives the same initial noise in both. Instead of
    `num_candidates`, a `budget` (NFE-equivalents) or `budget_seconds` (through `cost`, a `TimedCost` measured on
    `full_sampler` when not given) buys as many drafts as fit once the `finish` full candidates are paid for.
    """
    if list(draft_sampler.prompts) != list(full_sampler.prompts):
        raise ValueError("`draft_sampler` and `full_sampler` must hold the same prompts.")
    rewards = as_reward_dict(rewards)
    budget, reward_cost, _, timed = resolve_budget(full_sampler, rewards, None, num_candidates=num_candidates,
                                                   budget=budget, budget_seconds=budget_seconds, cost=cost,
                                                   reward_cost=reward_cost, pruning=False, required=True)
    if budget_seconds is not None:
        count = plan_by_seconds(timed, budget_seconds, functools.partial(
            draft_shape, draft_sampler, full_sampler, num_rewards=len(rewards), finish=finish,
            micro_batch_size=micro_batch_size or MICRO_BATCH), limit=MAX_CANDIDATES, smallest=finish)
        num_candidates = check_candidate_count(count, source=f"`budget_seconds` {budget_seconds:g}")
    elif budget is not None:
        count = draft_count(budget, draft_cost=candidate_cost(draft_sampler, reward_cost, len(rewards)),
                            full_cost=candidate_cost(full_sampler, reward_cost, len(rewards)), finish=finish)
        num_candidates = check_candidate_count(count, source=f"`budget` {budget}")
    if not 1 <= finish <= num_candidates:
        raise ValueError(f"`finish` must lie in [1, num_candidates={num_candidates}], got {finish}.")
    drafts = best_of_n(draft_sampler, prompt_index, rewards, seeds=seeds, num_candidates=num_candidates,
                       reward_cost=reward_cost, micro_batch_size=micro_batch_size)
    scores = {n: torch.tensor([c.final_scores[n] for c in drafts.candidates], dtype=torch.float64) for n in rewards}
    keep = top_positions(rank_sum(scores), finish).tolist()
    chosen = [drafts.candidates[i].seed for i in keep]
    final = best_of_n(full_sampler, prompt_index, rewards, seeds=chosen, num_candidates=len(chosen),
                      reward_cost=reward_cost, micro_batch_size=micro_batch_size)
    return DraftResult(drafts, final, chosen, budget, budget_seconds)
