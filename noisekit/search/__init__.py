"""Seed search: strategies (best-of-N, TTSnap pruning), budgets and schedule calibration."""

from .budget import CostModel, PruningSchedule, default_schedule, plan_best_of_n, plan_ttsnap
from .strategies import Candidate, SearchResult, best_of_n, rank_sum, search, step_sigmas, top_positions, ttsnap

__all__ = ["Candidate", "CostModel", "PruningSchedule", "SearchResult", "best_of_n", "default_schedule",
           "plan_best_of_n", "plan_ttsnap", "rank_sum", "search", "step_sigmas", "top_positions", "ttsnap"]
