"""Query latency and recall of a NoiseQuery library at scale, on synthetic feature tables (no generation).

    nice -n 5 env HF_HUB_OFFLINE=1 python benchmarks/bench_library_query.py --entries 1000000 --dims 768,1024 \\
        --threads 2 --out benchmarks/results/library_query.json

For each embedding width D the script writes a `(entries, D)` float16 table to a temporary folder, builds the IVF
index the library builds (`noisekit.library.index`), and measures:

- `library.query(text=...)` latency, wall-clock and CPU time (median, p95 over `--queries` different queries, each after one warm-up call,
  with the index's pages read once beforehand, as after a library's first use) and recall@10 against an exact
  float32 scan of the same table, for the default `nprobe` and a sweep;
- the exact scan's own latency (what a query costs without the index);
- every query kind (text, attributes, colour, rerank, weighted, sampling, exclusion) at the default `nprobe`.

Text is not encoded: each query's text names a prepared query vector, so the timings are the library's alone (a
real CLIP text tower adds its own cost, the same at any library size).

The tables are *clustered*, as CLIP embeddings of generated images are: entry = normalise(m_img + c_k + 0.6 e)
over 4,096 concepts c_k, with a power-law spectrum (variance of coordinate i ~ 1 / (i + 1)); a text query is
normalise(m_txt + c_k + 0.6 e') for a random concept, m_txt off m_img (CLIP's modality gap). `--isotropic` adds a
table of unit Gaussian vectors, which has no neighbourhood structure at all: the worst case for any index.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from noisekit.library import Extractor, NoiseLibrary, get_extractor
from noisekit.library.index import IvfIndex, default_lists, default_probes, write_index

ATTRIBUTES = ("color", "sharpness", "texture", "shape")
CONCEPTS = 4096
SPREAD = 0.6
CHUNK = 65536
QUERIES = {
    "attribute high": dict(attributes=["brightness=high"]),
    "attribute value": dict(attributes=["hfe=p30"]),
    "attribute range x2": dict(attributes=["brightness=0.2..0.4", "saturation=high"]),
    "colour": dict(attributes=["color=navy"]),
    "text": dict(text="q0"),
    "text + attribute (rerank)": dict(text="q0", attributes=["brightness=low"], rerank_k=100),
    "text + attribute (weighted)": dict(text="q0", attributes=["brightness=low"], mode="weighted"),
    "text, sampled top-8": dict(text="q0", top_k=8, temperature=0.05, sample_seed=0),
    "text, 1000 excluded": dict(text="q0", exclude=range(1000)),
}


class Clustered:
    """The synthetic CLIP-like distribution (see the module docstring)."""

    def __init__(self, dim, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.scale = (1 + torch.arange(dim, dtype=torch.float32)) ** -0.5
        self.centers = torch.randn(CONCEPTS, dim, generator=self.generator) * self.scale
        self.image_mean = torch.randn(dim, generator=self.generator) * self.scale
        self.text_mean = self.image_mean + torch.randn(dim, generator=self.generator) * self.scale

    def draw(self, count, mean):
        concepts = torch.randint(CONCEPTS, (count,), generator=self.generator)
        noise = torch.randn(count, len(self.scale), generator=self.generator) * self.scale
        return torch.nn.functional.normalize(mean + self.centers[concepts] + SPREAD * noise, dim=1)

    def images(self, count):
        return self.draw(count, self.image_mean)

    def texts(self, count):
        return self.draw(count, self.text_mean)


class Isotropic:
    def __init__(self, dim, seed=0):
        self.dim, self.generator = dim, torch.Generator().manual_seed(seed)

    def images(self, count):
        return torch.nn.functional.normalize(torch.randn(count, self.dim, generator=self.generator), dim=1)

    texts = images


def write_table(folder, source, entries, dim):
    table = np.lib.format.open_memmap(os.path.join(folder, "table.npy"), "w+", np.float16, (entries, dim))
    for start in range(0, entries, CHUNK):
        table[start:start + CHUNK] = source.images(min(CHUNK, entries - start)).half().numpy()
    table.flush()
    return torch.from_numpy(np.load(os.path.join(folder, "table.npy"), mmap_mode="c"))


def exact_top(table, queries, k=10):
    """Rows of the exact top-k of each query (float32 scan of the stored float16 table), and one scan's time."""
    scores = torch.empty(len(queries), len(table))
    for start in range(0, len(table), CHUNK):
        scores[:, start:start + CHUNK] = queries @ table[start:start + CHUNK].float().T
    top = torch.topk(scores, k, dim=1).indices
    began = time.perf_counter()
    for start in range(0, len(table), CHUNK):
        table[start:start + CHUNK].float() @ queries[0]
    return top, 1000 * (time.perf_counter() - began)


def synthetic_library(entries, dim, index, texts, seed=0):
    generator = torch.Generator().manual_seed(seed)
    extractors = {name: get_extractor(name) for name in ATTRIBUTES}
    lookup = {f"q{i}": vector for i, vector in enumerate(texts)}
    clip = Extractor("clip", 1, None, (), dim, "float16",
                     lambda batch: torch.stack([lookup[t] for t in batch]),
                     {"source": "synthetic", "weights_hash": "synthetic"})
    features = {name: torch.rand(entries, len(e.columns), generator=generator) for name, e in extractors.items()}
    manifest = {"latent_shape": [4, 64, 64], "height": 512, "width": 512, "model": {"id": "synthetic"},
                "extractors": {name: e.describe() for name, e in {**extractors, "clip": clip}.items()}}
    library = NoiseLibrary("synthetic", manifest, np.arange(entries, dtype=np.int64), np.zeros(entries, np.int64),
                           features, indexes={"clip": index})
    library.use_clip(clip)
    return library


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def timed(call, repeats):
    """`(wall, cpu)` milliseconds of each call; CPU time (all threads) does not grow when other jobs share the
    cores, so it tells what a call costs when wall times are inflated by them."""
    wall, cpu = [], []
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(1000 * (time.perf_counter() - began))
        cpu.append(1000 * (time.process_time() - began_cpu))
    return wall, cpu


def percentiles(values, prefix=""):
    ordered = sorted(values)
    return {f"{prefix}median_ms": round(statistics.median(ordered), 2),
            f"{prefix}p95_ms": round(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], 2)}


def summary(times):
    wall, cpu = times
    return {**percentiles(wall), **percentiles(cpu, "cpu_")}


def text_latency_and_recall(library, truth, count, nprobe):
    wall, cpu, hits = [], [], 0
    for i in range(count):
        library.query(text=f"q{i}", top_k=10, nprobe=nprobe)  # warm-up of this query's lists
        one_wall, one_cpu = timed(lambda: library.query(text=f"q{i}", top_k=10, nprobe=nprobe), 1)
        wall, cpu = wall + one_wall, cpu + one_cpu
        seeds = library.query(text=f"q{i}", top_k=10, nprobe=nprobe).seeds
        hits += len(set(seeds) & set(truth[i].tolist()))
    return {**summary((wall, cpu)), "recall_at_10": round(hits / (10 * count), 4)}


def prepare(folder, args, dim, source_class):
    """Table, index and exact answers in `folder` (reused when already there): `(index, texts, facts)`."""
    saved = os.path.join(folder, "prepared.pt")
    if not os.path.isfile(saved):
        os.makedirs(folder, exist_ok=True)
        began = time.perf_counter()
        source = source_class(dim)
        table = write_table(folder, source, args.entries, dim)
        made = time.perf_counter() - began
        began = time.perf_counter()
        write_index(os.path.join(folder, "index"), table, np.arange(args.entries))
        built = time.perf_counter() - began
        texts = source.texts(args.queries)
        truth, exact_ms = exact_top(table, texts)
        del table  # the index holds its own copy: free the page cache the exact table took
        os.remove(os.path.join(folder, "table.npy"))
        torch.save({"texts": texts, "truth": truth, "facts": {"table_s": round(made, 1), "index_build_s": round(
            built, 1), "exact_scan_ms": round(exact_ms, 1)}}, saved)
    prepared = torch.load(saved)
    return IvfIndex(os.path.join(folder, "index")), prepared["texts"], prepared["truth"], prepared["facts"]


def wait_quiet(limit, patience):
    """Wait (up to `patience` s) until the 1-minute load average is under `limit`; the load seen, for the record."""
    began = time.time()
    while os.getloadavg()[0] >= limit and time.time() - began < patience:
        time.sleep(5)
    return round(os.getloadavg()[0], 2)


def run(args, workdir, dim, source_class, with_kinds):
    index, texts, truth, facts = prepare(os.path.join(workdir, f"{source_class.__name__.lower()}-{dim}"), args, dim,
                                         source_class)
    for start in range(0, len(index), CHUNK):  # warm: every page of the index read once, as after a first use
        index.vectors[start:start + CHUNK].sum()
    library = synthetic_library(args.entries, dim, index, texts)
    result = {"entries": args.entries, "dim": dim, "data": source_class.__name__.lower(),
              "lists": index.record["lists"], "nprobe": index.nprobe, **facts,
              "load_before": wait_quiet(args.quiet_load, args.patience)}
    result["text"] = text_latency_and_recall(library, truth, len(texts), None)
    result["sweep"] = {str(p): text_latency_and_recall(library, truth, len(texts), p)
                       for p in args.sweep if p <= index.record["lists"]}
    if with_kinds:
        result["queries"] = {}
        for name, query in QUERIES.items():
            library.query(**query)  # warm-up: column sorts for percentiles
            result["queries"][name] = summary(timed(lambda: library.query(**query), args.repeats))
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)
    return result


def write(report, path):
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


def main(args):
    if args.pin:  # run on the first `--pin` cores only, as a machine of that many would
        os.sched_setaffinity(0, range(args.pin))
    torch.set_num_threads(args.threads)
    report = {"command": "python benchmarks/bench_library_query.py " + " ".join(args.argv),
              "machine": f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores ({cpu_name()}), torch threads "
                         f"{torch.get_num_threads()}; {args.note}",
              "defaults": {"lists": f"2^round(log2(sqrt(N))) ({default_lists(args.entries)} at N={args.entries})",
                           "nprobe": f"lists / 8 ({default_probes(default_lists(args.entries))})"},
              "runs": []}
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-library-", dir=args.tmp)
    try:
        for dim in args.dims:
            report["runs"].append(run(args, workdir, dim, Clustered, True))
            write(report, args.out)
        if args.isotropic:
            report["runs"].append(run(args, workdir, args.dims[0], Isotropic, False))
            write(report, args.out)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dims", type=lambda s: [int(x) for x in s.split(",")], default=[768, 1024])
    parser.add_argument("--queries", type=int, default=100, help="different text queries for latency and recall")
    parser.add_argument("--repeats", type=int, default=20, help="calls per query kind")
    parser.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pin", type=int, default=0, help="pin the process to the first N cores (0: no pinning)")
    parser.add_argument("--isotropic", action="store_true", help="also the structureless worst case")
    parser.add_argument("--tmp", default=None, help="folder for the temporary tables (about 4 x N x D bytes)")
    parser.add_argument("--workdir", default=None, help="keep tables and indexes here and reuse them next time")
    parser.add_argument("--quiet_load", type=float, default=1e9, help="time only once the load average is below")
    parser.add_argument("--patience", type=float, default=600, help="seconds to wait for --quiet_load")
    parser.add_argument("--note", default="", help="what else was running")
    parser.add_argument("--out", default=None, help="write the report here (JSON)")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    main(args)
