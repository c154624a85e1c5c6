"""An inverted-file (IVF) index over a library's embedding (CLIP) table, for text queries at a million entries.

```
LIB/index/<name>-<digest>/centroids.npy   (L, D) float32 unit centroids of spherical k-means
LIB/index/<name>-<digest>/offsets.npy     (L + 1,) int64: list l holds positions offsets[l]:offsets[l + 1]
LIB/index/<name>-<digest>/rows.npy        (N,) int64: the library row at each position
LIB/index/<name>-<digest>/vectors.npy     (N, D) float16: the stored features, list by list
LIB/index/<name>-<digest>/index.json      commit record (written last): entries, seeds digest, lists, probes
```

A query scores the L centroids, scans the `nprobe` best lists (each one contiguous slice of the memory-mapped
vectors, so no gather) and rescores its best candidates in float32. A brute-force scan of 1M x 768 float16
reads 1.5 GB per query (about 0.3 s on two cores); the lists probed by default are about 6 % of it.

Why not faiss or hnswlib: they add a compiled dependency for a gain we do not need: this index meets the target
(< 50 ms, recall@10 >= 0.95 at 1M x 768 on two cores, `benchmarks/bench_library_query.py`) with numpy and torch,
its files are plain `.npy` that memory-map, and its build is a pure function of the shards (seeded k-means over a
seeded sample, float32 torch ops in a fixed order), so a library built by several processes gets the same bytes.
A graph index (HNSW) would be faster still but its build is order- and thread-dependent, and it does not map.

The vectors are a second copy of the shards' embedding (2 x D bytes an entry); the shards stay the record, the
index is derived and rebuilt by `build_index` when the library grows.
"""

import hashlib
import json
import math
import os
import shutil

import numpy as np
import torch

from .lock import writer_lock
from .store import committed_shards, feature_digest, load_feature, load_seeds, read_manifest, write_json

TRAIN_PER_LIST = 64  # k-means sample: this many points per list
ITERATIONS = 12
SAMPLE_SEED = 0
CHUNK = 65536  # rows per matmul while assigning, so memory stays bounded
INDEX_MIN_ENTRIES = 100_000  # below this an exact scan of the table in memory is as fast


def index_root(path):
    return os.path.join(path, "index")


def index_dir(path, name, description):
    return os.path.join(index_root(path), f"{name}-{feature_digest(description)}")


def seeds_digest(seeds):
    return hashlib.sha256(np.ascontiguousarray(seeds, dtype=np.int64).tobytes()).hexdigest()[:16]


def default_lists(entries):
    """About sqrt(N) lists, a power of two (1,024 at 1M)."""
    return max(1, 2 ** round(math.log2(max(entries, 1)) / 2))


def default_probes(lists):
    """An eighth of the lists: recall@10 0.99 on the benchmark's clustered 1M tables (a sixteenth gave 0.96)."""
    return max(1, min(lists, math.ceil(lists / 8)))


def _check_count(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


def _best(table, centroids):
    """Index of the highest-cosine centroid of each row of `table` (float16 or float32), in chunks."""
    out = torch.empty(len(table), dtype=torch.int64)
    for start in range(0, len(table), CHUNK):
        block = torch.as_tensor(table[start:start + CHUNK]).float()
        out[start:start + CHUNK] = (block @ centroids.T).argmax(1)
    return out


def train_centroids(table, lists, seed=SAMPLE_SEED):
    """Spherical k-means on a seeded sample of `table` (N, D): `(lists, D)` float32 unit centroids."""
    generator = torch.Generator().manual_seed(seed)
    size = min(len(table), lists * TRAIN_PER_LIST)
    sample_rows = torch.randperm(len(table), generator=generator)[:size].sort().values
    sample = torch.nn.functional.normalize(torch.as_tensor(table[sample_rows.numpy()]).float(), dim=1)
    centroids = sample[torch.randperm(size, generator=generator)[:lists]].clone()
    for _ in range(ITERATIONS):
        owner = _best(sample, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, owner, sample)
        counts = torch.bincount(owner, minlength=lists)
        empty = (counts == 0).nonzero().flatten()
        sums[empty] = sample[torch.randint(size, (len(empty),), generator=generator)]  # reseed empty lists
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids


def write_index(folder, table, seeds, *, lists=None, nprobe=None):
    """Write an index of `table` (N, D) whose row r is library row r (seed `seeds[r]`) into `folder`."""
    lists = lists or default_lists(len(table))
    _check_count("lists", lists, 1, max(1, len(table)))
    nprobe = nprobe or default_probes(lists)
    _check_count("nprobe", nprobe, 1, lists)
    centroids = train_centroids(table, lists)
    owner = _best(table, centroids)
    order = torch.sort(owner, stable=True).indices  # list by list, rows ascending within a list
    offsets = torch.zeros(lists + 1, dtype=torch.int64)
    offsets[1:] = torch.bincount(owner, minlength=lists).cumsum(0)
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.save(os.path.join(tmp, "centroids.npy"), centroids.numpy())
    np.save(os.path.join(tmp, "offsets.npy"), offsets.numpy())
    np.save(os.path.join(tmp, "rows.npy"), order.numpy())
    vectors = np.lib.format.open_memmap(os.path.join(tmp, "vectors.npy"), "w+", np.float16, tuple(table.shape))
    for start in range(0, len(order), CHUNK):
        vectors[start:start + CHUNK] = torch.as_tensor(table[order[start:start + CHUNK].numpy()]).half().numpy()
    vectors.flush()
    write_moments(tmp, torch.from_numpy(vectors))
    del vectors
    write_json(os.path.join(tmp, "index.json"), {"entries": len(table), "seeds": seeds_digest(seeds), "lists": lists,
                                                 "nprobe": nprobe, "dim": int(table.shape[1]),
                                                 "iterations": ITERATIONS, "sample_seed": SAMPLE_SEED})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def write_moments(folder, vectors):
    """`mean.npy` (D,) and `second.npy` (D, D): the mean and the mean outer product of the vectors, so the mean
    and spread of every entry's cosine to a query come from two small products (`cosine_stats`)."""
    total = torch.zeros(vectors.shape[1], dtype=torch.float64)
    second = torch.zeros(vectors.shape[1], vectors.shape[1], dtype=torch.float64)
    for start in range(0, len(vectors), CHUNK):
        block = vectors[start:start + CHUNK].float()
        total += block.sum(0, dtype=torch.float64)
        second += (block.T @ block).double()
    np.save(os.path.join(folder, "mean.npy"), (total / len(vectors)).numpy())
    np.save(os.path.join(folder, "second.npy"), (second / len(vectors)).numpy())


def read_record(folder):
    record_path = os.path.join(folder, "index.json")
    if not os.path.isfile(record_path):
        return None
    with open(record_path) as f:
        return json.load(f)


def spans(starts, lengths):
    """The positions `start .. start + length - 1` of every span, concatenated (one vectorised pass)."""
    lengths = torch.tensor(lengths, dtype=torch.int64)
    shift = torch.tensor(starts, dtype=torch.int64) - (lengths.cumsum(0) - lengths)
    return torch.arange(int(lengths.sum())) + torch.repeat_interleave(shift, lengths)


class IvfIndex:
    """A written index, memory-mapped. Scores are cosines (the features are unit vectors)."""

    def __init__(self, folder):
        self.folder, self.record = folder, read_record(folder)

        def load(name):
            try:
                return np.load(os.path.join(folder, name), mmap_mode="c")
            except (OSError, ValueError) as error:
                raise ValueError(f"index file {os.path.join(folder, name)!r} is unreadable ({error}); delete "
                                 f"{folder!r} and run `build_index` again.") from None

        self.centroids = torch.from_numpy(np.asarray(load("centroids.npy")))
        self.offsets = load("offsets.npy").tolist()
        self.rows = torch.from_numpy(load("rows.npy"))
        self.mapped = load("vectors.npy")  # np.memmap: pages are read when a probed list needs them
        self.vectors = torch.from_numpy(self.mapped)
        if len(self.rows) != self.record["entries"] or tuple(self.vectors.shape) != (len(self.rows),
                                                                                     self.record["dim"]):
            raise ValueError(f"index {folder!r} is incomplete; delete it and run `build_index` again.")
        self.mean, self.second = torch.from_numpy(load("mean.npy")), torch.from_numpy(load("second.npy"))
        self.nprobe = self.record["nprobe"]
        self._positions = None

    def __len__(self):
        return len(self.rows)

    @property
    def shape(self):
        return tuple(self.vectors.shape)

    def positions(self):
        """Position of each library row in the list order (the inverse of `rows`)."""
        if self._positions is None:
            self._positions = torch.empty_like(self.rows)
            self._positions[self.rows] = torch.arange(len(self.rows))
        return self._positions

    def take(self, rows):
        """float32 `(len(rows), D)` features of library rows."""
        return self.vectors[self.positions()[torch.as_tensor(rows, dtype=torch.int64)]].float()

    def scores(self, vector, rows=None):
        """Exact float32 cosines of library rows `rows` (all, in row order, when `None`): a full scan."""
        vector = vector.float()
        if rows is not None:
            return self.take(rows) @ vector
        out, buffer = torch.empty(len(self.rows)), torch.empty(min(CHUNK, len(self.rows)), self.shape[1])
        for start in range(0, len(self.rows), CHUNK):  # float32 like the exact table, cast into one buffer
            block = self.vectors[start:start + CHUNK]
            out[self.rows[start:start + CHUNK]] = buffer[:len(block)].copy_(block) @ vector
        return out

    def cosine_stats(self, vector):
        """Mean and (unbiased) standard deviation of every entry's cosine to `vector`, without a scan."""
        vector = vector.double()
        mean = float(self.mean @ vector)
        variance = max(float(vector @ self.second @ vector) - mean ** 2, 0.0) * len(self) / max(len(self) - 1, 1)
        return mean, variance ** 0.5

    def search(self, vector, k, *, blocked=None, nprobe=None):
        """`(rows, scores)` of the `k` best rows among the probed lists, rows ascending (the caller ranks them);
        `blocked` rows are never returned."""
        nprobe = min(nprobe or self.nprobe, len(self.centroids))
        probes = torch.topk(self.centroids @ vector.float(), nprobe).indices.sort().values.tolist()
        half, offsets = vector.half(), self.offsets
        rough = torch.cat([torch.mv(self.vectors[offsets[p]:offsets[p + 1]], half) for p in probes]).float()
        positions = spans([offsets[p] for p in probes], [offsets[p + 1] - offsets[p] for p in probes])
        if blocked is not None and len(blocked):
            rough[torch.isin(self.rows[positions], blocked)] = -torch.inf
        # float16 scores rank roughly; rescore a margin of the best in float32 so the top k and scores are exact
        keep = torch.topk(rough, min(len(rough), max(4 * k, k + 64))).indices
        keep = keep[torch.isfinite(rough[keep])]
        if len(keep) < k and nprobe < len(self.centroids):  # too few entries in these lists: probe more
            return self.search(vector, k, blocked=blocked, nprobe=min(2 * nprobe, len(self.centroids)))
        positions = positions[keep]
        exact = self.vectors[positions].float() @ vector.float()
        best = torch.topk(exact, min(k, len(exact))).indices
        rows = self.rows[positions[best]]
        order = torch.argsort(rows)
        return rows[order], exact[best][order]


def build_index(path, *, name="clip", lists=None, nprobe=None, locked=False):
    """(Re)build the IVF index of library `path`'s embedding `name` from its shards; returns the index folder.
    `build_library` calls it for libraries of `INDEX_MIN_ENTRIES` entries or more; call it after growing one.

    Examples:
        >>> build_index("lib")                       # ~sqrt(N) lists, a sixteenth of them probed per query
        >>> build_index("lib", lists=4096, nprobe=128)
    """
    manifest = read_manifest(path)
    description = manifest["extractors"].get(name)
    if description is None or description["columns"]:
        embeddings = [k for k, d in manifest["extractors"].items() if not d["columns"]]
        raise ValueError(f"`name` must be an embedding of library {path!r} ({embeddings}), got {name!r}.")
    if locked:
        return _build_index(path, manifest, name, lists, nprobe)
    with writer_lock(path, "build_index"):
        return _build_index(path, manifest, name, lists, nprobe)


def _build_index(path, manifest, name, lists, nprobe):
    records = committed_shards(path)
    seeds, _, order = load_seeds(path, records)
    table = load_feature(path, manifest, name, records, order)
    if table is None or not len(table):
        raise ValueError(f"library {path!r} has no complete {name!r} features to index.")
    folder = index_dir(path, name, manifest["extractors"][name])
    write_index(folder, table, seeds[order], lists=lists, nprobe=nprobe)
    return folder


def open_indexes(path, manifest, seeds):
    """`{name: IvfIndex}` of the embeddings whose index covers exactly `seeds`; a stale one is named in a warning
    and left unused (queries then scan exactly)."""
    import warnings

    indexes = {}
    for name, description in manifest["extractors"].items():
        folder = index_dir(path, name, description)
        record = read_record(folder)
        if description["columns"] or record is None:
            continue
        if record["entries"] != len(seeds) or record["seeds"] != seeds_digest(seeds):
            warnings.warn(f"the {name!r} index of library {path!r} covers {record['entries']} entries, the library "
                          f"has {len(seeds)}: queries scan exactly until `build_index` runs again.", stacklevel=3)
            continue
        indexes[name] = IvfIndex(folder)
    return indexes


class ExactTable:
    """An embedding table in memory, scanned exactly (libraries without an index)."""

    def __init__(self, table):
        self.table = table

    def __len__(self):
        return len(self.table)

    def scores(self, vector, rows=None):
        return (self.table if rows is None else self.table[rows]) @ vector.float()

    def take(self, rows):
        return self.table[rows]
