"""Reward registry: each loader on random-weight models of the real architecture, saved in the real checkpoint's
format and key layout; preprocessing against the reference transforms; errors; rank / z-score combination."""

import os

import numpy as np
import open_clip
import pytest
import torch
from conftest import write_open_clip_dir
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from noisekit.rewards import (ImageTransform, NoiseAwareReward, RewardEnsemble, add_reward, combine_scores,
                              ignore_sigma, list_rewards, load_reward, normalize_scores)
from noisekit.rewards.base import CLIP_MEAN, CLIP_STD
from noisekit.shapes.dataset import heldout_scenes
from noisekit.shapes.scenes import draw_scene

PROMPTS = ["a red circle", "a blue square on a white background", "two green triangles"]

TINY_CLIP = {  # the real open_clip classes (VisionTransformer + TextTransformer), reduced
    "model_cfg": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"size": 32, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}


def pil_images(count, seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-clip"))
    write_open_clip_dir(folder, TINY_CLIP)
    return folder


# --- registry and call contract ------------------------------------------------------------------------------


def test_registry_lists_every_reward_and_rejects_unknown_names():
    expected = {"clip", "pickscore", "hpsv2", "hpsv2.1", "aesthetic", "imagereward", "shapes-judge", "shapes-clip"}
    assert expected <= set(list_rewards())
    with pytest.raises(ValueError, match="`name` must be one of .*'nope'"):
        load_reward("nope")
    with pytest.raises(ValueError, match="already registered"):
        add_reward("clip", lambda: None)


class Brightness(NoiseAwareReward):
    """A toy noise-aware reward: mean brightness, discounted by the preview's noise level."""

    needs_prompts = False

    def __init__(self, batch_size=16):
        super().__init__(ImageTransform(8, (0.0,) * 3, (1.0,) * 3), batch_size)
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def score(self, pixels, prompts, sigma):
        return pixels.mean((1, 2, 3)) + self.anchor - 0.1 * sigma


def test_add_reward_and_noise_aware_interface():
    add_reward("test-brightness", Brightness)
    reward = load_reward("test-brightness", batch_size=2)
    images = torch.stack([torch.full((3, 16, 16), v) for v in (0.2, 0.5, 0.9)])
    clean = reward(images)
    assert clean.shape == (3,) and clean.dtype == torch.float32
    torch.testing.assert_close(clean, torch.tensor([0.2, 0.5, 0.9]))
    torch.testing.assert_close(reward(images, sigma=0.0), clean)  # clean rewards are the sigma = 0 case
    torch.testing.assert_close(reward(images, sigma=[0.0, 1.0, 2.0]), clean - torch.tensor([0.0, 0.1, 0.2]))
    with pytest.raises(ValueError, match="`sigma` must be"):
        reward(images, sigma=[1.0, 2.0])
    with pytest.raises(ValueError, match="`sigma` must be"):
        reward(images, sigma=-1.0)


def test_clean_reward_refuses_previews_unless_wrapped(clip_dir):
    reward = load_reward("clip", model_name=f"local-dir:{clip_dir}")
    images = pil_images(2)
    with pytest.raises(ValueError, match="clean images only.*ignore_sigma"):
        reward(images, PROMPTS[:2], sigma=2.0)
    wrapped = ignore_sigma(reward)
    torch.testing.assert_close(wrapped(images, PROMPTS[:2], sigma=[2.0, 5.0]), reward(images, PROMPTS[:2]))


def test_input_errors_name_the_argument(clip_dir):
    reward = load_reward("clip", model_name=f"local-dir:{clip_dir}")
    with pytest.raises(ValueError, match=r"`images` as a tensor must lie in \[0, 1\]"):
        reward(torch.full((1, 3, 8, 8), -1.0), "a red circle")
    with pytest.raises(ValueError, match=r"`images` as a tensor must be \(B, 3, H, W\)"):
        reward(torch.zeros(3, 8, 8), "a red circle")
    with pytest.raises(ValueError, match="one prompt per image"):
        reward(pil_images(2), PROMPTS)
    with pytest.raises(TypeError, match="`images` must be"):
        reward("image.png", "a red circle")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        load_reward("clip", model_name=f"local-dir:{clip_dir}", mode="clipscore")
    with pytest.raises(ValueError, match="`batch_size` must be"):
        load_reward("clip", model_name=f"local-dir:{clip_dir}", batch_size=0)


# --- preprocessing against the references -------------------------------------------------------------------


def test_image_transform_matches_imagereward_and_open_clip_references():
    images = pil_images(3, size=(300, 260))
    reference = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                         lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    ours = ImageTransform(224, CLIP_MEAN, CLIP_STD, "bicubic", "shortest")(images)
    torch.testing.assert_close(ours, torch.stack([reference(image) for image in images]))
    preprocess = open_clip.image_transform(224, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    torch.testing.assert_close(ours, torch.stack([preprocess(image) for image in images]))


def test_tensor_inputs_match_pil_inputs_up_to_rounding(clip_dir):
    images = pil_images(3, size=(64, 64))
    tensors = torch.stack([ToTensor()(image) for image in images])
    transform = ImageTransform(32)
    assert (transform(tensors) - transform(images)).abs().max() < 0.05  # antialiased tensor resize vs PIL's
    reward = load_reward("clip", model_name=f"local-dir:{clip_dir}")
    torch.testing.assert_close(reward(tensors, PROMPTS), reward(images, PROMPTS), atol=5e-3, rtol=0)


# --- clip, hpsv2, aesthetic (open_clip) ---------------------------------------------------------------------


def open_clip_cosine(model, tokenizer, preprocess, images, prompts):
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        text = model.encode_text(tokenizer(prompts), normalize=True)
    return (image * text).sum(-1)


def test_clip_reward_modes_and_batching(clip_dir):
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    images = pil_images(3)
    expected = open_clip_cosine(model.eval(), tokenizer, preprocess, images, PROMPTS)
    cosine = load_reward("clip", model_name=f"local-dir:{clip_dir}", batch_size=2)(images, PROMPTS)
    torch.testing.assert_close(cosine, expected, atol=1e-5, rtol=0)
    x100 = load_reward("clip", model_name=f"local-dir:{clip_dir}", mode="cosine_x100")(images, PROMPTS)
    hessel = load_reward("clip", model_name=f"local-dir:{clip_dir}", mode="hessel")(images, PROMPTS)
    torch.testing.assert_close(x100, 100 * expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(hessel, 2.5 * expected.clamp(min=0), atol=1e-5, rtol=0)


def test_reward_to_device_and_dtype(clip_dir):
    images = pil_images(2)
    reward = load_reward("clip", model_name=f"local-dir:{clip_dir}")
    full = reward(images, PROMPTS[:2])
    low = load_reward("clip", model_name=f"local-dir:{clip_dir}", device="cpu", dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16
    scores = low(images, PROMPTS[:2])
    assert scores.dtype == torch.float32 and (scores - full).abs().max() < 0.05


def test_clip_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="ViT-B-32 / openai.*not in the local cache"):
        load_reward("clip", model_name="ViT-B-32", pretrained="openai")
    with pytest.raises(FileNotFoundError, match="neither a tag"):
        load_reward("clip", model_name="ViT-B-32", pretrained=str(tmp_path / "missing.safetensors"))
    write_open_clip_dir(str(tmp_path / "no-weights"), TINY_CLIP, weights=False)
    with pytest.raises(FileNotFoundError, match="open_clip_model.safetensors"):
        load_reward("clip", model_name=f"local-dir:{tmp_path / 'no-weights'}")


@pytest.mark.parametrize("version, filename",
                         [("hpsv2", "HPS_v2_compressed.pt"), ("hpsv2.1", "HPS_v2.1_compressed.pt")])
def test_hps_loads_the_official_checkpoint_layout(tmp_path, clip_dir, version, filename):
    config_dir = str(tmp_path / "config")  # architecture only, like open_clip's built-in ViT-H-14 config
    write_open_clip_dir(config_dir, TINY_CLIP, weights=False)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    path = tmp_path / filename  # the released layout: a pickle of {"state_dict": full open_clip state dict}
    torch.save({"state_dict": model.state_dict()}, path)
    reward = load_reward(version, path=str(path), model_name=f"local-dir:{config_dir}", batch_size=2,
                         preprocess="ttsnap")  # open_clip's centre crop; the official letterbox: test_rewards_official
    images = pil_images(3)
    expected = open_clip_cosine(model.eval(), open_clip.get_tokenizer(f"local-dir:{clip_dir}"), preprocess, images,
                                PROMPTS)
    torch.testing.assert_close(reward(images, PROMPTS), expected, atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match=f"{filename}.*xswu/HPSv2"):
        load_reward(version)


def test_aesthetic_mlp_on_normalised_clip_features(tmp_path, clip_dir):
    torch.manual_seed(1)
    widths = (32, 1024, 128, 64, 16, 1)  # the real MLP on a 32-d tiny CLIP instead of ViT-L/14's 768
    linears = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    state = {}
    for index, linear in zip((0, 2, 4, 6, 7), linears):
        state[f"layers.{index}.weight"], state[f"layers.{index}.bias"] = linear.weight.data, linear.bias.data
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(state, path)
    reward = load_reward("aesthetic", path=str(path), clip_model=f"local-dir:{clip_dir}")
    images = pil_images(3)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    with torch.no_grad():
        features = model.eval().encode_image(torch.stack([preprocess(i) for i in images]))
        features = features / features.norm(dim=-1, keepdim=True)
        for linear in linears:
            features = linear(features)
    torch.testing.assert_close(reward(images), features.squeeze(-1), atol=1e-5, rtol=0)  # prompt-free
    with pytest.raises(FileNotFoundError, match="sac\\+logos\\+ava1-l14-linearMSE.pth"):
        load_reward("aesthetic", clip_model=f"local-dir:{clip_dir}")


# --- pickscore (transformers CLIPModel + CLIPProcessor) ---------------------------------------------------------


def test_pickscore_preprocessing_matches_its_processor(pickscore_dir):
    from transformers import AutoProcessor, CLIPImageProcessorPil

    reward = load_reward("pickscore", model=pickscore_dir, processor=pickscore_dir)
    images = pil_images(3, size=(64, 48))
    ours = reward.transform(images)
    pil_reference = CLIPImageProcessorPil.from_pretrained(pickscore_dir)(images, return_tensors="pt").pixel_values
    torch.testing.assert_close(ours, pil_reference, atol=1e-4, rtol=0)
    default = AutoProcessor.from_pretrained(pickscore_dir)(images=images, return_tensors="pt").pixel_values
    assert (ours - default).abs().max() < 0.05  # the torchvision backend resizes tensors, not PIL images


def test_pickscore_is_logit_scale_times_cosine(pickscore_dir):
    from transformers import AutoProcessor, CLIPModel

    reward = load_reward("pickscore", model=pickscore_dir, processor=pickscore_dir, batch_size=2)
    images = pil_images(3)
    model, processor = CLIPModel.from_pretrained(pickscore_dir).eval(), AutoProcessor.from_pretrained(pickscore_dir)
    text = processor.tokenizer(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                       pixel_values=reward.transform(images)).logits_per_image
    torch.testing.assert_close(reward(images, PROMPTS), logits.diagonal(), atol=1e-4, rtol=0)


def test_pickscore_missing_folder_says_what_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError, match="PickScore CLIPModel.*yuvalkirstain/PickScore_v1"):
        load_reward("pickscore", model=str(tmp_path / "missing"))


# --- imagereward (BLIP on transformers) --------------------------------------------------------------------------


def bert_tokenizer_dir(folder):
    from transformers import BertTokenizer

    words = "a red blue green circle square triangle on white background two small big of the and photo".split()
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    BertTokenizer(os.path.join(folder, "vocab.txt")).save_pretrained(folder)
    return folder, len(vocab) + 2  # + [DEC], [ENC] as BLIP adds


@pytest.fixture(scope="module")
def imagereward_files(tmp_path_factory):
    """A reduced ImageReward.pt in the official layout: a timm-style BLIP ViT (timm's VisionTransformer has BLIP's
    module names), BLIP's med BERT (transformers' BlipTextModel), the preference MLP, and unused heads."""
    import timm.models.vision_transformer as vit
    from transformers import BlipTextConfig
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    from noisekit.rewards.aesthetic import PreferenceMLP

    folder = tmp_path_factory.mktemp("imagereward")
    tokenizer, vocab_size = bert_tokenizer_dir(str(folder / "bert"))
    torch.manual_seed(0)
    visual = vit.VisionTransformer(img_size=32, patch_size=16, embed_dim=128, depth=2, num_heads=2, qkv_bias=True,
                                   num_classes=0, global_pool="").eval()
    text = BlipTextModel(BlipTextConfig(vocab_size=vocab_size, hidden_size=64, encoder_hidden_size=128,
                                        intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                                        max_position_embeddings=512, bos_token_id=None, sep_token_id=None,
                                        eos_token_id=None, pad_token_id=0), add_pooling_layer=False).eval()
    mlp = PreferenceMLP((64, 1024, 128, 64, 16, 1)).eval()
    state = {f"blip.visual_encoder.{k}": v for k, v in visual.state_dict().items()}
    state |= {f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()}
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(512)[None]  # a persistent buffer in med.py
    state |= {f"mlp.{k}": v for k, v in mlp.state_dict().items()}
    state |= {"blip.vision_proj.weight": torch.randn(16, 128), "blip.text_proj.weight": torch.randn(16, 64)}
    path = folder / "ImageReward.pt"
    torch.save(state, path)
    return {"path": str(path), "tokenizer": tokenizer, "visual": visual, "text": text, "mlp": mlp}


def test_imagereward_loads_the_official_layout(imagereward_files):
    files = imagereward_files
    reward = load_reward("imagereward", path=files["path"], tokenizer=files["tokenizer"], batch_size=2)
    images = pil_images(3, size=(50, 40))
    reference = Compose([Resize(32, interpolation=InterpolationMode.BICUBIC), CenterCrop(32),
                         lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    pixels = torch.stack([reference(image) for image in images])
    torch.testing.assert_close(reward.transform(images), pixels)  # ImageReward's own transform
    with torch.no_grad():  # BLIP's ViT (timm layout) and the renamed BlipVisionModel compute the same features
        image_embeds = files["visual"].forward_features(pixels)
        torch.testing.assert_close(reward.vision(pixel_values=pixels).last_hidden_state, image_embeds,
                                   atol=1e-5, rtol=0)
        tokens = reward.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35,
                                  return_tensors="pt")
        hidden = files["text"](input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                               encoder_hidden_states=image_embeds,
                               encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long))
        expected = (files["mlp"](hidden.last_hidden_state[:, 0]) - 0.16717362830052426) / 1.0333394966054072
    torch.testing.assert_close(reward(images, PROMPTS), expected, atol=1e-5, rtol=0)


def test_imagereward_truncates_prompts_to_35_tokens(imagereward_files):
    reward = load_reward("imagereward", path=imagereward_files["path"], tokenizer=imagereward_files["tokenizer"])
    long_prompt = " ".join(["red circle"] * 40)
    tokens = reward.tokenizer([long_prompt], padding="max_length", truncation=True, max_length=35)
    assert len(tokens.input_ids[0]) == 35
    images = pil_images(1)
    longer = long_prompt + " and a blue square"  # differs only after token 35
    torch.testing.assert_close(reward(images, [long_prompt]), reward(images, [longer]))


def test_imagereward_missing_files_say_what_is_needed(imagereward_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageReward.pt from the hub repo THUDM/ImageReward"):
        load_reward("imagereward")
    with pytest.raises(FileNotFoundError, match="BERT tokenizer.*bert-base-uncased"):
        load_reward("imagereward", path=imagereward_files["path"], tokenizer=str(tmp_path / "missing"))


# --- shapes rewards -------------------------------------------------------------------------------------------


def shapes_batch(count=6):
    scenes = heldout_scenes(count)
    return [draw_scene(scene) for scene in scenes], [scene.caption for scene in scenes]


def test_shapes_judge_reward_on_a_random_judge(tmp_path):
    from noisekit.shapes.judge import ShapesJudge, judge_reward

    torch.manual_seed(0)
    judge = ShapesJudge(width=8).eval()
    judge.save_pretrained(tmp_path / "judge")
    images, captions = shapes_batch()
    reward = load_reward("shapes-judge", path=str(tmp_path / "judge"), batch_size=4)
    scores = reward(images, captions)
    assert scores.shape == (6,) and bool(((scores >= 0) & (scores <= 1)).all())
    pixels = torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in images]).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(scores, judge_reward(judge, pixels, captions), atol=1e-5, rtol=0)
    torch.testing.assert_close(load_reward("shapes-judge", path=str(tmp_path / "judge"), batch_size=1)(
        images, captions), scores)
    with pytest.raises(ValueError, match="shapes world's grammar"):
        reward(images[:1], ["a photo of an astronaut"])


def test_shapes_clip_reward_on_a_random_clip(tmp_path):
    config = {  # the format of training/train_shapes_clip.py's CONFIG, narrower
        "model_cfg": {"embed_dim": 32, "quick_gelu": True,
                      "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
                      "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
        "preprocess_cfg": {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    }
    model = write_open_clip_dir(str(tmp_path / "clip"), config)
    images, captions = shapes_batch()
    reward = load_reward("shapes-clip", path=str(tmp_path / "clip"), batch_size=4)
    scores = reward(images, captions)
    assert scores.shape == (6,) and bool((scores.abs() <= 1 + 1e-5).all())
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'clip'}")
    expected = open_clip_cosine(model, open_clip.get_tokenizer(f"local-dir:{tmp_path / 'clip'}"), preprocess, images,
                                captions)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_shapes_rewards_agree_with_ground_truth():
    """The shipped shapes judge and CLIP prefer each rendered scene's own caption to another scene's caption.

    Needs `assets/shapes-judge` and `assets/shapes-clip`; fails until they are trained and committed.
    """
    images, captions = shapes_batch(48)
    wrong = captions[1:] + captions[:1]
    for name, needed in (("shapes-judge", 0.9), ("shapes-clip", 0.8)):
        reward = load_reward(name)
        right_scores, wrong_scores = reward(images, captions), reward(images, wrong)
        agreement = (right_scores > wrong_scores).float().mean().item()
        assert agreement >= needed, f"{name}: own caption preferred for {agreement:.0%} of scenes, need {needed:.0%}"


# --- combination --------------------------------------------------------------------------------------------


def test_ranks_are_per_prompt_and_scale_free():
    prompts = ["a", "a", "a", "b", "b"]
    big = torch.tensor([100.0, 300.0, 200.0, -5.0, 7.0])
    torch.testing.assert_close(normalize_scores(big, prompts), torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0]))
    torch.testing.assert_close(normalize_scores(big * 1e-3 + 4, prompts), normalize_scores(big, prompts))
    torch.testing.assert_close(normalize_scores(torch.tensor([1.0, 1.0, 3.0])), torch.tensor([0.25, 0.25, 1.0]))
    torch.testing.assert_close(normalize_scores(torch.tensor([3.0])), torch.tensor([0.5]))


def test_zscores_are_per_prompt():
    prompts = ["a", "a", "b", "b", "b"]
    z = normalize_scores(torch.tensor([1.0, 3.0, 5.0, 5.0, 5.0]), prompts, method="zscore")
    torch.testing.assert_close(z, torch.tensor([-1.0, 1.0, 0.0, 0.0, 0.0]))


def test_combination_is_not_dominated_by_the_larger_scale():
    # imagereward-like scores ~N(0, 1) and pickscore-like ~20: a raw sum would follow pickscore alone
    scores = {"small": torch.tensor([2.0, -1.0, 0.5]), "large": torch.tensor([20.0, 20.5, 21.0])}
    ranks = combine_scores(scores)
    torch.testing.assert_close(ranks, torch.tensor([0.5, 0.25, 0.75]))
    weighted = combine_scores(scores, weights={"small": 3.0, "large": 1.0})
    assert weighted.argmax() == 0
    z = combine_scores(scores, method="zscore")
    assert z.shape == (3,) and abs(z.sum().item()) < 1e-5
    with pytest.raises(ValueError, match="`weights` must name exactly"):
        combine_scores(scores, weights={"small": 1.0})
    with pytest.raises(ValueError, match="`method` must be one of"):
        combine_scores(scores, method="sum")
    with pytest.raises(ValueError, match="same candidates"):
        combine_scores({"a": torch.zeros(2), "b": torch.zeros(3)})


def test_ensemble_combines_member_rewards(clip_dir):
    members = {"clip": load_reward("clip", model_name=f"local-dir:{clip_dir}"), "brightness": Brightness()}
    ensemble = RewardEnsemble(members, method="rank")
    images = torch.rand(4, 3, 32, 32)
    prompts = ["a red circle"] * 2 + ["a blue square"] * 2
    each = ensemble.scores(images, prompts)
    assert set(each) == {"clip", "brightness"}
    torch.testing.assert_close(ensemble(images, prompts), combine_scores(each, prompts))
    with pytest.raises(ValueError, match="clean images only"):
        ensemble(images, prompts, sigma=1.0)
