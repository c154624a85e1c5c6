"""The shapes judge's latent twin: the model and reward, its training script, and the shipped twin on real latents."""

import json

import numpy as np
import pytest
import torch
from conftest import training_script

from noisekit.rewards import load_reward
from noisekit.rewards.latent_twin import LatentTwin, LatentTwinReward, twin_loss
from noisekit.shapes.judge import ShapesJudge, judge_reward, reward_of_logits

PROMPT = "a large red circle in the top left on a black background"


def test_judge_reward_is_its_heads_on_its_features():
    torch.manual_seed(0)
    judge = ShapesJudge(width=8).eval()
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        direct = judge_reward(judge, pixels, [PROMPT] * 3)
        via_features = reward_of_logits(judge.head_logits(judge.features(pixels)), [PROMPT] * 3)
    torch.testing.assert_close(direct, via_features)
    with pytest.raises(ValueError, match="shapes world's grammar"):
        reward_of_logits(judge.head_logits(judge.features(pixels[:1])), ["a photo of a cat"])


def test_twin_reward_scale_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    twin = LatentTwin(sample_size=8, width=8, feature_width=256).eval()
    judge = ShapesJudge(width=8).eval()
    reward = LatentTwinReward(twin, judge, batch_size=2)
    assert reward.scores_latents and reward.noise_aware and reward.needs_prompts
    latents = torch.randn(3, 4, 8, 8)
    scores = reward(latents, PROMPT, sigma=[0.0, 2.5, float("inf")])
    assert scores.shape == (3,) and scores.dtype == torch.float32 and ((scores >= 0) & (scores <= 1)).all()
    twin.save_pretrained(tmp_path / "twin")
    judge.save_pretrained(tmp_path / "judge")
    reloaded = load_reward("shapes-judge-latent", path=str(tmp_path / "twin"), teacher_path=str(tmp_path / "judge"))
    torch.testing.assert_close(reloaded(latents, PROMPT, sigma=1.0), reward(latents, PROMPT, sigma=1.0))
    with pytest.raises(ValueError, match=r"`latents` must be x0 latents of shape \(B, 4, 8, 8\)"):
        reward(torch.rand(2, 3, 64, 64), PROMPT)
    with pytest.raises(ValueError, match="shapes world's grammar"):
        reward(latents, "a photo of a cat")
    with pytest.raises(ValueError, match="`sigma` must be one non-negative"):
        reward(latents, PROMPT, sigma=-1.0)
    with pytest.raises(FileNotFoundError, match="holds no twin"):
        load_reward("shapes-judge-latent", path=str(tmp_path))


def test_twin_loss_reaches_the_teachers_own_features():
    torch.manual_seed(0)
    judge = ShapesJudge(width=8).eval().requires_grad_(False)
    twin = LatentTwin(sample_size=8, width=8, feature_width=256)
    latents, sigma = torch.randn(16, 4, 8, 8), torch.zeros(16)
    with torch.no_grad():
        features = judge.features(torch.rand(16, 3, 64, 64) * 2 - 1)
        logits = judge.head_logits(features)
    optimizer = torch.optim.Adam(twin.parameters(), 3e-3)
    gap = lambda: torch.nn.functional.mse_loss(twin(latents, sigma), features).item()  # noqa: E731
    before = gap()
    for _ in range(60):
        loss = twin_loss(twin, judge.head_logits, latents, sigma, features, logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gap() < 0.2 * before


def test_training_script_builds_resumes_and_publishes(tmp_path):
    script = training_script("train_latent_twin")
    out = tmp_path / "run"
    common = ["--output_dir", str(out), "--num_scenes", "40", "--num_prompts", "3", "--num_validation_prompts", "2",
              "--num_seeds", "2", "--num_inference_steps", "4", "--train_batch_size", "8", "--width", "8",
              "--checkpointing_steps", "2"]
    script.main(script.parse_args([*common, "--max_train_steps", "2"]))
    data = {name: (out / f"{name}.safetensors").stat().st_mtime for name in ("scenes", "trajectories", "validation")}
    script.main(script.parse_args([*common, "--max_train_steps", "4"]))  # resumes at step 2, reads the data back
    assert {name: (out / f"{name}.safetensors").stat().st_mtime for name in data} == data
    record = json.loads((out / "twin" / "TRAINING.json").read_text())
    assert record["steps"] == 4 and set(record["validation_kendall_tau"]) == {"step-0", "step-1", "step-2"}
    reward = load_reward("shapes-judge-latent", path=str(out / "twin"))
    assert reward(torch.randn(2, 4, 16, 16), PROMPT, sigma=0.0).shape == (2,)
    other = [("3" if a == "40" else a) for a in common]  # --num_scenes 3: the stored scenes are not this run's
    with pytest.raises(ValueError, match="scenes.safetensors was made with other settings"):
        script.main(script.parse_args([*other, "--max_train_steps", "6"]))
    with pytest.raises(ValueError, match="--train_batch_size must be an even number"):
        script.parse_args(["--output_dir", str(out), "--train_batch_size", "7"])


def test_shipped_twin_reads_rendered_scenes_as_the_judge_does():
    """On held-out rendered scenes, encoded as x0 latents are: the twin prefers each scene's own caption to a
    near-miss caption, as the pixel judge does, and its rewards follow the judge's."""
    from diffusers import AutoencoderKL

    from noisekit.shapes.assets import asset_path, assets_dir
    from noisekit.shapes.dataset import heldout_scenes
    from noisekit.shapes.scenes import draw_scene

    folder = asset_path("shapes-judge-latent")
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 3_000_000
    record = json.loads((folder / "TRAINING.json").read_text())
    assert record["command"].startswith("python training/train_latent_twin.py")
    scenes = heldout_scenes(24)
    images = np.stack([np.asarray(draw_scene(s)) for s in scenes])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae = AutoencoderKL.from_pretrained(assets_dir() / "shapes-t2i" / "vae").eval()
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    twin, judge = load_reward("shapes-judge-latent"), load_reward("shapes-judge")
    training_script("train_latent_twin")  # puts training/ on the import path
    from warmup_scenes import near_miss_caption

    rng = np.random.default_rng(0)
    own, missed = [s.caption for s in scenes], [near_miss_caption(s, rng) for s in scenes]
    twin_own, twin_missed = twin(latents, own), twin(latents, missed)
    judge_own = judge_reward(judge.judge, pixels, own)
    assert (twin_own > twin_missed).float().mean() >= 0.9
    assert (twin_own - judge_own).abs().mean() < 0.1


def test_shipped_twin_has_its_calibrated_schedule_in_sigma_units():
    from noisekit.search.calibrate import named_schedule, schedule_for_reward
    from noisekit.shapes.assets import asset_path

    schedule = schedule_for_reward("shapes-judge-latent")
    record = json.loads((asset_path("shapes-judge-latent") / "schedule.json").read_text())["calibration"]
    assert schedule.unit == "sigma" and record["preview_reward"] == "latent-twin"
    sigmas = [float("inf") if s is None else s for s in record["sigmas"]]  # JSON holds the terminal inf as null
    assert schedule.steps(20, sigmas) == tuple(record["schedule_steps"]["points"])
    paper = named_schedule("paper")
    assert paper.points == (2, 6, 11) and schedule.points != paper.points
