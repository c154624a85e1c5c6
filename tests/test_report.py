import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from noisekit.report import write_report

PROMPTS = ["a red circle on a white background", 'a "blue" square <b>on</b> black & gray', "a green triangle"]
RECIPE = {"seed": 0, "shape": [4, 16, 16], "dtype": "float32", "transforms": [], "checksum": "443a9fa4ffb0e222"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _png(path, colour):
    Image.new("RGB", (16, 16), colour).save(path)


def _stage(step, score, kept):
    return {"step": step, "sigma": 10.0 / step, "kept": kept, "scores": {"shapes-judge": score}}


def _search_run(folder):
    """A search's results.json in the format `noisekit search` writes, plus keys it does not write (yet)."""
    folder.mkdir()
    candidates, summaries = [], []
    for p, prompt in enumerate(PROMPTS):
        for seed in range(3):
            best, pruned = seed == p % 3, seed != p % 3 and seed == (p + 1) % 3
            stages = [_stage(2, 0.5 + seed / 10, not pruned)] + ([] if pruned else [_stage(6, 0.6 + seed / 10, True)])
            file = f"p{p:03d}_s{seed}" + ("_x0_step2.png" if pruned else ".png")
            _png(folder / file, (80 * seed, 40 * p, 200))
            candidates.append({"prompt_index": p, "prompt": prompt, "seed": seed, "recipe": {**RECIPE, "seed": seed},
                               "stages": stages, "final_scores": None if pruned else {"shapes-judge": 0.7 + seed / 10},
                               "pruned_at": 2 if pruned else None, "nfe": 20 if pruned else 40, "reward_calls": 2,
                               "seconds": 1.5, "best": best, "file": file, "timings": {"decode": 0.1}})
        summaries.append({"strategy": "ttsnap", "prompt_index": p, "prompt": prompt, "best_seed": p % 3,
                          "best_scores": {"shapes-judge": 0.7 + (p % 3) / 10}, "nfe": 100, "reward_calls": 6,
                          "cost": 106, "budget": None, "counts": [3, 2], "best_file": f"best_p{p:03d}.png",
                          "seconds": 4.5, "peak_memory": 123})
    results = {"settings": {"model": "shapes-t2i", "strategy": "ttsnap", "rewards": ["shapes-judge"], "steps": 20},
               "prompts": summaries, "candidates": candidates, "throughput": {"candidates_per_second": 2.0}}
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


def _generate_run(folder):
    folder.mkdir()
    images = []
    for p, prompt in enumerate(PROMPTS):
        for seed in range(2):
            file = f"p{p:03d}_s{seed}.png"
            _png(folder / file, (100, 100 * seed, 50 * p))
            images.append({"prompt_index": p, "prompt": prompt, "seed": seed, "recipe": {**RECIPE, "seed": seed},
                           "nfe": 40, "seconds": 0.5, "file": file})
    (folder / "results.json").write_text(json.dumps({"settings": {"model": "shapes-t2i"}, "images": images}))
    return folder


class _Page(HTMLParser):
    """Prompt sections (their text and whether hidden) and candidate cards of a page."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.cards, self.ready, self._in_h2 = [], [], False, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.ready = attrs.get("data-ready") == "1"
        if tag == "section":
            self.sections.append({"hidden": "hidden" in attrs, "title": ""})
        if tag == "h2":
            self._in_h2 = True
        if tag == "figure":
            self.cards.append({"classes": attrs["class"].split(), "hidden": "hidden" in attrs})

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.sections[-1]["title"] += data


def test_search_page_shows_every_prompt_its_candidates_and_the_pick(tmp_path):
    path = write_report(_search_run(tmp_path / "run"))
    assert path == tmp_path / "run" / "index.html"
    page = _Page(path.read_text(encoding="utf-8"))
    assert [s["title"].split(" ", 1)[1] for s in page.sections] == PROMPTS
    assert len(page.cards) == 9
    assert sum("best" in c["classes"] for c in page.cards) == 3
    assert sum("pruned" in c["classes"] for c in page.cards) == 3
    text = path.read_text(encoding="utf-8")
    assert "cost 106 = 100 NFE + 6 reward calls" in text and "pruned at step 2" in text
    assert "candidates_per_second" in text and "decode" in text  # keys the page does not know are still shown
    assert "<b>on</b>" not in text and 'src="p000_s0.png"' in text


def test_generate_page_and_missing_results(tmp_path):
    page = _Page(write_report(_generate_run(tmp_path / "gen")).read_text(encoding="utf-8"))
    assert len(page.sections) == 3 and len(page.cards) == 6
    with pytest.raises(FileNotFoundError, match="no results.json"):
        write_report(tmp_path)


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not found: the results page's browser tests need Debian's chromium "
                    "(apt-get install -y chromium; .ci/run installs it)")
    return found


def _open_in_chromium(path, tmp_path, fragment=""):
    """The page's DOM after its scripts ran, and the console messages chromium logged."""
    run = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--enable-logging=stderr", "--v=0", "--window-size=1200,4000", "--virtual-time-budget=3000",
                          "--dump-dom", path.resolve().as_uri() + fragment],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return _Page(run.stdout), console


@pytest.mark.parametrize("make_run", [_search_run, _generate_run])
def test_page_loads_in_chromium_without_errors_and_shows_every_prompt(tmp_path, make_run):
    path = write_report(make_run(tmp_path / "run"))
    page, console = _open_in_chromium(path, tmp_path)
    assert console == []
    assert page.ready, "the page's script did not run to its end"
    assert [s["title"].split(" ", 1)[1] for s in page.sections] == PROMPTS
    assert not any(s["hidden"] for s in page.sections)
    assert not any("broken" in c["classes"] for c in page.cards), "an image did not load from its relative path"


def test_filters_in_chromium(tmp_path):
    folder = _search_run(tmp_path / "run")
    (folder / "p001_s1.png").unlink()
    path = write_report(folder)
    page, console = _open_in_chromium(path, tmp_path, "#q=square")
    assert console == [] and [s["hidden"] for s in page.sections] == [True, False, True]
    assert sum("broken" in c["classes"] for c in page.cards) == 1  # the missing image is marked
    # Pick scores are 0.7, 0.8, 0.9: a range keeps the middle prompt; hidden pruned candidates go away.
    page, _ = _open_in_chromium(path, tmp_path, "#min=0.75&max=0.85&pruned=0")
    assert [s["hidden"] for s in page.sections] == [True, False, True]
    assert sum(c["hidden"] for c in page.cards) == 3
