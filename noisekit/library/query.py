"""Scoring and selecting library entries: text, attribute targets, combinations, exclusion, sampling.

Modes for a query with text (or a `clip` exemplar) *and* attributes:

- `"rerank"` (the paper's progressive re-ranking, Sec. 4.4): the `rerank_k` entries of highest CLIP cosine,
  re-ordered by the sum of the attribute scores (ties keep the semantic order);
- `"weighted"`: every entry scored by `w_text * z(cosine) + sum_a w_a * score_a`, where z standardises the cosine
  over the library, so all terms are in standard deviations.

Selection is the top `top_k` (ties by lower seed), or with `temperature > 0` a seeded draw of `top_k` entries
without replacement from the best `pool` with probabilities softmax(score / temperature) (Gumbel top-k).
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .index import ExactTable
from .targets import resolve_bound, resolve_range

MODES = ("rerank", "weighted")
CHUNK_LIMIT = 65536  # entries whose cosine a weighted query reads one by one before it scans the whole table


@dataclass
class QueryResult:
    """Seeds in rank order with their scores, per-term scores and replayable recipes."""

    seeds: list
    scores: list
    recipes: list
    terms: dict = field(default_factory=dict)  # term name -> one score per seed
    rows: list = field(default_factory=list)

    def to_dict(self):
        return {"seeds": self.seeds, "scores": self.scores, "terms": self.terms,
                "recipes": [r.to_dict() for r in self.recipes]}


def target_score(library, target, rows=None):
    """Higher-is-better float32 score of `target` for library rows `rows` (all when `None`)."""
    if target.kind == "embedding":
        return library.embedding(target.extractor).scores(target.value, rows)
    columns = list(target.columns)
    by_column = library.column_major(target.extractor)  # (D, N): one attribute is a contiguous row
    values = [by_column[c] if rows is None else by_column[c][rows] for c in columns]
    std = library.column_std(target.extractor)[columns]
    if target.kind in ("color", "exemplar"):
        squared = torch.zeros_like(values[0])
        scale = std if target.kind == "exemplar" else torch.ones_like(std)
        for position, x in enumerate(values):
            squared += ((x - target.value[position]) / scale[position]) ** 2
        if target.kind == "color":  # Delta E 1976 over the RMS spread of L*a*b*
            return -squared.sqrt() / std.pow(2).sum().sqrt()
        return -squared.sqrt() / len(columns) ** 0.5
    total = torch.zeros_like(values[0])
    for position, column in enumerate(columns):
        x, ordered = values[position], library.sorted_column(target.extractor, column)
        if target.kind == "value":
            distance = (x - resolve_bound(target.value, ordered)).abs()
        else:
            low, high = resolve_range(target, ordered)
            distance = torch.zeros_like(x)
            if low is not None:
                distance += (low - x).clamp(min=0)
            if high is not None:
                distance += (x - high).clamp(min=0)
        total -= distance / std[position].clamp(min=1e-12)
    return total / len(columns)


def select_top(scores, k):
    """Row indices of the `k` highest finite scores, best first; equal scores go to the lower row (= lower seed).
    One `topk` pass; the full array is scanned again only when equal scores straddle the cut."""
    values, rows = torch.topk(scores, min(k + 1, len(scores)))
    finite = torch.isfinite(values)
    values, rows = values[finite], rows[finite]
    if len(values) > k and values[k] == values[k - 1]:  # ties across the cut: take the lowest rows among them
        threshold = values[k - 1]
        above = (scores > threshold).nonzero().flatten()
        rows = torch.cat([above, (scores == threshold).nonzero().flatten()[:k - len(above)]])
    rows = rows[:k]
    order = np.lexsort((rows.numpy(), -scores[rows].double().numpy()))
    return rows[torch.from_numpy(order)]


def sample_rows(scores, k, temperature, sample_seed, pool):
    """`k` rows drawn without replacement from the best `pool`, P ~ softmax(score / temperature)."""
    candidates = select_top(scores, max(pool, k))
    if len(candidates) <= k:
        return candidates
    rng = np.random.default_rng(sample_seed)
    logits = scores[candidates].double().numpy() / temperature
    keys = logits + rng.gumbel(size=len(logits))
    return candidates[torch.from_numpy(np.argsort(-keys, kind="stable")[:k].copy())]


def standardise(values):
    """`(values - mean) / std` over the finite values (excluded rows are -inf)."""
    finite = values[torch.isfinite(values)] if torch.isinf(values).any() else values
    std, mean = torch.std_mean(finite) if len(finite) > 1 else (torch.tensor(0.0), finite.mean())
    return (values - mean) / (std if std > 0 else 1.0)


def check_options(semantic, targets, top_k, mode, rerank_k, weights, temperature, nprobe):
    if semantic is None and not targets:
        raise ValueError("a query needs `text` (or a clip exemplar) or at least one attribute.")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    for name, value in (("top_k", top_k), ("rerank_k", rerank_k), ("nprobe", 1 if nprobe is None else nprobe)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"`temperature` must be a finite number >= 0, got {temperature!r}.")
    weights = dict(weights or {})
    unknown = set(weights) - {"text"} - {t.name for t in targets}
    if unknown:
        raise ValueError(f"`weights` may name 'text' and the query's attributes, got {sorted(unknown)}.")
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`weights` must be finite numbers, got {name}={value!r}.")
    return weights


def semantic_candidates(table, semantic, depth, blocked, nprobe):
    """`(rows, scores)` of the `depth` best entries by cosine, best first (ties: lower row), `blocked` left out.
    An exact table is scanned whole; an index scans its probed lists."""
    if isinstance(table, ExactTable):
        scores = table.scores(semantic)
        if len(blocked):
            scores[blocked] = -torch.inf
        rows = select_top(scores, depth)
        return rows, scores[rows]
    rows, scores = table.search(semantic, depth, blocked=blocked, nprobe=nprobe)  # rows ascending
    best = select_top(scores, depth)
    return rows[best], scores[best]


def weighted_from_index(library, semantic, targets, weights, top_k, blocked, temperature, sample_seed, pool,
                        nprobe):
    """Weighted mode without a cosine per entry: the cosine's mean and spread come from the index's moments, the
    best cosines from its lists. An entry outside those candidates scores at most its attributes plus the lowest
    candidate cosine's term; only entries whose bound can still reach the top are scored exactly, so the answer is
    the exact scan's whenever the lists hold the best cosines (the whole table is scanned if too many can)."""
    index, text_weight = library.embedding("clip"), weights.get("text", 1.0)
    terms = {t.name: weights.get(t.name, 1.0) * target_score(library, t) for t in targets}
    attributes = sum(terms.values())
    if len(blocked):
        attributes[blocked] = -torch.inf
    mean, std = index.cosine_stats(semantic)
    std = std if std > 0 else 1.0
    want = max(pool or max(10 * top_k, 100), top_k) if temperature > 0 else top_k
    rows, cosines = index.search(semantic, max(4 * want, 256), blocked=blocked, nprobe=nprobe)
    exact = attributes[rows] + text_weight * (cosines - mean) / std
    floor = cosines.min() if len(cosines) else torch.tensor(-1.0)
    bound = attributes + text_weight * (floor - mean) / std
    bound[rows] = -torch.inf
    cut = torch.topk(exact, min(want, len(exact))).values[-1] if len(exact) else torch.tensor(-torch.inf)
    extra = (bound >= cut).nonzero().flatten()
    if len(extra) > CHUNK_LIMIT:  # the attributes decide: score every entry
        rows, cosines = torch.arange(len(attributes)), index.scores(semantic)
    elif len(extra):
        rows = torch.cat([rows, extra])
        cosines = torch.cat([cosines, index.scores(semantic, extra)])
    order = torch.argsort(rows)  # ties go to the lower row, as in the exact scan
    rows, cosines = rows[order], cosines[order]
    text = text_weight * (cosines - mean) / std
    scores = attributes[rows] + text
    pool = pool or max(10 * top_k, 100)
    keep = sample_rows(scores, top_k, temperature, sample_seed, pool) if temperature > 0 else select_top(scores, top_k)
    chosen = rows[keep]
    return chosen, scores[keep], {"text": text[keep], **{name: values[chosen] for name, values in terms.items()}}


def run_query(library, semantic, targets, top_k=1, mode="rerank", rerank_k=100, weights=None, exclude=(),
              temperature=0.0, sample_seed=None, pool=None, *, nprobe=None):
    """Rank `library` for a semantic vector and attribute targets; returns `(rows, scores, terms)`.

    Args:
        semantic (`torch.Tensor`, *optional*): a normalised CLIP vector (text or exemplar) `(D,)`.
        targets (`list[Target]`): attribute targets.
        weights (`dict`): term weights by name (`"text"` for the semantic term; 1 by default).
        exclude: seeds never to return.
        nprobe (`int`, *optional*): lists an indexed embedding scans (its recorded default when `None`).
    """
    weights = check_options(semantic, targets, top_k, mode, rerank_k, weights, temperature, nprobe)
    blocked = library.rows_of(exclude)
    text_weight = weights.get("text", 1.0)
    if semantic is not None and ((not targets and text_weight > 0) or (targets and mode == "rerank")):
        # only the best cosines matter: an index need not scan everything
        depth = rerank_k if targets else (max(pool or max(10 * top_k, 100), top_k) if temperature > 0 else top_k)
        rows, text = semantic_candidates(library.embedding("clip"), semantic, depth, blocked, nprobe)
        if not targets:
            text = text_weight * text
            keep = sample_rows(text, top_k, temperature, sample_seed, depth) if temperature > 0 \
                else select_top(text, top_k)
            return rows[keep], text[keep], {"text": text[keep]}
        terms = {"text": text}
        for target in targets:
            terms[target.name] = weights.get(target.name, 1.0) * target_score(library, target, rows)
        total = sum(terms[t.name] for t in targets)
        order = torch.from_numpy(np.lexsort((-terms["text"].double().numpy(), -total.double().numpy())))
        keep = sample_rows(total, top_k, temperature, sample_seed, pool or len(rows)) if temperature > 0 \
            else order[:top_k]
        return rows[keep], total[keep], {name: values[keep] for name, values in terms.items()}
    if semantic is not None and targets and text_weight >= 0 and not isinstance(library.embedding("clip"),
                                                                                 ExactTable):
        return weighted_from_index(library, semantic, targets, weights, top_k, blocked, temperature, sample_seed,
                                   pool, nprobe)
    terms = {}
    if semantic is not None:  # weighted: the cosine is standardised over the whole library, so scan it all
        terms["text"] = library.embedding("clip").scores(semantic)
    for target in targets:
        terms[target.name] = weights.get(target.name, 1.0) * target_score(library, target)
    if "text" in terms:
        terms["text"] = weights.get("text", 1.0) * (standardise(terms["text"]) if targets else terms["text"])
    scores = terms[next(iter(terms))] if len(terms) == 1 else sum(terms.values())
    if len(blocked):
        scores[blocked] = -torch.inf
    pool = pool or max(10 * top_k, 100)
    rows = sample_rows(scores, top_k, temperature, sample_seed, pool) if temperature > 0 else select_top(scores, top_k)
    return rows, scores[rows], {name: values[rows] for name, values in terms.items()}
