"""Rewards equal to their official scorers on the cases where a near miss shows: QuickGELU for OpenAI-tag CLIP,
the `hpsv2` letterbox on non-square images, the CLIP processor's floored centre crop, ties in multi-reward rank
sums. Every model is a reduced random-weight model of the real architecture, saved in the official layout."""

import json
import os
import warnings

import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from noisekit.rewards import load_reward
from noisekit.rewards.base import CLIP_MEAN, CLIP_STD, ImageTransform
from noisekit.rewards.combine import rank_sum, top_positions

PROMPTS = ["a red circle", "a blue square on a white background", "two green triangles"]
TINY_ARCH = "noisekit-tiny-ViT"  # registered as a built-in architecture, with an `openai` tag
TINY_OPENAI_CFG = {  # OpenAI's layout (heads = width / 64), and like `ViT-L-14.json` no `quick_gelu`: GELU
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def pil_images(count, size, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


def openai_preprocess(size):
    """OpenAI `clip`'s preprocessing: shortest side bicubic, torchvision centre crop, RGB, mean/std."""
    return Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size),
                    lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])


def cosine(model, pixels, prompts):
    with torch.no_grad():
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(open_clip.tokenize(prompts), normalize=True)
    return (image * text).sum(-1)


def activations(model):
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("GELU", "QuickGELU")}


# --- OpenAI-tag backbones run with QuickGELU -------------------------------------------------------------------


@pytest.fixture
def openai_tag(tmp_path, monkeypatch):
    """A tiny built-in architecture whose `openai` tag is a local file of fp16 weights in OpenAI's state-dict
    layout, as open_clip registers `ViT-L-14` / `openai`; returns that state dict."""
    import open_clip.factory
    import open_clip.pretrained

    torch.manual_seed(0)
    state = {k: v.half() for k, v in open_clip.CLIP(**TINY_OPENAI_CFG).state_dict().items()}  # OpenAI ships fp16
    path = tmp_path / "openai_tiny.bin"
    torch.save(state, path)
    tag = {"file": str(path), "quick_gelu": True, "mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic",
           "resize_mode": "shortest"}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_ARCH, TINY_OPENAI_CFG)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_ARCH, {"openai": tag})
    return state


def official_openai_clip(state):
    """OpenAI's model as its `clip` package builds it (QuickGELU), in float32 as `clip.load` on a CPU."""
    return open_clip.model.build_model_from_openai_state_dict(dict(state), quick_gelu=True).float().eval()


def test_openai_tag_quick_gelu_clip_equals_the_official_model(openai_tag):
    official = official_openai_clip(openai_tag)
    images = pil_images(3, (48, 40))
    expected = cosine(official, torch.stack([openai_preprocess(32)(i) for i in images]), PROMPTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # open_clip's "QuickGELU mismatch" warning must not fire
        reward = load_reward("clip", model_name=TINY_ARCH, pretrained="openai", batch_size=2)
    assert activations(reward.model) == {"QuickGELU"}
    ours = reward(images, PROMPTS)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):  # open_clip's own choice for this config
        gelu = open_clip.create_model(TINY_ARCH, pretrained="openai").eval()
    assert activations(gelu) == {"GELU"}
    assert (cosine(gelu, reward.transform(images), PROMPTS) - expected).abs().max() > 1e-3
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        forced = load_reward("clip", model_name=TINY_ARCH, pretrained="openai", quick_gelu=False)
    assert activations(forced.model) == {"GELU"}
    with pytest.raises(ValueError, match="`quick_gelu` must be None, True or False, got 'yes'"):
        load_reward("clip", model_name=TINY_ARCH, pretrained="openai", quick_gelu="yes")


def test_openai_tag_quick_gelu_aesthetic_equals_the_official_predictor(openai_tag, tmp_path):
    from noisekit.rewards.aesthetic import PreferenceMLP

    torch.manual_seed(1)
    mlp = PreferenceMLP((32, 1024, 128, 64, 16, 1)).eval()
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(mlp.state_dict(), path)
    images = pil_images(3, (48, 40))
    pixels = torch.stack([openai_preprocess(32)(i) for i in images])
    with torch.no_grad():  # the predictor's script: encode_image, L2-normalise, MLP
        features = official_openai_clip(openai_tag).encode_image(pixels)
        expected = mlp(features / features.norm(dim=-1, keepdim=True))
    reward = load_reward("aesthetic", path=str(path), clip_model=TINY_ARCH, clip_pretrained="openai")
    assert activations(reward.clip) == {"QuickGELU"}
    torch.testing.assert_close(reward(images), expected, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        gelu = load_reward("aesthetic", path=str(path), clip_model=TINY_ARCH, clip_pretrained="openai",
                           quick_gelu=False)
    with torch.no_grad():
        embedding = features / features.norm(dim=-1, keepdim=True)
        embedding_error = gelu.clip.encode_image(pixels, normalize=True) - embedding
    assert embedding_error.abs().max() > 1e-3 and (gelu(images) - expected).abs().max() > 1e-6


# --- HPSv2: the official letterbox, and TTSnap's centre crop by name -----------------------------------------------


def hpsv2_letterbox(image, size):
    """`hpsv2.score()`'s preprocessing, from its `ResizeMaxSize` logic: RGB, to tensor, longest side to `size`
    (Python-rounded sides, bicubic tensor resize), zero padding split left/top-first, then mean/std."""
    pixels = ToTensor()(image.convert("RGB"))
    height, width = pixels.shape[1:]
    scale = size / max(height, width)
    if scale != 1.0:
        shape = [round(height * scale), round(width * scale)]
        pixels = F.resize(pixels, shape, InterpolationMode.BICUBIC)
        pad_h, pad_w = size - shape[0], size - shape[1]
        pixels = F.pad(pixels, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return Normalize(CLIP_MEAN, CLIP_STD)(pixels)


@pytest.fixture(scope="module")
def hps_files(tmp_path_factory):
    """A config-only open_clip folder and an `HPS_v2.1_compressed.pt` of `{"state_dict": ...}` for it."""
    folder = tmp_path_factory.mktemp("hps")
    config = {"model_cfg": TINY_OPENAI_CFG, "preprocess_cfg": {"size": 32, "mean": list(CLIP_MEAN),
                                                               "std": list(CLIP_STD)}}
    os.makedirs(folder / "config")
    with open(folder / "config" / "open_clip_config.json", "w") as f:
        json.dump(config, f)
    torch.manual_seed(2)
    model = open_clip.create_model(f"local-dir:{folder / 'config'}", load_weights=False).eval()
    torch.save({"state_dict": model.state_dict()}, folder / "HPS_v2.1_compressed.pt")
    return {"path": str(folder / "HPS_v2.1_compressed.pt"), "model_name": f"local-dir:{folder / 'config'}",
            "model": model}


def test_hps_official_letterbox_on_a_non_square_image(hps_files):
    images = pil_images(3, (75, 50))  # 75 x 50 -> 32 x 21 (21.33 rounded), padding 11 rows: 5 top, 6 bottom
    reference = torch.stack([hpsv2_letterbox(image, 32) for image in images])
    reward = load_reward("hpsv2.1", path=hps_files["path"], model_name=hps_files["model_name"], batch_size=2)
    pixels = reward.transform(images)
    torch.testing.assert_close(pixels, reference, atol=1e-6, rtol=0)
    black = F.normalize(torch.zeros(3, 1, 1), CLIP_MEAN, CLIP_STD)
    assert torch.equal(pixels[:, :, :5], black.expand(3, 3, 5, 32)) and not torch.equal(pixels[:, :, 5], black[:, 0])
    assert torch.equal(pixels[:, :, -6:], black.expand(3, 3, 6, 32))
    expected = cosine(hps_files["model"], reference, PROMPTS)
    torch.testing.assert_close(reward(images, PROMPTS), expected, atol=1e-5, rtol=0)
    tensors = torch.stack([ToTensor()(image) for image in images])  # the same float path for tensors
    torch.testing.assert_close(reward.transform(tensors), pixels, atol=1e-6, rtol=0)


def test_hps_ttsnap_variant_is_shortest_side_centre_crop(hps_files):
    images = pil_images(3, (75, 50))
    kwargs = {"path": hps_files["path"], "model_name": hps_files["model_name"]}
    official = load_reward("hpsv2.1", **kwargs)
    ttsnap = load_reward("hpsv2.1", preprocess="ttsnap", **kwargs)
    torch.testing.assert_close(load_reward("hpsv2.1-ttsnap", **kwargs)(images, PROMPTS), ttsnap(images, PROMPTS))
    reference = torch.stack([openai_preprocess(32)(image) for image in images])  # TTSnap's PIL pipeline
    torch.testing.assert_close(ttsnap.transform(images), reference, atol=1e-6, rtol=0)
    assert (ttsnap(images, PROMPTS) - official(images, PROMPTS)).abs().max() > 1e-3
    square = pil_images(2, (64, 64))  # square images: both a plain resize (PIL's uint8 one vs a float one)
    torch.testing.assert_close(ttsnap.transform(square), official.transform(square), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="`preprocess` must be one of \\('official', 'ttsnap'\\), got 'crop'"):
        load_reward("hpsv2.1", preprocess="crop", **kwargs)


# --- PickScore: the CLIP processor's floored centre crop ----------------------------------------------------------


def test_pickscore_centre_crop_floors_an_odd_margin_like_the_processor(pickscore_dir):
    from transformers import AutoProcessor, CLIPImageProcessorPil, CLIPModel

    images = pil_images(3, (70, 64))  # shortest side 64 -> 32 gives 35 x 32: margin 3, crop from 1 (not 2)
    reward = load_reward("pickscore", model=pickscore_dir, processor=pickscore_dir)
    assert reward.transform.crop_rounding == "floor"
    processor = CLIPImageProcessorPil.from_pretrained(pickscore_dir)
    reference = processor(images, return_tensors="pt").pixel_values
    torch.testing.assert_close(reward.transform(images), reference, atol=1e-4, rtol=0)
    rounded = ImageTransform(32, tuple(processor.image_mean), tuple(processor.image_std), "bicubic")
    assert (rounded(images) - reference).abs().max() > 0.1  # torchvision's round(1.5) = 2: one column over
    model = CLIPModel.from_pretrained(pickscore_dir).eval()
    text = AutoProcessor.from_pretrained(pickscore_dir).tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=reference)
    torch.testing.assert_close(reward(images, PROMPTS), logits.logits_per_image.diagonal(), atol=1e-4, rtol=0)


def test_crop_rounding_is_checked():
    with pytest.raises(ValueError, match="`crop_rounding` must be one of \\('round', 'floor'\\), got 'ceil'"):
        ImageTransform(32, crop_rounding="ceil")


# --- multi-reward rank sum ----------------------------------------------------------------------------------------


def test_rank_sum_ties_equal_integer_rank_sums():
    # candidates 0 and 2 both have rank sum 5 + 4 + 4 = 2 + 5 + 6 = 13 (of 3 * 6); dividing each rank by n - 1
    # before summing gave 0.7222222222222222 and 0.7222222222222223, so the later one won
    scores = {"a": torch.tensor([5.0, 4.0, 2.0, 6.0, 1.0, 3.0, 0.0]),
              "b": torch.tensor([4.0, 1.0, 5.0, 2.0, 3.0, 6.0, 0.0]),
              "c": torch.tensor([4.0, 3.0, 6.0, 1.0, 0.0, 2.0, 5.0])}
    combined = rank_sum(scores)
    assert combined.dtype == torch.float64
    assert combined[0].item() == combined[2].item() == 13 / 18
    assert top_positions(combined, 1).tolist() == [0]  # ties go to the earlier candidate
    torch.testing.assert_close(combined, torch.tensor([13, 8, 13, 9, 4, 11, 5], dtype=torch.float64) / 18)


def test_rank_sum_groups_ties_lone_reward_and_shapes():
    grouped = rank_sum({"a": torch.tensor([[1.0, 1.0, 3.0], [2.0, 0.0, 1.0]]),
                        "b": torch.tensor([[0.0, 2.0, 1.0], [5.0, 5.0, 5.0]])})
    torch.testing.assert_close(grouped, torch.tensor([[0.125, 0.625, 0.75], [0.75, 0.25, 0.5]], dtype=torch.float64))
    raw = torch.tensor([0.3, 0.1])
    torch.testing.assert_close(rank_sum({"only": raw}), raw.double())
    torch.testing.assert_close(rank_sum({"a": torch.zeros(1), "b": torch.ones(1)}), torch.tensor([0.5]).double())
    with pytest.raises(ValueError, match="`scores` must hold one shape for every reward"):
        rank_sum({"a": torch.zeros(2), "b": torch.zeros(3)})
