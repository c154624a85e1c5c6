"""NoiseQuery library faults: another model, concurrent writers, bad sizes, truncated shards, contradictory
queries. Each ends in one line that names the problem, never in a traceback or a silent answer."""

import copy
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import types

import pytest

from noisekit.library import NoiseLibrary, add_features, build_library, library_noise
from noisekit.library.model_key import check_model
from noisekit.library.store import committed_shards, manifest_path, shards_dir
from noisekit.testing import tiny_sd_pipeline

SMALL = dict(num_inference_steps=2, shard_size=4, batch_size=4)
LOCK_MODULE = os.path.join(os.path.dirname(__file__), os.pardir, "noisekit", "library", "lock.py")


@pytest.fixture(scope="module")
def built(sd1_pipe, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("faults") / "lib")
    build_library(sd1_pipe, path, 8, extractors=["color"], **SMALL)
    return path


def one_line(error):
    assert "\n" not in str(error.value), str(error.value)
    return str(error.value)


# --- a library belongs to the model it was built with ---------------------------------------------------------


def test_library_of_another_model_is_refused_unless_forced(built):
    other = tiny_sd_pipeline(seed=1)
    with pytest.raises(ValueError, match="built with another model.*force=True") as error:
        library_noise(other, built, ["brightness=high"], seeds_needed=2)
    one_line(error)
    with pytest.raises(ValueError, match="built with another model"):
        NoiseLibrary.load(built).noise([0], other)
    noise, recipes, _ = library_noise(other, built, ["brightness=high"], seeds_needed=2, force=True)
    assert noise.shape == (2, 4, 8, 8) and len(recipes) == 2


def fresh_copy(module):
    """A copy without the cached weight hashes (a copy's weights are about to change)."""
    module = copy.deepcopy(module)
    for name in ("_noisekit_weights_hash", "_noisekit_float16_hash"):
        module.__dict__.pop(name, None)
    return module


def test_same_weights_at_another_precision_are_accepted(built, sd1_pipe):
    manifest = NoiseLibrary.load(built).manifest
    assert manifest["denoiser"]["float16_hash"]
    half = types.SimpleNamespace(unet=fresh_copy(sd1_pipe.unet).half())
    check_model(built, manifest, half)  # no error: the float16 hash matches
    changed = types.SimpleNamespace(unet=fresh_copy(sd1_pipe.unet))
    next(changed.unet.parameters()).data.add_(1.0)
    with pytest.raises(ValueError, match="another model"):
        check_model(built, manifest, changed)


# --- one writer at a time -----------------------------------------------------------------------------------


def test_a_grow_during_a_build_is_refused(tmp_path, sd1_pipe):
    path = str(tmp_path / "lib")
    refusals = []

    def grow(record):
        try:
            build_library(sd1_pipe, path, 12, extractors=["color"], resume=True, **SMALL)
        except ValueError as error:
            refusals.append(str(error))

    build_library(sd1_pipe, path, 8, extractors=["color"], callback=grow, **SMALL)
    assert len(refusals) == 2 and "being written by another process" in refusals[0]
    assert f"pid {os.getpid()}" in refusals[0]
    with pytest.raises(ValueError, match="being written"):  # add_features is a writer too
        build_library(sd1_pipe, path, 12, extractors=["color"], resume=True,
                      callback=lambda record: add_features(sd1_pipe, path, "texture"), **SMALL)
    build_library(sd1_pipe, path, 16, extractors=["color"], resume=True, **SMALL)  # afterwards: fine
    assert NoiseLibrary.load(path).seeds.tolist() == list(range(16))


def hold_lock(path):
    """A separate process holding the writer lock (lock.py loaded alone: no torch import, so it starts fast)."""
    code = ("import importlib.util, sys, time\n"
            f"spec = importlib.util.spec_from_file_location('lock', {LOCK_MODULE!r})\n"
            "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
            "held = lock.writer_lock(sys.argv[1], 'build'); held.__enter__()\n"
            "print('held', flush=True); time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_lock_of_a_live_writer_refuses_and_a_killed_one_is_stale(tmp_path, sd1_pipe):
    path = str(tmp_path / "lib")
    writer = hold_lock(path)
    try:
        with pytest.raises(ValueError, match=f"pid {writer.pid}") as error:
            build_library(sd1_pipe, path, 4, extractors=["color"], **SMALL)
        one_line(error)
        assert not os.path.exists(manifest_path(path))
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    build_library(sd1_pipe, path, 4, extractors=["color"], **SMALL)  # the kernel freed the killed writer's lock
    assert len(NoiseLibrary.load(path)) == 4


def test_lock_module_loads_alone():
    spec = importlib.util.spec_from_file_location("lock_alone", LOCK_MODULE)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


# --- bad sizes leave nothing behind ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [dict(num_seeds=0), dict(num_seeds=-3), dict(height=0), dict(width=-16),
                                 dict(shard_size=0), dict(batch_size=0)])
def test_bad_size_writes_nothing_and_the_corrected_run_works(tmp_path, sd1_pipe, bad):
    path = str(tmp_path / "lib")
    arguments = {"num_seeds": 4, **SMALL, **bad}
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"`{name}`") as error:
        build_library(sd1_pipe, path, arguments.pop("num_seeds"), extractors=["color"], **arguments)
    one_line(error)
    assert not os.path.exists(path)
    build_library(sd1_pipe, path, 4, extractors=["color"], **SMALL)
    assert len(NoiseLibrary.load(path)) == 4


def test_a_manifest_without_shards_does_not_block_a_new_build(tmp_path, sd1_pipe):
    path = str(tmp_path / "lib")

    def failing(pixels):
        raise RuntimeError("extractor failed")

    from noisekit.library import Extractor

    with pytest.raises(RuntimeError):
        build_library(sd1_pipe, path, 4, extractors=[Extractor("broken", 1, failing, ("x",))], **SMALL)
    assert os.path.exists(manifest_path(path)) and not committed_shards(path)
    build_library(sd1_pipe, path, 4, extractors=["color"], **SMALL)  # no `resume` needed: nothing was kept
    assert list(NoiseLibrary.load(path).features) == ["color"]


# --- a truncated shard is named, not a traceback --------------------------------------------------------------


@pytest.fixture
def truncated(built, tmp_path):
    path = str(tmp_path / "lib")
    shutil.copytree(built, path)
    target = os.path.join(shards_dir(path), "shard-000000000004-000000000008.safetensors")
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    return path, target


def test_truncated_shard_in_query_info_and_generate(truncated, sd1_pipe):
    path, target = truncated
    for call in (lambda: NoiseLibrary.load(path).query(attributes=["brightness=high"]),
                 lambda: NoiseLibrary.load(path).info(),
                 lambda: library_noise(sd1_pipe, path, ["brightness=high"], seeds_needed=1)):
        with pytest.raises(ValueError, match="truncated or corrupt") as error:
            call()
        assert target in one_line(error)


def test_truncated_shard_record(built, tmp_path):
    path = str(tmp_path / "lib")
    shutil.copytree(built, path)
    record = os.path.join(shards_dir(path), "shard-000000000000-000000000004.json")
    with open(record, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        NoiseLibrary.load(path)
    assert record in one_line(error)


# --- contradictory or meaningless queries ---------------------------------------------------------------------


@pytest.mark.parametrize("attributes, message", [
    (["brightness=0.8..0.2"], "LO <= HI"),
    (["brightness=p90..p10"], "LO <= HI"),
    (["brightness=high", "brightness=low"], "given twice"),
    (["brightness=nan"], "finite"),
    (["brightness=0.1..inf"], "finite"),
    (["brightness=p100..0.0"], "empty in this library"),
])
def test_contradictory_attributes_are_refused(built, attributes, message):
    with pytest.raises(ValueError, match=message) as error:
        NoiseLibrary.load(built).query(attributes=attributes)
    one_line(error)


@pytest.mark.parametrize("options, message", [
    (dict(weights={"brightness": float("nan")}), "finite"),
    (dict(weights={"brightness": float("inf")}), "finite"),
    (dict(temperature=float("nan")), "temperature"),
])
def test_nan_weight_or_temperature_is_refused(built, options, message):
    with pytest.raises(ValueError, match=message) as error:
        NoiseLibrary.load(built).query(attributes=["brightness=high"], **options)
    one_line(error)


def test_shipped_library_refuses_the_other_shapes_model():
    from noisekit.shapes.assets import asset_path
    from noisekit.sources import load_pipeline

    library = str(asset_path("shapes-library"))  # built with shapes-t2i
    with pytest.raises(ValueError, match="built with another model \\(shapes-t2i,") as error:
        library_noise(load_pipeline("shapes-t2i-eps", device="cpu"), library, ["brightness=low"], seeds_needed=1)
    one_line(error)
    noise, _, _ = library_noise(load_pipeline("shapes-t2i", device="cpu"), library, ["brightness=low"],
                                seeds_needed=1)
    assert noise.shape[0] == 1
