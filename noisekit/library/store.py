"""On-disk format of a noise library: a manifest and append-only shards, every file written atomically.

```
LIB/manifest.json                                   what the posteriors are (model, scheduler, steps, shape, ...)
LIB/shards/shard-<first>-<stop>.safetensors         seeds (int64), checksums (int64), features.<name> (N, D)
LIB/shards/shard-<first>-<stop>.json                the shard's commit record: seeds, rows, feature digests
LIB/shards/shard-<first>-<stop>.<name>-<digest>.safetensors   a feature added later (seeds + features.<name>)
```

A file is written to a temporary name and renamed (`os.replace`), so a reader sees all of it or none; a shard
counts once its JSON record exists, which is written last. Shards are never rewritten. Seeds are grouped in
chunks of `shard_size` aligned on multiples of it, so the shard files depend only on the seeds, never on how many
processes built them: the merge of a multi-process build is the single-process build. Checksums are the 16 hex
digits of `noise_checksum`, stored as the int64 with the same 8 bytes (big-endian).
"""

import glob
import hashlib
import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT = "noisekit-library"
FORMAT_VERSION = 1
# what must agree for two builds to belong to one library
CORE_KEYS = ("format", "format_version", "model", "posterior", "latent_shape", "height", "width", "dtype", "noise",
             "safety_checker", "shard_size")


def atomic_write(path, write):
    """Call `write(tmp_path)`, then rename the result onto `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def write_json(path, record):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)

    atomic_write(path, write)


def plain(record):
    """`record` as JSON would give it back (tuples become lists, odd values strings), for comparisons."""
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def manifest_path(path):
    return os.path.join(path, "manifest.json")


def shards_dir(path):
    return os.path.join(path, "shards")


def read_manifest(path):
    if not os.path.isfile(manifest_path(path)):
        raise FileNotFoundError(f"{path!r} is not a noise library: it has no manifest.json (build one with "
                                f"`noisekit library build`).")
    with open(manifest_path(path)) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} holds format {manifest.get('format')!r} v{manifest.get('format_version')}; "
                         f"this noisekit reads {FORMAT!r} v{FORMAT_VERSION}.")
    return manifest


def write_manifest(path, manifest):
    os.makedirs(shards_dir(path), exist_ok=True)
    write_json(manifest_path(path), plain(manifest))


def differences(existing, wanted, keys=CORE_KEYS):
    """The keys of `keys` where two manifests disagree."""
    existing, wanted = plain(existing), plain(wanted)
    return [key for key in keys if existing.get(key) != wanted.get(key)]


def feature_digest(description):
    """8 hex digits identifying an extractor description (name, version, columns, model identity)."""
    return hashlib.sha256(json.dumps(plain(description), sort_keys=True).encode()).hexdigest()[:8]


def checksum_to_int(checksum):
    return int.from_bytes(bytes.fromhex(checksum), "big", signed=True)


def int_to_checksum(value):
    return (int(value) & (2**64 - 1)).to_bytes(8, "big").hex()


def runs(seeds):
    """Sorted seeds as `[start, stop)` runs of consecutive integers."""
    out = []
    for seed in seeds:
        if out and out[-1][1] == seed:
            out[-1][1] += 1
        else:
            out.append([seed, seed + 1])
    return out


def stored_seeds(path):
    """Every seed of every committed shard, as a set."""
    return {seed for record in committed_shards(path) for start, stop in record["runs"] for seed in range(start, stop)}


def shard_name(seeds):
    return f"shard-{seeds[0]:012d}-{seeds[-1] + 1:012d}"


def write_shard(path, seeds, checksums, features, descriptions, extra=None):
    """Commit one shard: `seeds` (sorted ints), `checksums` (hex strings), `features` `{name: (N, D) tensor}`
    stored as `descriptions[name]["storage"]`. Returns the shard's record."""
    name = shard_name(seeds)
    tensors = {"seeds": torch.tensor(seeds, dtype=torch.int64),
               "checksums": torch.tensor([checksum_to_int(c) for c in checksums], dtype=torch.int64)}
    for key, values in features.items():
        tensors[f"features.{key}"] = values.to(getattr(torch, descriptions[key]["storage"])).contiguous()
    atomic_write(os.path.join(shards_dir(path), name + ".safetensors"), lambda tmp: save_file(tensors, tmp))
    record = {"name": name, "rows": len(seeds), "first_seed": seeds[0], "last_seed": seeds[-1], "runs": runs(seeds),
              "features": {key: feature_digest(descriptions[key]) for key in features}, **(extra or {})}
    write_json(os.path.join(shards_dir(path), name + ".json"), record)
    return record


def feature_file(path, shard, key, digest):
    return os.path.join(shards_dir(path), f"{shard}.{key}-{digest}.safetensors")


def write_feature(path, shard, key, description, seeds, values):
    """Commit features `key` added to an existing shard."""
    tensors = {"seeds": torch.as_tensor(seeds, dtype=torch.int64),
               f"features.{key}": values.to(getattr(torch, description["storage"])).contiguous()}
    target = feature_file(path, shard, key, feature_digest(description))
    atomic_write(target, lambda tmp: save_file(tensors, tmp))


def committed_shards(path):
    """The commit records of every finished shard, in seed order."""
    records = []
    for record_path in glob.glob(os.path.join(shards_dir(path), "shard-*.json")):
        with open(record_path) as f:
            records.append(json.load(f))
    return sorted(records, key=lambda r: r["first_seed"])


def shard_has(path, record, key, description):
    digest = feature_digest(description)
    return record["features"].get(key) == digest or os.path.isfile(feature_file(path, record["name"], key, digest))


def load_table(path, manifest):
    """`(seeds, checksums, features, missing)`: int64 numpy arrays sorted by seed, `{name: float32 tensor (N, D)}`
    for every extractor of the manifest that every shard has, and the names some shard lacks."""
    seeds, checksums, parts = [], [], {key: [] for key in manifest["extractors"]}
    for record in committed_shards(path):
        base = load_file(os.path.join(shards_dir(path), record["name"] + ".safetensors"))
        seeds.append(base["seeds"].numpy())
        checksums.append(base["checksums"].numpy())
        for key, description in manifest["extractors"].items():
            if parts[key] is None:
                continue
            digest = feature_digest(description)
            if record["features"].get(key) == digest:
                parts[key].append(base[f"features.{key}"])
            elif os.path.isfile(feature_file(path, record["name"], key, digest)):
                parts[key].append(load_file(feature_file(path, record["name"], key, digest))[f"features.{key}"])
            else:
                parts[key] = None
    seeds = np.concatenate(seeds) if seeds else np.zeros(0, np.int64)
    checksums = np.concatenate(checksums) if checksums else np.zeros(0, np.int64)
    order = np.argsort(seeds, kind="stable")
    if len(np.unique(seeds)) != len(seeds):
        raise ValueError(f"library {path!r} holds some seeds in two shards; it was written by something other "
                         f"than noisekit.")
    features, missing = {}, []
    for key, chunks in parts.items():
        if chunks is None:
            missing.append(key)
            continue
        dim = manifest["extractors"][key]["dim"]
        values = torch.cat(chunks).float() if chunks else torch.zeros(0, dim)
        features[key] = values[torch.from_numpy(order)]
    return seeds[order], checksums[order], features, missing
