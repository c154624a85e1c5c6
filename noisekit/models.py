"""Resolve `--model`: the embedded shapes world by default, a local diffusers folder, or a hub id."""

import os

import torch

from .shapes.assets import PIPELINE_ASSETS, asset_path


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_source(model):
    """`None` or a shapes asset name -> its folder; a local folder stays; `org/name` is a hub id."""
    if model is None or model in PIPELINE_ASSETS:
        return str(asset_path(model or "shapes-t2i"))
    if os.path.isdir(model):
        return model
    if os.path.exists(model) or model.startswith((".", "/")) or model.count("/") != 1:
        raise ValueError(f"`--model` must be a diffusers pipeline folder, a hub id (org/name) or one of "
                         f"{PIPELINE_ASSETS}; {model!r} is none of these.")
    return model


def _offline_hint(source, error):
    if os.path.isdir(source):
        return ValueError(f"could not load a diffusers pipeline from {source}: {error}")
    return ValueError(f"could not load {source!r} from the hub or its local cache ({error.__class__.__name__}). "
                      f"Offline (HF_HUB_OFFLINE=1 or no network), download it first on a machine with network "
                      f"(`hf download {source}`) or pass a local folder.")


def load_pipeline(model=None, device=None, dtype=None):
    """A text-to-image diffusers pipeline; `dtype` defaults to float16 on CUDA and float32 elsewhere."""
    from diffusers import DiffusionPipeline

    source = resolve_source(model)
    device = device or default_device()
    dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
    try:
        pipe = DiffusionPipeline.from_pretrained(source, dtype=dtype)
    except OSError as error:
        raise _offline_hint(source, error) from error
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_scheduler(model=None):
    """Only the scheduler of a pipeline folder or hub id (no weights are read)."""
    import diffusers

    source = resolve_source(model)
    try:
        config = diffusers.DDIMScheduler.load_config(source, subfolder="scheduler")
    except OSError as error:
        raise _offline_hint(source, error) from error
    scheduler_class = getattr(diffusers, config.get("_class_name", ""), None)
    if scheduler_class is None:
        raise ValueError(f"{source} names scheduler class {config.get('_class_name')!r}, which diffusers lacks.")
    return scheduler_class.from_config(config)
