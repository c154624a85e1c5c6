"""NPD collection (re-denoise sampling, inversion indexing, shards, resume, margin) and NPNet training."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from safetensors.torch import load_file

from noisekit.core.noise import seed_noise
from noisekit.transforms.npd import (denoise_step, guided_output, inversion_coefficients, inversion_step, load_npd, re_denoise,
                          read_prompts)
from noisekit.transforms.npnet import NoisePromptNet
from noisekit.transforms.golden import prompt_embeddings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
import collect_npd  # noqa: E402
import train_npnet  # noqa: E402


def test_official_inversion_coefficients_pinned(sd1_pipe):
    """The note's closed forms on SD's schedule (scaled_linear 0.00085-0.012, leading, offset 1)."""
    official = inversion_coefficients(sd1_pipe.scheduler, 10)
    assert official == pytest.approx((1.0789, -0.4158, 0.3416), abs=2e-4)
    assert inversion_coefficients(sd1_pipe.scheduler, 10, "exact") == pytest.approx((1.0, -0.3854, 0.3854), abs=1e-4)
    assert inversion_coefficients(sd1_pipe.scheduler, 50) == pytest.approx((1.0035, -0.1102, 0.1068), abs=2e-4)
    assert inversion_coefficients(sd1_pipe.scheduler, 50, "exact") == pytest.approx((1.0, -0.1098, 0.1098), abs=1e-4)


def test_steps_match_diffusers_schedulers(sd1_pipe):
    """denoise_step = DDIMScheduler.step(eps, t0, x); official inversion = DDIMInverseScheduler.step(eps, t1, .)."""
    ddim = DDIMScheduler.from_config(sd1_pipe.scheduler.config)
    ddim.set_timesteps(10)
    t0, t1 = ddim.timesteps[:2]
    assert (int(t0), int(t1)) == (901, 801)
    generator = torch.Generator().manual_seed(0)
    x, eps_l, eps_w = (torch.randn(2, 4, 8, 8, generator=generator) for _ in range(3))
    x_t1 = denoise_step(sd1_pipe.scheduler, 10, x, eps_l)
    torch.testing.assert_close(x_t1, ddim.step(eps_l, t0, x).prev_sample, atol=1e-5, rtol=1e-5)
    inverse = DDIMInverseScheduler.from_config(sd1_pipe.scheduler.config)
    inverse.set_timesteps(10)
    official = inversion_step(sd1_pipe.scheduler, 10, x_t1, eps_w)
    torch.testing.assert_close(official, inverse.step(eps_w, t1, x_t1).prev_sample, atol=1e-5, rtol=1e-5)
    a, b, c = inversion_coefficients(sd1_pipe.scheduler, 10)
    torch.testing.assert_close(official, a * x + b * eps_l + c * eps_w, atol=1e-5, rtol=1e-5)


def test_exact_inversion_round_trip_on_tiny_pipeline(sd1_pipe):
    """A DDIM step with the UNet's guided eps, then the exact inversion with the same eps, gives x_T back; the
    official indexing does not."""
    from noisekit.core.families import encode

    x = seed_noise(sd1_pipe, [0, 1])
    conditioning = encode(sd1_pipe, ["a red circle"], None, True, 16, 16)
    with torch.no_grad():
        eps = guided_output(sd1_pipe, conditioning, x, 901, torch.zeros(2, dtype=torch.long), 5.5)
    x_t1 = denoise_step(sd1_pipe.scheduler, 10, x, eps)
    torch.testing.assert_close(inversion_step(sd1_pipe.scheduler, 10, x_t1, eps, "exact"), x, atol=1e-5, rtol=1e-5)
    assert (inversion_step(sd1_pipe.scheduler, 10, x_t1, eps, "official") - x).abs().max() > 1e-2


def test_re_denoise_default_is_official(sd1_pipe):
    noise = seed_noise(sd1_pipe, [3, 4])
    official = re_denoise(sd1_pipe, ["a red circle", "a blue square"], noise, [0, 1])
    a, b, c = inversion_coefficients(sd1_pipe.scheduler, 10)
    assert official.timesteps == (901, 801)
    torch.testing.assert_close(official.target, a * noise + b * official.eps_l + c * official.eps_w,
                               atol=1e-5, rtol=1e-5)
    exact = re_denoise(sd1_pipe, ["a red circle", "a blue square"], noise, [0, 1], inversion="exact")
    torch.testing.assert_close(exact.eps_l, official.eps_l)
    k = inversion_coefficients(sd1_pipe.scheduler, 10, "exact")[2]
    torch.testing.assert_close(exact.target, noise + k * (exact.eps_w - exact.eps_l), atol=1e-5, rtol=1e-5)
    assert (exact.target - official.target).abs().max() > 1e-2
    with pytest.raises(ValueError, match="inversion"):
        re_denoise(sd1_pipe, ["a red circle"], noise, inversion="reference")


# ------------------------------------------------------------------------------------------- collection


@pytest.fixture(scope="module")
def assets(tmp_path_factory, sd1_pipe):
    from noisekit.shapes.judge import ShapesJudge

    folder = tmp_path_factory.mktemp("assets")
    sd1_pipe.save_pretrained(folder / "pipe")
    torch.manual_seed(0)
    ShapesJudge(width=8).save_pretrained(folder / "judge")
    return folder


def collect_args(assets, output_dir, *extra):
    return collect_npd.parse_args([
        "--pretrained_model_name_or_path", str(assets / "pipe"), "--output_dir", str(output_dir),
        "--dataset", "shapes", "--num_prompts", "3", "--seeds_per_prompt", "2", "--shard_size", "4",
        "--batch_size", "3", "--reward", "shapes-judge", "--reward_path", str(assets / "judge"), *extra])


@pytest.fixture(scope="module")
def collected(assets, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("npd")
    collect_npd.main(collect_args(assets, output_dir, "--margin", "-1"))
    return output_dir


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_shapes_prompts_are_training_captions():
    from noisekit.shapes.dataset import heldout_captions, render_scenes

    _, scenes = render_scenes(1, 8, exclude=heldout_captions())
    assert collect_npd.shapes_prompts(1, 8) == list(dict.fromkeys(s.caption for s in scenes))
    assert collect_npd.shards_of_process(7, 1, 3) == [1, 4]


def test_collect_writes_pairs(collected, sd1_pipe):
    prompts = read_prompts(collected)
    assert prompts == collect_npd.shapes_prompts(1, 3)
    assert sorted(os.listdir(collected / "shards")) == [
        "shard-00000.jsonl", "shard-00000.safetensors", "shard-00001.jsonl", "shard-00001.safetensors"]
    tensors, _ = load_npd(collected)
    records = read_records(collected / "records.jsonl")
    assert len(records) == 6 and all(r["kept"] for r in records)  # margin -1: rewards lie in [0, 1]
    assert tensors["seed"].tolist() == list(range(6))
    assert tensors["prompt_index"].tolist() == [0, 0, 1, 1, 2, 2]
    assert tensors["source"].shape == tensors["target"].shape == (6, 4, 8, 8)
    torch.testing.assert_close(tensors["source"], seed_noise(sd1_pipe, range(6)))
    expected = re_denoise(sd1_pipe, prompts, tensors["source"], tensors["prompt_index"].tolist())
    torch.testing.assert_close(tensors["target"], expected.target, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tensors["reward_source"], torch.tensor([r["reward_source"] for r in records]))
    assert json.loads((collected / "collection.json").read_text())["inversion"] == "official"


def test_collect_resumes_and_filters(assets, collected, tmp_path):
    output_dir = tmp_path / "npd"
    args = collect_args(assets, output_dir, "--margin", "-1")
    collect_npd.main(args)
    first, second = (output_dir / "shards" / f"shard-0000{i}.safetensors" for i in (0, 1))
    before = load_file(second)
    stamp = first.stat().st_mtime_ns
    second.unlink()
    (output_dir / "shards" / "shard-00001.safetensors.partial").write_text("a crashed write")
    collect_npd.main(args)
    assert first.stat().st_mtime_ns == stamp  # finished shards are skipped
    for key, value in load_file(second).items():
        torch.testing.assert_close(value, before[key])
    with pytest.raises(ValueError, match="margin"):
        collect_npd.main(collect_args(assets, output_dir, "--margin", "0.5"))

    # The margin keeps exactly the pairs whose reward gain exceeds it.
    gains = sorted(r["reward_target"] - r["reward_source"] for r in read_records(collected / "records.jsonl"))
    margin = (gains[2] + gains[3]) / 2
    filtered_dir = tmp_path / "filtered"
    collect_npd.main(collect_args(assets, filtered_dir, "--margin", repr(margin)))
    records = read_records(filtered_dir / "records.jsonl")
    assert [r["kept"] for r in records] == [r["reward_target"] - r["reward_source"] > margin for r in records]
    assert sum(r["kept"] for r in records) == 3
    tensors, _ = load_npd(filtered_dir)
    assert tensors["seed"].tolist() == [r["seed"] for r in records if r["kept"]]
    assert load_npd(collected, margin=margin)[0]["seed"].tolist() == tensors["seed"].tolist()


# ------------------------------------------------------------------------------------------------ training


def train_args(assets, collected, output_dir, *extra):
    return train_npnet.parse_args([
        "--data_dir", str(collected), "--pretrained_model_name_or_path", str(assets / "pipe"),
        "--output_dir", str(output_dir), "--small_swin", "--train_batch_size", "4", "--validation_fraction", "0.3",
        "--checkpointing_steps", "2", "--validation_steps", "2", "--eval_batch_size", "2", *extra])


def test_train_resume_and_reload(assets, collected, tmp_path, sd1_pipe):
    output_dir = tmp_path / "npnet"
    record = train_npnet.main(train_args(assets, collected, output_dir, "--max_train_steps", "3"))
    assert record["steps"] == 3 and record["train_pairs"] == 4 and record["val_pairs"] == 2
    assert record["val_mse"] > 0 and record["val_identity_mse"] > 0
    assert [h["step"] for h in record["history"]] == [2]
    assert sorted(os.listdir(output_dir / "checkpoints")) == ["checkpoint-2", "checkpoint-3"]
    # the cache holds each distinct prompt's own embedding
    cache = torch.from_numpy(np.load(output_dir / "prompt_embeds.npy"))
    prompts = read_prompts(collected)
    torch.testing.assert_close(cache.float(), prompt_embeddings(sd1_pipe, prompts, 16, 16).half().float())

    record = train_npnet.main(train_args(assets, collected, output_dir, "--max_train_steps", "4",
                                         "--official_first_prompt"))
    assert record["steps"] == 4 and record["official_first_prompt"]
    assert [h["step"] for h in record["history"]] == [2]  # carried over from checkpoint-3: it resumed
    assert sorted(os.listdir(output_dir / "checkpoints")) == ["checkpoint-3", "checkpoint-4"]
    saved = json.loads((output_dir / "npnet" / "TRAINING.json").read_text())
    assert saved["val_mse"] == pytest.approx(record["val_mse"]) and "val_identity_mse" in saved

    npnet = NoisePromptNet.from_pretrained(output_dir / "npnet").eval()
    assert (npnet.config.sample_size, npnet.config.text_embed_dim, npnet.config.max_text_tokens) == (8, 32, 77)
    tensors, _ = load_npd(collected)
    with torch.no_grad():
        golden = npnet(tensors["source"][:2], cache[tensors["prompt_index"][:2]].float())
    assert golden.shape == (2, 4, 8, 8) and torch.isfinite(golden).all()


def test_shapes_preset_checks_sizes(assets, collected, tmp_path):
    args = train_args(assets, collected, tmp_path / "x", "--shapes")
    with pytest.raises(ValueError, match="--shapes"):
        train_npnet.build_npnet(args, 8, 77, 32)
    npnet = train_npnet.build_npnet(args, 16, 32, 64)
    assert npnet.config.swin_kwargs["embed_dim"] == 16
    assert not any(p.requires_grad for p in npnet.unet_svd.bn.parameters())
