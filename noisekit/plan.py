"""A noise plan: the stages a run's candidates flow through, always library -> golden noise -> NLG -> sample | search.

One definition serves the Python API, the CLI and the `noisekit.pipelines` classes. A run encodes its prompts once
(`Sampler`); the candidates of each prompt are made once (from seeds, or from a noise library's choice of seeds)
and each stage takes them with that conditioning and returns them (`noisekit.core.candidates.Candidates`). With a
search stage, the candidates a budget buys are counted with the noise stages' NFE (NLG: 2 per iteration each).
"""

import dataclasses
from dataclasses import dataclass

from .core.candidates import from_recipes, from_seeds, seed_list
from .core.sampler import Sampler
from .transforms.golden import golden_stage
from .transforms.nlg import NLG_DEFAULTS, nfe_per_candidate, nlg_stage


def _stage(stage_class, value, name):
    """A typed stage from a dict of its fields (or the stage itself, or `None`)."""
    if value is None or isinstance(value, stage_class):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a {stage_class.__name__}, a dict of its fields or None, got "
                         f"{type(value).__name__}.")
    fields = {f.name for f in dataclasses.fields(stage_class)}
    unknown = set(value) - fields
    if unknown:
        raise ValueError(f"`{name}` has no fields {sorted(unknown)}; allowed: {sorted(fields)}.")
    return stage_class(**value)


@dataclass(frozen=True)
class LibraryStage:
    """NoiseQuery: the candidates' seeds come from a noise library. `text` defaults to the prompt (when the
    library has CLIP features); `attributes` are `NAME=VALUE` targets; the rest as `NoiseLibrary.query`."""

    path: str
    attributes: tuple = ()
    text: str | None = None
    exclude: tuple = ()
    temperature: float = 0.0
    sample_seed: int | None = None
    mode: str = "rerank"
    force: bool = False  # use a library built with another model (its posteriors belong to that model)


@dataclass(frozen=True)
class NLGStage:
    """Noise Level Guidance with the paper's defaults (see `noisekit.transforms.nlg`)."""

    num_iterations: int = NLG_DEFAULTS["num_iterations"]
    step_size: float = NLG_DEFAULTS["step_size"]
    clip: float = NLG_DEFAULTS["clip"]
    relative_clip: float | None = NLG_DEFAULTS["relative_clip"]
    noise_variance: float = NLG_DEFAULTS["noise_variance"]
    renormalize: bool = NLG_DEFAULTS["renormalize"]
    timestep: object = NLG_DEFAULTS["timestep"]
    official: bool = NLG_DEFAULTS["official"]  # the official script's deviations (see noisekit.transforms.nlg)

    def params(self):
        return dataclasses.asdict(self)


STRATEGIES = ("best_of_n", "ttsnap")


@dataclass(frozen=True)
class SearchStage:
    """Seed search: the candidates of each prompt are searched and the best one is returned.

    `rewards` is a reward or `{name: reward}`; give `num_candidates`, `budget` (integer NFE-equivalents, the noise
    stages' NFE included) or `budget_seconds` (converted to NFE-equivalents through `cost`, a
    `noisekit.search.timing.TimedCost`, measured per prompt when not given); `schedule` is a `PruningSchedule`
    (TTSnap's default when `None`). `reward_cost` (default 1) or `cost` sets the NFE-equivalents of a reward call."""

    rewards: object
    strategy: str = "best_of_n"
    num_candidates: int | None = None
    budget: int | None = None
    schedule: object = None
    preview_rewards: object = None
    reward_cost: int | float | None = None
    formula: str = "exact"
    micro_batch_size: int | None = None
    budget_seconds: float | None = None
    cost: object = None  # TimedCost

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"`search.strategy` must be one of {STRATEGIES}, got {self.strategy!r}.")

    @property
    def pruning(self):
        return () if self.strategy == "best_of_n" else self.schedule


@dataclass
class NoisePlan:
    """Which stages run. Each stage is a typed stage or a dict of its fields.

    Args:
        library (`LibraryStage`): draw the candidates' seeds from a noise library (NoiseQuery).
        npnet: a loaded `NoisePromptNet` (golden noise), `True` for a pipeline's own `npnet` component, or `None`.
        npnet_resize (`bool`): allow latents of another size than the NPNet's (Gaussian-preserving resize).
        nlg (`NLGStage`): refine each noise with Noise Level Guidance (`{}` for the paper's defaults).
        search (`SearchStage`): search the candidates with rewards; the best one per prompt is the result.
    """

    library: LibraryStage | dict | None = None
    npnet: object = None
    npnet_resize: bool = False
    nlg: NLGStage | dict | None = None
    search: SearchStage | dict | None = None

    def __post_init__(self):
        self.library = _stage(LibraryStage, self.library, "library")
        self.nlg = _stage(NLGStage, self.nlg, "nlg")
        self.search = _stage(SearchStage, self.search, "search")

    def stage_nfe(self):
        """Denoiser evaluations the noise stages spend on each candidate before sampling."""
        return nfe_per_candidate(self.nlg.params()) if self.nlg is not None else 0


def replace_stage(plan, **stages):
    """A copy of `plan` with some stages replaced (`search=SearchStage(...)`, `nlg=None`, ...)."""
    return dataclasses.replace(plan, **stages)


def run_sampler(pipe, prompts, plan, **settings):
    """The run's `Sampler` for `plan`: prompts encoded once, with unconditional rows when NLG needs them."""
    return Sampler(pipe, prompts, with_uncond=plan.nlg is not None, **settings)


def choose(sampler, plan, prompt_index, seeds):
    """The candidates of prompt `prompt_index`: the canonical noise of `seeds`, or as many seeds chosen by the
    plan's noise library (the caller's seeds then only say how many)."""
    seeds = list(seeds)
    if plan.library is None:
        return from_seeds(sampler.shape, seeds, prompt_index)
    from .library import library_noise

    stage = plan.library
    noise, recipes, _ = library_noise(sampler.pipe, stage.path, stage.attributes, text=stage.text,
                                      seeds_needed=len(seeds), exclude=stage.exclude, temperature=stage.temperature,
                                      sample_seed=stage.sample_seed, mode=stage.mode, height=sampler.height,
                                      width=sampler.width, prompt=sampler.prompts[prompt_index], force=stage.force)
    return from_recipes(recipes, prompt_index, noise)


def transform(sampler, plan, candidates):
    """The plan's transforms in order: golden noise, then NLG."""
    if plan.npnet is not None:
        candidates = golden_stage(sampler, candidates, plan.npnet, resize=plan.npnet_resize)
    if plan.nlg is not None:
        candidates = nlg_stage(sampler, candidates, **plan.nlg.params())
    return candidates


def prepare(sampler, plan, prompt_index, seeds):
    """Candidates of one prompt after every noise stage of the plan."""
    return transform(sampler, plan, choose(sampler, plan, prompt_index, seeds))


def search_prompt(sampler, plan, prompt_index, seeds, output_type="pil"):
    """The search stage on one prompt: the candidates a budget (or `num_candidates`) buys, made and transformed
    once, then searched. Returns the `SearchResult`."""
    from .search.strategies import (as_reward_dict, check_candidate_count, plan_count, preview_view, resolve_budget,
                                    resolve_schedule, search)

    stage = plan.search
    rewards = as_reward_dict(stage.rewards)
    steps, keep = resolve_schedule(stage.pruning, sampler, len(rewards))
    previews = stage.preview_rewards or {name: preview_view(r) for name, r in rewards.items()}
    # the seconds become NFE-equivalents once, here, so that the search below plans from the same measurement
    budget, reward_cost, final_reward_cost, cost = resolve_budget(
        sampler, rewards, previews, num_candidates=stage.num_candidates, budget=stage.budget,
        budget_seconds=stage.budget_seconds, cost=stage.cost, reward_cost=stage.reward_cost, pruning=bool(steps))
    count = stage.num_candidates
    if budget is not None:
        count = plan_count(sampler, len(rewards), budget=budget, steps=steps, keep=keep, reward_cost=reward_cost,
                           formula=stage.formula, stage_nfe=plan.stage_nfe(), budget_seconds=stage.budget_seconds,
                           timed=cost, final_reward_cost=final_reward_cost)
    if count is None:
        raise ValueError("`search` needs `num_candidates`, `budget` or `budget_seconds`.")
    check_candidate_count(count)  # before a list of that many seeds is made
    candidates = prepare(sampler, plan, prompt_index, seed_list(seeds, count))
    return search(sampler, prompt_index, rewards, candidates=candidates, budget=stage.budget,
                  budget_seconds=stage.budget_seconds, schedule=stage.pruning, preview_rewards=stage.preview_rewards,
                  reward_cost=None if cost is not None else reward_cost, cost=cost, formula=stage.formula,
                  micro_batch_size=stage.micro_batch_size, strategy=stage.strategy, output_type=output_type)
