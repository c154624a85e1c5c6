"""`results.json`: what `generate` and `search` write next to their images, and what `replay` reads back.

`{"settings": {...}, "images": [...]}` (generate) or `{"settings", "prompts": [...], "candidates": [...]}` (search).
Every image record names its file (a plain file name in the results folder) and carries its noise recipe.
Writes are atomic: a temporary file, then a rename, so an interrupted run never leaves half a file.

`with_digest` adds `settings_digest`, a hash of the settings and of every record's prompt and seeds, so a replay
refuses a file whose settings or seeds were edited (steps 4 -> 5, another top-level seed) before it runs anything,
instead of failing later on pixels or passing with seeds that were never recorded.
"""

import hashlib
import json
import math
import os
import re

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")
REQUIRED_SETTINGS = ("model", "steps", "guidance_scale")


DIGEST_KEY = "settings_digest"


def results_digest(data):
    """`sha256:...` of what a replay runs: the settings, and each record's prompt index, prompt and seeds."""
    records = data.get("images") or data.get("candidates") or []
    seeds = [[r.get("prompt_index"), r.get("prompt"), r.get("seed"), (r.get("recipe") or {}).get("seed")]
             for r in records]
    text = json.dumps({"settings": data.get("settings"), "records": seeds}, sort_keys=True, allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def with_digest(data):
    """`data` (a results dict) with its `settings_digest`, ready for `write_json`."""
    return {**{k: v for k, v in data.items() if k != DIGEST_KEY}, DIGEST_KEY: results_digest(data)}


def write_json(path, data):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)


def check_output_dir(output_dir):
    """Create `output_dir` (or check it) before any compute, so a bad folder fails at once with its path."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output folder {output_dir!r} is a file; give a folder.")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create output folder {output_dir!r}: {error.strerror}.") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {output_dir!r} is not writable.")
    return output_dir


def check_file_name(name):
    """A record's file must be a plain PNG name inside the results folder (no folders, no `..`, not absolute)."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"results.json names the image file {name!r}; a file name must be a plain *.png name "
                         "(letters, digits, '_', '-', '.') inside the results folder.")
    return name


def read_results(path):
    """The parsed `results.json` at `path`, checked: settings present, every file name safe."""
    if not os.path.isfile(path):
        raise ValueError(f"results file {path!r} does not exist (noisekit generate/search write one).")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"results file {path!r} is not valid JSON ({error}).") from None
    if not isinstance(results, dict) or not ("images" in results or "candidates" in results):
        keys = sorted(results) if isinstance(results, dict) else type(results).__name__
        raise ValueError("a results.json holds `images` (noisekit generate) or `candidates` (noisekit search); "
                         f"{path!r} has {keys}.")
    settings = results.get("settings")
    missing = [k for k in REQUIRED_SETTINGS if not isinstance(settings, dict) or k not in settings]
    if missing:
        raise ValueError(f"results file {path!r} lacks the settings {missing} that a replay needs.")
    check_settings(path, settings)
    records = results.get("images") or results.get("candidates")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"results file {path!r} holds no image records (a list of objects) to replay.")
    for record in records:
        check_record(path, record)
    recorded = results.get(DIGEST_KEY)
    if recorded is not None and recorded != results_digest(results):
        raise ValueError(f"results file {path!r} was edited after it was written: its settings or seeds no longer "
                         f"match its {DIGEST_KEY}; a replay runs only what was recorded.")
    return results


def check_settings(path, settings):
    """The settings a replay runs with, each of the type it must have."""
    steps, scale = settings["steps"], settings["guidance_scale"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"results file {path!r} records steps {steps!r}; a replay needs a positive integer.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"results file {path!r} records guidance_scale {scale!r}; a replay needs a finite number.")
    if not isinstance(settings["model"], str) or not settings["model"]:
        raise ValueError(f"results file {path!r} records model {settings['model']!r}; a replay needs its name.")


def check_record(path, record):
    """A record's file name is safe and its seed is its recipe's."""
    check_file_name(record.get("file"))
    recipe = record.get("recipe")
    if not isinstance(recipe, dict) or "seed" not in recipe or not isinstance(record.get("prompt_index"), int):
        raise ValueError(f"results file {path!r}: the record of {record.get('file')!r} lacks its recipe or "
                         "prompt_index.")
    if record.get("seed") != recipe["seed"]:
        raise ValueError(f"results file {path!r}: the record of {record['file']!r} names seed {record.get('seed')!r} "
                         f"but its recipe seed {recipe['seed']!r}; one of them was edited.")
