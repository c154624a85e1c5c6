"""`noisekit replay`: regenerate the images of a `results.json` from their recipes and compare them with the files.

It reads what `generate` or `search` wrote: the settings (model, schedule fix, steps, guidance, micro-batch) and
one recipe per candidate. Each recipe replays its noise (seeds bit for bit, transforms within a tolerance), the
candidates are denoised in the batches they ran in (a search is re-run with its recorded pruning decisions, so its
survivors shrink through the same batches), and each image is compared with the file next to `results.json`:

- "identical": every 8-bit pixel equal;
- "within tolerance": at most `PIXEL_TOLERANCE` grey levels apart (float kernels round differently across thread
  counts, weight layouts and devices, and a transform's last bits move an image by a grey level or two);
- "different": anything more. Only this makes `noisekit replay` exit non-zero.
"""

import os

import numpy as np
import torch
from PIL import Image

from .core.candidates import Candidates
from .core.recipe import DIFFERENT, IDENTICAL, WITHIN_TOLERANCE, NoiseRecipe
from .core.sampler import Sampler, run_batches
from .results import check_output_dir, read_results
from .search.strategies import Flight

PIXEL_TOLERANCE = 4  # grey levels


def uses_transform(records, name):
    return any(step["name"] == name for r in records for step in r["recipe"]["transforms"])


def pixel_difference(image, original_path):
    """Largest 8-bit difference between `image` and the file (256 when the file is missing or another size)."""
    if not os.path.isfile(original_path):
        return 256
    a = np.asarray(image.convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(original_path).convert("RGB"), dtype=np.int16)
    return 256 if a.shape != b.shape else int(np.abs(a - b).max())


def image_status(difference):
    if difference == 0:
        return IDENTICAL
    return WITHIN_TOLERANCE if difference <= PIXEL_TOLERANCE else DIFFERENT


def replay_noise(records, context):
    """`(Candidates, statuses)`: every record's noise replayed, with its status against the recorded checksum."""
    recipes = [NoiseRecipe.from_dict(r["recipe"]) for r in records]
    rows, statuses = [], []
    for recipe in recipes:
        noise = recipe.replay_unverified(**context)
        statuses.append(recipe.verify(noise))
        rows.append(noise)
    return Candidates(torch.cat(rows), recipes, [r["prompt_index"] for r in records]), statuses


def prompt_groups(results):
    """`[(prompt_index, records, summary)]`: generate's images or search's candidates (all, pruned included)."""
    records = results.get("images") or results.get("candidates") or []
    summaries = {s["prompt_index"]: s for s in results.get("prompts", [])}
    order = list(dict.fromkeys(r["prompt_index"] for r in records))
    return [(i, [r for r in records if r["prompt_index"] == i], summaries.get(i)) for i in order]


def sample_group(sampler, candidates, records, summary, batch_size, output_type="pil"):
    """Images of the finished records of one prompt, sampled as the run sampled them."""
    if summary is None:  # generate: every candidate of the prompt, in micro-batches of `batch_size`
        return run_batches(sampler, candidates.noise, candidates.prompt_index, candidates.generators(),
                           micro_batch_size=batch_size).images
    flight = Flight(sampler, candidates, summary.get("micro_batch_size"))
    alive = list(range(len(records)))
    for step in summary.get("pruning_steps", []):
        flight.advance(step + 1)
        kept = [p for p, i in enumerate(alive) if next(s for s in records[i]["stages"] if s["step"] == step)["kept"]]
        flight.keep(kept)
        alive = [alive[p] for p in kept]
    flight.advance(sampler.num_steps)
    images = flight.images()
    return dict(zip(alive, images))


@torch.no_grad()
def replay_results(path, *, output_dir=None, npnet=None, device=None, progress=None):
    """Regenerate every finished image of the `results.json` at `path` into `output_dir` (default: `replay/`
    beside it; never the results' own folder).

    Args:
        npnet: the NPNet of golden-noise recipes, if it moved (default: the one the settings name).

    Returns:
        `{"images", "identical", "within tolerance", "different", "max_pixel_difference", "noise": {status: n},
        "max_noise_difference", "output_dir", "per_image": [{"file", "status", "pixel_difference"}]}`.
    """
    from .core.schedule import zero_snr
    from .sources import load_npnet, load_pipeline

    results = read_results(path)
    settings = results["settings"]
    source_dir = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    output_dir = output_dir or os.path.join(source_dir, "replay")
    if os.path.realpath(output_dir) == source_dir:
        raise ValueError(f"replay's output folder {output_dir!r} is the results' own folder; it would overwrite the "
                         "images it checks. Give another --output_dir.")
    check_output_dir(output_dir)
    pipe = load_pipeline(settings["model"], device=device)
    if settings.get("zero_snr"):
        zero_snr(pipe, mode=settings["zero_snr"])
    if settings.get("scheduler") not in (None, type(pipe.scheduler).__name__):
        raise ValueError(f"the results were sampled with {settings['scheduler']}, this pipeline has "
                         f"{type(pipe.scheduler).__name__}.")
    groups = prompt_groups(results)
    all_records = [r for _, records, _ in groups for r in records]
    context = {"pipe": pipe}
    if uses_transform(all_records, "npnet"):
        source = npnet or settings.get("npnet")
        if not source:
            raise ValueError("the recipes use golden noise but the settings name no NPNet; pass --npnet PATH.")
        resize = any(s["params"].get("resize") for r in all_records for s in r["recipe"]["transforms"]
                     if s["name"] == "npnet")
        context["npnet"] = load_npnet(source, pipe, resize=resize, height=settings.get("height"),
                                      width=settings.get("width"))
    report = {"images": 0, IDENTICAL: 0, WITHIN_TOLERANCE: 0, DIFFERENT: 0, "max_pixel_difference": 0,
              "noise": {IDENTICAL: 0, WITHIN_TOLERANCE: 0, DIFFERENT: 0}, "max_noise_difference": 0.0,
              "output_dir": output_dir, "per_image": []}
    prompts = list(dict.fromkeys(records[0]["prompt"] for _, records, _ in groups))
    sampler = Sampler(pipe, prompts, num_inference_steps=settings["steps"], guidance_scale=settings["guidance_scale"],
                      guidance_rescale=settings.get("guidance_rescale"), negative_prompt=settings.get("negative_prompt"),
                      height=settings.get("height"), width=settings.get("width"))
    for _, records, summary in groups:
        candidates, statuses = replay_noise(records, context)
        index = prompts.index(records[0]["prompt"])
        candidates = Candidates(candidates.noise, candidates.recipes, [index] * len(candidates))
        for status, difference in statuses:
            report["noise"][status] += 1
            report["max_noise_difference"] = max(report["max_noise_difference"], difference)
        images = sample_group(sampler, candidates, records, summary, settings.get("batch_size"))
        finished = images.items() if isinstance(images, dict) else enumerate(images)
        for position, image in finished:
            record = records[position]
            image.save(os.path.join(output_dir, record["file"]))
            difference = pixel_difference(image, os.path.join(source_dir, record["file"]))
            status = image_status(difference)
            report["images"] += 1
            report[status] += 1
            report["max_pixel_difference"] = max(report["max_pixel_difference"], difference)
            report["per_image"].append({"file": record["file"], "status": status, "pixel_difference": difference})
        if progress is not None:
            progress.update(1)
    return report
