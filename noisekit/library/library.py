"""`NoiseLibrary`: a built library loaded for queries, and `library_noise`, the hand-off to generation.

Examples:
    >>> library = NoiseLibrary.load("lib")
    >>> result = library.query(text="a red circle", attributes=["brightness=low"], top_k=4)
    >>> noise = library.noise(result.seeds, pipe)  # (4, C, h, w), each checked against its stored checksum
    >>> images = pipe("a red circle", latents=noise).images
"""

import os

import numpy as np
import torch

from ..core.noise import latent_shape, noise_checksum, noise_from_seed
from ..core.recipe import NoiseRecipe
from .build import add_features, build_library
from .extractors import clip_extractor, get_extractor, list_extractors
from .index import ExactTable, index_root, open_indexes
from .model_key import check_model
from .query import QueryResult, run_query
from .store import (committed_shards, int_to_checksum, load_features, load_seeds, manifest_path, read_manifest,
                    shards_dir)
from .targets import check_distinct, parse_attribute, parse_target


class NoiseLibrary:
    """Seeds, noise checksums and feature tables of a library folder, sorted by seed.

    Attributes:
        path (`str`): the folder.
        manifest (`dict`): what the posteriors are (see `build.make_manifest`).
        seeds, checksums (`np.ndarray`): int64 `(N,)`.
        features (`dict[str, torch.Tensor]`): float32 `(N, D)` per complete extractor held in memory.
        missing (`list[str]`): extractors of the manifest that some shard still lacks (finish `add_features`).
        indexes (`dict[str, IvfIndex]`): embeddings served by their memory-mapped index instead of `features`.
    """

    def __init__(self, path, manifest, seeds, checksums, features, missing=(), indexes=None):
        self.path, self.manifest = path, manifest
        self.seeds, self.checksums, self.features, self.missing = seeds, checksums, features, list(missing)
        self.indexes = dict(indexes or {})
        self._std, self._sorted, self._columns, self._clip = {}, {}, {}, None

    @classmethod
    def load(cls, path):
        """Load a library: seeds, checksums and attribute tables in memory; an embedding with a current index
        (`build_index`) stays on disk, memory-mapped."""
        manifest = read_manifest(path)
        records = committed_shards(path)
        seeds, checksums, order = load_seeds(path, records)
        indexes = open_indexes(path, manifest, seeds[order])
        features, missing = load_features(path, manifest, records, order, skip=indexes)
        return cls(path, manifest, seeds[order], checksums[order], features, missing, indexes)

    @classmethod
    def build(cls, pipe, path, num_seeds, **kwargs):
        """`build_library(pipe, path, num_seeds, **kwargs)`, then load it."""
        build_library(pipe, path, num_seeds, **kwargs)
        return cls.load(path)

    def __len__(self):
        return len(self.seeds)

    @property
    def latent_shape(self):
        return tuple(self.manifest["latent_shape"])

    def info(self):
        """A JSON-ready summary: size, model, posterior settings, extractors, bytes per entry on disk."""
        folder = shards_dir(self.path)
        size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
        posterior = dict(self.manifest["posterior"], scheduler=self.manifest["posterior"]["scheduler"]["class"])
        extractors = {name: {key: d[key] for key in ("version", "dim", "source") if key in d}
                      for name, d in self.manifest["extractors"].items()}
        return {"path": self.path, "entries": len(self),
                "seed_range": [int(self.seeds.min()), int(self.seeds.max())] if len(self) else None,
                "model": self.manifest["model"], "latent_shape": list(self.latent_shape),
                "height": self.manifest["height"], "width": self.manifest["width"], "dtype": self.manifest["dtype"],
                "posterior": posterior, "extractors": extractors, "incomplete_extractors": self.missing,
                "indexes": {name: {k: index.record[k] for k in ("entries", "lists", "nprobe")}
                            for name, index in self.indexes.items()},
                "shard_bytes": size, "bytes_per_entry": round(size / len(self), 1) if len(self) else None,
                "float32_noise_bytes_per_entry": 4 * int(np.prod(self.latent_shape))}

    def check_pipeline(self, pipe, height=None, width=None, *, force=False):
        """Raise unless `pipe` at `height` x `width` takes this library's latent shape and its denoiser is the
        one the library was built with (`force=True` skips the model check, not the shape check)."""
        check_model(self.path, self.manifest, pipe, force)
        shape = latent_shape(pipe, height, width)
        if tuple(shape) != self.latent_shape:
            raise ValueError(f"library {self.path!r} holds noise of latent shape {self.latent_shape} "
                             f"({self.manifest['height']}x{self.manifest['width']} px of "
                             f"{self.manifest['model']['id']}); this pipeline takes {tuple(shape)}. Build a library "
                             f"for this pipeline and size (`noisekit library build`).")

    def column_std(self, extractor):
        if extractor not in self._std:
            std = self.features[extractor].std(0) if len(self) > 1 else torch.ones(self.features[extractor].shape[1])
            self._std[extractor] = torch.where(std > 0, std, torch.ones_like(std))
        return self._std[extractor]

    def column_major(self, extractor):
        """`(D, N)` contiguous copy of an attribute table, so one attribute is read as one contiguous row."""
        if extractor not in self._columns:
            self._columns[extractor] = self.features[extractor].t().contiguous()
        return self._columns[extractor]

    def sorted_column(self, extractor, column):
        if (extractor, column) not in self._sorted:
            self._sorted[extractor, column] = self.features[extractor][:, column].sort().values
        return self._sorted[extractor, column]

    def rows_of(self, seeds):
        """Row indices of those of `seeds` that are in the library."""
        seeds = np.asarray(list(seeds), dtype=np.int64)
        rows = np.searchsorted(self.seeds, seeds).clip(0, max(len(self) - 1, 0))
        return torch.from_numpy(rows[self.seeds[rows] == seeds] if len(self) else rows[:0])

    def clip(self):
        """The CLIP extractor the library was built with, reloaded from its recorded source (weights checked)."""
        if self._clip is None:
            description = self._require("clip")
            extractor = clip_extractor(description["source"])
            if extractor.describe()["weights_hash"] != description["weights_hash"]:
                raise ValueError(f"clip source {description['source']!r} now holds other weights "
                                 f"({extractor.describe()['weights_hash']}) than the library was built with "
                                 f"({description['weights_hash']}); pass `clip=` the original model.")
            self._clip = extractor
        return self._clip

    def use_clip(self, extractor):
        """Use an already loaded CLIP extractor for text queries (its description must match the manifest's)."""
        description = self._require("clip")
        if extractor.describe()["weights_hash"] != description["weights_hash"]:
            raise ValueError(f"`clip` has weights {extractor.describe()['weights_hash']}, the library was built "
                             f"with {description['weights_hash']} ({description['source']}).")
        self._clip = extractor

    def embedding(self, name):
        """The table of embedding `name`: its index when it has one, else the in-memory features."""
        self._require(name)
        return self.indexes[name] if name in self.indexes else ExactTable(self.features[name])

    def _require(self, name):
        if name not in self.features and name not in self.indexes:
            state = "is still incomplete (finish `add_features`)" if name in self.missing else "was not extracted"
            raise ValueError(f"library {self.path!r}: feature {name!r} {state}; it has "
                             f"{sorted([*self.features, *self.indexes])}.")
        return self.manifest["extractors"][name]

    def _exemplar_extractors(self):
        extractors = {name: get_extractor(name) for name in self.features if name in list_extractors()}
        if "clip" in self.features or "clip" in self.indexes:
            extractors["clip"] = _LazyClip(self)
        return extractors

    def query(self, text=None, attributes=(), top_k=1, mode="rerank", rerank_k=100, weights=None, exclude=(),
              temperature=0.0, sample_seed=None, pool=None, *, nprobe=None):
        """Retrieve seeds for a text and/or attribute targets.

        Args:
            text (`str`, *optional*): matched by CLIP cosine with the posteriors' image embeddings.
            attributes: `["NAME=VALUE", ...]` or `{NAME: VALUE}` (see `targets`); VALUE may be an image.
            top_k (`int`): seeds to return.
            mode (`str`): `"rerank"` or `"weighted"` (see `query`); only matters with text and attributes.
            rerank_k (`int`): semantic candidates re-ranked by the attributes in `"rerank"` mode.
            weights (`dict`): term weights (`"text"` and attribute NAMEs).
            exclude: seeds never to return (e.g. the ones already used).
            temperature (`float`): 0 for the top-k; > 0 samples (seeded by `sample_seed`) from the best `pool`.
            nprobe (`int`, *optional*): lists an indexed embedding scans (more: slower, closer to exact).

        Returns:
            `QueryResult` with seeds, scores, per-term scores and a `NoiseRecipe` per seed.
        """
        items = attributes.items() if isinstance(attributes, dict) else [parse_attribute(a) for a in attributes]
        check_distinct(items)
        exemplar = self._exemplar_extractors()
        targets = [parse_target(name, value, self.manifest, exemplar) for name, value in items]
        for target in targets:
            self._require(target.extractor)
        semantic = None
        if text is not None:
            self._require("clip")
            semantic = self.clip().encode_text([text])[0]
        embedding = [t for t in targets if t.kind == "embedding"]
        if semantic is None and len(embedding) == 1:  # a clip exemplar alone acts as the semantic key
            semantic, targets = embedding[0].value, [t for t in targets if t.kind != "embedding"]
        rows, scores, terms = run_query(self, semantic, targets, top_k, mode, rerank_k, weights, exclude,
                                        temperature, sample_seed, pool, nprobe=nprobe)
        seeds = self.seeds[rows.numpy()].tolist()
        return QueryResult(seeds, [round(float(s), 6) for s in scores], self.recipes(seeds),
                           {k: [round(float(x), 6) for x in v] for k, v in terms.items()}, rows.tolist())

    def recipes(self, seeds):
        """A `NoiseRecipe` per seed, carrying the stored checksum its replay is verified against."""
        rows = self.rows_of(seeds).numpy()
        if len(rows) != len(list(seeds)):
            raise ValueError(f"`seeds` must all be in library {self.path!r}.")
        return [NoiseRecipe(int(self.seeds[r]), self.latent_shape, checksum=int_to_checksum(self.checksums[r]))
                for r in rows]

    def noise(self, seeds, pipe=None, height=None, width=None, *, force=False):
        """`(len(seeds), C, h, w)` float32 noise of `seeds`, each verified against its stored checksum; with
        `pipe`, its model and latent shape are checked first (see `check_pipeline`)."""
        if pipe is not None:
            self.check_pipeline(pipe, height, width, force=force)
        rows = []
        for recipe in self.recipes(seeds):
            row = noise_from_seed(recipe.seed, self.latent_shape)
            if noise_checksum(row) != recipe.checksum:
                raise ValueError(f"seed {recipe.seed}: this machine's torch draws noise with checksum "
                                 f"{noise_checksum(row)}, the library stored {recipe.checksum}.")
            rows.append(row)
        return torch.cat(rows)

    def add_features(self, pipe, extractor, **kwargs):
        """Add `extractor`'s features (regenerating posteriors from the seeds), then reload."""
        add_features(pipe, self.path, extractor, **kwargs)
        fresh = NoiseLibrary.load(self.path)
        self.manifest, self.seeds, self.checksums = fresh.manifest, fresh.seeds, fresh.checksums
        self.features, self.missing, self.indexes = fresh.features, fresh.missing, fresh.indexes
        self._std, self._sorted, self._columns = {}, {}, {}


class _LazyClip:
    """Loads the library's CLIP only when an exemplar image actually needs it."""

    def __init__(self, library):
        self.library = library

    def __call__(self, pixels):
        return self.library.clip()(pixels)


_OPEN = {}


def library_noise(pipe, library_path, attributes=(), text=None, seeds_needed=1, exclude=(), temperature=0.0,
                  sample_seed=None, mode="rerank", rerank_k=100, height=None, width=None, clip=None, prompt=None, *,
                  force=False):
    """Pick `seeds_needed` noises from a library for `noisekit generate --library PATH --attribute NAME=VALUE`.

    Args:
        pipe: the pipeline that will sample; its latent shape must be the library's.
        library_path (`str`): the library folder (loaded once per process).
        attributes: `["NAME=VALUE", ...]`.
        text (`str`, *optional*): usually the prompt (NoiseQuery's semantic retrieval).
        exclude: seeds already used, never returned.
        clip: an already loaded CLIP `Extractor` to use instead of reloading the recorded source.
        prompt (`str`, *optional*): the text when `text` is not given and the library has CLIP features (a
            library of attributes alone is then queried by its attributes).
        force (`bool`): use the library although `pipe`'s denoiser is not the one it was built with.

    Returns:
        `(noise (seeds_needed, C, h, w) float32, recipes, QueryResult)`.

    Examples:
        >>> noise, recipes, _ = library_noise(pipe, "lib", ["brightness=high"], "a red circle", 4)
        >>> images = noisekit.sample(pipe, "a red circle", noise).images
    """
    stamp = tuple(os.stat(p).st_mtime_ns if os.path.exists(p) else None
                  for p in (manifest_path(library_path), shards_dir(library_path), index_root(library_path)))
    if _OPEN.get(library_path, (None,))[0] != stamp:  # reload a library that grew since
        _OPEN[library_path] = (stamp, NoiseLibrary.load(library_path))
    library = _OPEN[library_path][1]
    library.check_pipeline(pipe, height, width, force=force)
    if clip is not None:
        library.use_clip(clip)
    if text is None and ("clip" in library.features or "clip" in library.indexes):
        text = prompt
    result = library.query(text, attributes, top_k=seeds_needed, mode=mode, rerank_k=rerank_k, exclude=exclude,
                           temperature=temperature, sample_seed=sample_seed)
    if len(result.seeds) < seeds_needed:
        raise ValueError(f"library {library_path!r} has only {len(result.seeds)} eligible seeds, "
                         f"{seeds_needed} are needed.")
    return library.noise(result.seeds), result.recipes, result
