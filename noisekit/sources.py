"""Every name a flag or argument takes, resolved in one place: a shipped asset's name, a local folder or file, or
a hub id (`org/name`).

Results record what the user named (the asset's name, not the folder it was found in), so a results.json means the
same on any machine that has the asset.
"""

import os

import torch

from .shapes.assets import ASSET_KINDS, asset_path


def resolve(source, *, kind):
    """`(location, name)`: where to load `source` from, and the name to record.

    Args:
        source (`str` or `None`): a shipped asset of this kind, a local path, or (pipelines only) a hub id.
            `None` is the default pipeline, `shapes-t2i`.
        kind (`str`): one of `ASSET_KINDS` ("pipeline", "npnet", "library", ...).
    """
    if kind not in ASSET_KINDS:
        raise ValueError(f"`kind` must be one of {sorted(ASSET_KINDS)}, got {kind!r}.")
    shipped = ASSET_KINDS[kind]
    if source is None and kind == "pipeline":
        source = shipped[0]
    if not isinstance(source, str) or not source:
        raise ValueError(f"a {kind} must be named by a non-empty string, got {source!r}.")
    if source in shipped and not os.path.exists(source):
        return str(asset_path(source)), source
    if os.path.exists(source):
        return source, source
    if kind == "pipeline" and source.count("/") == 1 and not source.startswith((".", "/")):
        return source, source  # a hub id
    hub = " or a hub id (org/name)" if kind == "pipeline" else ""
    raise ValueError(f"{kind} {source!r} is neither a local path{hub} nor a shipped asset "
                     f"({', '.join(shipped) or 'none of this kind'}).")


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device):
    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r} needs a CUDA GPU, and torch sees none here; use cpu.")
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"`device` must be cpu, cuda or cuda:N, got {device!r}.") from None
    return device


def _offline_hint(source, error):
    if os.path.isdir(source):
        return ValueError(f"could not load a diffusers pipeline from {source}: {error}")
    return ValueError(f"could not load {source!r} from the hub or its local cache ({error.__class__.__name__}). "
                      f"Offline (HF_HUB_OFFLINE=1 or no network), download it first on a machine with network "
                      f"(`hf download {source}`) or pass a local folder.")


def pipeline_class(location):
    """The class a saved folder loads with: noisekit's own pipeline classes for folders they saved (their
    `model_index.json` names a noisekit component), else diffusers' choice."""
    import json

    from diffusers import DiffusionPipeline

    index = os.path.join(location, "model_index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            names = json.load(f)
        if "npnet" in names:
            from . import pipelines

            return pipelines.pipeline_class_for(names.get("_class_name"))
    return DiffusionPipeline


def absent_components(location):
    """`{name: None}` for the components a saved folder records as absent (`[null, null]` in `model_index.json`,
    e.g. SD3 without its T5), which diffusers otherwise asks the caller to pass."""
    import json

    index = os.path.join(location, "model_index.json")
    if not os.path.isfile(index):
        return {}
    with open(index, encoding="utf-8") as f:
        names = json.load(f)
    return {name: None for name, value in names.items() if value == [None, None]}


def load_pipeline(model=None, *, device=None, dtype=None):
    """A text-to-image diffusers pipeline; `dtype` defaults to float16 on CUDA and float32 elsewhere."""
    location, _ = resolve(model, kind="pipeline")
    device = check_device(device)
    dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
    try:
        pipe = pipeline_class(location).from_pretrained(location, dtype=dtype, **absent_components(location))
    except OSError as error:
        raise _offline_hint(location, error) from error
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_scheduler(model=None):
    """Only the scheduler of a pipeline folder or hub id (no weights are read)."""
    import diffusers

    location, _ = resolve(model, kind="pipeline")
    try:
        config = diffusers.DDIMScheduler.load_config(location, subfolder="scheduler")
    except OSError as error:
        raise _offline_hint(location, error) from error
    scheduler_class = getattr(diffusers, config.get("_class_name", ""), None)
    if scheduler_class is None:
        raise ValueError(f"{location} names scheduler class {config.get('_class_name')!r}, which diffusers lacks.")
    return scheduler_class.from_config(config)


def load_npnet(source, pipe, *, resize=False, height=None, width=None):
    """An NPNet by name: the shipped `shapes-npnet`, a saved folder, or an official `.pth`/`.safetensors` file;
    checked to fit `pipe` at `height` x `width` pixels (its default size when `None`)."""
    from .transforms.npnet import NoisePromptNet, check_fit

    location, _ = resolve(source, kind="npnet")
    if os.path.isdir(location):
        npnet = NoisePromptNet.from_pretrained(location)
        # The text shape is checked by the golden-noise stage on the run's encodings, before any sampling.
        check_fit(npnet, pipe, height, width, resize, check_text=False)
    else:
        npnet = NoisePromptNet.from_official_checkpoint(location, pipe=pipe, height=height, width=width,
                                                        resize=resize)
    return npnet.eval().to(pipe.device)
