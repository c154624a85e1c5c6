"""The shipped shapes-world assets load with the stock loaders and do what they claim."""

import json

import numpy as np
import open_clip
import torch
from diffusers import StableDiffusionPipeline

from noisekit import sample, seed_noise
from noisekit.cli import main
from noisekit.shapes.assets import TRAINED, asset_path
from noisekit.shapes.dataset import render_scenes
from noisekit.shapes.judge import INDEX, ShapesJudge, judge_reward


def test_every_asset_records_its_command_and_data_seed():
    for name in TRAINED:
        record = json.loads((asset_path(name) / "TRAINING.json").read_text())
        assert record["command"].startswith("python training/") and "data_seed" in record


def test_diffusion_models_load_with_diffusers_and_sample():
    v_model = StableDiffusionPipeline.from_pretrained(asset_path("shapes-t2i"))
    eps_model = StableDiffusionPipeline.from_pretrained(asset_path("shapes-t2i-eps"))
    assert v_model.scheduler.config.prediction_type == "v_prediction"
    assert v_model.scheduler.config.rescale_betas_zero_snr and v_model.scheduler.config.timestep_spacing == "trailing"
    assert eps_model.scheduler.config.prediction_type == "epsilon"
    assert eps_model.scheduler.config.beta_schedule == "scaled_linear" and not eps_model.scheduler.config.get(
        "rescale_betas_zero_snr")
    assert v_model.vae_scale_factor == 4 and v_model.unet.dtype == torch.float32
    assert v_model.tokenizer.model_max_length == 32
    out = sample(v_model, "a large red circle on a black background", seed_noise(v_model, [0, 1]),
                 num_inference_steps=4, guidance_scale=5.0)
    assert out.images[0].size == (64, 64)


def test_clip_loads_through_open_clip_and_matches_captions():
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{asset_path('shapes-clip')}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{asset_path('shapes-clip')}")
    images, scenes = render_scenes(77, 32)
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(_pil(i)) for i in images]))
        text_features = model.encode_text(tokenizer([s.caption for s in scenes]))
    logits = torch.nn.functional.normalize(image_features, dim=-1) @ torch.nn.functional.normalize(
        text_features, dim=-1).T
    assert (logits.argmax(dim=1) == torch.arange(32)).float().mean() >= 0.5  # 32-way retrieval, chance 3 %


def test_judge_reads_rendered_scenes():
    judge = ShapesJudge.from_pretrained(asset_path("shapes-judge")).eval()
    images, scenes = render_scenes(99, 400)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        logits = judge(pixels)
    one = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
    for head in ("color", "shape", "size", "background"):
        truth = [INDEX[head].index(getattr(scenes[i].objects[0], head) if head != "background" else
                                   scenes[i].background) for i in one]
        accuracy = (logits[head][one].argmax(dim=1) == torch.tensor(truth)).float().mean()
        assert accuracy >= 0.95, head
    own = judge_reward(judge, pixels[:50], [s.caption for s in scenes[:50]])
    other = judge_reward(judge, pixels[:50], [s.caption for s in scenes[50:100]])
    assert (own > other).float().mean() >= 0.85


def test_demo_runs_a_seed_search(tmp_path):
    assert main(["demo", "--output_dir", str(tmp_path), "--num_candidates", "2", "--steps", "20", "--quiet"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "grid.png").is_file() and len(results["prompts"]) == 6
    assert all((tmp_path / p["best_file"]).is_file() for p in results["prompts"])


def _pil(array):
    from PIL import Image

    return Image.fromarray(np.asarray(array))


def test_noise_aware_judge_asset_scores_previews_in_both_modes():
    from noisekit.rewards import load_reward

    folder = asset_path("shapes-judge-noise-aware")
    record = json.loads((folder / "TRAINING.json").read_text())
    stages = json.loads((folder / "stages" / "stages.json").read_text())
    assert [s["step"] for s in stages] == record["published_stages"] and set(record["published_stages"]) >= {2, 6, 11}
    pipe = StableDiffusionPipeline.from_pretrained(asset_path("shapes-t2i"))
    prompt = "a large red circle on a black background"
    out = sample(pipe, prompt, seed_noise(pipe, [0, 1]), num_inference_steps=20, guidance_scale=5.0,
                 preview_steps=[6], output_type="pt")
    from noisekit.core.families import decode

    preview = decode(pipe, out.previews[6], "pt")
    for mode in ("sigma", "stages"):
        reward = load_reward("shapes-judge-noise-aware", mode=mode)
        scores = reward(preview, [prompt] * 2, sigma=[stages[-1]["sigma"]] * 2)
        assert scores.shape == (2,) and scores.dtype == torch.float32 and ((scores > -0.5) & (scores < 1.5)).all()


def test_npnet_asset_fits_shapes_t2i_and_changes_the_noise_gaussianly():
    from noisekit.transforms.npnet import NoisePromptNet, check_fit
    from noisekit.transforms.golden import apply_npnet
    from noisekit.core.recipe import seed_recipes

    pipe = StableDiffusionPipeline.from_pretrained(asset_path("shapes-t2i"))
    net = NoisePromptNet.from_pretrained(asset_path("shapes-npnet")).eval()
    check_fit(net, pipe)
    noise = seed_noise(pipe, range(64))
    with torch.no_grad():
        golden, recipes = apply_npnet(pipe, net, "a red circle above a blue square", noise,
                                      seed_recipes(range(64), noise.shape[1:]))
    assert golden.shape == noise.shape and not torch.equal(golden, noise)
    assert abs(golden.mean().item()) < 0.05 and abs(golden.std().item() - 1) < 0.05
    assert recipes[3].replay(pipe=pipe, npnet=net).equal(golden[3:4])


def test_library_asset_holds_ten_thousand_seeds_of_shapes_t2i():
    from noisekit.library import NoiseLibrary

    library = NoiseLibrary.load(str(asset_path("shapes-library")))
    info = library.info()
    assert info["entries"] >= 10_000 and info["model"]["id"] == "shapes-t2i" and not info["incomplete_extractors"]
    assert {"clip", "color", "sharpness", "texture", "shape"} <= set(info["extractors"])
    pipe = StableDiffusionPipeline.from_pretrained(asset_path("shapes-t2i"))
    result = library.query(text="a red circle in the top left", attributes=["brightness=low"], top_k=4)
    assert len(set(result.seeds)) == 4
    noise = library.noise(result.seeds, pipe)  # each verified against its stored checksum
    assert noise.shape == (4, 4, 16, 16) and result.recipes[0].replay().equal(noise[:1])


def test_shipped_assets_are_named_on_the_command_line(tmp_path, capsys):
    assert main(["library", "info", "shapes-library", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 10_000
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--library", "shapes-library", "--attribute", "brightness=low",
                 "--npnet", "shapes-npnet", "--num_images", "2", "--steps", "4", "--output_dir", str(out),
                 "--quiet"]) == 0
    record = json.loads((out / "results.json").read_text())["images"][0]
    assert record["seed"] < 10_000 and [t["name"] for t in record["recipe"]["transforms"]] == ["npnet"]


def test_search_prunes_with_the_shipped_noise_aware_judge(tmp_path):
    out = tmp_path / "search"
    assert main(["search", "a red circle on a black background", "--strategy", "ttsnap", "--preview_reward",
                 "shapes-judge-noise-aware", "--num_candidates", "10", "--output_dir", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["preview_rewards"] == "shapes-judge-noise-aware"
    # the calibration shipped beside the judge ([8, 13] x [0.4, 0.4] in sigma units) is the default
    assert results["prompts"][0]["pruning_steps"] == [8, 13] and results["prompts"][0]["counts"] == [10, 4, 2]
    assert results["settings"]["schedule"]["unit"] == "sigma"
    assert sum(c["best"] for c in results["candidates"]) == 1
    paper = tmp_path / "paper"
    assert main(["search", "a red circle on a black background", "--strategy", "ttsnap", "--preview_reward",
                 "shapes-judge-noise-aware", "--schedule_name", "paper", "--num_candidates", "5", "--steps", "10",
                 "--output_dir", str(paper), "--quiet"]) == 0
    summary = json.loads((paper / "results.json").read_text())["prompts"][0]
    assert summary["counts"] == [5, 2, 1, 1]  # the paper's default keep ratios
