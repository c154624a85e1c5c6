"""open_clip rewards: CLIP similarity (`clip`), HPSv2 / HPSv2.1 (`hpsv2`, `hpsv2.1`), and open_clip loading.

Everything runs through stock `open_clip`: the model, its tokenizer (the BPE file open_clip ships, so no download)
and its preprocessing configuration, which `ImageTransform` reproduces on PIL images and on tensors.
"""

import dataclasses
import os

from .base import ImageTransform, Reward, load_official_state_dict, resolve_file

SCORE_MODES = {
    "cosine": lambda cos: cos,  # raw cosine similarity, in [-1, 1]
    "cosine_x100": lambda cos: 100 * cos,  # what most papers print as "CLIP score"
    "hessel": lambda cos: 2.5 * cos.clamp(min=0),  # CLIPScore of Hessel et al. (2021), w = 2.5
}
_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HPS_FILES = {"hpsv2": "HPS_v2_compressed.pt", "hpsv2.1": "HPS_v2.1_compressed.pt"}
HPS_REPO = "xswu/HPSv2"
HPS_PREPROCESS = {  # name -> ImageTransform.resize_mode
    "official": "longest",  # the `hpsv2` package's score(): longest side to 224, padded with black (letterbox)
    "ttsnap": "shortest",  # TTSnap's HPS reward: shortest side to 224, centre crop
}


def open_clip_transform(model):
    """The `ImageTransform` equal to open_clip's validation preprocessing of `model`."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"noisekit's rewards read square images; this open_clip model wants {tuple(size)}.")
        size = size[0]
    return ImageTransform(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"),
                          cfg.get("resize_mode", "shortest"))


def _activation_kwargs(model_name, pretrained, quick_gelu):
    """`create_model` keyword arguments giving the activation the weights were trained with.

    open_clip's built-in `ViT-L-14`, `ViT-B-32`, ... configs use GELU, while OpenAI's weights (and other
    `*-quickgelu` tags) were trained with QuickGELU; open_clip then only warns. A tag's own `quick_gelu` flag
    decides unless `quick_gelu` is given.
    """
    import open_clip

    if quick_gelu is None:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained and ":" not in model_name else {}
        quick_gelu = True if tag_cfg.get("quick_gelu") else None
    if quick_gelu is None:
        return {}
    return {"force_quick_gelu": True} if quick_gelu else {"quick_gelu": False}


def load_open_clip(reward, model_name, pretrained=None, *, quick_gelu=None):
    """`(model, tokenizer)` of an open_clip model with weights, or a `FileNotFoundError` saying what is missing.

    Args:
        reward (`str`): the reward's name, for messages.
        model_name (`str`): a built-in architecture (`"ViT-L-14"`), `"local-dir:FOLDER"` (a folder with
            `open_clip_config.json` and `open_clip_model.safetensors`), or `"hf-hub:ORG/REPO"`.
        pretrained (`str`): with a built-in architecture, a pretrained tag (`"openai"`, `"laion2b_s32b_b79k"`, see
            `open_clip.list_pretrained()`) or a local checkpoint file.
        quick_gelu (`bool`, *optional*): the activation. `None` (default): QuickGELU where the pretrained tag was
            trained with it (every `openai` tag), else the architecture config's; `True` / `False` force
            QuickGELU / GELU (say, for a local copy of OpenAI weights passed as a file).
    """
    import open_clip

    if quick_gelu is not None and not isinstance(quick_gelu, bool):
        raise ValueError(f"`quick_gelu` must be None, True or False, got {quick_gelu!r}.")

    if model_name.startswith("local-dir:"):
        folder = model_name[len("local-dir:"):]
        if not any(os.path.isfile(os.path.join(folder, name)) for name in _WEIGHT_FILES):
            raise FileNotFoundError(f"reward {reward!r}: {folder!r} must hold open_clip_config.json and one of "
                                    f"{_WEIGHT_FILES}.")
    elif model_name.startswith("hf-hub:"):
        pass  # open_clip resolves config and weights itself; failures are caught below
    else:
        if pretrained is None:
            raise ValueError(f"reward {reward!r}: `pretrained` (a tag of {model_name!r} or a checkpoint file) is "
                             f"required with a built-in architecture; tags: "
                             f"{open_clip.list_pretrained_tags_by_model(model_name)}.")
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if tag_cfg:
            try:  # resolve the file first, so a cache miss names what is missing
                open_clip.download_pretrained(tag_cfg)
            except Exception as error:
                where = tag_cfg.get("hf_hub") or tag_cfg.get("url")
                raise FileNotFoundError(
                    f"reward {reward!r}: the weights of open_clip {model_name} / {pretrained} ({where}) are not in "
                    f"the local cache; download them once with network (`open_clip.create_model({model_name!r}, "
                    f"pretrained={pretrained!r})`) or pass `pretrained=` a local checkpoint file.") from error
        elif not os.path.isfile(pretrained):
            raise FileNotFoundError(f"reward {reward!r}: `pretrained` {pretrained!r} is neither a tag of "
                                    f"{model_name!r} ({open_clip.list_pretrained_tags_by_model(model_name)}) nor a "
                                    f"file.")
    try:
        model = open_clip.create_model(model_name, pretrained=None if ":" in model_name else pretrained,
                                       **_activation_kwargs(model_name, pretrained, quick_gelu))
    except RuntimeError as error:
        raise FileNotFoundError(f"reward {reward!r}: open_clip could not load {model_name!r}: {error}") from error
    return model.eval(), open_clip.get_tokenizer(model_name)


class ClipReward(Reward):
    """Cosine similarity of open_clip image and text embeddings, in the scale `mode` names.

    Scale: `"cosine"` in [-1, 1] (typically 0.2-0.35 for a matching photo with OpenAI ViT-L/14), `"cosine_x100"`
    that times 100, `"hessel"` 2.5 * max(cos, 0) (CLIPScore, about 0.6-0.85). The backbone matters as much as the
    mode: report both.

    Args:
        model: an open_clip `CLIP` model.
        tokenizer: its open_clip tokenizer.
        mode (`str`): one of `SCORE_MODES`.
        batch_size (`int`): images per forward pass.
        transform (`ImageTransform`, *optional*): the preprocessing; by default open_clip's for `model`.
    """

    def __init__(self, model, tokenizer, mode="cosine", batch_size=16, *, transform=None):
        if mode not in SCORE_MODES:
            raise ValueError(f"`mode` must be one of {tuple(SCORE_MODES)}, got {mode!r}.")
        super().__init__(open_clip_transform(model) if transform is None else transform, batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.mode = mode

    def cosine(self, pixels, prompts):
        image = self.model.encode_image(pixels, normalize=True)
        text = self.model.encode_text(self.tokenizer(prompts).to(pixels.device), normalize=True)
        return (image * text).sum(-1)

    def score_clean(self, pixels, prompts):
        return SCORE_MODES[self.mode](self.cosine(pixels, prompts))


def load_clip(model_name="ViT-L-14", pretrained="openai", mode="cosine", batch_size=16, *, quick_gelu=None):
    """The `clip` reward: open_clip similarity of image and prompt.

    With an `openai` tag (the default) the model runs with QuickGELU, as OpenAI's `clip` package does; open_clip's
    own `ViT-L-14` config would give GELU. Preprocessing: open_clip's for the tag (OpenAI's: shortest side to 224
    bicubic, centre crop, OpenAI mean/std).

    Args:
        model_name (`str`): open_clip architecture, `"local-dir:FOLDER"` or `"hf-hub:ORG/REPO"`.
        pretrained (`str`): pretrained tag or local checkpoint file (ignored with `local-dir:` / `hf-hub:`).
        mode (`str`): `"cosine"` (default), `"cosine_x100"` or `"hessel"` (2.5 * max(cos, 0)).
        batch_size (`int`): images per forward pass.
        quick_gelu (`bool`, *optional*): the activation; see `load_open_clip` (default: the tag's).

    Examples:
        >>> reward = load_reward("clip", model_name="ViT-B-32", pretrained="openai", mode="hessel")
        >>> reward(images, ["a red cube on a table"] * len(images))
    """
    model, tokenizer = load_open_clip("clip", model_name, pretrained, quick_gelu=quick_gelu)
    return ClipReward(model, tokenizer, mode, batch_size)


def load_hps(version="hpsv2", path=None, model_name="ViT-H-14", batch_size=16, *, preprocess="official"):
    """HPSv2 or HPSv2.1: open_clip ViT-H-14 fine-tuned on human preferences (Wu et al., 2023).

    Weights: `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt` of the hub repo `xswu/HPSv2`, a torch pickle of
    `{"state_dict": <the full open_clip ViT-H-14 state dict>}`, read with `torch.load(weights_only=True)`; the
    LAION base weights are not needed because the checkpoint holds every tensor. Activation: GELU (LAION's
    ViT-H-14). Tokenizer: open_clip's, 77 tokens.

    Preprocessing, by `preprocess`:

    - `"official"` (default): what `hpsv2.score()` does (its `ResizeMaxSize` letterbox): RGB, to a [0, 1] tensor,
      longest side to 224 (bicubic, antialiased, sides rounded), padded to 224 x 224 with black (odd padding:
      the extra pixel right / bottom), OpenAI mean/std. Square images are just resized.
    - `"ttsnap"`: TTSnap's HPS reward: PIL resize of the shortest side to 224 (bicubic), centre crop 224, OpenAI
      mean/std. On non-square images the two see different pixels (cropped vs padded) and score differently.

    Scale: raw cosine of the normalised embeddings, like the `hpsv2` package's `score()`, typically 0.2-0.35;
    papers report it x100 ("HPS 28.5").

    Args:
        version (`str`): `"hpsv2"` or `"hpsv2.1"`.
        path (`str`, *optional*): the checkpoint file; by default it is looked up in the Hugging Face cache.
        model_name (`str`): open_clip architecture of the checkpoint (`"local-dir:FOLDER"` for a config-only
            folder, as the tests do with a reduced ViT).
        batch_size (`int`): images per forward pass.
        preprocess (`str`): `"official"` or `"ttsnap"` (see above).

    Examples:
        >>> reward = load_reward("hpsv2.1", path="ckpts/HPS_v2.1_compressed.pt")
        >>> reward(images, prompts) * 100  # as in papers
    """
    import open_clip

    if version not in HPS_FILES:
        raise ValueError(f"`version` must be one of {tuple(HPS_FILES)}, got {version!r}.")
    if preprocess not in HPS_PREPROCESS:
        raise ValueError(f"`preprocess` must be one of {tuple(HPS_PREPROCESS)}, got {preprocess!r}.")
    path = resolve_file(version, path, HPS_REPO, HPS_FILES[version])
    model = open_clip.create_model(model_name, pretrained=None, load_weights=False)
    model.load_state_dict(load_official_state_dict(path))
    transform = dataclasses.replace(open_clip_transform(model), resize_mode=HPS_PREPROCESS[preprocess])
    return ClipReward(model.eval(), open_clip.get_tokenizer(model_name), "cosine", batch_size, transform=transform)

