"""The IVF index of a library's CLIP table: same answers as the exact scan when every list is probed, memory-mapped,
stale after a grow, built automatically for large libraries, and byte-identical whoever built the shards."""

import os
import warnings

import numpy as np
import pytest
import torch

from noisekit.library import NoiseLibrary, build_index, build_library, clip_extractor
from noisekit.library.index import IvfIndex, spans, write_index

SMALL = dict(num_inference_steps=2, shard_size=4, batch_size=4)
TEXTS = ["a red circle", "a blue square", "a green triangle"]


@pytest.fixture(scope="module")
def clip(library_clip_dir):
    return clip_extractor(f"local-dir:{library_clip_dir}")


@pytest.fixture(scope="module")
def library_path(sd1_pipe, clip, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("indexed") / "lib")
    build_library(sd1_pipe, path, 12, extractors=["color", clip], **SMALL)
    return path


def test_spans():
    assert spans([5, 0, 9], [2, 3, 0]).tolist() == [5, 6, 0, 1, 2]


def test_full_probe_answers_as_the_exact_scan(library_path):
    exact = NoiseLibrary.load(library_path)
    assert not exact.indexes
    build_index(library_path, lists=3, nprobe=3)
    indexed = NoiseLibrary.load(library_path)
    assert set(indexed.indexes) == {"clip"} and "clip" not in indexed.features  # served from the index
    index = indexed.indexes["clip"]
    assert isinstance(index.mapped, np.memmap) and np.shares_memory(index.mapped, index.vectors.numpy())
    assert indexed.info()["indexes"]["clip"] == {"entries": 12, "lists": 3, "nprobe": 3}
    for query in (dict(text=TEXTS[0], top_k=5), dict(text=TEXTS[1], top_k=3, exclude=[0, 1, 2]),
                  dict(text=TEXTS[2], attributes=["brightness=high"], rerank_k=6, top_k=3),
                  dict(text=TEXTS[0], attributes=["brightness=low"], mode="weighted", top_k=4),
                  dict(text=TEXTS[1], top_k=3, temperature=1.0, sample_seed=3)):
        a, b = exact.query(**query), indexed.query(**query)
        assert a.seeds == b.seeds, query
        assert a.scores == pytest.approx(b.scores, abs=2e-3)


def test_search_rescores_and_widens_when_lists_run_short(library_path):
    build_index(library_path, lists=4, nprobe=1)
    index = NoiseLibrary.load(library_path).indexes["clip"]
    vector = torch.nn.functional.normalize(torch.randn(16), dim=0)
    rows, scores = index.search(vector, 2)
    assert len(rows) == 2 and rows.tolist() == sorted(rows.tolist())
    torch.testing.assert_close(scores, index.take(rows) @ vector)
    assert len(index.search(vector, 12)[0]) == 12  # more than one list holds: more lists are probed


def test_a_grown_library_warns_and_scans_exactly(library_path, sd1_pipe, clip, tmp_path):
    import shutil

    path = str(tmp_path / "lib")
    shutil.copytree(library_path, path)
    build_index(path, lists=2, nprobe=2)
    build_library(sd1_pipe, path, 16, extractors=["color", clip], resume=True, **SMALL)
    with pytest.warns(UserWarning, match="covers 12 entries, the library has 16"):
        grown = NoiseLibrary.load(path)
    assert not grown.indexes and grown.features["clip"].shape == (16, 16)
    build_index(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(NoiseLibrary.load(path).indexes["clip"]) == 16


def test_large_libraries_are_indexed_by_the_build(sd1_pipe, clip, tmp_path, monkeypatch):
    import noisekit.library.build as build

    monkeypatch.setattr(build, "INDEX_MIN_ENTRIES", 8)
    path = str(tmp_path / "lib")
    build_library(sd1_pipe, path, 8, extractors=["color", clip], **SMALL)
    assert NoiseLibrary.load(path).info()["indexes"]["clip"]["entries"] == 8


def index_bytes(path):
    root = os.path.join(path, "index")
    out = {}
    for folder in os.listdir(root):
        for name in os.listdir(os.path.join(root, folder)):
            with open(os.path.join(root, folder, name), "rb") as f:
                out[folder, name] = f.read()
    return out


def test_index_is_the_same_bytes_after_a_two_process_build(library_path, sd1_pipe, clip, tmp_path):
    path = str(tmp_path / "lib2")
    for index in (0, 1):
        build_library(sd1_pipe, path, 12, extractors=["color", clip], process_index=index, num_processes=2, **SMALL)
    build_index(path, lists=3)
    build_index(library_path, lists=3)
    assert index_bytes(path) == index_bytes(library_path)
    with open(os.path.join(path, "writer.lock")) as f:
        assert f.read() == ""  # released locks leave an empty file behind


def test_clustered_table_recall(tmp_path):
    """On clustered unit vectors, probing a quarter of the lists finds nearly all of the exact top 10."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(64, 32, generator=generator)
    table = torch.nn.functional.normalize(centers[torch.randint(64, (4000,), generator=generator)]
                                          + 0.5 * torch.randn(4000, 32, generator=generator), dim=1)
    write_index(str(tmp_path / "index"), table.half(), np.arange(4000), lists=64, nprobe=16)
    index = IvfIndex(str(tmp_path / "index"))
    queries = torch.nn.functional.normalize(centers[:20] + 0.5 * torch.randn(20, 32, generator=generator), dim=1)
    hits = 0
    for query in queries:
        truth = set(torch.topk(table.half().float() @ query, 10).indices.tolist())
        hits += len(truth & set(index.search(query, 10)[0].tolist()))
    assert hits / 200 >= 0.95
    with pytest.raises(ValueError, match="`nprobe` must be an integer in \\[1, 64\\], got 65"):
        write_index(str(tmp_path / "other"), table.half(), np.arange(4000), lists=64, nprobe=65)


def synthetic_pair(tmp_path, entries=4000, dim=32):
    """The same clustered table as an exact library and as an indexed one (64 lists, 8 probed: the default
    eighth)."""
    from noisekit.library import Extractor, get_extractor

    generator = torch.Generator().manual_seed(1)
    centers = torch.randn(64, dim, generator=generator)
    table = torch.nn.functional.normalize(centers[torch.randint(64, (entries,), generator=generator)]
                                          + 0.5 * torch.randn(entries, dim, generator=generator), dim=1).half()
    texts = torch.nn.functional.normalize(centers[:8] + 0.5 * torch.randn(8, dim, generator=generator), dim=1)
    lookup = {f"q{i}": vector for i, vector in enumerate(texts)}
    clip = Extractor("clip", 1, None, (), dim, "float16", lambda batch: torch.stack([lookup[t] for t in batch]),
                     {"source": "synthetic", "weights_hash": "synthetic"})
    color = get_extractor("color")
    manifest = {"latent_shape": [4, 8, 8], "height": 64, "width": 64, "model": {"id": "synthetic"},
                "extractors": {"color": color.describe(), "clip": clip.describe()}}
    attributes = torch.rand(entries, len(color.columns), generator=generator)
    write_index(str(tmp_path / "index"), table, np.arange(entries), lists=64, nprobe=8)
    libraries = []
    for features, indexes in (({"color": attributes, "clip": table.float()}, None),
                              ({"color": attributes}, {"clip": IvfIndex(str(tmp_path / "index"))})):
        library = NoiseLibrary("synthetic", manifest, np.arange(entries, dtype=np.int64),
                               np.zeros(entries, np.int64), features, indexes=indexes)
        library.use_clip(clip)
        libraries.append(library)
    return libraries


def test_weighted_mode_from_the_index_matches_the_exact_scan(tmp_path):
    exact, indexed = synthetic_pair(tmp_path)
    mean, std = indexed.indexes["clip"].cosine_stats(exact.clip().encode_text(["q0"])[0])
    cosines = exact.features["clip"] @ exact.clip().encode_text(["q0"])[0]
    assert (mean, std) == pytest.approx((cosines.mean().item(), cosines.std().item()), abs=1e-5)
    for query in (dict(text="q0", attributes=["brightness=low"], top_k=5),
                  dict(text="q1", attributes=["brightness=high", "saturation=p30"], top_k=3,
                       weights={"text": 0.3}, exclude=range(50)),
                  dict(text="q2", attributes=["brightness=low"], top_k=4, weights={"text": 3.0}),
                  dict(text="q3", attributes=["brightness=low"], top_k=4, temperature=0.5, sample_seed=1)):
        a, b = (library.query(mode="weighted", **query) for library in (exact, indexed))
        assert a.seeds == b.seeds, query
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert a.terms["text"] == pytest.approx(b.terms["text"], abs=1e-4)
