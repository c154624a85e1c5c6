"""Rendered shapes-world datasets, the held-out evaluation prompts, and a torch `Dataset` over them."""

import numpy as np
import torch

from .scenes import EMPTY_CAPTION_PROBABILITY, draw_scene, sample_scene

# Held-out prompts come from their own seed and are removed from every training set, so the quality table is
# measured on captions no model saw.
HELDOUT_SEED = 1_000_003


def heldout_scenes(count=200, seed=HELDOUT_SEED):
    """`count` distinct scenes from the held-out seed; their captions are the evaluation prompts."""
    scenes, seen, index = [], set(), 0
    while len(scenes) < count:
        scene = sample_scene(seed, index)
        index += 1
        if scene.caption not in seen:
            seen.add(scene.caption)
            scenes.append(scene)
    return scenes


def heldout_captions(count=200):
    return {scene.caption for scene in heldout_scenes(count)}


def training_captions(seed, count):
    """The first `count` distinct non-empty captions of dataset `seed`, none of them held out (the prompts of the
    noise-aware rewards' trajectories); fewer only when the dataset runs dry within 100 x `count` scenes."""
    excluded, captions, seen, index = heldout_captions(), [], set(), 0
    while len(captions) < count and index < 100 * count:
        caption = sample_scene(seed, index).caption
        index += 1
        if caption and caption not in excluded and caption not in seen:
            seen.add(caption)
            captions.append(caption)
    return captions


def render_scenes(seed, count, start=0, exclude=frozenset()):
    """Render scenes `start`, `start + 1`, ... of dataset `seed`, skipping captions in `exclude`.

    Returns `(images, scenes)`: a `(count, 64, 64, 3)` uint8 array and the scene records.
    """
    images, scenes, index = [], [], start
    while len(scenes) < count:
        scene = sample_scene(seed, index)
        index += 1
        if scene.caption in exclude:
            continue
        images.append(np.asarray(draw_scene(scene)))
        scenes.append(scene)
    return np.stack(images), scenes


class ShapesDataset(torch.utils.data.Dataset):
    """Images in [-1, 1] (3 x 64 x 64) with captions; 10 % of captions are emptied for classifier-free guidance.

    The emptied captions are chosen by `numpy.random.default_rng([seed, index, 1])`, so they are deterministic too.
    """

    def __init__(self, seed, count, empty_caption_probability=EMPTY_CAPTION_PROBABILITY, exclude_heldout=True):
        exclude = heldout_captions() if exclude_heldout else frozenset()
        self.images, self.scenes = render_scenes(seed, count, exclude=exclude)
        self.seed = seed
        self.empty_caption_probability = empty_caption_probability

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 127.5 - 1.0
        caption = self.scenes[index].caption
        if np.random.default_rng([self.seed, index, 1]).random() < self.empty_caption_probability:
            caption = ""
        return {"pixel_values": image, "caption": caption, "index": index}
