"""On-disk format of a noise library: a manifest and append-only shards, every file written atomically.

```
LIB/manifest.json                                   what the posteriors are (model, scheduler, steps, shape, ...)
LIB/shards/shard-<first>-<stop>.safetensors         seeds (int64), checksums (int64), features.<name> (N, D)
LIB/shards/shard-<first>-<stop>.json                the shard's commit record: seeds, rows, feature digests
LIB/shards/shard-<first>-<stop>.<name>-<digest>.safetensors   a feature added later (seeds + features.<name>)
LIB/index/<name>-<digest>/...                       an embedding's IVF index, derived from the shards (`index`)
LIB/writer.lock                                     held by the one process writing (`lock`)
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
from safetensors import safe_open
from safetensors.torch import save_file

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


def feature_files(path):
    """Feature files added to shards (`add_features`)."""
    return glob.glob(os.path.join(shards_dir(path), "shard-*.*-*.safetensors"))


def write_feature(path, shard, key, description, seeds, values):
    """Commit features `key` added to an existing shard."""
    tensors = {"seeds": torch.as_tensor(seeds, dtype=torch.int64),
               f"features.{key}": values.to(getattr(torch, description["storage"])).contiguous()}
    target = feature_file(path, shard, key, feature_digest(description))
    atomic_write(target, lambda tmp: save_file(tensors, tmp))


def read_record(record_path):
    try:
        with open(record_path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"library shard record {record_path!r} is truncated or corrupt ({error}); delete it and its "
                         f".safetensors, then resume the build (`--resume`).") from None


def committed_shards(path):
    """The commit records of every finished shard, in seed order."""
    records = [read_record(p) for p in glob.glob(os.path.join(shards_dir(path), "shard-*.json"))]
    return sorted(records, key=lambda r: r["first_seed"])


def read_tensors(file, keys=None):
    """`{key: tensor}` of a shard file (every key when `None`); a truncated or corrupt file is a one-line
    ValueError naming it (safetensors checks that the header covers the whole file)."""
    try:
        with safe_open(file, framework="pt") as f:
            return {key: f.get_tensor(key) for key in (f.keys() if keys is None else keys)}
    except Exception as error:  # safetensors raises its own SafetensorError, missing keys a plain one
        raise ValueError(f"library shard {file!r} is truncated or corrupt ({str(error).splitlines()[0]}); delete it "
                         f"and its .json record, then resume the build (`--resume`).") from None


def shard_has(path, record, key, description):
    digest = feature_digest(description)
    return record["features"].get(key) == digest or os.path.isfile(feature_file(path, record["name"], key, digest))


def shard_file(path, record):
    return os.path.join(shards_dir(path), record["name"] + ".safetensors")


def feature_chunks(path, manifest, key, records):
    """The shards' `key` features in shard order, or `None` if some shard lacks them."""
    digest, chunks = feature_digest(manifest["extractors"][key]), []
    for record in records:
        if record["features"].get(key) == digest:
            chunks.append(read_tensors(shard_file(path, record), [f"features.{key}"])[f"features.{key}"])
        elif os.path.isfile(feature_file(path, record["name"], key, digest)):
            chunks.append(read_tensors(feature_file(path, record["name"], key, digest),
                                       [f"features.{key}"])[f"features.{key}"])
        else:
            return None
    return chunks


def load_seeds(path, records):
    """`(seeds, checksums, order)`: int64 arrays in shard order and the permutation that sorts them."""
    seeds, checksums = [], []
    for record in records:
        base = read_tensors(shard_file(path, record), ["seeds", "checksums"])
        seeds.append(base["seeds"].numpy())
        checksums.append(base["checksums"].numpy())
    seeds = np.concatenate(seeds) if seeds else np.zeros(0, np.int64)
    checksums = np.concatenate(checksums) if checksums else np.zeros(0, np.int64)
    if len(np.unique(seeds)) != len(seeds):
        raise ValueError(f"library {path!r} holds some seeds in two shards; it was written by something other "
                         f"than noisekit.")
    return seeds, checksums, np.argsort(seeds, kind="stable")


def load_feature(path, manifest, key, records, order):
    """`key`'s features `(N, D)` in seed order, in their stored dtype, or `None` if some shard lacks them."""
    chunks = feature_chunks(path, manifest, key, records)
    if chunks is None:
        return None
    storage = getattr(torch, manifest["extractors"][key]["storage"])
    values = torch.cat(chunks) if chunks else torch.zeros(0, manifest["extractors"][key]["dim"], dtype=storage)
    return values[torch.from_numpy(order)]


def load_features(path, manifest, records, order, skip=()):
    """`(features, missing)`: `{name: float32 tensor (N, D)}` in seed order for every extractor of the manifest
    that every shard has (except those in `skip`, read elsewhere), and the names some shard lacks."""
    features, missing = {}, []
    for key in manifest["extractors"]:
        if key in skip:
            continue
        values = load_feature(path, manifest, key, records, order)
        if values is None:
            missing.append(key)
        else:
            features[key] = values.float()
    return features, missing


def load_table(path, manifest):
    """`(seeds, checksums, features, missing)`: int64 numpy arrays sorted by seed, then as `load_features`."""
    records = committed_shards(path)
    seeds, checksums, order = load_seeds(path, records)
    return (seeds[order], checksums[order], *load_features(path, manifest, records, order))
