"""Seed search: best-of-N and TTSnap pruning, as functions over a `Sampler`, rewards and a budget.

Every candidate is a `Candidate` record keyed by its seed: its noise recipe, the scores of each stage it reached,
its final (clean) scores if it survived, and what it cost. Rewards are callables
`reward(images, prompts, sigma=None) -> (B,)` (`noisekit.rewards`); several rewards are combined by the sum of
their per-prompt ranks, never raw sums. Costs are exact (see `noisekit.search.budget`); seconds are measured.

A reward that returns NaN or +/-inf for a candidate has failed on it: the candidate ranks below every other at
that stage, is never chosen, and its record says why (`failed`); a stage at which every candidate fails raises.

TTSnap (arXiv 2511.22242): start N0 candidates, run them together, and at each pruning step score the x0
previews with a (noise-aware) reward and keep the top fraction; the survivors are denoised fully and judged by
the clean reward. A pruned candidate is cheap because it never finishes.
"""

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field

import torch

from .budget import CostModel, PruningSchedule, default_schedule, plan_best_of_n, plan_ttsnap
from ..core.candidates import from_seeds, seed_list
from ..rewards.combine import finite_mask, rank_sum, top_positions
from .previews import check_final_rewards, score_previews
from .scoring import DECODE_BATCH, as_reward_dict, decode_in_pieces, preview_view, step_sigmas  # noqa: F401
from .scoring import score as _score

# Every candidate's noise (and later its image) is held at once, so a search has a ceiling; a budget of 1e12
# would otherwise allocate a list of 1e11 seeds before anything runs.
MAX_CANDIDATES = 16384
# Candidates per denoiser batch unless one is given: the activations of one batch of every candidate (x2 under CFG)
# grew the peak memory by about 1.3 MB per shapes-world candidate; 32 keeps it flat and a GPU busy.
MICRO_BATCH = 32


@dataclass
class Candidate:
    """One seed's record. `stages`: `[{"step", "sigma", "scores": {reward: value}, "kept"}]` in order."""

    seed: int
    prompt_index: int
    prompt: str
    recipe: dict
    stages: list = field(default_factory=list)
    final_scores: dict | None = None  # clean rewards of the final image (survivors only)
    pruned_at: int | None = None  # the step whose preview pruned it
    nfe: int = 0  # denoiser evaluations spent on this candidate
    reward_calls: int = 0
    seconds: float = 0.0
    best: bool = False
    image: object = None  # the final image, or the last preview of a pruned candidate (PIL)
    latents: object = None  # the final latents `(1, C, h, w)` of a survivor
    preview: object = None  # x0 latents `(1, C, h, w)` a pruned candidate was scored on undecoded (latent rewards)
    failed: str | None = None  # why it can never be chosen: a reward scored it NaN or +/-inf

    def to_dict(self):
        """The JSON record; a non-finite score is written as null (JSON has no NaN), `failed` says what it was."""
        stages = [{**stage, "scores": _json_scores(stage["scores"])} for stage in self.stages]
        return {"prompt_index": self.prompt_index, "prompt": self.prompt, "seed": self.seed, "recipe": self.recipe,
                "stages": stages, "final_scores": _json_scores(self.final_scores), "pruned_at": self.pruned_at,
                "nfe": self.nfe, "reward_calls": self.reward_calls, "seconds": round(self.seconds, 4),
                "best": self.best, **({"failed": self.failed} if self.failed else {})}


def _json_scores(scores):
    if scores is None:
        return None
    return {name: value if math.isfinite(value) else None for name, value in scores.items()}


@dataclass
class SearchResult:
    """What one prompt's search did: every candidate, the chosen one, and the realised integer cost."""

    strategy: str
    prompt_index: int
    prompt: str
    candidates: list
    best: Candidate
    nfe: int
    reward_calls: int
    cost: int | float  # nfe + reward_cost * reward_calls (the final images' calls at final_reward_cost)
    budget: int | None = None  # NFE-equivalents (from `budget_seconds` when that was given)
    steps: tuple = ()  # resolved pruning steps
    counts: tuple = ()  # candidates alive at each stage, then survivors
    micro_batch_size: int | None = None  # candidates per denoiser batch (a replay runs the same batches)
    reward_cost: int | float = 1  # NFE-equivalents charged per reward call
    budget_seconds: float | None = None
    seconds: dict = field(default_factory=dict)  # wall-clock seconds: denoiser, decode, reward and the total
    final_reward_cost: int | float | None = None  # per call on a final image, when it differs from reward_cost

    def summary(self):
        return {"strategy": self.strategy, "prompt_index": self.prompt_index, "prompt": self.prompt,
                "best_seed": self.best.seed, "best_scores": self.best.final_scores, "nfe": self.nfe,
                "reward_calls": self.reward_calls, "cost": self.cost, "budget": self.budget,
                "budget_seconds": self.budget_seconds, "reward_cost": self.reward_cost,
                **({} if self.final_reward_cost is None else {"final_reward_cost": self.final_reward_cost}),
                "pruning_steps": list(self.steps), "counts": list(self.counts),
                "micro_batch_size": self.micro_batch_size,
                **{f"{part}_seconds": round(value, 4) for part, value in self.seconds.items()}}


def check_candidate_count(count, *, source="`num_candidates`"):
    """`count` if a search can hold that many candidates, else a one-line ValueError naming where it came from."""
    if count > MAX_CANDIDATES:
        raise ValueError(f"{source} asks for more than {MAX_CANDIDATES} candidates per prompt, the most a search "
                         "holds (every candidate's noise and image are kept at once). Give a smaller budget or "
                         "number.")
    return count


def _failures(scores, where):
    """`{position: reason}` for the candidates some reward scored NaN or +/-inf."""
    finite = finite_mask(scores)
    return {p: ", ".join(f"{name} scored {float(s[p])} {where}" for name, s in scores.items()
                         if not math.isfinite(float(s[p])))
            for p in (~finite).nonzero().flatten().tolist()}


def _top(scores, count, excluded, what):
    """Positions of the `count` best candidates by rank sum; failed ones (non-finite or `excluded`) rank last,
    and a stage where every candidate failed raises."""
    combined = rank_sum(scores)
    if excluded:
        combined[list(excluded)] = float("-inf")
    if not torch.isfinite(combined).any():
        raise ValueError(f"every one of the {len(combined)} candidates failed {what}: a reward scored each NaN or "
                         "+/-inf (here or at an earlier stage), so none can be chosen; check the reward.")
    return top_positions(combined, count).tolist()


class Flight:
    """Candidates in flight as micro-batches of `Trajectories`; positions index the live candidates in order.

    The micro-batches are fixed when the flight starts (consecutive runs of `micro_batch_size` candidates,
    `MICRO_BATCH` by default) and shrink as candidates are pruned; a replay that starts the same candidates with the same micro-batch size and
    prunes the same positions runs the very same batches, so it reproduces the survivors exactly."""

    def __init__(self, sampler, candidates, micro_batch_size=None):
        size = micro_batch_size or MICRO_BATCH
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`micro_batch_size` must be a positive integer, got {micro_batch_size!r}.")
        self.sampler, self.size = sampler, size
        self.chunks = [sampler.start_candidates(candidates, range(i, min(i + size, len(candidates))))
                       for i in range(0, len(candidates), size)]

    def advance(self, until, preview_step=None):
        """Run every chunk to loop index `until`; returns the x0 previews at `preview_step`, concatenated."""
        previews = [chunk.run(until, {preview_step} if preview_step is not None else ()) for chunk in self.chunks]
        return torch.cat([p[preview_step] for p in previews]) if preview_step is not None else None

    def latents(self):
        return torch.cat([chunk.latents for chunk in self.chunks])

    def images(self, latents=None, output_type="pil"):
        """Decoded `latents` (default: the live candidates'), `DECODE_BATCH` at a time, so a search and its replay
        decode in the same pieces."""
        return decode_in_pieces(self.sampler, self.latents() if latents is None else latents, output_type)

    def keep(self, positions):
        start, chunks = 0, []
        for chunk in self.chunks:
            local = [p - start for p in positions if start <= p < start + len(chunk)]
            start += len(chunk)
            if local:
                chunk.keep(local)
                chunks.append(chunk)
        self.chunks = chunks


def plan_count(sampler, num_rewards, *, budget, steps=(), keep=(), reward_cost=1, formula="exact", stage_nfe=0,
               budget_seconds=None, timed=None, micro_batch_size=None, final_reward_cost=None):
    """N0, the candidates a budget buys: best-of-N when `steps` is empty, else TTSnap with that schedule;
    `stage_nfe` is what the noise stages spend on each candidate before sampling (NLG: 2 per iteration). A
    `budget_seconds` is planned through `timed` (a `TimedCost`): the largest N0 whose run, in the micro-batches of
    `micro_batch_size`, is predicted to fit it; a `budget` (NFE-equivalents) by `formula`."""
    if budget_seconds is not None:
        from .timing import plan_by_seconds, search_shape

        shape = functools.partial(search_shape, steps=steps, keep=keep, num_steps=sampler.num_steps,
                                  nfe_per_step=sampler.nfe_per_step, num_rewards=num_rewards,
                                  micro_batch_size=micro_batch_size or MICRO_BATCH, stage_nfe=stage_nfe)
        count = plan_by_seconds(timed, budget_seconds, shape, limit=MAX_CANDIDATES)
        return check_candidate_count(count, source=f"`budget_seconds` {budget_seconds:g}")
    cost = CostModel(sampler.num_steps, sampler.nfe_per_step, reward_cost, num_rewards, stage_nfe, final_reward_cost)
    count = plan_ttsnap(budget, cost, steps, keep, formula) if steps else plan_best_of_n(budget, cost)
    return check_candidate_count(count, source=f"`budget` {budget}")


def resolve_budget(sampler, rewards, preview_rewards, *, num_candidates, budget, budget_seconds, cost, reward_cost,
                   pruning, required=False):
    """`(budget, reward_cost, final_reward_cost, cost)` of a search: at most one (with `required`, exactly one) of
    `num_candidates`, `budget` (NFE-equivalents) and `budget_seconds` (converted to NFE-equivalents through `cost`, a
    `TimedCost`, measured on the sampler with the rewards that score most of the images when not given).
    `reward_cost` is `cost`'s when `cost` is given (its final images' ratio for a search that does not prune);
    `final_reward_cost` is the final images' ratio when `cost` timed them apart from the previews, else None (they
    cost `reward_cost` too)."""
    given = [f"`{n}`" for n, v in (("num_candidates", num_candidates), ("budget", budget),
                                   ("budget_seconds", budget_seconds)) if v is not None]
    if required and not given:
        raise ValueError("give one of `num_candidates`, `budget` (NFE-equivalents) and `budget_seconds`.")
    if len(given) > 1:
        raise ValueError(f"give one of `num_candidates`, `budget` (NFE-equivalents) and `budget_seconds`, not "
                         f"{' and '.join(given)}.")
    if cost is not None and reward_cost is not None:
        raise ValueError(f"give `reward_cost` ({reward_cost!r}) or `cost` (a TimedCost, which sets it), not both.")
    if budget_seconds is not None:
        from .timing import check_budget_seconds, measure_cost

        check_budget_seconds(budget_seconds)
        if cost is None:
            # the final images are judged by the clean rewards, timed apart when the previews are scored otherwise
            cost = (measure_cost(sampler, preview_rewards, final_rewards=rewards) if pruning
                    else measure_cost(sampler, rewards))
        budget = cost.budget_nfe(budget_seconds)
    final_reward_cost = None
    if cost is not None:  # a search that does not prune judges final images only
        reward_cost = cost.reward_cost if pruning else cost.final_reward_cost
        if pruning and cost.final_reward_cost != reward_cost:
            final_reward_cost = cost.final_reward_cost
    return budget, (1 if reward_cost is None else reward_cost), final_reward_cost, cost


def resolve_schedule(schedule, sampler, num_rewards):
    """`(steps, keep)` of a schedule on this sampler: `()` is best-of-N; `None` TTSnap's default."""
    if schedule is None:
        schedule = default_schedule(num_rewards, sampler.num_steps)
    if schedule == ():
        return (), ()
    if isinstance(schedule, PruningSchedule):
        return schedule.steps(sampler.num_steps, step_sigmas(sampler)), schedule.keep
    raise TypeError(f"`schedule` must be a PruningSchedule or () for best-of-N, got {type(schedule).__name__}.")


@torch.no_grad()
def search(sampler, prompt_index, rewards, *, seeds=0, num_candidates=None, budget=None, budget_seconds=None,
           candidates=None, schedule=None, preview_rewards=None, reward_cost=None, cost=None, formula="exact",
           micro_batch_size=None, strategy=None, output_type="pil"):
    """TTSnap pruning over candidates for one prompt (best-of-N when `schedule` is `()`).

    Args:
        sampler (`Sampler`): prompts encoded once, with the sampling settings.
        prompt_index (`int`): which of `sampler.prompts`.
        rewards: clean reward or `{name: reward}`; judges the survivors' final images (several: by rank sum).
        seeds: first seed `S` (candidates use S, S+1, ...) or an explicit list of seeds, used in order.
        num_candidates (`int`): N0, or give `budget` (integer NFE-equivalents) or `budget_seconds` to choose N0.
        budget_seconds (`float`): the budget in seconds, converted to NFE-equivalents through `cost` (measured with
            `noisekit.search.timing.measure_cost` on this sampler when not given) before N0 is planned.
        candidates (`Candidates`, *optional*): the noises to search, as the earlier stages made them (library,
            golden noise, NLG); their stage NFE is charged to the budget. Replaces `seeds`.
        schedule (`PruningSchedule`, *optional*): defaults to TTSnap's default for the number of rewards,
            scaled to `sampler.num_steps`; `()` means no pruning (best-of-N).
        preview_rewards: `{name: reward}` scoring the x0 previews with their sigma (same names as `rewards`);
            defaults to the clean rewards on previews (`ignore_sigma`), TTSnap's un-tuned baseline.
        reward_cost (`int` or `float`): NFE-equivalents charged per reward call (default 1, the assumed constant;
            see `noisekit.search.budget`), on previews and final images alike; a `cost` that timed the final
            images apart charges them their own ratio.
        cost (`TimedCost`, *optional*): measured seconds per NFE and per reward call; charges its `reward_cost`
            (the measured ratio, or the fixed constant of its `"fixed"` model), and its `final_reward_cost` for
            the final images' calls when it timed them apart; converts `budget_seconds`.
        formula (`str`): how a `budget` becomes N0: `"exact"` (never overspends), `"expected"` or `"official"`.
        micro_batch_size (`int`, *optional*): candidates per denoiser batch (default `MICRO_BATCH`, 32).
        output_type (`str`): how survivors' final images are returned besides PIL (`best.output`).
    Returns:
        `SearchResult`; its `cost` is the realised cost, never above `budget` with `formula="exact"`; its `seconds`
        the wall-clock seconds of the denoiser, the VAE decode, the rewards and the whole call.

    Examples:
        >>> sampler = Sampler(pipe, ["a red circle"], num_inference_steps=20, guidance_scale=5.0)
        >>> result = search(sampler, 0, {"shapes-judge": load_reward("shapes-judge")}, seeds=0, budget=800)
        >>> result.best.seed, result.best.image.save("best.png"), result.cost
    """
    if num_candidates is None and budget is None and budget_seconds is None and candidates is None:
        raise ValueError("give one of `num_candidates`, `budget` (NFE-equivalents) and `budget_seconds`.")
    if num_candidates is not None and (isinstance(num_candidates, bool) or not isinstance(num_candidates, int)
                                       or num_candidates < 1):
        raise ValueError(f"`num_candidates` must be a positive integer, got {num_candidates!r}.")
    if num_candidates is not None:
        check_candidate_count(num_candidates)
    rewards = as_reward_dict(rewards)
    check_final_rewards(rewards)
    if preview_rewards is None:
        preview_rewards = {name: preview_view(r) for name, r in rewards.items()}
    elif set(as_reward_dict(preview_rewards)) != set(rewards):
        raise ValueError(f"`preview_rewards` must name the same rewards as `rewards` {sorted(rewards)}, got "
                         f"{sorted(as_reward_dict(preview_rewards))}.")
    sigmas = step_sigmas(sampler)
    steps, keep = resolve_schedule(schedule, sampler, len(rewards))
    budget, reward_cost, final_reward_cost, timed = resolve_budget(
        sampler, rewards, preview_rewards, num_candidates=num_candidates, budget=budget, budget_seconds=budget_seconds,
        cost=cost, reward_cost=reward_cost, pruning=bool(steps))
    began, clock_before = time.perf_counter(), sampler.clock.read()  # a measurement above is no part of the search
    stage_nfe = candidates.nfe_per_candidate if candidates is not None else 0
    cost = CostModel(sampler.num_steps, sampler.nfe_per_step, reward_cost, len(rewards), stage_nfe, final_reward_cost)
    if budget is not None:
        num_candidates = plan_count(sampler, len(rewards), budget=budget, steps=steps, keep=keep,
                                    reward_cost=reward_cost, formula=formula, stage_nfe=stage_nfe,
                                    budget_seconds=budget_seconds, timed=timed, micro_batch_size=micro_batch_size,
                                    final_reward_cost=final_reward_cost)
    if candidates is None:
        candidates = from_seeds(sampler.shape, seed_list(seeds, num_candidates), prompt_index)
    elif num_candidates is not None:
        if len(candidates) < num_candidates:
            raise ValueError(f"`candidates` must hold at least the {num_candidates} candidates to run, got "
                             f"{len(candidates)}.")
        candidates = candidates.select(range(num_candidates))
    if set(candidates.prompt_index) != {prompt_index}:
        raise ValueError(f"`candidates` must all belong to prompt {prompt_index}, got "
                         f"{sorted(set(candidates.prompt_index))}.")
    prompt = sampler.prompts[prompt_index]
    nfe_before = sampler.nfe
    reward_calls = 0

    flight = Flight(sampler, candidates, micro_batch_size)
    records = [Candidate(recipe.seed, prompt_index, prompt, recipe.to_dict(), nfe=stage_nfe)
               for recipe in candidates.recipes]
    alive, done, counts = list(range(len(records))), 0, [len(records)]
    for step, alpha in zip(steps, keep):
        # 1. run the live candidates to step s_k and score their x0 previews at sigma_{s_k}
        stage_began = time.perf_counter()
        x0 = flight.advance(step + 1, preview_step=step)
        # latent preview rewards read x0 as is: no VAE decode unless some preview reward reads images
        scores, images = score_previews(preview_rewards, x0, prompt, sigma=sigmas[step], decode=flight.images,
                                        clock=sampler.clock)
        reward_calls += len(alive) * len(rewards)
        # 2. keep the top n_k = max(1, round(n_{k-1} alpha_k)) by the (rank-summed) preview scores
        failures = _failures(scores, f"at step {step}")
        failed = {p for p, i in enumerate(alive) if records[i].failed} | set(failures)
        kept = _top(scores, max(1, round(len(alive) * alpha)), failed, f"at the step-{step} preview")
        share = (time.perf_counter() - stage_began) / len(alive)
        for position, index in enumerate(alive):
            candidate = records[index]
            candidate.stages.append({"step": step, "sigma": sigmas[step], "kept": position in kept,
                                     "scores": {name: float(s[position]) for name, s in scores.items()}})
            candidate.nfe += (step + 1 - done) * cost.nfe_per_step
            candidate.reward_calls += len(rewards)
            candidate.seconds += share
            if position in failures and not candidate.failed:
                candidate.failed = failures[position]
            if position not in kept:
                candidate.pruned_at = step
                if images is None:
                    candidate.preview = x0[position : position + 1].cpu()
                else:
                    candidate.image = images[position]
        flight.keep(kept)
        alive, done = [alive[p] for p in kept], step + 1
        counts.append(len(alive))

    # 3. denoise the survivors fully; the clean rewards choose among them
    stage_began = time.perf_counter()
    flight.advance(sampler.num_steps)
    latents = flight.latents()
    images = flight.images(latents)
    scores = _score(rewards, images, prompt, clock=sampler.clock)
    reward_calls += len(alive) * len(rewards)
    share = (time.perf_counter() - stage_began) / len(alive)
    failures = _failures(scores, "on the final image")
    for position, index in enumerate(alive):
        candidate = records[index]
        candidate.final_scores = {name: float(s[position]) for name, s in scores.items()}
        candidate.failed = candidate.failed or failures.get(position)
        candidate.image, candidate.latents = images[position], latents[position : position + 1].cpu()
        candidate.nfe += (sampler.num_steps - done) * cost.nfe_per_step
        candidate.reward_calls += len(rewards)
        candidate.seconds += share
    excluded = {p for p, i in enumerate(alive) if records[i].failed}
    best = records[alive[_top(scores, 1, excluded, "on the final image")[0]]]
    best.best = True
    nfe = sampler.nfe - nfe_before + candidates.nfe
    seconds = {**sampler.clock.since(clock_before), "search": time.perf_counter() - began}
    return SearchResult(strategy or ("ttsnap" if steps else "best_of_n"), prompt_index, prompt, records, best,
                        nfe, reward_calls, cost.total(nfe, reward_calls, len(alive) * len(rewards)), budget,
                        tuple(steps), tuple(counts),
                        flight.size,  # the size it ran with, so a replay runs the same batches
                        reward_cost, budget_seconds, seconds, final_reward_cost)


def ttsnap(sampler, prompt_index, rewards, **kwargs):
    """TTSnap pruning (see `search`); `schedule` defaults to the paper's, scaled to the step count."""
    return search(sampler, prompt_index, rewards, **kwargs)


def best_of_n(sampler, prompt_index, rewards, *, seeds=0, num_candidates=None, budget=None, budget_seconds=None,
              previous=None, reward_cost=None, cost=None, micro_batch_size=None):
    """Best-of-N over seeds, anytime: candidates of `previous` (an earlier `SearchResult` of the same sampler,
    prompt and rewards) are reused, so raising N or the budget only runs the new seeds.

    The combined choice (rank sum for several rewards) is recomputed over all N candidates. `cost` counts only
    what this call spent; `previous.cost + result.cost` is the total, equal to a fresh run's. `budget_seconds`,
    `reward_cost` and `cost` (a `TimedCost`) as in `search`; `seconds` is what this call spent.

    Examples:
        >>> small = best_of_n(sampler, 0, reward, seeds=0, num_candidates=4)
        >>> large = best_of_n(sampler, 0, reward, seeds=0, num_candidates=16, previous=small)  # 12 new seeds
    """
    rewards = as_reward_dict(rewards)
    budget, reward_cost, _, timed = resolve_budget(sampler, rewards, None, num_candidates=num_candidates,
                                                   budget=budget, budget_seconds=budget_seconds, cost=cost,
                                                   reward_cost=reward_cost, pruning=False, required=True)
    began, clock_before = time.perf_counter(), sampler.clock.read()
    cost = CostModel.for_sampler(sampler, reward_cost, len(rewards))
    count = check_candidate_count(num_candidates) if budget is None else plan_count(
        sampler, len(rewards), budget=budget, reward_cost=reward_cost, budget_seconds=budget_seconds, timed=timed,
        micro_batch_size=micro_batch_size)
    count = check_candidate_count(count, source=f"`budget` {budget}")
    seeds = seed_list(seeds, count)
    old = {c.seed: c for c in previous.candidates} if previous is not None else {}
    if previous is not None and previous.prompt_index != prompt_index:
        raise ValueError(f"`previous` searched prompt {previous.prompt_index}, not `prompt_index` {prompt_index}.")
    new = [s for s in seeds if s not in old]
    nfe = reward_calls = 0
    fresh = {}
    if new:
        result = search(sampler, prompt_index, rewards, seeds=new, num_candidates=len(new), schedule=(),
                        reward_cost=reward_cost, micro_batch_size=micro_batch_size)
        fresh = {c.seed: c for c in result.candidates}
        nfe, reward_calls = result.nfe, result.reward_calls
    candidates = [dataclasses.replace(old[s], best=False, stages=list(old[s].stages)) if s in old else fresh[s]
                  for s in seeds]
    for candidate in candidates:
        candidate.best = False
    scores = {name: torch.tensor([c.final_scores[name] for c in candidates]) for name in rewards}
    excluded = {p for p, c in enumerate(candidates) if c.failed}
    best = candidates[_top(scores, 1, excluded, "on the final image")[0]]
    best.best = True
    seconds = {**sampler.clock.since(clock_before), "search": time.perf_counter() - began}
    return SearchResult("best_of_n", prompt_index, sampler.prompts[prompt_index], candidates, best, nfe,
                        reward_calls, cost.total(nfe, reward_calls), budget, (), (len(candidates),),
                        reward_cost=reward_cost, budget_seconds=budget_seconds, seconds=seconds)
