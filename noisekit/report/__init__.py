"""A static results page for a run folder: `write_report("out")` writes `out/index.html`."""

from .page import render_report, write_report
from .records import load_results, prompt_views

__all__ = ["write_report", "render_report", "load_results", "prompt_views"]
