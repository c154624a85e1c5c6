"""Query latency of a NoiseQuery library at scale, on a synthetic feature table (random features, no generation).

    nice -n 5 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_library_query.py --entries 1000000

The table has the real extractors' columns (color, sharpness, texture, shape) and a `--dim`-wide normalised CLIP
embedding (64 = the shapes CLIP). Text is encoded by an open_clip model of the shapes CLIP's architecture with
random weights, so the text timings include a real text tower. Each query kind is run `--repeats` times after one
warm-up call (which also sorts the columns that percentile targets read); the median and the maximum are printed.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from noisekit.library import Extractor, NoiseLibrary, get_extractor

SHAPES_CLIP = {"embed_dim": 64, "quick_gelu": True,
               "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
               "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3}}
QUERIES = {
    "text": dict(text="a red circle on a black background"),
    "attribute high": dict(attributes=["brightness=high"]),
    "attribute value": dict(attributes=["hfe=p30"]),
    "attribute range x2": dict(attributes=["brightness=0.2..0.4", "saturation=high"]),
    "colour": dict(attributes=["color=navy"]),
    "text + attribute (rerank)": dict(text="a red circle", attributes=["brightness=low"], rerank_k=100),
    "text + attribute (weighted)": dict(text="a red circle", attributes=["brightness=low"], mode="weighted"),
    "text, sampled top-8": dict(text="a red circle", top_k=8, temperature=0.05, sample_seed=0),
    "text, 1000 excluded": dict(text="a red circle", exclude=range(1000)),
}


def text_tower(dim):
    """`encode_text` of a random-weight open_clip model of the shapes CLIP's shape (projected to `dim`)."""
    import open_clip

    folder = tempfile.mkdtemp(prefix="bench-clip-")
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": SHAPES_CLIP, "preprocess_cfg": {"size": 64}}, f)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    projection = torch.randn(64, dim, generator=torch.Generator().manual_seed(1)) if dim != 64 else None

    def encode_text(texts):
        with torch.no_grad():
            vectors = model.encode_text(tokenizer(list(texts)), normalize=True)
        if projection is not None:
            vectors = torch.nn.functional.normalize(vectors @ projection, dim=-1)
        return vectors

    return encode_text


def synthetic_library(entries, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    extractors = {name: get_extractor(name) for name in ("color", "sharpness", "texture", "shape")}
    clip = Extractor("clip", 1, None, (), dim, "float16", text_tower(dim), {"source": "synthetic",
                                                                            "weights_hash": "synthetic"})
    features = {name: torch.rand(entries, len(e.columns), generator=generator) for name, e in extractors.items()}
    embedding = torch.nn.functional.normalize(torch.randn(entries, dim, generator=generator), dim=1)
    features["clip"] = embedding.half().float()  # stored as float16, queried as float32
    manifest = {"latent_shape": [4, 64, 64], "height": 512, "width": 512, "model": {"id": "synthetic"},
                "extractors": {name: e.describe() for name, e in {**extractors, "clip": clip}.items()}}
    seeds = np.arange(entries, dtype=np.int64)
    library = NoiseLibrary("synthetic", manifest, seeds, np.zeros(entries, np.int64), features)
    library.use_clip(clip)
    return library


def main(args):
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    library = synthetic_library(args.entries, args.dim)
    print(f"{args.entries:,} entries, clip dim {args.dim}, torch threads {torch.get_num_threads()}; "
          f"table built in {time.perf_counter() - began:.1f} s")
    rows = {}
    for name, query in QUERIES.items():
        library.query(**query)  # warm-up: column sorts for percentiles, allocator
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            library.query(**query)
            times.append(1000 * (time.perf_counter() - start))
        rows[name] = {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}
        print(f"{name:32s} median {rows[name]['median_ms']:7.2f} ms   max {rows[name]['max_ms']:7.2f} ms")
    start = time.perf_counter()
    encode = library.clip().encode_text
    for _ in range(args.repeats):
        encode(["a red circle on a black background"])
    print(f"{'(text encoding alone)':32s} mean   {1000 * (time.perf_counter() - start) / args.repeats:7.2f} ms")
    if args.json:
        print(json.dumps({"entries": args.entries, "dim": args.dim, "threads": args.threads, "queries": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64, help="CLIP embedding width (64 shapes CLIP, 512 ViT-B)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    main(parser.parse_args())
