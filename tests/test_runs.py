"""Prompt-set runs: shards, resume state, throughput; and, behind the slow marker, real runs across processes
(`accelerate launch`) and a run killed with SIGKILL, each compared with a one-process run of the same command."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisekit.runs import ProcessGroup, RunFolder, combine, describe, process_group, settings_digest, shard


def test_shards_cover_the_pending_prompts_once():
    groups = [ProcessGroup(index=i, count=3) for i in range(3)]
    parts = [shard(range(10), g) for g in groups]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(i for part in parts for i in part) == list(range(10))


def test_one_process_outside_a_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = process_group(device="cpu")
    assert (group.index, group.count, group.is_main, group.device) == (0, 1, True, "cpu")
    group.wait()  # no barrier with one process


def test_settings_digest_ignores_key_order():
    assert settings_digest({"a": 1, "b": [2, 3]}) == settings_digest({"b": [2, 3], "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 2})


def test_run_folder_marks_prompts_done_and_merges_them_in_order(tmp_path):
    folder = RunFolder(tmp_path, settings={"steps": 2}, num_prompts=3, lists=("prompts", "candidates"))
    folder.check()
    folder.start()
    assert folder.pending() == [0, 1, 2]
    folder.save(2, {"prompts": [{"prompt_index": 2}], "candidates": [{"seed": 20}, {"seed": 21}]})
    folder.save(0, {"prompts": [{"prompt_index": 0}], "candidates": [{"seed": 0}]})
    assert folder.pending() == [1]
    partial = folder.merge(settings={"steps": 2})
    assert list(partial)[:4] == ["settings", "prompts", "candidates", "run"]
    assert [c["seed"] for c in partial["candidates"]] == [0, 20, 21]
    assert partial["run"]["prompts_done"] == 2 and not partial["run"]["complete"]
    folder.save(1, {"prompts": [{"prompt_index": 1}], "candidates": [{"seed": 10}]})
    merged = folder.merge(settings={"steps": 2}, throughput={"prompts_run": 3})
    assert [p["prompt_index"] for p in merged["prompts"]] == [0, 1, 2]
    assert merged["run"]["complete"] and merged["run"]["throughput"] == {"prompts_run": 3}
    # the same command finds its run; another is refused in one line naming what changed
    RunFolder(tmp_path, settings={"steps": 2}, num_prompts=3, lists=("images",)).check()
    with pytest.raises(ValueError, match=r"holds a run of other settings \(steps\)") as error:
        RunFolder(tmp_path, settings={"steps": 3}, num_prompts=3, lists=("images",)).check()
    assert "\n" not in str(error.value)


def test_a_folder_with_results_but_no_run_record_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="without a run record"):
        RunFolder(tmp_path, settings={}, num_prompts=1, lists=("images",)).check()


def test_throughput_of_several_processes():
    meter = {"prompts": 3, "candidates": 12, "nfe": 240, "seconds": 6.0, "peak_memory_bytes": 2**30,
             "peak_vram_bytes": None}
    slower = {**meter, "prompts": 2, "candidates": 8, "nfe": 160, "seconds": 10.0, "peak_memory_bytes": 2**31}
    t = combine([meter, slower], num_prompts=50, prompts_skipped=5, load_seconds=3.0)
    assert t["seconds"] == 10.0 and t["prompts_run"] == 5 and t["candidates_per_second"] == 2.0
    assert t["nfe_per_second"] == 40.0 and t["seconds_per_prompt"] == 2.0 and t["projected_seconds"] == 100.0
    assert t["peak_memory_bytes"] == 2**31 and t["peak_vram_bytes"] is None and t["num_processes"] == 2
    line = describe(t)
    assert "\n" not in line and "2.00 candidates/s" in line and "(5 done before)" in line
    assert "all 50 prompts: 100 s" in line


# -- real runs across processes (shapes world, CPU) --------------------------------------------------------------

PROMPTS = ["a small green circle in the center on a beige background", "a red cross on a navy background",
           "a blue square on a white background", "a large yellow triangle on a black background",
           "an orange circle above a purple square", "a green cross on a beige background"]
# the fixed cost model: a measured reward cost would differ between the runs compared (it is timed per run folder)
ARGS = ["search", "--num_candidates", "2", "--steps", "3", "--cost_model", "fixed", "--quiet"]


def env():
    # One thread per process in every run (torchrun's default): float sums then agree to the last bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1"}


def noisekit(prompt_file, output_dir, *extra):
    return [sys.executable, "-m", "noisekit", *ARGS, "--prompt_file", str(prompt_file), "--output_dir",
            str(output_dir), *extra]


def call(argv):
    return subprocess.run(argv, env=env(), timeout=600, check=False, capture_output=True, text=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def content(output_dir):
    """What must not depend on how the run was split: settings, seeds, scores, picks (not the seconds)."""
    results = json.loads((Path(output_dir) / "results.json").read_text())
    clean = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}  # noqa: E731
    return {"settings": results["settings"], "prompts": [clean(p) for p in results["prompts"]],
            "candidates": [clean(c) for c in results["candidates"]], "complete": results["run"]["complete"]}


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    subprocess.run(noisekit(folder / "prompts.txt", folder / "one"), env=env(), check=True, timeout=600)
    return folder


@pytest.mark.slow
def test_two_processes_merge_to_the_one_process_results(one_process_run):
    folder = one_process_run
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "noisekit"]
    run = call(launch + noisekit(folder / "prompts.txt", folder / "two")[3:])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "on 2 processes" in run.stdout
    assert content(folder / "two") == content(folder / "one")
    throughput = json.loads((folder / "two" / "results.json").read_text())["run"]["throughput"]
    assert throughput["num_processes"] == 2 and throughput["prompts_run"] == len(PROMPTS)
    assert sorted(p["prompts"] for p in throughput["processes"]) == [3, 3]
    assert (folder / "two" / "index.html").is_file() and (folder / "two" / "grid.png").is_file()


@pytest.mark.slow
def test_a_run_killed_midway_resumes_to_the_same_results(one_process_run):
    folder = one_process_run
    out = folder / "killed"
    done = out / ".noisekit" / "prompts"
    process = subprocess.Popen(noisekit(folder / "prompts.txt", out), env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if done.is_dir() and len([f for f in os.listdir(done) if f.endswith(".json")]) >= 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    finished = len([f for f in os.listdir(done) if f.endswith(".json")])
    assert 2 <= finished < len(PROMPTS)
    partial = json.loads((out / "results.json").read_text())  # the finished prompts, merged as they finished
    assert not partial["run"]["complete"] and len(partial["prompts"]) >= 1
    resumed = call(noisekit(folder / "prompts.txt", out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    throughput = json.loads((out / "results.json").read_text())["run"]["throughput"]
    assert throughput["prompts_skipped"] == finished and throughput["prompts_run"] == len(PROMPTS) - finished
    assert content(out) == content(folder / "one")
    # another command into the same folder: one line, exit 2
    other = call(noisekit(folder / "prompts.txt", out, "--seed", "7"))
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "(seed)" in other.stderr


def test_a_one_process_run_that_fails_before_any_prompt_releases_the_folder(tmp_path):
    """Its record and measurements go, so another command may start there; once a prompt is done, they stay."""
    from noisekit.runs import run_prompts, shared_record

    folder, group = RunFolder(tmp_path, settings={"steps": 2}, num_prompts=2, lists=("images",)), ProcessGroup()

    def failing(index):
        raise ValueError("budget too small")

    assert shared_record(folder, group, "cost", lambda: {"ratio": 1.0}) == {"ratio": 1.0}
    with pytest.raises(ValueError, match="budget too small"):
        run_prompts(folder, group, failing)
    assert not os.path.exists(folder.state_dir)
    RunFolder(tmp_path, settings={"steps": 3}, num_prompts=2, lists=("images",)).check()  # not refused
    with pytest.raises(ZeroDivisionError):
        shared_record(folder, group, "cost", lambda: 1 / 0)
    assert not os.path.exists(folder.state_dir)

    def second_fails(index):
        if index == 1:
            raise ValueError("the second prompt failed")
        return {"images": [{"prompt_index": 0}]}, 1, 2

    with pytest.raises(ValueError, match="second prompt"):
        run_prompts(folder, group, second_fails)
    assert folder.pending() == [1] and os.path.exists(os.path.join(folder.state_dir, "run.json"))
    with pytest.raises(ValueError, match="other settings"):
        RunFolder(tmp_path, settings={"steps": 3}, num_prompts=2, lists=("images",)).check()
    several = ProcessGroup(index=0, count=2)
    other = RunFolder(tmp_path / "several", settings={"steps": 2}, num_prompts=1, lists=("images",))
    with pytest.raises(ValueError):
        run_prompts(other, several, failing)
    assert os.path.exists(os.path.join(other.state_dir, "run.json"))  # another process may be working for it
