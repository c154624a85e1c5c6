"""NoiseQuery library: build, resume, grow, multi-process merge, features, queries, recipes and the CLI."""

import argparse
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from noisekit.library import (COLOR_COLUMNS, SHARPNESS_COLUMNS, TEXTURE_COLUMNS, NoiseLibrary, add_features,
                              build_library, clip_extractor, color_attributes, hu_moments, library_noise,
                              shape_attributes, sharpness_attributes, srgb_to_lab, texture_attributes)
from noisekit.library.store import committed_shards, shards_dir
from noisekit.cli.library import register as add_library
from noisekit.core.noise import noise_checksum, seed_noise
from noisekit.testing import tiny_sd_pipeline

TINY_CLIP = {
    "model_cfg": {"embed_dim": 16, "quick_gelu": True,
                  "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}
ATTRIBUTES = ["color", "sharpness", "texture", "shape"]
SMALL = dict(num_inference_steps=2, shard_size=4, batch_size=4)


@pytest.fixture(scope="module")
def clip(library_clip_dir):
    return clip_extractor(f"local-dir:{library_clip_dir}")


@pytest.fixture(scope="module")
def built(sd1_pipe, clip, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lib") / "lib")
    build_library(sd1_pipe, path, 10, extractors=[*ATTRIBUTES, clip], **SMALL)
    return path


def tables_equal(a, b):
    assert np.array_equal(a.seeds, b.seeds) and np.array_equal(a.checksums, b.checksums)
    assert sorted(a.features) == sorted(b.features)
    for key in a.features:
        torch.testing.assert_close(a.features[key], b.features[key], rtol=0, atol=0)


# --- attribute extractors against hand-computed values ------------------------------------------------------


def solid(rgb, size=8):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def checkerboard(size=8):
    board = ((torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2).float()
    return board.expand(1, 3, size, size).clone()


def test_pure_red_color_attributes():
    values = dict(zip(COLOR_COLUMNS, color_attributes(solid((1.0, 0.0, 0.0)))[0].tolist()))
    assert values["brightness"] == pytest.approx(0.299) and values["contrast"] == pytest.approx(0, abs=1e-6)
    assert values["saturation"] == pytest.approx(1.0)
    assert values["colorfulness"] == pytest.approx(0.3 * math.sqrt(1 + 0.5 ** 2), rel=1e-5)  # rg=1, yb=0.5
    assert (values["mean_r"], values["mean_g"], values["mean_b"]) == pytest.approx((1, 0, 0))
    assert (values["lab_l"], values["lab_a"], values["lab_b"]) == pytest.approx((53.24, 80.09, 67.20), abs=0.02)


def test_gray_and_white_color_attributes():
    gray = dict(zip(COLOR_COLUMNS, color_attributes(solid((0.5, 0.5, 0.5)))[0].tolist()))
    assert gray["saturation"] == 0 and gray["colorfulness"] == pytest.approx(0, abs=1e-6)
    assert (gray["lab_a"], gray["lab_b"]) == pytest.approx((0, 0), abs=1e-3)
    white = dict(zip(COLOR_COLUMNS, color_attributes(solid((1.0, 1.0, 1.0)))[0].tolist()))
    assert white["lab_l"] == pytest.approx(100, abs=1e-3) and white["brightness"] == pytest.approx(1)
    half = torch.cat([solid((0.0, 0.0, 0.0))[..., :4], solid((1.0, 1.0, 1.0))[..., 4:]], -1)  # black | white
    values = dict(zip(COLOR_COLUMNS, color_attributes(half)[0].tolist()))
    assert values["brightness"] == pytest.approx(0.5) and values["contrast"] == pytest.approx(0.5)


def test_checkerboard_sharpness_and_glcm():
    sharp = dict(zip(SHARPNESS_COLUMNS, sharpness_attributes(checkerboard())[0].tolist()))
    assert sharp["laplacian_var"] == pytest.approx(16.0)  # Laplacian is -4 / +4 everywhere (reflect-101 border)
    assert sharp["hfe"] == pytest.approx(1.0)  # all power at (0.5, 0.5) cycles/pixel
    flat = sharpness_attributes(solid((0.3, 0.3, 0.3)))[0].tolist()
    assert flat == pytest.approx([0.0, 0.0], abs=1e-9)
    texture = dict(zip(TEXTURE_COLUMNS, texture_attributes(checkerboard())[0].tolist()))
    # 0 and 90 degrees pair levels 0 and 31; 45 and 135 degrees pair equal levels
    assert texture["glcm_contrast"] == pytest.approx((31 ** 2 + 0) / 2)
    assert texture["glcm_homogeneity"] == pytest.approx((1 / (1 + 31 ** 2) + 1) / 2)
    # diagonal pairs on 8 x 8: 49 pairs, 25 of level 0 and 24 of level 31 (or the reverse)
    assert texture["glcm_energy"] == pytest.approx((2 * math.sqrt(0.5) + 2 * math.sqrt(25 ** 2 + 24 ** 2) / 49) / 4)
    assert texture["glcm_correlation"] == pytest.approx(0.0, abs=1e-6)  # -1 and +1 averaged
    assert texture_attributes(solid((0.2, 0.2, 0.2)))[0].tolist() == pytest.approx([0, 1, 1, 1])


def test_hu_moments():
    n = 8
    hu = hu_moments(torch.ones(1, n, n))[0]
    assert hu[0].item() == pytest.approx(2 * (n * n - 1) / (12 * n * n))  # eta20 + eta02 of a flat square
    assert hu[1:].abs().max().item() == pytest.approx(0, abs=1e-12)
    assert shape_attributes(solid((1.0, 1.0, 1.0)))[0, 0].item() == pytest.approx(-math.log10(hu[0].item()))
    blob = torch.zeros(1, 3, 12, 12)
    blob[:, :, 2:5, 1:9] = 1
    blob[:, :, 5:10, 6:8] = 0.5
    turned = torch.rot90(blob, 1, (2, 3))
    torch.testing.assert_close(shape_attributes(blob), shape_attributes(turned), rtol=1e-4, atol=1e-4)


# --- building ------------------------------------------------------------------------------------------------


def test_manifest(built, sd1_pipe):
    library = NoiseLibrary.load(built)
    manifest = library.manifest
    assert manifest["latent_shape"] == [4, 8, 8] and (manifest["height"], manifest["width"]) == (16, 16)
    assert manifest["posterior"]["prompt"] == "" and manifest["posterior"]["guidance_scale"] == 1.0
    assert manifest["posterior"]["num_inference_steps"] == 2
    assert manifest["posterior"]["scheduler"]["class"] == "DDIMScheduler"
    assert manifest["posterior"]["scheduler"]["config"]["steps_offset"] == 1
    assert manifest["dtype"] == "float32" and manifest["shard_size"] == 4
    assert manifest["model"]["unet_hash"] and manifest["created_with"]["noisekit"]
    assert set(manifest["extractors"]) == {*ATTRIBUTES, "clip"}
    assert manifest["extractors"]["clip"]["source"].startswith("local-dir:")
    assert manifest["extractors"]["texture"]["version"] == 1
    assert library.seeds.tolist() == list(range(10)) and library.features["clip"].shape == (10, 16)
    assert library.features["color"].shape == (10, len(COLOR_COLUMNS))
    assert [r["rows"] for r in committed_shards(built)] == [4, 4, 2]
    info = library.info()
    assert info["entries"] == 10 and info["bytes_per_entry"] < info["float32_noise_bytes_per_entry"] * 2
    assert not any(name.endswith(".pt") or "noise" in name for name in os.listdir(shards_dir(built)))


def test_checksums_and_recipes_replay(built, sd1_pipe):
    library = NoiseLibrary.load(built)
    noise = seed_noise(sd1_pipe, range(10))
    stored = [r.checksum for r in library.recipes(range(10))]
    assert stored == [noise_checksum(row[None]) for row in noise]
    for recipe, row in zip(library.recipes([3, 7]), noise[[3, 7]]):
        torch.testing.assert_close(recipe.replay(), row[None], rtol=0, atol=0)
    torch.testing.assert_close(library.noise([3, 7], sd1_pipe), noise[[3, 7]], rtol=0, atol=0)
    library.checksums[3] ^= 1  # a corrupted record is caught
    with pytest.raises(ValueError, match="checksum"):
        library.noise([3])


def test_existing_library_is_refused_without_resume(built, sd1_pipe, clip):
    with pytest.raises(ValueError, match="already exists.*resume"):
        build_library(sd1_pipe, built, 10, extractors=[*ATTRIBUTES, clip], **SMALL)
    with pytest.raises(ValueError, match="num_inference_steps|posterior"):
        build_library(sd1_pipe, built, 10, extractors=[*ATTRIBUTES, clip], resume=True,
                      **{**SMALL, "num_inference_steps": 3})


def test_resume_after_interruption_and_grow(tmp_path, sd1_pipe, built, clip):
    path = str(tmp_path / "lib")

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_library(sd1_pipe, path, 10, extractors=[*ATTRIBUTES, clip], callback=interrupt, **SMALL)
    assert [r["rows"] for r in committed_shards(path)] == [4]
    first = load_file(os.path.join(shards_dir(path), "shard-000000000000-000000000004.safetensors"))
    written = build_library(sd1_pipe, path, 10, extractors=[*ATTRIBUTES, clip], resume=True, **SMALL)
    assert [r["first_seed"] for r in written] == [4, 8]  # the first shard was kept, not redone
    again = load_file(os.path.join(shards_dir(path), "shard-000000000000-000000000004.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    tables_equal(NoiseLibrary.load(path), NoiseLibrary.load(built))
    written = build_library(sd1_pipe, path, 14, extractors=[*ATTRIBUTES, clip], resume=True, **SMALL)
    assert [(r["first_seed"], r["last_seed"]) for r in written] == [(10, 11), (12, 13)]
    grown = NoiseLibrary.load(path)
    assert grown.seeds.tolist() == list(range(14))
    torch.testing.assert_close(grown.features["color"][:10], NoiseLibrary.load(built).features["color"])


def test_two_process_build_merges_to_single_process_build(tmp_path, sd1_pipe, built, clip):
    path = str(tmp_path / "lib2")
    shares = [build_library(sd1_pipe, path, 10, extractors=[*ATTRIBUTES, clip], process_index=i, num_processes=2,
                            **SMALL) for i in (0, 1)]
    assert [[r["first_seed"] for r in share] for share in shares] == [[0, 8], [4]]
    tables_equal(NoiseLibrary.load(path), NoiseLibrary.load(built))
    for name in sorted(os.listdir(shards_dir(built))):
        if name.endswith(".safetensors"):
            with open(os.path.join(shards_dir(built), name), "rb") as a, open(os.path.join(shards_dir(path), name),
                                                                               "rb") as b:
                assert a.read() == b.read(), name


def test_add_features_without_touching_seeds(tmp_path, sd1_pipe, built, clip):
    path = str(tmp_path / "lib")
    build_library(sd1_pipe, path, 10, extractors=["color"], **SMALL)
    before = {n: os.path.getmtime(os.path.join(shards_dir(path), n)) for n in os.listdir(shards_dir(path))}
    library = NoiseLibrary.load(path)
    library.add_features(sd1_pipe, "texture")
    library.add_features(sd1_pipe, clip)
    after = {n: os.path.getmtime(os.path.join(shards_dir(path), n)) for n in before}
    assert before == after  # existing files untouched; new features in new files
    reference = NoiseLibrary.load(built)
    for key in ("color", "texture", "clip"):
        torch.testing.assert_close(library.features[key], reference.features[key])
    add_features(sd1_pipe, path, "texture")  # already complete: nothing to do
    other = tiny_sd_pipeline(seed=1)
    with pytest.raises(ValueError, match="not the model"):
        add_features(other, path, "shape")


def test_mismatched_pipeline_is_refused(built, sdxl_pipe, sd1_pipe):
    library = NoiseLibrary.load(built)
    with pytest.raises(ValueError, match=r"latent shape \(4, 8, 8\).*\(4, 16, 16\)"):
        library.check_pipeline(sd1_pipe, 32, 32)
    with pytest.raises(ValueError, match="latent shape"):
        library_noise(sd1_pipe, built, ["brightness=high"], seeds_needed=1, height=32, width=32)
    with pytest.raises(ValueError, match="built with another model.*force=True"):
        library.check_pipeline(sdxl_pipe)  # the tiny SDXL also takes 4 x 8 x 8, but it is another model
    library.check_pipeline(sdxl_pipe, force=True)


# --- queries -------------------------------------------------------------------------------------------------


def test_text_query_is_clip_cosine(built, clip):
    library = NoiseLibrary.load(built)
    result = library.query(text="a red circle", top_k=3)
    cosine = library.features["clip"] @ clip.encode_text(["a red circle"])[0]
    assert result.seeds == torch.argsort(cosine, descending=True)[:3].tolist()
    assert result.scores == pytest.approx(cosine.sort(descending=True).values[:3].tolist(), abs=1e-5)
    assert [r.seed for r in result.recipes] == result.seeds and all(r.checksum for r in result.recipes)


def test_attribute_queries(built):
    library = NoiseLibrary.load(built)
    brightness = library.features["color"][:, COLOR_COLUMNS.index("brightness")]
    order = torch.argsort(brightness).tolist()
    assert library.query(attributes=["brightness=p100"]).seeds == [order[-1]]
    assert library.query(attributes=["brightness=p0"]).seeds == [order[0]]
    target = float(brightness[5])
    assert library.query(attributes={"brightness": target}).seeds == [5]
    high = library.query(attributes=["brightness=high"], top_k=1).seeds[0]
    assert brightness[high] >= torch.quantile(brightness, 0.9) - 1e-6
    low, high = sorted(brightness.tolist())[3], sorted(brightness.tolist())[6]
    inside = library.query(attributes=[f"brightness={low}..{high}"], top_k=4)
    assert sorted(inside.seeds) == sorted(order[3:7]) and inside.scores == [0, 0, 0, 0]
    lab = library.features["color"][:, 7:10]
    target_lab = srgb_to_lab(torch.tensor([30, 144, 255.0]).view(1, 3, 1, 1) / 255).flatten()  # #1e90ff
    assert library.query(attributes=["color=#1E90FF"]).seeds == [int(torch.argmin((lab - target_lab).norm(dim=1)))]
    assert library.query(attributes=["color=navy"], top_k=10).seeds  # a named colour parses
    with pytest.raises(ValueError, match="NAME must be one of"):
        library.query(attributes=["loudness=high"])
    with pytest.raises(ValueError, match="VALUE must be"):
        library.query(attributes=["brightness=bright"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        library.query(attributes=["brightness"])


def test_exemplar_image_queries(built, sd1_pipe, tmp_path):
    library = NoiseLibrary.load(built)
    from noisekit.library.build import posterior_pipe, posteriors

    pixels, _ = posteriors(posterior_pipe(sd1_pipe), [6], (4, 8, 8), 2, 1)
    for name in ("texture", "shape", "color", "sharpness"):
        assert library.query(attributes={name: pixels[0]}).seeds == [6], name
    path = str(tmp_path / "exemplar.png")
    Image.fromarray((pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    assert library.query(attributes=[f"clip={path}"], top_k=1).seeds == [6]


def test_combined_queries(built, clip):
    library = NoiseLibrary.load(built)
    cosine = library.features["clip"] @ clip.encode_text(["a blue square"])[0]
    top = torch.argsort(cosine, descending=True)[:5].tolist()
    reranked = library.query(text="a blue square", attributes=["brightness=p100"], rerank_k=5, top_k=5)
    assert sorted(reranked.seeds) == sorted(top)
    brightness = library.features["color"][top, 0]
    assert reranked.seeds == [top[i] for i in torch.argsort(brightness, descending=True).tolist()]
    weighted = library.query(text="a blue square", attributes=["brightness=p100"], mode="weighted", top_k=10,
                             weights={"text": 0.0})
    assert weighted.seeds[0] == int(torch.argmax(library.features["color"][:, 0]))
    with pytest.raises(ValueError, match="mode"):
        library.query(text="x", attributes=["brightness=high"], mode="pareto")
    with pytest.raises(ValueError, match="needs `text`"):
        library.query()


def test_exclusion_and_seeded_sampling(built):
    library = NoiseLibrary.load(built)
    best = library.query(text="a red circle", top_k=3).seeds
    rest = library.query(text="a red circle", top_k=3, exclude=best[:2]).seeds
    assert rest[0] == best[2] and not set(rest) & set(best[:2])
    assert len(library.query(text="x", top_k=10, exclude=range(8)).seeds) == 2
    draw = lambda seed: library.query(attributes=["brightness=high"], top_k=3, temperature=1.0,  # noqa: E731
                                      sample_seed=seed).seeds
    assert draw(1) == draw(1) and len(set(draw(1))) == 3
    assert len({tuple(draw(s)) for s in range(8)}) > 1


def test_library_noise_for_generate(built, sd1_pipe):
    noise, recipes, result = library_noise(sd1_pipe, built, ["brightness=low"], "a red circle", 2, exclude=[0])
    assert noise.shape == (2, 4, 8, 8) and 0 not in result.seeds
    for recipe, row in zip(recipes, noise):
        torch.testing.assert_close(recipe.replay(), row[None], rtol=0, atol=0)


# --- CLI -----------------------------------------------------------------------------------------------------


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="noisekit")
    add_library(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.run(args)


def test_cli_build_query_info(tmp_path, library_clip_dir, capsys):
    model = str(tmp_path / "tiny-sd")
    tiny_sd_pipeline().save_pretrained(model)
    lib = str(tmp_path / "cli-lib")
    common = ["library", "build", "--model", model, "--output", lib, "--steps", "2", "--shard_size", "4",
              "--clip", f"local-dir:{library_clip_dir}", "--device", "cpu", "--quiet", "--json"]
    run_cli([*common, "--num_seeds", "6"])
    assert json.loads(capsys.readouterr().out)["entries"] == 6
    with pytest.raises(ValueError, match="already exists"):
        run_cli([*common, "--num_seeds", "8"])
    run_cli([*common, "--num_seeds", "8", "--resume"])
    assert json.loads(capsys.readouterr().out)["entries"] == 8
    run_cli(["library", "query", lib, "--text", "a red circle", "--attribute", "brightness=high", "--top_k", "2",
             "--exclude", "0,1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert len(out["seeds"]) == 2 and not {0, 1} & set(out["seeds"]) and out["recipes"][0]["checksum"]
    run_cli(["library", "query", lib, "--attribute", "hfe=low", "--top_k", "3"])
    assert capsys.readouterr().out.startswith("rank")
    run_cli(["library", "info", lib])
    assert "entries: 8" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--clip must be given"):
        run_cli(["library", "build", "--model", model, "--output", str(tmp_path / "x"), "--num_seeds", "2"])
