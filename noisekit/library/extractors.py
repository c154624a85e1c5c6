"""Feature extractors: a registry as data (`name -> Extractor`), plus the open_clip image-embedding extractor.

An extractor maps decoded images `(B, 3, H, W)` in [0, 1] to float32 `(B, D)`. Its identity is `describe()`:
name, version, columns (or the embedding width) and, for CLIP, the model source and weights hash. The library's
manifest stores that description; a library refuses to mix features of two different descriptions. Bump
`version` whenever an extractor's numbers change.
"""

from dataclasses import dataclass, field

import torch

from .attributes import (COLOR_COLUMNS, SHAPE_COLUMNS, SHARPNESS_COLUMNS, TEXTURE_COLUMNS, color_attributes,
                         shape_attributes, sharpness_attributes, texture_attributes)


@dataclass(frozen=True)
class Extractor:
    """One versioned feature extractor.

    Args:
        name (`str`): registry key, also the feature table's name in the library.
        version (`int`): bumped when the numbers change.
        encode_image (`callable`): `(B, 3, H, W)` in [0, 1] -> `(B, D)`.
        columns (`tuple[str]`): names of the D attribute columns; empty for an embedding.
        dim (`int`): D.
        storage (`str`): `"float32"` for attributes, `"float16"` for L2-normalised embeddings.
        encode_text (`callable`, *optional*): `list[str] -> (T, D)` normalised, for embeddings that have a text
            tower (CLIP).
        info (`dict`): extra identity recorded in the manifest (model source, weights hash).
    """

    name: str
    version: int
    encode_image: object
    columns: tuple = ()
    dim: int = 0
    storage: str = "float32"
    encode_text: object = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.columns and self.dim != len(self.columns):
            object.__setattr__(self, "dim", len(self.columns))

    def describe(self):
        return {"name": self.name, "version": self.version, "columns": list(self.columns), "dim": self.dim,
                "storage": self.storage, **self.info}

    def __call__(self, pixels):
        with torch.no_grad():
            return self.encode_image(pixels).float().cpu()


_EXTRACTORS = {
    "color": Extractor("color", 1, color_attributes, COLOR_COLUMNS),
    "sharpness": Extractor("sharpness", 1, sharpness_attributes, SHARPNESS_COLUMNS),
    "texture": Extractor("texture", 1, texture_attributes, TEXTURE_COLUMNS),
    "shape": Extractor("shape", 1, shape_attributes, SHAPE_COLUMNS),
}
DEFAULT_ATTRIBUTES = ("color", "sharpness", "texture", "shape")


def list_extractors():
    """Names of the registered attribute extractors (CLIP is made per model with `clip_extractor`)."""
    return sorted(_EXTRACTORS)


def add_extractor(extractor):
    """Register `extractor` under its name (replacing one of the same name).

    Examples:
        >>> add_extractor(Extractor("redness", 1, lambda px: px[:, :1].mean((2, 3)), ("redness",)))
        >>> library.add_features(pipe, get_extractor("redness"))
    """
    _EXTRACTORS[extractor.name] = extractor


def get_extractor(name):
    if name not in _EXTRACTORS:
        raise ValueError(f"`extractor` must be one of {list_extractors()} (or a clip source), got {name!r}.")
    return _EXTRACTORS[name]


def resolve_clip_source(source):
    """`(model_name, pretrained)` for open_clip from a clip source: `"shapes-clip"`, `"local-dir:FOLDER"`,
    `"hf-hub:ORG/REPO"` or `"ARCH:TAG"` (e.g. `"ViT-B-32:openai"`, a tag or a checkpoint file)."""
    if source == "shapes-clip":
        from ..shapes.assets import asset_path

        return f"local-dir:{asset_path('shapes-clip')}", None
    if source.startswith(("local-dir:", "hf-hub:")):
        return source, None
    if ":" not in source:
        raise ValueError(f"a clip source must be 'shapes-clip', 'local-dir:FOLDER', 'hf-hub:ORG/REPO' or "
                         f"'ARCH:TAG' (e.g. 'ViT-B-32:openai'), got {source!r}.")
    arch, tag = source.split(":", 1)
    return arch, tag


def clip_extractor(source, model=None, tokenizer=None, device=None):
    """The `clip` extractor: L2-normalised open_clip image embeddings, and the text tower for queries.

    Args:
        source (`str`): see `resolve_clip_source`; recorded in the manifest so queries can reload the model.
        model, tokenizer: an already loaded open_clip model and tokenizer for `source` (loaded when `None`).
        device: where the model runs (its current device when `None`).

    Examples:
        >>> extractor = clip_extractor("shapes-clip")
        >>> extractor(pixels).shape  # (B, 64)
    """
    from ..rewards.clip import load_open_clip, open_clip_transform
    from ..core.weights import module_hash

    if model is None:
        model_name, pretrained = resolve_clip_source(source)
        model, tokenizer = load_open_clip("library clip", model_name, pretrained)
    if tokenizer is None:
        raise ValueError("`tokenizer` must be given with `model`.")
    model = model.eval()
    if device is not None:
        model = model.to(device)
    transform = open_clip_transform(model)
    weights_hash = module_hash(model)

    def encode_image(pixels):
        parameter = next(model.parameters())
        return model.encode_image(transform(pixels, parameter.device, parameter.dtype), normalize=True)

    def encode_text(texts):
        parameter = next(model.parameters())
        with torch.no_grad():
            return model.encode_text(tokenizer(list(texts)).to(parameter.device), normalize=True).float().cpu()

    dim = encode_text([""]).shape[-1]
    return Extractor("clip", 1, encode_image, (), int(dim), "float16", encode_text,
                     {"source": source, "weights_hash": weights_hash})
