"""`results.json`: what `generate` and `search` write next to their images, and what `replay` reads back.

`{"settings": {...}, "images": [...]}` (generate) or `{"settings", "prompts": [...], "candidates": [...]}` (search).
Every image record names its file (a plain file name in the results folder) and carries its noise recipe.
Writes are atomic: a temporary file, then a rename, so an interrupted run never leaves half a file.
"""

import json
import os
import re

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")
REQUIRED_SETTINGS = ("model", "steps", "guidance_scale")


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
    for record in results.get("images", []) + results.get("candidates", []):
        check_file_name(record.get("file"))
    return results
