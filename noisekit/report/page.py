"""Writes `index.html` beside a run's `results.json`: one static page, CSS and JS inline, images by relative path.

The page is complete HTML without its script (every prompt and candidate is in the markup, recipes open in
`<details>`), so it reads anywhere; the script only adds the filters.
"""

import json
from html import escape
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from .records import load_results, prompt_views, reward_names, run_kind

__all__ = ["write_report", "render_report"]


def write_report(output_dir, *, filename="index.html"):
    """Reads `output_dir/results.json` and writes `output_dir/filename`; returns the page's path."""
    output_dir = Path(output_dir)
    page = render_report(load_results(output_dir), title=output_dir.resolve().name)
    path = output_dir / filename
    # Written whole, then renamed, so a browser never opens a half-written page.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def render_report(results, *, title="noisekit results"):
    """The page for a parsed `results.json`, as a string."""
    prompts = prompt_views(results)
    rewards = reward_names(prompts)
    body = "\n".join([_header(results, prompts, title), _filters(rewards),
                      "<main>", *(_prompt_section(p) for p in prompts), "</main>"])
    return _TEMPLATE.format(title=escape(title), css=_asset("page.css"), body=body, js=_asset("page.js"))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{css}</style>
</head>
<body>
{body}
<script>
{js}</script>
</body>
</html>
"""


def _asset(name):
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _header(results, prompts, title):
    kind = run_kind(results)
    candidates = [c for p in prompts for c in p["candidates"]]
    nfe = sum(c["cost"].get("nfe", 0) for c in candidates)
    seconds = sum(c["cost"].get("seconds", 0) for c in candidates)
    noun = "candidates" if kind == "search" else "images"
    line = f"{len(prompts)} prompts, {len(candidates)} {noun}, {nfe:,} NFE, {seconds:.1f} s of sampling"
    settings = results.get("settings") or {}
    extra = {k: v for k, v in results.items() if k not in ("settings", "prompts", "candidates", "images")}
    parts = [f"<header><h1>{escape(title)}</h1>",
             f'<p class="run">noisekit {kind} &middot; {escape(_settings_line(settings))}</p>',
             f'<p class="run">{escape(line)}</p>',
             _json_details("settings", settings)]
    if extra:
        parts.append(_json_details("more about this run", extra))
    parts.append("</header>")
    return "\n".join(parts)


def _settings_line(settings):
    keys = ("model", "strategy", "rewards", "steps", "guidance_scale", "scheduler")
    shown = [f"{k} {_short(settings[k])}" for k in keys if settings.get(k) not in (None, [], "")]
    return ", ".join(shown) or "no settings recorded"


def _short(value):
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _filters(rewards):
    score_inputs = ""
    if rewards:
        options = "".join(f'<option value="{escape(r)}">{escape(r)}</option>' for r in rewards)
        score_inputs = (
            f'<label>score <select name="reward">{options}</select></label>'
            '<label>of the pick from <input name="min" type="number" step="any" placeholder="min"></label>'
            '<label>to <input name="max" type="number" step="any" placeholder="max"></label>'
            '<label><input name="pruned" type="checkbox" checked> pruned candidates</label>')
    return ('<form id="filters" autocomplete="off">'
            '<label>prompt <input name="q" type="search" placeholder="words or #index"></label>'
            f'{score_inputs}<output id="shown"></output></form>')


def _prompt_section(prompt):
    pick = next((c for c in prompt["candidates"] if c["best"]), None)
    best_scores = prompt["stats"].get("best_scores") or (pick["scores"] if pick else {})
    attrs = (f'data-index="{escape(str(prompt["index"]))}" data-text="{escape(prompt["prompt"].lower())}" '
             f"data-scores='{escape(json.dumps(best_scores), quote=True)}'")
    cards = "\n".join(_candidate_card(c) for c in prompt["candidates"])
    return (f'<section class="prompt" {attrs}>\n'
            f'<h2><span class="idx">#{escape(str(prompt["index"]))}</span> {escape(prompt["prompt"])}</h2>\n'
            f'<p class="summary">{escape(_summary_line(prompt, pick))}</p>\n'
            f'<div class="cands">\n{cards}\n</div>\n</section>')


def _summary_line(prompt, pick):
    stats = prompt["stats"]
    parts = []
    if pick is not None:
        parts.append(f"pick: seed {pick['seed']}" + (f" ({_scores_text(pick['scores'])})" if pick["scores"] else ""))
    if "cost" in stats:
        parts.append(f"cost {stats['cost']:,} = {stats.get('nfe', 0):,} NFE + {stats.get('reward_calls', 0):,} "
                     "reward calls" + (f" (budget {stats['budget']:,})" if stats.get("budget") else ""))
    if stats.get("counts"):
        parts.append("alive per stage " + " → ".join(map(str, stats["counts"])))
    if "seconds" in stats:
        parts.append(f"{stats['seconds']:.1f} s")
    if not parts:
        n = len(prompt["candidates"])
        parts.append(f"{n} image{'s' * (n != 1)}")
    return " · ".join(parts)


def _candidate_card(candidate):
    classes = ["cand"] + ["best"] * candidate["best"] + ["pruned"] * _is_pruned(candidate)
    scores = json.dumps(candidate["scores"])
    label = f"seed {candidate['seed']}"
    image = (f'<img src="{escape(quote(candidate["file"]))}" alt="{escape(label)}" loading="lazy">'
             if candidate.get("file") else '<div class="noimg">no image</div>')
    badge = '<span class="badge">chosen</span>' if candidate["best"] else ""
    note = _note_text(candidate)
    note = f'<span class="src">{escape(note)}</span>' if note else ""
    score = f'<span class="score">{escape(_scores_text(candidate["scores"]))}</span>' if candidate["scores"] else ""
    return (f'<figure class="{" ".join(classes)}" data-scores=\'{escape(scores, quote=True)}\' '
            f'title="{escape(_hover_text(candidate))}">{image}<figcaption><b>{escape(label)}</b>{badge}{score}'
            f"{note}{_details(candidate)}</figcaption></figure>")


def _is_pruned(candidate):
    return candidate["pruned_at"] is not None


def _note_text(candidate):
    # Says where a score that is not a final one comes from (a pruned candidate's last preview).
    source = candidate["score_source"]
    if _is_pruned(candidate):
        return f"pruned at step {candidate['pruned_at']}" + (" (preview score)" if source else "")
    return None if source in ("final", None) else source


def _scores_text(scores):
    return ", ".join(f"{name} {value:.4f}" for name, value in scores.items())


def _hover_text(candidate):
    # The native tooltip: cost and the recipe in one glance; the full record is one click away.
    recipe = candidate["recipe"] or {}
    transforms = [t.get("name", t.get("type", "?")) if isinstance(t, dict) else str(t)
                  for t in recipe.get("transforms") or []]
    lines = [f"seed {candidate['seed']}", _cost_text(candidate["cost"]),
             "recipe: " + (" → ".join(["seed"] + transforms)) + (f", checksum {recipe['checksum']}"
                                                                  if recipe.get("checksum") else "")]
    return "\n".join(line for line in lines if line)


def _cost_text(cost):
    parts = [f"{cost['nfe']:,} NFE" if "nfe" in cost else None,
             f"{cost['reward_calls']:,} reward calls" if "reward_calls" in cost else None,
             f"{cost['seconds']:.2f} s" if "seconds" in cost else None]
    return ", ".join(p for p in parts if p)


def _details(candidate):
    rows = [f"<tr><th>cost</th><td>{escape(_cost_text(candidate['cost']) or '-')}</td></tr>"]
    if candidate.get("file"):
        rows.append(f'<tr><th>file</th><td>{escape(candidate["file"])}</td></tr>')
    rows += [_stage_row(s) for s in candidate["stages"]]
    extra = f"<pre>{escape(json.dumps(candidate['extra'], indent=1))}</pre>" if candidate["extra"] else ""
    recipe = json.dumps(candidate["recipe"], indent=1) if candidate["recipe"] is not None else "no recipe recorded"
    return (f'<details><summary>recipe &amp; cost</summary><table>{"".join(rows)}</table>'
            f"<pre>{escape(recipe)}</pre>{extra}</details>")


def _stage_row(stage):
    where = f"step {stage.get('step', '?')}" + (f", σ {stage['sigma']:.3g}" if "sigma" in stage else "")
    verdict = "kept" if stage.get("kept") else "pruned"
    scores = _scores_text({k: v for k, v in (stage.get("scores") or {}).items() if isinstance(v, (int, float))})
    return f"<tr><th>{escape(where)}</th><td>{escape(scores)} ({verdict})</td></tr>"


def _json_details(summary, value):
    return f"<details><summary>{escape(summary)}</summary><pre>{escape(json.dumps(value, indent=1))}</pre></details>"
