import json
import os
import shutil
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from noisekit.prompt_sets import list_categories, list_prompt_sets, load_prompt_records, load_prompt_set

SIZES = {"pickscore": 499, "hpd": 400, "geneval": 553, "t2i-compbench": 2400}


def test_every_shipped_set_loads_with_its_published_size():
    assert list_prompt_sets(shipped_only=True) == list(SIZES)
    for name, size in SIZES.items():
        prompts = load_prompt_set(name)
        assert len(prompts) == size
        assert all(isinstance(p, str) and p.strip() == p and p for p in prompts)


def test_categories_split_each_set():
    assert list_categories("hpd") == ["anime", "concept-art", "paintings", "photo"]
    assert [len(load_prompt_set(f"hpd:{s}")) for s in list_categories("hpd")] == [100] * 4
    assert sorted(list_categories("geneval")) == sorted(
        ["single_object", "two_object", "counting", "colors", "position", "color_attr"])
    assert len(load_prompt_set("geneval:counting")) == 80
    assert len(load_prompt_set("t2i-compbench:3d_spatial")) == 300
    assert load_prompt_set("T2I-CompBench:Color")[0] == "a green bench and a blue bowl"
    assert len(load_prompt_set("pickscore:unflagged")) + len(load_prompt_set("pickscore:flagged")) == 499


def test_records_keep_the_source_fields():
    record = load_prompt_records("geneval:counting")[0]
    assert record["tag"] == "counting" and record["include"][0]["count"] >= 2
    assert [r["source_index"] for r in load_prompt_records("hpd")] == list(range(400))


@pytest.mark.parametrize("name, words", [
    ("dallebench", ["'dallebench'", "drawbench|pickscore|hpd|geneval|t2i-compbench"]),
    ("geneval:shapes", ["'shapes'", "counting", "position"]),
    ("hpd:", ["'hpd:'", "hpd:CATEGORY"]),
    ("drawbench", ["not shipped", "path="]),
])
def test_bad_names_are_one_line_errors(name, words):
    with pytest.raises(ValueError) as info:
        load_prompt_set(name)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_drawbench_loads_from_a_users_csv(tmp_path):
    path = tmp_path / "drawbench.csv"
    path.write_text('"Prompts","Category"\n"A red colored car.","Colors"\n"A tcennis rpacket.","Misspellings"\n'
                    '"Two cats.","Gary Marcus et al. "\n', encoding="utf-8")
    assert list_categories("drawbench", path=path) == ["colors", "misspellings", "gary-marcus-et-al"]
    assert load_prompt_set("drawbench:gary-marcus-et-al", path=path) == ["Two cats."]
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a DrawBench CSV"):
        load_prompt_set("drawbench", path=other)


def test_each_data_file_has_its_source_and_licence_noted():
    folder = resources.files("noisekit.prompt_sets")
    sources = folder.joinpath("SOURCES.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".jsonl"))
    assert files == sorted(f"{name}.jsonl" for name in SIZES)
    for line in (line for line in sources.splitlines() if line.startswith("| `")):
        assert "https://" in line and ("MIT" in line or "Apache-2.0" in line)
    assert all(f"`{f}`" in sources for f in files)
    for f in files:
        for line in folder.joinpath(f).read_text(encoding="utf-8").splitlines():
            assert set(json.loads(line)) >= {"prompt", "category"}


def test_a_built_wheel_ships_the_data(tmp_path):
    # What a non-editable `pip install .` installs is what the wheel holds; built from a copy of the sources
    # so that the checkout gets no build folders.
    from setuptools import build_meta

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    for name in ["pyproject.toml", "README.md"]:
        source.mkdir(exist_ok=True)
        shutil.copy(root / name, source / name)
    for name in ["noisekit", "pipelines"]:
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "assets").mkdir()  # the shapes models (package data too) are left out: this checks the prompt sets
    shutil.copy(root / "assets" / "__init__.py", source / "assets" / "__init__.py")
    cwd = os.getcwd()
    os.chdir(source)
    try:
        wheel = build_meta.build_wheel(str(tmp_path))
    finally:
        os.chdir(cwd)
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for name in [*(f"{n}.jsonl" for n in SIZES), "SOURCES.md", "__init__.py"]:
        assert f"noisekit/prompt_sets/{name}" in names
    for name in ["__init__.py", "page.py", "records.py", "page.css", "page.js"]:
        assert f"noisekit/report/{name}" in names
