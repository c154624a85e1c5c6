"""Reads a run's `results.json` (from `generate` or `search`) into one shape: prompts, each with its candidates.

Only the keys the page shows are read; any other key is kept under `extra` and shown as it is, so the format
can gain fields without breaking the page.
"""

import json
from pathlib import Path

# Keys of a candidate record shown in their own place on the page; everything else goes to `extra`.
_CANDIDATE_KEYS = {"prompt_index", "prompt", "seed", "recipe", "stages", "final_scores", "scores", "pruned_at",
                   "nfe", "reward_calls", "seconds", "best", "file", "best_file"}
_PROMPT_KEYS = {"prompt_index", "prompt", "best_seed", "best_scores", "best_file"}


def load_results(output_dir):
    """The parsed `results.json` of `output_dir`; a clear error when it is missing or not a noisekit result."""
    path = Path(output_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {str(output_dir)!r}: run noisekit generate or search into it.")
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results, dict) or not ("images" in results or "candidates" in results):
        raise ValueError(f"{str(path)!r} is not a noisekit result: it has neither 'images' nor 'candidates'.")
    return results


def run_kind(results):
    return "search" if "candidates" in results else "generate"


def prompt_views(results):
    """One dict per prompt, in prompt order: index, text, summary (search only), candidates."""
    records = results.get("candidates") if run_kind(results) == "search" else results.get("images")
    summaries = {s.get("prompt_index"): s for s in results.get("prompts") or []}
    by_prompt = {}
    for record in records or []:
        by_prompt.setdefault(record.get("prompt_index"), []).append(_candidate_view(record))
    indices = sorted(set(by_prompt) | set(summaries), key=_index_order)
    return [_prompt_view(i, summaries.get(i, {}), by_prompt.get(i, []), records or []) for i in indices]


def reward_names(prompts):
    """The reward names that score candidates, in first-seen order."""
    names = {}
    for prompt in prompts:
        for candidate in prompt["candidates"]:
            names.update(dict.fromkeys(candidate["scores"]))
    return list(names)


def _prompt_view(index, summary, candidates, records):
    text = summary.get("prompt") or next((r.get("prompt") for r in records if r.get("prompt_index") == index), "")
    best_seed = summary.get("best_seed")
    if best_seed is not None and not any(c["best"] for c in candidates):
        # Older or partial results mark the pick only in the prompt summary.
        for c in candidates:
            c["best"] = c["seed"] == best_seed
    stats = {k: v for k, v in summary.items() if k not in _PROMPT_KEYS}
    return {"index": index, "prompt": text or "", "best_seed": best_seed, "best_file": summary.get("best_file"),
            "stats": stats, "candidates": sorted(candidates, key=_candidate_order)}


def _candidate_view(record):
    scores, score_source = _scores(record)
    cost = {k: record[k] for k in ("nfe", "reward_calls", "seconds") if record.get(k) is not None}
    return {"seed": record.get("seed"), "file": record.get("file"), "best": bool(record.get("best")),
            "scores": scores, "score_source": score_source, "pruned_at": record.get("pruned_at"),
            "stages": record.get("stages") or [], "recipe": record.get("recipe"), "cost": cost,
            "extra": {k: v for k, v in record.items() if k not in _CANDIDATE_KEYS}}


def _scores(record):
    # A candidate that ran to the end has final scores; a pruned one is known by its last preview's scores,
    # which were taken at a noise level and are not comparable with final scores.
    final = record.get("final_scores") or record.get("scores")
    if final:
        return _numeric(final), "final"
    scored = [s for s in record.get("stages") or [] if s.get("scores")]
    if scored:
        last = scored[-1]
        return _numeric(last["scores"]), f"x0 preview at step {last.get('step', '?')}"
    return {}, None


def _numeric(scores):
    return {str(k): float(v) for k, v in scores.items() if isinstance(v, (int, float))}


def _candidate_order(candidate):
    # The pick first, then finished candidates, then pruned ones; seeds in order within each group.
    finished = candidate["score_source"] in ("final", None)
    return (not candidate["best"], not finished, _index_order(candidate["seed"]))


def _index_order(value):
    return (value is None, value if isinstance(value, int) else 0, str(value))
