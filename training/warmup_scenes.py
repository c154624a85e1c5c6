"""Clean warm-up pairs for latent noise-aware students (`train_noise_aware_reward.py --warmup_scenes N`).

A latent student starts at random and cannot copy the pixel teacher. Trained on a few hundred prompts' trajectories
it memorises them, so it first learns the teacher on many rendered shapes scenes instead: each scene is encoded
with the pipeline's VAE (the denoiser's scaled latent units, as x0 previews are) and paired with its own caption,
another scene's caption and its caption with one attribute changed (a near miss), each labelled by the teacher on
the rendered image, so the labels spread over the reward's range and the student must read the prompt. Captions
of `excluded` (the shapes world's held-out prompts and the run's validation prompts) never occur.
"""

import copy
import json
import os

import numpy as np
import torch

from noisekit.shapes.dataset import render_scenes
from noisekit.shapes.scenes import BACKGROUNDS, COLORS, POSITION_NAMES, SHAPES, SIZES, caption

CAPTION_KINDS = ("own", "other", "near-miss")
VALUES = {"background": tuple(BACKGROUNDS), "color": tuple(COLORS), "shape": SHAPES, "size": tuple(SIZES),
          "position": POSITION_NAMES}


def stated_attributes(scene):
    """`[(attribute, object index or None)]` that the caption of `scene` states."""
    stated = [("background", None)] if scene.stated["background"] else []
    for k in range(len(scene.objects)):
        stated += [("color", k), ("shape", k)]
    if len(scene.objects) == 1:
        stated += [(name, 0) for name in ("size", "position") if scene.stated[name]]
    return stated  # the judge does not read a two-object relation: changing it would change no label


def near_miss_caption(scene, rng):
    """The caption of `scene` with one stated attribute given another value (an object never takes the
    background's colour, as in the world)."""
    stated = stated_attributes(scene)
    name, k = stated[int(rng.integers(len(stated)))]
    changed = copy.deepcopy(scene)
    target = changed if k is None else changed.objects[k]
    clashes = {getattr(target, name)}
    if name == "color":
        clashes.add(scene.background)
    elif name == "background":
        clashes |= {obj.color for obj in scene.objects}
    choices = [v for v in VALUES[name] if v not in clashes]
    setattr(target, name, choices[int(rng.integers(len(choices)))])
    return caption(changed)


def pair_captions(scenes, seed, excluded):
    """`(scene index, kind, caption)` pairs, one per caption kind (`CAPTION_KINDS`) and scene; a mismatched caption
    that falls in `excluded` is dropped (the scenes themselves already avoid it)."""
    rng = np.random.default_rng([seed, 1])
    pairs = []
    for i, scene in enumerate(scenes):
        other = scenes[int(rng.integers(len(scenes)))].caption
        for kind, text in enumerate((scene.caption, other, near_miss_caption(scene, rng))):
            if text not in excluded:
                pairs.append((i, kind, text))
    return pairs


@torch.no_grad()
def teacher_labels(teacher, pixels, captions):
    """The teacher's clean reward of each `pixels` row with its caption; the shapes judge reads each distinct image
    once (pairs share images)."""
    from noisekit.rewards.shapes import ShapesJudgeReward

    if not isinstance(teacher, ShapesJudgeReward):
        return teacher.score(pixels, captions, torch.zeros(len(captions), device=pixels.device)).float()
    from noisekit.shapes.captions import parse_caption
    from noisekit.shapes.judge import stated_probabilities

    distinct, rows = torch.unique(pixels, dim=0, return_inverse=True)
    logits = {name: value[rows] for name, value in teacher.judge(distinct).items()}
    return torch.stack([stated_probabilities(logits, parse_caption(text), row).mean()
                        for row, text in enumerate(captions)]).float()


@torch.no_grad()
def make_warmup_data(*, vae, teacher, num_scenes, seed, excluded, image_size=64, batch_size=500, device="cpu"):
    """`(tensors, captions)`: `latents` `(num_scenes, C, h, w)` float16 (the VAE posterior mean times its scaling
    factor, of the scenes resized to the pipeline's `image_size` when that is not the world's 64 px; the teacher
    reads them as rendered), and per pair `scene` (row of `latents`), `kind` (of `CAPTION_KINDS`) and teacher `labels`, with the
    pairs' `captions`."""
    images, scenes = render_scenes(seed, num_scenes, exclude=frozenset(excluded))
    pairs = pair_captions(scenes, seed, frozenset(excluded))
    scene_of = torch.tensor([i for i, _, _ in pairs])
    captions = [text for _, _, text in pairs]
    latents, labels = [], []
    for start in range(0, num_scenes, batch_size):
        chunk = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).to(device)
        scaled = chunk.float() / 127.5 - 1
        if scaled.shape[-1] != image_size:
            scaled = torch.nn.functional.interpolate(scaled, size=(image_size, image_size), mode="bilinear",
                                                     antialias=True)
        latents.append((vae.encode(scaled).latent_dist.mean * vae.config.scaling_factor).half())
        rows = ((scene_of >= start) & (scene_of < start + len(chunk))).nonzero().flatten()
        pixels = teacher.transform(chunk[scene_of[rows] - start].float() / 255, device)
        labels.append(teacher_labels(teacher, pixels, [captions[i] for i in rows.tolist()]).cpu())
        print(f"warm-up data: {start + len(chunk)}/{num_scenes} scenes", flush=True)
    tensors = {"latents": torch.cat(latents).cpu().contiguous(), "scene": scene_of,
               "kind": torch.tensor([k for _, k, _ in pairs]), "labels": torch.cat(labels)}
    return tensors, captions


def save_warmup_data(path, tensors, captions, *, num_scenes, seed):
    from safetensors.torch import save_file

    metadata = {"captions": json.dumps(captions), "num_scenes": str(num_scenes), "seed": str(seed)}
    save_file(tensors, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)


def load_warmup_data(path, *, num_scenes, seed):
    """`(tensors, captions)` saved by `save_warmup_data`, checked against the run's `num_scenes` and `seed`."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        if (int(metadata["num_scenes"]), int(metadata["seed"])) != (num_scenes, seed):
            raise ValueError(f"{path} holds {metadata['num_scenes']} warm-up scenes of seed {metadata['seed']}, not "
                             f"{num_scenes} of seed {seed}; use another --output_dir.")
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118  (safe_open is no mapping)
    return tensors, json.loads(metadata["captions"])
