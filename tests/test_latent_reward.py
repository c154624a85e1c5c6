"""Latent noise-aware rewards: the model and reward, its training (`--student latent`), and TTSnap pruning that hands
x0 latents to it without decoding them."""

import json

import pytest
import torch
from conftest import training_script

from noisekit.rewards import list_rewards, load_reward
from noisekit.rewards.latent import LatentReward, LatentRewardModel, hashed_ids, load_latent_model

PROMPT = "a large red circle in the top left on a black background"


def test_latent_reward_round_trip_stage_choice_and_errors(tmp_path):
    assert {"noise-aware-latent", "shapes-judge-latent"} <= set(list_rewards())
    torch.manual_seed(0)
    model = LatentRewardModel(latent_channels=4, sample_size=8, width=8, text_buckets=32, text_width=8)
    latents = torch.randn(3, 4, 8, 8)
    reward = LatentReward([model.eval()])
    assert reward.scores_latents and reward.noise_aware
    scores = reward(latents, PROMPT, sigma=[0.5, 2.0, float("inf")])
    assert scores.shape == (3,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    model.save_pretrained(tmp_path / "sigma")
    reloaded = load_reward("noise-aware-latent", path=str(tmp_path / "sigma"))
    torch.testing.assert_close(reloaded(latents, PROMPT, sigma=2.0), reward(latents, PROMPT, sigma=2.0))
    stages = LatentReward([load_latent_model(tmp_path / "sigma")] * 2, stage_sigmas=[1.0, 8.0])
    assert stages(latents, PROMPT, sigma=[0.0, 3.9, 100.0]).shape == (3,)
    with pytest.raises(ValueError, match=r"`latents` must be x0 latents of shape \(B, 4, 8, 8\)"):
        reward(torch.rand(3, 3, 64, 64), PROMPT)
    with pytest.raises(FileNotFoundError, match="--student latent"):
        load_reward("noise-aware-latent", path=str(tmp_path / "missing"))
    # the prompt's n-grams hash the same way in every process (CRC32, not Python's salted hash)
    ids, offsets = hashed_ids(["a red circle", ""], 32)
    assert offsets.tolist() == [0, 5] and len(ids) == 6


def test_latent_training_smoke_and_resume(tmp_path, model_dir, judge_dir, capsys):
    script = training_script("train_noise_aware_reward")
    argv = ["--student", "latent", "--pretrained_model_name_or_path", model_dir, "--teacher_kwargs",
            json.dumps({"path": judge_dir}), "--output_dir", str(tmp_path), "--num_prompts", "3",
            "--num_validation_prompts", "2", "--num_seeds", "2", "--num_inference_steps", "3", "--steps_per_stage", "2",
            "--warmup_steps", "3", "--train_batch_size", "2", "--publish_stages", "0", "--publish_dtype", "float16"]
    script.main(script.parse_args(argv))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "data.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("train/latents").dtype == torch.float16
    assert {"train/latents", "train/final_latents", "val/latents", "val/pixels"} <= keys
    assert "train/pixels" not in keys  # the latent student never reads decoded training previews
    folder = tmp_path / "noise-aware-latent"
    record = json.loads((folder / "TRAINING.json").read_text())
    assert record["student"] == "latent" and record["steps"] == 3 + 2 * 2 and record["warmup_steps"] == 3
    assert set(record["validation"]) == {"step-1", "step-0", "final"}
    assert set(record["validation"]["step-1"]) == {"base", "stage", "sigma"}
    for mode in ("sigma", "stages"):
        reward = load_reward("noise-aware-latent", path=str(folder), mode=mode)
        assert reward(torch.randn(2, 4, 8, 8), PROMPT, sigma=[0.5, 3.0]).shape == (2,)
    script.main(script.parse_args(argv))  # resumes from the last checkpoint: nothing left to train
    assert "resumed from" in capsys.readouterr().out
    with pytest.raises(ValueError, match="holds no train/pixels for --student image"):
        image = argv[2:argv.index("--warmup_steps")] + argv[argv.index("--warmup_steps") + 2 :]
        script.main(script.parse_args(image))
    with pytest.raises(ValueError, match="--warmup_steps applies to --student latent"):
        script.parse_args([*argv[2:], "--warmup_steps", "1"])


def tiny_latent_reward():
    torch.manual_seed(0)
    model = LatentRewardModel(latent_channels=4, sample_size=8, width=8, text_buckets=32, text_width=8)
    return LatentReward([model.eval()])


def count_decoded_images(pipe, monkeypatch):
    """A list that grows by the batch size of every VAE decode call of `pipe`."""
    decoded, original = [], pipe.vae.decode

    def decode(latents, *args, **kwargs):
        decoded.append(len(latents))
        return original(latents, *args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", decode)
    return decoded


def test_latent_preview_reward_prunes_without_decoding(sd1_pipe, judge_dir, monkeypatch):
    from noisekit import Sampler
    from noisekit.search.budget import PruningSchedule
    from noisekit.search.previews import decode_pruned_previews
    from noisekit.search.strategies import search

    judge = load_reward("shapes-judge", path=judge_dir)
    decoded = count_decoded_images(sd1_pipe, monkeypatch)
    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=4, guidance_scale=5.0)
    schedule = PruningSchedule((1, 2), (0.5, 0.5))
    result = search(sampler, 0, {"judge": judge}, seeds=0, num_candidates=8, schedule=schedule,
                    preview_rewards={"judge": tiny_latent_reward()})
    assert result.counts == (8, 4, 2) and sum(decoded) == 2  # only the survivors' final images were decoded
    pruned = [c for c in result.candidates if c.pruned_at is not None]
    assert all(c.image is None and c.preview.shape == (1, 4, 8, 8) for c in pruned)
    assert all(len(c.stages[-1]["scores"]) == 1 for c in pruned)
    # the same search with the judge on decoded previews decodes every preview it scores as well
    decoded.clear()
    by_image = search(sampler, 0, {"judge": judge}, seeds=0, num_candidates=8, schedule=schedule)
    assert sum(decoded) == 8 + 4 + 2 and all(c.image is not None for c in by_image.candidates)
    # pruned previews are decoded for files afterwards, outside the search's cost
    decoded.clear()
    assert decode_pruned_previews(sampler, result) == 6 and sum(decoded) == 6
    assert all(c.image.size == by_image.candidates[0].image.size for c in result.candidates)
    with pytest.raises(ValueError, match="score x0 latents; pass them as `preview_rewards`"):
        search(sampler, 0, {"judge": tiny_latent_reward()}, seeds=0, num_candidates=2, schedule=schedule)


def test_cost_probe_times_latent_preview_rewards_without_a_decode(sd1_pipe, monkeypatch):
    from noisekit import Sampler
    from noisekit.search.timing import measure_cost

    decoded = count_decoded_images(sd1_pipe, monkeypatch)
    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=4, guidance_scale=5.0)
    cost = measure_cost(sampler, {"judge": tiny_latent_reward()}, num_candidates=2, repeats=1)
    assert decoded == [] and cost.probe["reward_calls"] == 2 * (1 + 2) and cost.seconds_per_reward_call > 0


def test_search_cli_prunes_with_the_latent_judge_and_replays(tmp_path, monkeypatch, capsys):
    import diffusers

    from noisekit.cli import main

    decoded, original = [], diffusers.AutoencoderKL.decode

    def decode(self, latents, *args, **kwargs):
        decoded.append(len(latents))
        return original(self, latents, *args, **kwargs)

    monkeypatch.setattr(diffusers.AutoencoderKL, "decode", decode)
    out = tmp_path / "search"
    assert main(["search", "a red circle on a black background", "--strategy", "ttsnap", "--preview_reward",
                 "shapes-judge-latent", "--schedule_name", "paper", "--num_candidates", "10", "--output_dir", str(out),
                 "--cost_model", "fixed", "--quiet"]) == 0  # no cost probe: every decode counted is the search's
    results = json.loads((out / "results.json").read_text())
    summary = results["prompts"][0]
    assert results["settings"]["preview_rewards"] == "shapes-judge-latent"
    assert summary["counts"] == [10, 4, 2, 1] and sum(c["best"] for c in results["candidates"]) == 1
    # the search decoded only the survivor; the 9 pruned previews were decoded afterwards, for their files
    assert sum(decoded) == 1 + 9
    assert all((out / c["file"]).is_file() for c in results["candidates"]) and (out / "grid.png").is_file()
    capsys.readouterr()
    assert main(["replay", str(out / "results.json"), "--json", "--quiet"]) == 0  # the survivor, image for image
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 1 and report["different"] == 0


def test_latent_warmup_scenes_spread_labels_and_exclude_heldout_captions():
    training_script("train_noise_aware_reward")  # puts training/ on the import path
    from diffusers import AutoencoderKL
    from warmup_scenes import CAPTION_KINDS, make_warmup_data, teacher_labels

    from noisekit.shapes.assets import assets_dir
    from noisekit.shapes.dataset import heldout_captions, render_scenes

    teacher = load_reward("shapes-judge").eval()
    vae = AutoencoderKL.from_pretrained(assets_dir() / "shapes-t2i" / "vae").eval()
    _, first = render_scenes(5, 6)
    excluded = heldout_captions() | {scene.caption for scene in first}  # as a run's validation prompts are
    tensors, captions = make_warmup_data(vae=vae, teacher=teacher, num_scenes=60, seed=5, excluded=excluded,
                                         batch_size=25)
    assert tensors["latents"].shape == (60, 4, 16, 16) and tensors["latents"].dtype == torch.float16
    assert len(captions) == len(tensors["labels"]) == len(tensors["scene"]) > 2 * 60
    assert not set(captions) & excluded
    labels, kinds = tensors["labels"], tensors["kind"]
    own, near_miss = labels[kinds == 0], labels[kinds == CAPTION_KINDS.index("near-miss")]
    assert labels.std() > 0.15 and own.mean() > near_miss.mean() + 0.1  # mismatched captions score lower
    # the labels are the teacher's scores of the rendered images
    images, _ = render_scenes(5, 60, exclude=excluded)
    rows = tensors["scene"][:8]
    pixels = teacher.transform(torch.from_numpy(images[rows.numpy()]).permute(0, 3, 1, 2).float() / 255, "cpu")
    with torch.no_grad():
        expected = teacher.score(pixels, captions[:8], torch.zeros(8))
    torch.testing.assert_close(labels[:8], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(teacher_labels(teacher, pixels, captions[:8]), expected, atol=1e-4, rtol=0)


def test_latent_training_with_warmup_scenes_and_an_image_comparison(tmp_path, model_dir, judge_dir):
    script = training_script("train_noise_aware_reward")
    argv = ["--student", "latent", "--pretrained_model_name_or_path", model_dir, "--teacher_kwargs",
            json.dumps({"path": judge_dir}), "--output_dir", str(tmp_path), "--num_prompts", "3",
            "--num_validation_prompts", "2", "--num_seeds", "2", "--num_inference_steps", "3", "--steps_per_stage", "1",
            "--warmup_steps", "1", "--warmup_scenes", "12", "--warmup_scene_steps", "2", "--warmup_noise", "0.2",
            "--train_batch_size", "2", "--compare_reward", "shapes-judge-noise-aware"]
    script.main(script.parse_args(argv))
    record = json.loads((tmp_path / "noise-aware-latent" / "TRAINING.json").read_text())
    assert record["steps"] == 2 + 1 + 2 * 1 and record["warmup_scenes"] == 12 and record["warmup_pairs"] > 24
    assert set(record["validation"]["step-0"]) == {"base", "stage", "sigma", "image"}
    with pytest.raises(ValueError, match="holds 12 warm-up scenes of seed 1007, not 13"):
        script.main(script.parse_args([*argv, "--warmup_scenes", "13"]))
    with pytest.raises(ValueError, match="--warmup_scenes applies to --student latent"):
        script.parse_args([*argv[2:argv.index("--warmup_steps")], "--warmup_scenes", "4"])
