"""`pickscore`: PickScore v1 (Kirstain et al., 2023), a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences."""

import torch

from .base import ImageTransform, Reward

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def embedding(output):
    """The embedding tensor of `CLIPModel.get_image_features` / `get_text_features`.

    transformers < 5 returns the projected embedding; transformers >= 5 returns a `BaseModelOutputWithPooling`
    whose `pooler_output` holds it (huggingface/transformers#42564).
    """
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def processor_transform(image_processor):
    """The `ImageTransform` of a CLIP image processor's settings (shortest side, centre crop, mean/std).

    The processor starts the crop at `margin // 2`, where torchvision's `CenterCrop` rounds `margin / 2` (37.5 ->
    38), so the transform floors too (`crop_rounding="floor"`)."""
    size, crop = dict(image_processor.size), dict(image_processor.crop_size)
    shortest, crop_side = size.get("shortest_edge"), crop.get("height")
    if shortest is None or shortest != crop_side or crop.get("width") != crop_side:
        raise ValueError(f"expected a CLIP processor that resizes the shortest side to the square crop, got "
                         f"size={size}, crop_size={crop}.")
    resample = {3: "bicubic", 2: "bilinear"}.get(int(image_processor.resample))
    if resample is None:
        raise ValueError(f"unsupported CLIP processor resample {image_processor.resample!r} (bicubic or bilinear).")
    return ImageTransform(crop_side, tuple(image_processor.image_mean), tuple(image_processor.image_std), resample,
                          crop_rounding="floor")


class PickScoreReward(Reward):
    """PickScore: `logit_scale.exp() * cos(image, text)` of the fine-tuned CLIP.

    Scale: about 100 * cos (the learned logit scale), typically 18-24 for SD-class images (FLUX at 512 px
    averages 21.3); a softmax over candidates of one prompt gives preference probabilities.
    """

    def __init__(self, model, tokenizer, transform, batch_size=16):
        super().__init__(transform, batch_size)
        self.model = model
        self.tokenizer = tokenizer

    def score_clean(self, pixels, prompts):
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        image = embedding(self.model.get_image_features(pixel_values=pixels))
        text = embedding(self.model.get_text_features(input_ids=tokens.input_ids.to(pixels.device),
                                                      attention_mask=tokens.attention_mask.to(pixels.device)))
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return self.model.logit_scale.exp() * (image * text).sum(-1)


def load_pickscore(model=PICKSCORE_MODEL, processor=PICKSCORE_PROCESSOR, batch_size=16):
    """The `pickscore` reward through transformers' `CLIPModel` and the processor PickScore was trained with.

    Weights: the hub repo `yuvalkirstain/PickScore_v1` (transformers `CLIPModel`, `config.json` +
    `model.safetensors` or `pytorch_model.bin`) or a local folder of it; the processor (tokenizer and image
    settings: shortest side 224 bicubic, centre crop 224, OpenAI mean/std) from
    `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` or a local folder. Text: CLIP tokenizer, truncated to 77 tokens.
    No remote code is run.

    Args:
        model (`str`): hub id or local folder of the PickScore `CLIPModel`.
        processor (`str`): hub id or local folder of its `CLIPProcessor`.
        batch_size (`int`): images per forward pass.

    Examples:
        >>> reward = load_reward("pickscore", model="ckpts/PickScore_v1", processor="ckpts/CLIP-ViT-H-14")
        >>> reward(images, prompts).softmax(0)  # preference probabilities among candidates of one prompt
    """
    from transformers import AutoProcessor, CLIPModel

    try:
        clip = CLIPModel.from_pretrained(model)
    except OSError as error:
        raise FileNotFoundError(f"reward 'pickscore' needs the PickScore CLIPModel (config.json and "
                                f"model.safetensors of the hub repo {PICKSCORE_MODEL}) in the local Hugging Face "
                                f"cache or as a folder passed as `model=`; got {model!r}: {error}") from error
    try:
        proc = AutoProcessor.from_pretrained(processor)
    except OSError as error:
        raise FileNotFoundError(f"reward 'pickscore' needs the CLIP processor files (preprocessor_config.json and "
                                f"the tokenizer files of the hub repo {PICKSCORE_PROCESSOR}) in the local Hugging "
                                f"Face cache or as a folder passed as `processor=`; got {processor!r}: "
                                f"{error}") from error
    return PickScoreReward(clip.eval(), proc.tokenizer, processor_transform(proc.image_processor), batch_size)
