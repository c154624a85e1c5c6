"""Evaluation prompt sets by name: `load_prompt_set("geneval:counting")`.

Each shipped set is one JSON-lines file in this folder, one record per prompt: `prompt`, `category`, and the
source's own fields (GenEval's object metadata, the source row index). `SOURCES.md` gives each file's source
and licence. A name is `SET` or `SET:CATEGORY`; categories are the sets' own (DrawBench's categories, HPD's
styles, GenEval's tags, T2I-CompBench's categories).

DrawBench is known by name but not shipped: its source states no licence. Load your own copy of its CSV with
`load_prompt_set("drawbench", path=...)`.
"""

import csv
import json
import re
from importlib import resources
from pathlib import Path

__all__ = ["list_prompt_sets", "list_categories", "load_prompt_set", "load_prompt_records"]

# name -> file in this package (None: known, read only from a file the user supplies).
_SETS = {
    "drawbench": None,
    "pickscore": "pickscore.jsonl",
    "hpd": "hpd.jsonl",
    "geneval": "geneval.jsonl",
    "t2i-compbench": "t2i-compbench.jsonl",
}
_NOT_SHIPPED = {
    "drawbench": "DrawBench is not shipped (its source states no licence): pass path= to your copy of its CSV "
    "(columns Prompts,Category)",
}


def list_prompt_sets(*, shipped_only=False):
    """Names of the known prompt sets; `shipped_only=True` leaves out those that need a file of your own."""
    return [name for name, file in _SETS.items() if file is not None or not shipped_only]


def list_categories(name, *, path=None):
    """The categories of set `name`, in order of first appearance."""
    return list(dict.fromkeys(r["category"] for r in _read_set(_split_name(name)[0], path=path)))


def load_prompt_set(name, *, path=None):
    """The prompts of `SET` or `SET:CATEGORY`, in the source's order."""
    return [r["prompt"] for r in load_prompt_records(name, path=path)]


def load_prompt_records(name, *, path=None):
    """Like `load_prompt_set`, but each prompt as its full record (a dict with at least prompt and category)."""
    set_name, category = _split_name(name)
    records = _read_set(set_name, path=path)
    if category is None:
        return records
    allowed = list(dict.fromkeys(r["category"] for r in records))
    if category not in allowed:
        raise ValueError(f"prompt set {set_name!r} has no category {category!r}; allowed: {', '.join(allowed)}.")
    return [r for r in records if r["category"] == category]


def _split_name(name):
    set_name, _, category = str(name).partition(":")
    set_name = set_name.strip().lower()
    if set_name not in _SETS:
        raise ValueError(f"unknown prompt set {name!r}; allowed: {'|'.join(_SETS)}[:CATEGORY].")
    if ":" in str(name) and not category.strip():
        raise ValueError(f"prompt set name {name!r} has an empty category; use {set_name}:CATEGORY or {set_name}.")
    return set_name, (_slug(category) if category.strip() else None)


def _read_set(set_name, *, path):
    if path is not None:
        return _read_user_file(set_name, Path(path))
    file = _SETS[set_name]
    if file is None:
        raise ValueError(f"{_NOT_SHIPPED[set_name]}.")
    text = resources.files(__package__).joinpath(file).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _read_user_file(set_name, path):
    # A user's copy: the JSON-lines format of this folder, or DrawBench's published CSV.
    if not path.is_file():
        raise ValueError(f"prompt set file {str(path)!r} for {set_name!r} does not exist.")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"Prompts", "Category"} <= set(rows[0]):
        raise ValueError(f"{str(path)!r} is not a DrawBench CSV: expected the columns Prompts,Category.")
    return [{"prompt": r["Prompts"].strip(), "category": _slug(r["Category"]), "source_category": r["Category"]}
            for r in rows]


def _slug(text):
    # Category names as they can be typed on a command line: "Gary Marcus et al. " -> "gary-marcus-et-al".
    return re.sub(r"[^a-z0-9_]+", "-", text.strip().lower()).strip("-")
