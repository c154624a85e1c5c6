"""Every method's CLI run on every family's saved tiny pipeline replays identical or within tolerance (or is refused
in one line where the family cannot take the method); the matrix of `benchmarks/cli_matrix.py`, as a test."""

import os
import sys

import pytest

from noisekit.testing.families import ALL_BUILDERS, ALL_SETTINGS

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from cli_matrix import family_row  # noqa: E402

REFUSED = {("qwen_image", "golden noise"): "variable-length prompts: NPNet flattens a fixed T x D sequence"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ALL_BUILDERS))
def test_every_method_runs_from_the_cli_and_replays(name, tmp_path):
    _, row = family_row(name, ALL_BUILDERS[name], ALL_SETTINGS[name], str(tmp_path))
    assert set(row) == {"search + TTSnap", "NLG", "golden noise", "library"}
    for method, cell in row.items():
        if (name, method) in REFUSED:
            assert cell.startswith("refused: ") and "\n" not in cell, cell
        else:
            assert cell.startswith(("identical", "within tolerance")), f"{method}: {cell}"
