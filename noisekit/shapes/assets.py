"""Loaders for the shapes-world assets shipped in the repository's `assets/` folder.

The folder is found next to the package (an editable install or a source checkout) or at `$NOISEKIT_ASSETS`.
"""

import os
from pathlib import Path

ASSET_NAMES = ("shapes-t2i", "shapes-t2i-eps", "shapes-clip", "shapes-judge", "shapes-judge-noise-aware",
               "shapes-npnet", "shapes-library")
PIPELINE_ASSETS = ("shapes-t2i", "shapes-t2i-eps")  # what `--model` accepts by name
TRAINED = ASSET_NAMES[:-1]  # the library is built, not trained: its manifest is its record


def assets_dir():
    return Path(os.environ.get("NOISEKIT_ASSETS", Path(__file__).resolve().parents[2] / "assets"))


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
