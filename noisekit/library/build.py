"""Building a noise library: each seed's generative posterior, its features, and an atomic shard per chunk.

The posterior of seed s is the image the pipeline makes from the canonical noise of s with the empty prompt and
no CFG (`guidance_scale=1`), with deterministic DDIM (eta = 0) over `num_inference_steps` (Wang et al., "The
Silent Prompt", Sec. 3.3). Flow-matching pipelines (SD3, FLUX.1) have no DDIM schedule: their posterior is their
own flow-matching Euler sampler, already the deterministic ODE, sampled through the family adapter (FLUX.1-dev
with its embedded guidance at 1, the unguided model). EDM-scheduled UNets (Playground v2.5) have no betas for DDIM
either: their posterior is their own EDM sampler (Euler, or DPM-Solver++ as Playground ships it), deterministic
unless configured stochastic (`sde-dpmsolver++`, refused). The library keeps the seed, the checksum of its canonical
`(C, h, w)` noise and the features; the noise and the image are never stored, so a feature added later
regenerates the posteriors.

Examples:
    >>> build_library(pipe, "lib", num_seeds=10_000, extractors=[clip_extractor("shapes-clip")])
    >>> build_library(pipe, "lib", num_seeds=20_000, extractors=[...], resume=True)  # grows it to 20k
"""

import os
import time

import torch

from ..version import __version__
from ..core.edm import is_edm
from ..core.families import adapter_for
from ..core.noise import GENERATOR, latent_shape, noise_checksum, noise_from_seed, vae_scale_factor
from ..core.sampler import sample
from ..core.weights import module_hash
from .extractors import DEFAULT_ATTRIBUTES, get_extractor
from .index import INDEX_MIN_ENTRIES, build_index
from .lock import writer_lock
from .model_key import denoiser, model_key
from .store import (FORMAT, FORMAT_VERSION, committed_shards, differences, feature_files, int_to_checksum,
                    manifest_path, plain, read_manifest, read_tensors, shard_file, shard_has, stored_seeds,
                    write_feature, write_manifest, write_shard)


def posterior_pipe(pipe):
    """The same components with a DDIM scheduler built from the pipeline's scheduler config (itself if DDIM); a
    flow-matching or EDM pipeline itself (its own sampler is deterministic unless configured stochastic)."""
    from diffusers import DDIMScheduler

    if is_edm(pipe.scheduler):
        if pipe.scheduler.config.get("algorithm_type") == "sde-dpmsolver++":
            raise ValueError(f"a library posterior must be deterministic; {type(pipe.scheduler).__name__} has "
                             "`algorithm_type='sde-dpmsolver++'`: load the pipeline with `dpmsolver++` or "
                             "EDMEulerScheduler.")
        return pipe
    if adapter_for(pipe).flow:
        if pipe.scheduler.config.get("stochastic_sampling", False):
            raise ValueError(f"a library posterior must be deterministic; {type(pipe.scheduler).__name__} has "
                             "`stochastic_sampling=True`: load the pipeline with a deterministic flow scheduler.")
        return pipe
    if type(pipe.scheduler) is DDIMScheduler:
        return pipe
    new = type(pipe).from_pipe(pipe, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    new.set_progress_bar_config(disable=True)
    return new


def make_manifest(pipe, extractors, num_inference_steps, height, width, shard_size, model_id=None):
    """The manifest of a library of `pipe`'s posteriors (no timestamps: every process writes the same bytes)."""
    import diffusers

    ddim = posterior_pipe(pipe)
    shape = latent_shape(pipe, height, width)
    factor = vae_scale_factor(pipe)
    return plain({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"id": model_id or getattr(pipe, "name_or_path", None) or type(pipe).__name__,
                  # `unet_hash` names the denoiser (UNet or transformer): the key is kept for the file format
                  "pipeline": type(pipe).__name__, "unet_hash": module_hash(denoiser(pipe)),
                  "vae_hash": module_hash(pipe.vae)},
        "denoiser": model_key(pipe),
        "posterior": {"prompt": "", "guidance_scale": 1.0, "eta": 0.0, "num_inference_steps": num_inference_steps,
                      "scheduler": {"class": type(ddim.scheduler).__name__, "config": dict(ddim.scheduler.config)}},
        "latent_shape": list(shape),
        "height": shape[1] * factor,
        "width": shape[2] * factor,
        "dtype": str(denoiser(pipe).dtype).replace("torch.", ""),
        "noise": {"generator": GENERATOR, "checksum": "sha256(float32 bytes of (1, *latent_shape))[:16]"},
        "safety_checker": getattr(pipe, "safety_checker", None) is not None,
        "shard_size": shard_size,
        "extractors": {e.name: e.describe() for e in extractors},
        "created_with": {"noisekit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__},
    })


def check_extractors(extractors):
    extractors = [get_extractor(e) if isinstance(e, str) else e for e in
                  (DEFAULT_ATTRIBUTES if extractors is None else extractors)]
    names = [e.name for e in extractors]
    if not extractors or len(set(names)) != len(names):
        raise ValueError(f"`extractors` must name at least one extractor, each once, got {names}.")
    return extractors


def posteriors(pipe, seeds, shape, num_inference_steps, batch_size):
    """`(pixels (N, 3, H, W) in [0, 1], checksums)` of the posteriors of `seeds`; `pipe` must come from
    `posterior_pipe` (DDIM for UNets)."""
    pixels, checksums = [], []
    for start in range(0, len(seeds), batch_size):
        noise = torch.cat([noise_from_seed(seed, shape) for seed in seeds[start:start + batch_size]])
        checksums += [noise_checksum(row[None]) for row in noise]
        out = sample(pipe, "", noise, num_inference_steps=num_inference_steps, guidance_scale=1.0, output_type="pt")
        pixels.append(out.images.float().cpu())
    return torch.cat(pixels), checksums


def chunks(seed_start, num_seeds, shard_size, process_index, num_processes):
    """This process's chunks of `[seed_start, seed_start + num_seeds)`: aligned on multiples of `shard_size`,
    chunk k going to process k mod `num_processes`."""
    stop = seed_start + num_seeds
    for chunk_start in range(seed_start - seed_start % shard_size, stop, shard_size):
        if (chunk_start // shard_size) % num_processes == process_index:
            yield range(max(chunk_start, seed_start), min(chunk_start + shard_size, stop))


def _check_args(num_seeds, seed_start, shard_size, batch_size, process_index, num_processes, num_inference_steps,
                height, width):
    """Every argument checked before anything is written, so a mistake leaves nothing behind."""
    for name, value, low in (("num_seeds", num_seeds, 1), ("seed_start", seed_start, 0), ("shard_size", shard_size, 1),
                             ("batch_size", batch_size, 1), ("num_processes", num_processes, 1),
                             ("num_inference_steps", num_inference_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    for name, value in (("height", height), ("width", width)):  # 0 would silently mean the default size
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer (pixels) or None for the default, got {value!r}.")
    if not isinstance(process_index, int) or not 0 <= process_index < num_processes:
        raise ValueError(f"`process_index` must be in [0, {num_processes}), got {process_index!r}.")


def open_for_build(path, manifest, resume):
    """Create the library, or check that the existing one was built with the same settings. A manifest with no
    shard and no feature file behind it holds nothing, so a new build replaces it."""
    if not os.path.isfile(manifest_path(path)) or not (committed_shards(path) or feature_files(path)):
        write_manifest(path, manifest)
        return manifest
    if not resume:
        raise ValueError(f"library {path!r} already exists; pass `resume=True` (`--resume`) to finish or grow it, "
                         f"or choose another `output`.")
    existing = read_manifest(path)
    changed = differences(existing, manifest) + differences(existing, manifest, ("extractors",))
    if changed:
        raise ValueError(f"library {path!r} was built with other settings ({', '.join(changed)} differ): build it "
                         f"with the same pipeline, steps, size, shard size and extractors, or use a new `output`.")
    return existing


@torch.no_grad()
def build_library(pipe, output, num_seeds, seed_start=0, extractors=None, num_inference_steps=20, height=None,
                  width=None, shard_size=256, batch_size=16, resume=False, process_index=0, num_processes=1,
                  model_id=None, barrier=None, progress=None, callback=None):
    """Build (or finish, or grow) a noise library of the seeds `[seed_start, seed_start + num_seeds)`.

    Args:
        pipe: an SD 1.x/2.x or SDXL pipeline (its scheduler config is used as DDIM), or an SD3 / FLUX.1 pipeline
            (sampled with its own flow-matching scheduler), or an EDM-scheduled UNet (its own EDM scheduler).
        output (`str`): the library folder.
        extractors: `Extractor`s or registered names (default: color, sharpness, texture, shape); add
            `clip_extractor(source)` for text queries.
        num_inference_steps (`int`): sampler steps of each posterior (DDIM for UNets).
        height, width: posterior size in pixels (the pipeline's default when `None`).
        shard_size (`int`): seeds per shard (fixed for the library's life).
        batch_size (`int`): posteriors per denoiser batch.
        resume (`bool`): finish an interrupted build or grow an existing library; the seeds already stored are
            skipped. Without it an existing library is refused.
        process_index, num_processes: this process's share of the chunks (`accelerator.process_index`, ...).
        barrier (`callable`, *optional*): `accelerator.wait_for_everyone`: process 0 writes (or checks) the
            manifest before it, the others check it after it; a second call at the end lets process 0 hold the
            writer lock (`lock`) until every process is done. Without a barrier, start process 0 first.
        progress: a tqdm-like object updated by the number of seeds done.
        callback (`callable`, *optional*): called with each committed shard's record.

    Only one build, grow or `add_features` writes a library at a time: another one is refused with one line.
    A library of `INDEX_MIN_ENTRIES` entries or more gets an IVF index of its CLIP table at the end (by process 0,
    once every process is done; without a barrier in a multi-process build, run `build_index` afterwards).

    Returns:
        The records of the shards this call wrote.
    """
    _check_args(num_seeds, seed_start, shard_size, batch_size, process_index, num_processes, num_inference_steps,
                height, width)
    extractors = check_extractors(extractors)
    manifest = make_manifest(pipe, extractors, num_inference_steps, height, width, shard_size, model_id)
    if process_index != 0:  # process 0 holds the writer lock for every process of the build
        return _build(pipe, output, manifest, extractors, seed_start, num_seeds, batch_size, resume, process_index,
                      num_processes, barrier, progress, callback)
    with writer_lock(output, "build"):
        written = _build(pipe, output, manifest, extractors, seed_start, num_seeds, batch_size, resume,
                         process_index, num_processes, barrier, progress, callback)
        if num_processes == 1 or barrier is not None:  # every shard is in: index a large library
            for name, description in read_manifest(output)["extractors"].items():
                if not description["columns"] and sum(r["rows"] for r in committed_shards(output)) \
                        >= INDEX_MIN_ENTRIES:
                    build_index(output, name=name, locked=True)
    return written


def _build(pipe, output, manifest, extractors, seed_start, num_seeds, batch_size, resume, process_index,
           num_processes, barrier, progress, callback):
    if process_index == 0:  # process 0 creates the library; the others wait for it, then check it
        manifest = open_for_build(output, manifest, resume)
    if barrier is not None:
        barrier()
    if process_index != 0:
        manifest = open_for_build(output, manifest, True)
    done = stored_seeds(output)
    steps = manifest["posterior"]["num_inference_steps"]
    ddim, shape = posterior_pipe(pipe), tuple(manifest["latent_shape"])
    descriptions, written = manifest["extractors"], []
    for chunk in chunks(seed_start, num_seeds, manifest["shard_size"], process_index, num_processes):
        seeds = [s for s in chunk if s not in done]
        if not seeds:
            continue
        began = time.perf_counter()
        pixels, checksums = posteriors(ddim, seeds, shape, steps, batch_size)
        features = {e.name: e(pixels) for e in extractors}
        record = write_shard(output, seeds, checksums, features, descriptions,
                             {"seconds": round(time.perf_counter() - began, 3)})
        written.append(record)
        if progress is not None:
            progress.update(len(seeds))
        if callback is not None:
            callback(record)
    if barrier is not None:  # process 0 keeps the lock until every process is done
        barrier()
    return written


@torch.no_grad()
def add_features(pipe, path, extractor, batch_size=16, progress=None, callback=None):
    """Add (or finish adding) `extractor`'s features to every shard of library `path`, regenerating the
    posteriors from the seeds; the seeds and the existing features are not touched. The pipeline must be the one
    the library was built with (same UNet and VAE weights), and each regenerated noise must match its checksum.

    Examples:
        >>> add_features(pipe, "lib", clip_extractor("ViT-B-32:openai"))
    """
    extractor = get_extractor(extractor) if isinstance(extractor, str) else extractor
    read_manifest(path)  # a clear error for a folder that is no library, before the lock creates anything
    with writer_lock(path, "add_features"):
        _add_features(pipe, path, extractor, batch_size, progress, callback)


def _add_features(pipe, path, extractor, batch_size, progress, callback):
    manifest = read_manifest(path)
    for key, module in (("unet_hash", denoiser(pipe)), ("vae_hash", pipe.vae)):
        if manifest["model"][key] != module_hash(module):
            raise ValueError(f"`pipe` is not the model library {path!r} was built with ({key} "
                             f"{module_hash(module)} vs {manifest['model'][key]}).")
    description = plain(extractor.describe())
    if manifest["extractors"].get(extractor.name) != description:
        manifest["extractors"][extractor.name] = description
        write_manifest(path, manifest)
    ddim, shape = posterior_pipe(pipe), tuple(manifest["latent_shape"])
    steps = manifest["posterior"]["num_inference_steps"]
    for record in committed_shards(path):
        if shard_has(path, record, extractor.name, description):
            continue
        stored = read_tensors(shard_file(path, record), ["seeds", "checksums"])
        seeds = stored["seeds"].tolist()
        pixels, checksums = posteriors(ddim, seeds, shape, steps, batch_size)
        expected = [int_to_checksum(v) for v in stored["checksums"].tolist()]
        if checksums != expected:
            raise ValueError(f"regenerated noise of shard {record['name']} does not match its checksums: this "
                             f"machine's torch draws other noise for these seeds.")
        write_feature(path, record["name"], extractor.name, description, seeds, extractor(pixels))
        if progress is not None:
            progress.update(len(seeds))
        if callback is not None:
            callback(record)
