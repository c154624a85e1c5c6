"""Prompt-set runs that are sharded across processes, resumable, and measured.

A run folder holds the run's images, its merged `results.json`, and `.noisekit/`: the run's record (`run.json`: a
digest of the command's settings), one file per finished prompt (`prompts/p000012.json`, written atomically after
the prompt's images) and each process's throughput. A prompt is done when its file exists, so:

- processes split the pending prompts (prompt k of the pending list goes to process k mod N) and never write the
  same file; the main process merges the prompt files, in prompt order, into one `results.json`. Every process
  encodes the whole prompt list, so a prompt's candidates are those of a one-process run;
- a run stopped at any moment (even `kill -9`) loses only the prompts in flight, and the same command resumes it
  with any number of processes; another command into the folder is refused;
- a one-process run that fails before it finishes any prompt (a budget too small, a reward of the wrong kind) gives
  the folder back: its record goes, so the corrected command can start there.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import time

from .results import with_digest, write_json

STATE_DIR = ".noisekit"
TIMED_PARTS = ("denoiser", "decode", "reward")  # `noisekit.core.clock.PARTS`, without importing torch here


@dataclasses.dataclass
class ProcessGroup:
    """This process's place among the run's processes; `barrier` waits for all of them."""

    index: int = 0
    count: int = 1
    device: str | None = None
    barrier: object = None

    @property
    def is_main(self):
        return self.index == 0

    def wait(self):
        if self.barrier is not None:
            self.barrier()


def process_group(*, device=None):
    """One process, or this process's place under `accelerate launch` / torchrun (CPU processes use gloo)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessGroup(device=device)
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate only joins the processes when told to run on the CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    own = "cpu" if state.device.type == "cpu" else str(state.device)
    return ProcessGroup(state.process_index, state.num_processes, device or own, state.wait_for_everyone)


def settings_digest(settings):
    """A short hash of a JSON-serialisable settings dict (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompts_digest(prompts):
    return hashlib.sha256(json.dumps(list(prompts)).encode("utf-8")).hexdigest()[:16]


class RunFolder:
    """The state of a run in `output_dir`: which prompts are done, each done prompt's records, the merge.

    `settings` is what identifies the command (its digest is recorded); `lists` names the record lists a prompt
    contributes to `results.json` (`("images",)` for generate, `("prompts", "candidates")` for search).
    """

    def __init__(self, output_dir, *, settings, num_prompts, lists):
        self.output_dir = output_dir
        self.lists = tuple(lists)
        self.settings = settings
        self.digest = settings_digest(settings)
        self.num_prompts = num_prompts
        self.state_dir = os.path.join(output_dir, STATE_DIR)
        self._loaded = {}

    def check(self):
        """Refuse a folder that holds another run (or results.json without a run record); read-only, so every
        process can call it before any of them writes."""
        record = _read_json(os.path.join(self.state_dir, "run.json"))
        if record is None:
            if os.path.exists(os.path.join(self.output_dir, "results.json")):
                raise ValueError(f"{self.output_dir!r} holds a results.json without a run record; give another "
                                 "--output_dir, or remove the folder to start over.")
            return
        if record.get("digest") != self.digest:
            changed = sorted(k for k in set(record.get("settings", {})) | set(self.settings)
                             if record.get("settings", {}).get(k) != self.settings.get(k))
            raise ValueError(f"{self.output_dir!r} holds a run of other settings ({', '.join(changed) or 'digest'}); "
                             "give another --output_dir, or remove the folder to start over.")

    def start(self):
        """Write the run record (main process); the folders a process writes into."""
        os.makedirs(os.path.join(self.state_dir, "prompts"), exist_ok=True)
        path = os.path.join(self.state_dir, "run.json")
        if not os.path.exists(path):
            write_json(path, {"digest": self.digest, "num_prompts": self.num_prompts, "settings": self.settings})

    @contextlib.contextmanager
    def released_on_failure(self, group):
        """Remove the run's record and measurements when the body fails before any prompt of the run is done, on a
        one-process run (with several, another process may still be working for the record)."""
        try:
            yield
        except BaseException:
            if group.count == 1 and not any(self.done(i) for i in range(self.num_prompts)):
                shutil.rmtree(self.state_dir, ignore_errors=True)
            raise

    def prompt_path(self, index):
        return os.path.join(self.state_dir, "prompts", f"p{index:06d}.json")

    def done(self, index):
        return os.path.exists(self.prompt_path(index))

    def pending(self):
        return [i for i in range(self.num_prompts) if not self.done(i)]

    def save(self, index, entries):
        """Mark prompt `index` done with its records (`{key: [record, ...]}`); call after its images are written."""
        write_json(self.prompt_path(index), {"prompt_index": index, **entries})

    def entries(self):
        """`{index: entries}` of the done prompts, in prompt order (files already read are kept)."""
        for index in range(self.num_prompts):
            if index not in self._loaded and self.done(index):
                data = _read_json(self.prompt_path(index))
                if data is not None:
                    data.pop("prompt_index", None)
                    self._loaded[index] = data
        return dict(sorted(self._loaded.items()))

    def merge(self, *, settings, throughput=None):
        """The merged results: `settings`, every done prompt's lists concatenated in prompt order, and `run`."""
        merged = {key: [] for key in self.lists}
        for entries in self.entries().values():
            for key, values in entries.items():
                merged.setdefault(key, []).extend(values)
        done = len(self._loaded)
        run = {"digest": self.digest, "num_prompts": self.num_prompts, "prompts_done": done,
               "complete": done == self.num_prompts, **({"throughput": throughput} if throughput else {})}
        return with_digest({"settings": settings, **merged, "run": run})  # replay refuses an edited copy

    def previous_throughput(self):
        """The throughput recorded in this folder's results.json, if any."""
        results = _read_json(os.path.join(self.output_dir, "results.json")) or {}
        return results.get("run", {}).get("throughput")

    def throughput_path(self, group):
        return os.path.join(self.state_dir, f"throughput-{group.index:03d}-of-{group.count:03d}.json")


def shard(indices, group):
    """This process's share of `indices`: every `group.count`-th one, from its own index."""
    return list(indices)[group.index::group.count]


class Meter:
    """Work and time of this process's prompts: candidates, denoiser evaluations (NFE), the seconds of the denoiser,
    the VAE decode and the rewards (when the work measures them), peak memory."""

    def __init__(self):
        self.prompts = self.candidates = self.nfe = 0
        self.parts = dict.fromkeys(TIMED_PARTS, 0.0)
        self.began = time.perf_counter()

    def add(self, *, candidates, nfe, seconds=None):
        """One prompt's work; `seconds` is `{part: seconds}` for some of `TIMED_PARTS`."""
        self.prompts += 1
        self.candidates += candidates
        self.nfe += nfe
        for part, value in (seconds or {}).items():
            if part in self.parts:
                self.parts[part] += value

    def describe_parts(self):
        """`denoiser 1.2 s, decode 0.3 s, reward 0.1 s`: the progress bar's postfix."""
        return ", ".join(f"{part} {value:.1f} s" for part, value in self.parts.items())

    def to_dict(self):
        return {"prompts": self.prompts, "candidates": self.candidates, "nfe": self.nfe,
                "seconds": round(time.perf_counter() - self.began, 3),
                **{f"{part}_seconds": round(value, 3) for part, value in self.parts.items()},
                "peak_memory_bytes": peak_memory(), "peak_vram_bytes": peak_vram()}


def peak_memory():
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_vram():
    """Peak GPU memory allocated by torch in this process, or None when it never used a GPU."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def combine(processes, *, num_prompts, prompts_skipped=0, load_seconds=None):
    """The run's throughput from each process's meter: the wall time is the slowest process's."""
    wall = max(p["seconds"] for p in processes)
    prompts = sum(p["prompts"] for p in processes)
    rate = lambda n: round(n / wall, 3) if wall > 0 else None
    per_prompt = wall / prompts if prompts else None
    vram = [p["peak_vram_bytes"] for p in processes if p["peak_vram_bytes"] is not None]
    # the parts' seconds add up over processes (compute spent), unlike `seconds` (the slowest process's wall time)
    parts = {f"{part}_seconds": round(sum(p.get(f"{part}_seconds", 0.0) for p in processes), 3)
             for part in TIMED_PARTS}
    return {"num_processes": len(processes), "num_prompts": num_prompts, "prompts_run": prompts,
            "prompts_skipped": prompts_skipped,
            "candidates": sum(p["candidates"] for p in processes), "nfe": sum(p["nfe"] for p in processes),
            "seconds": round(wall, 3), **parts,
            "candidates_per_second": rate(sum(p["candidates"] for p in processes)),
            "nfe_per_second": rate(sum(p["nfe"] for p in processes)),
            "seconds_per_prompt": round(per_prompt, 3) if per_prompt else None,
            "projected_seconds": round(per_prompt * num_prompts, 1) if per_prompt else None,
            "load_seconds": load_seconds, "peak_memory_bytes": max(p["peak_memory_bytes"] for p in processes),
            "peak_vram_bytes": max(vram) if vram else None, "processes": processes}


def describe(throughput):
    """One line for the end of a run."""
    t = throughput
    if not t["prompts_run"]:
        return f"throughput: nothing to run ({t['prompts_skipped']} prompts already done)"
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    vram = f", peak VRAM {gib(t['peak_vram_bytes'])}" if t["peak_vram_bytes"] is not None else ""
    skipped = f" ({t['prompts_skipped']} done before)" if t["prompts_skipped"] else ""
    timed = [f"{part} {t[f'{part}_seconds']:.1f} s" for part in TIMED_PARTS if t.get(f"{part}_seconds")]
    parts = f" ({', '.join(timed)})" if timed else ""
    return (f"throughput: {t['prompts_run']} prompts{skipped} in {t['seconds']:.1f} s{parts} on "
            f"{t['num_processes']} process{'es' if t['num_processes'] > 1 else ''}: "
            f"{t['candidates_per_second']:.2f} candidates/s, "
            f"{t['nfe_per_second']:.1f} NFE/s, {t['seconds_per_prompt']:.2f} s/prompt, peak memory "
            f"{gib(t['peak_memory_bytes'])}{vram}; all {t['num_prompts']} prompts: "
            f"{_duration(t['projected_seconds'])}")


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_prompts(folder, group, work, *, on_done=None, progress=None):
    """Run `work(index) -> (entries, candidates, nfe[, seconds])` on this process's share of the pending prompts,
    saving each prompt as it finishes (`seconds`: `{part: seconds}` of `TIMED_PARTS`, shown on the progress bar).
    `on_done()` runs on the main process after each of its prompts (to rewrite the merged results). Returns how many
    prompts were pending and this process's meter."""
    if group.is_main:
        folder.start()
    pending = folder.pending()
    group.wait()  # every process has the same pending list before any prompt is marked done
    mine = shard(pending, group)
    if progress is not None:
        progress.reset(total=len(mine))
    meter = Meter()
    with folder.released_on_failure(group):
        for index in mine:
            entries, candidates, nfe, *timed = work(index)
            folder.save(index, entries)
            meter.add(candidates=candidates, nfe=nfe, seconds=timed[0] if timed else None)
            if group.is_main and on_done is not None:
                on_done()
            if progress is not None:
                if timed:
                    progress.set_postfix_str(meter.describe_parts(), refresh=False)
                progress.update(1)
    measured = meter.to_dict()
    write_json(folder.throughput_path(group), measured)
    group.wait()  # every prompt file and meter is written
    return len(pending), measured


def shared_record(folder, group, name, make):
    """A JSON record every process of the run uses alike (a measurement): the main process reads
    `.noisekit/{name}.json`, or writes `make()` there when the run has none yet (so a resumed run reuses it); the
    others wait for it and read it."""
    path = os.path.join(folder.state_dir, f"{name}.json")
    if group.is_main:
        folder.start()  # the run record first: the folder then belongs to this command, and so does the record
        if _read_json(path) is None:
            with folder.released_on_failure(group):
                write_json(path, make())
    group.wait()
    return _read_json(path)


def gather_throughput(folder, group, *, pending, load_seconds=None):
    """The run's throughput (main process), from the meters every process wrote."""
    processes = []
    for index in range(group.count):
        other = dataclasses.replace(group, index=index)
        processes.append(_read_json(folder.throughput_path(other)))
    return combine(processes, num_prompts=folder.num_prompts, prompts_skipped=folder.num_prompts - pending,
                   load_seconds=load_seconds)


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise ValueError(f"{path!r} is not valid JSON; remove it to run its prompt again.") from None
