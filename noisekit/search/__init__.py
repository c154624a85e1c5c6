"""Seed search: strategies (best-of-N, TTSnap pruning), budgets, measured costs and schedule calibration."""

from .budget import CostModel, PruningSchedule, default_schedule, plan_best_of_n, plan_ttsnap
from .strategies import Candidate, SearchResult, best_of_n, rank_sum, search, step_sigmas, top_positions, ttsnap
from .timing import TimedCost, measure_cost

__all__ = ["Candidate", "CostModel", "PruningSchedule", "SearchResult", "TimedCost", "best_of_n", "default_schedule",
           "measure_cost", "plan_best_of_n", "plan_ttsnap", "rank_sum", "search", "step_sigmas", "top_positions",
           "ttsnap"]
