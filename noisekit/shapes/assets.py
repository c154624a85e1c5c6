"""Loaders for the shapes-world assets, shipped as package data (`noisekit.assets`, the repository's `assets/`).

`$NOISEKIT_ASSETS` points at another folder that holds them.
"""

import importlib.resources
import os
from pathlib import Path

ASSET_NAMES = ("shapes-t2i", "shapes-t2i-eps", "shapes-flow", "shapes-clip", "shapes-judge",
               "shapes-judge-noise-aware", "shapes-judge-latent", "shapes-npnet", "shapes-library")
PIPELINE_ASSETS = ("shapes-t2i", "shapes-t2i-eps", "shapes-flow")  # what `--model` accepts by name
ASSET_KINDS = {"pipeline": PIPELINE_ASSETS, "npnet": ("shapes-npnet",), "library": ("shapes-library",),
               "reward": ("shapes-judge", "shapes-judge-noise-aware", "shapes-judge-latent", "shapes-clip")}
TRAINED = ASSET_NAMES[:-1]  # the library is built, not trained: its manifest is its record


def assets_dir():
    if os.environ.get("NOISEKIT_ASSETS"):
        return Path(os.environ["NOISEKIT_ASSETS"])
    return Path(str(importlib.resources.files("noisekit.assets")))


def asset_path(name):
    if name not in ASSET_NAMES:
        raise ValueError(f"`name` must be one of {ASSET_NAMES}, got {name!r}.")
    path = assets_dir() / name
    if not path.is_dir():
        raise FileNotFoundError(f"the shapes asset {name!r} is not at {path}; set NOISEKIT_ASSETS to the folder "
                                f"that holds {', '.join(ASSET_NAMES)}, or rebuild it with the command in "
                                f"the README's training section.")
    return path


def load_shapes_pipeline(name="shapes-t2i", **kwargs):
    """The shapes text-to-image model as a stock `StableDiffusionPipeline`."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(asset_path(name), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_shapes_judge():
    from .judge import ShapesJudge

    return ShapesJudge.from_pretrained(asset_path("shapes-judge")).eval()


def load_shapes_clip():
    """`(model, preprocess, tokenizer)` of the shapes CLIP, through stock open_clip."""
    import open_clip

    source = f"local-dir:{asset_path('shapes-clip')}"
    model, _, preprocess = open_clip.create_model_and_transforms(source)
    return model.eval(), preprocess, open_clip.get_tokenizer(source)
