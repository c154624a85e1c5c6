"""`imagereward`: ImageReward v1.0 (Xu et al., 2023) on transformers' BLIP classes, without the `image-reward` package.

ImageReward is BLIP (ViT-L/16 image encoder, BERT-base text encoder with cross-attention to the image) plus a
five-linear MLP on the text encoder's [CLS] state. The official `ImageReward.pt` is a state dict of the package's
`ImageReward` module:

- `blip.visual_encoder.*`: BLIP's timm-style ViT (`cls_token`, `pos_embed`, `patch_embed.proj`,
  `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`), which `VISION_KEYS` renames into
  transformers' `BlipVisionModel` (same computation: pre-norm blocks, LayerNorm eps 1e-6, GELU, final norm);
- `blip.text_encoder.*`: BLIP's `med.py` BertModel, whose keys transformers' `BlipTextModel` (a port of `med.py`,
  no token-type embeddings) shares one to one;
- `mlp.layers.{0,2,4,6,7}.*`: the preference MLP;
- unused here: `blip.vision_proj.*`, `blip.text_proj.*` (contrastive heads), any other key outside the three
  modules above, and the text `position_ids` buffer. Inside the three modules every key must match (strict load).

Architecture sizes are read from the tensors' shapes (attention heads = width / 64, as in ViT-L and BERT-base).
"""

import re

import torch

from .aesthetic import PreferenceMLP
from .base import CLIP_MEAN, CLIP_STD, ImageTransform, Reward, load_official_state_dict, resolve_file

IMAGEREWARD_REPO = "THUDM/ImageReward"
IMAGEREWARD_FILE = "ImageReward.pt"
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # reward normalisation of ImageReward v1.0
MAX_TOKENS = 35  # ImageReward truncates prompts to 35 BERT tokens ([CLS] and [SEP] included)
HEAD_DIM = 64
VISION_KEYS = [  # (BLIP ViT name, transformers BlipVisionModel name), as regular expressions
    (r"cls_token", r"embeddings.class_embedding"),
    (r"pos_embed", r"embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]
_IGNORED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")


def _rename_vision(name):
    for pattern, replacement in VISION_KEYS:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise KeyError(f"unexpected key blip.visual_encoder.{name} in the ImageReward checkpoint.")


def _count(state, pattern):
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def build_blip(state):
    """`(vision, text)`: `BlipVisionModel` and `BlipTextModel` sized from, and loaded with, an ImageReward state."""
    from transformers import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    vision_state = {_rename_vision(k[len("blip.visual_encoder."):]): v for k, v in state.items()
                    if k.startswith("blip.visual_encoder.")}
    text_state = {k[len("blip.text_encoder."):]: v for k, v in state.items()
                  if k.startswith("blip.text_encoder.") and not k.startswith(_IGNORED)}
    if not vision_state or not text_state:
        raise KeyError(f"not an ImageReward checkpoint: no blip.visual_encoder.* / blip.text_encoder.* keys, "
                       f"found e.g. {sorted(state)[:5]}.")
    width = vision_state["embeddings.class_embedding"].shape[-1]
    patch = vision_state["embeddings.patch_embedding.weight"].shape[-1]
    grid = int(round((vision_state["embeddings.position_embedding"].shape[1] - 1) ** 0.5))
    vision_config = BlipVisionConfig(
        hidden_size=width, intermediate_size=vision_state["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(vision_state, r"encoder\.layers\.(\d+)\."), num_attention_heads=width // HEAD_DIM,
        image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-6)
    words = text_state["embeddings.word_embeddings.weight"]
    text_config = BlipTextConfig(
        vocab_size=words.shape[0], hidden_size=words.shape[1],
        encoder_hidden_size=text_state["encoder.layer.0.crossattention.self.key.weight"].shape[1],
        intermediate_size=text_state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=_count(text_state, r"encoder\.layer\.(\d+)\."),
        num_attention_heads=words.shape[1] // HEAD_DIM,
        max_position_embeddings=text_state["embeddings.position_embeddings.weight"].shape[0], hidden_act="gelu",
        layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=None, sep_token_id=None, eos_token_id=None)
    vision = BlipVisionModel(vision_config)
    vision.load_state_dict(vision_state)
    text = BlipTextModel(text_config, add_pooling_layer=False)
    text.load_state_dict(text_state)
    return vision.eval(), text.eval()


def bert_tokenizer(source="bert-base-uncased"):
    """BLIP's tokenizer: BERT base uncased plus the `[DEC]` bos token and `[ENC]` (ids 30522, 30523)."""
    from transformers import BertTokenizer

    try:
        tokenizer = BertTokenizer.from_pretrained(source)
    except OSError as error:
        raise FileNotFoundError(f"reward 'imagereward' needs the BERT tokenizer (vocab.txt of the hub repo "
                                f"bert-base-uncased) in the local Hugging Face cache or as a folder passed as "
                                f"`tokenizer=`; got {source!r}: {error}") from error
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


class ImageRewardReward(Reward):
    """ImageReward v1.0: `(mlp(text_encoder(prompt | image)[CLS]) - 0.16717) / 1.03334`.

    Scale: normalised so that human-rated SD 1.4 samples have mean about 0 and sd about 1 (62% in [-1, 1], 98% in
    [-2, 2]); strong models reach about 0.8-1.0 on average. Prompts are truncated to 35 tokens.
    """

    def __init__(self, vision, text, mlp, tokenizer, batch_size=16):
        size = vision.config.image_size
        super().__init__(ImageTransform(size, CLIP_MEAN, CLIP_STD, "bicubic", "shortest"), batch_size)
        self.vision = vision
        self.text = text
        self.mlp = mlp
        self.tokenizer = tokenizer

    def score_clean(self, pixels, prompts):
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt").to(pixels.device)
        image = self.vision(pixel_values=pixels).last_hidden_state  # (B, 1 + patches, width), after the final norm
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=pixels.device)
        hidden = self.text(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                           encoder_hidden_states=image, encoder_attention_mask=image_mask).last_hidden_state
        return (self.mlp(hidden[:, 0].to(self.mlp.layers[0].weight.dtype)) - MEAN) / STD


def load_imagereward(path=None, tokenizer="bert-base-uncased", batch_size=16):
    """The `imagereward` reward, from the official `ImageReward.pt` (hub repo `THUDM/ImageReward`).

    The checkpoint is read with `torch.load(weights_only=True)` and mapped onto transformers' `BlipVisionModel` and
    `BlipTextModel` (see the module docstring for the key layout); `med_config.json` is not needed because the
    sizes come from the tensors. Preprocessing as ImageReward's: resize the shortest side to 224 (bicubic),
    centre crop 224, OpenAI CLIP mean/std. Text: BERT base uncased, padded and truncated to 35 tokens.

    Args:
        path (`str`, *optional*): `ImageReward.pt`; by default looked up in the Hugging Face cache.
        tokenizer (`str`): hub id or folder of the BERT tokenizer (`vocab.txt`).
        batch_size (`int`): images per forward pass.

    Examples:
        >>> reward = load_reward("imagereward", path="ckpts/ImageReward.pt")
        >>> reward(images, prompts)
    """
    path = resolve_file("imagereward", path, IMAGEREWARD_REPO, IMAGEREWARD_FILE)
    state = load_official_state_dict(path)
    vision, text = build_blip(state)
    mlp = PreferenceMLP.from_state_dict(state, prefix="mlp.")
    return ImageRewardReward(vision, text, mlp, bert_tokenizer(tokenizer), batch_size)
