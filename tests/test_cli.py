import json
import os

import pytest
import torch

from noisekit import NoiseRecipe, seed_noise
from noisekit.cli import main


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "noisekit 0.1.0" in capsys.readouterr().out
    assert main([]) == 0 and "generate" in capsys.readouterr().out


def test_generate_writes_images_and_records(tmp_path, model_dir, sd1_pipe):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\n")
    out = tmp_path / "out"
    assert main(["generate", "--prompt_file", str(prompts), "--model", model_dir, "--seed", "5", "--num_images", "2",
                 "--steps", "3", "--output_dir", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    images = results["images"]
    assert [(r["prompt_index"], r["seed"]) for r in images] == [(0, 5), (0, 6), (1, 5), (1, 6)]
    for record in images:
        assert (out / record["file"]).is_file()
        assert record["nfe"] == 3 * 2 and record["seconds"] > 0 and record["prompt"] in ("a red circle", "a blue square")
    recipe = NoiseRecipe.from_dict(images[3]["recipe"])
    assert (recipe.replay() == seed_noise(sd1_pipe, [6])).all()


@pytest.mark.parametrize("argv,message", [
    (["generate", "--steps", "3"], "give a PROMPT, --prompt_file FILE or --prompts SET"),
    (["generate", "x", "--prompt_file", "p.txt"], "not PROMPT and --prompt_file"),
    (["search", "--prompt_file", "p.txt", "--prompts", "hpd"], "not --prompt_file and --prompts"),
    (["search", "--prompts", "drawbench"], "add --prompts_path FILE"),
    (["generate", "--prompts", "parti"], "unknown prompt set 'parti'"),
    (["generate", "--prompts", "geneval:nope"], "has no category 'nope'"),
    (["generate", "x", "--prompts_path", "d.csv"], "--prompts_path needs --prompts SET"),
    (["report", "/nonexistent-folder"], "no results.json"),
    (["generate", "--prompt_file", "/nonexistent.txt"], "does not exist"),
    (["generate", "x", "--num_images", "0"], "--num_images must be >= 1"),
    (["generate", "x", "--seed", "-3"], "--seed must be >= 0"),
    (["generate", "x", "--model", "./no/such/folder"], "is neither a local path"),
])
def test_user_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_generate_with_zero_snr_and_nlg_records_the_stage(tmp_path, sd2_pipe):
    sd2_pipe.save_pretrained(tmp_path / "v-model")
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--model", str(tmp_path / "v-model"), "--num_images", "2", "--steps", "2",
                 "--zero_snr", "--nlg", "--nlg_iterations", "3", "--output_dir", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["guidance_rescale"] == 0.7 and results["settings"]["nlg"]["num_iterations"] == 3
    record = results["images"][1]
    assert record["nfe"] == 2 * 2 + 3 * 2
    assert record["recipe"]["transforms"][0]["name"] == "nlg"
    assert record["recipe"]["transforms"][0]["params"]["timestep_used"] == 880


def test_zero_snr_refuses_epsilon_models_in_one_line(model_dir, capsys):
    assert main(["generate", "x", "--model", model_dir, "--zero_snr", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "mode='trailing'" in err and err.count("\n") == 1


def test_generate_with_golden_noise_then_nlg(tmp_path, model_dir, sd1_pipe):
    from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet

    torch.manual_seed(0)
    net = NoisePromptNet(sample_size=8, text_embed_dim=32, max_text_tokens=77, swin_kwargs=SMALL_SWIN)
    with torch.no_grad():  # alpha = beta = 0 at initialisation would make the net a near identity
        net.alpha.fill_(1.0)
        net.beta.fill_(1.0)
    net.save_pretrained(tmp_path / "npnet")
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--model", model_dir, "--num_images", "2", "--steps", "2",
                 "--npnet", str(tmp_path / "npnet"), "--nlg", "--nlg_iterations", "1", "--output_dir", str(out),
                 "--quiet"]) == 0
    record = json.loads((out / "results.json").read_text())["images"][0]
    assert [t["name"] for t in record["recipe"]["transforms"]] == ["npnet", "nlg"]  # golden noise, then NLG
    replayed = NoiseRecipe.from_dict(record["recipe"]).replay(pipe=sd1_pipe, npnet=NoisePromptNet.from_pretrained(
        tmp_path / "npnet").eval())
    assert replayed.shape == (1, 4, 8, 8)
    assert main(["generate", "x", "--model", model_dir, "--npnet", str(tmp_path / "missing")]) == 2


def test_replay_regenerates_generate_results_pixel_for_pixel(tmp_path, model_dir, capsys):
    from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet

    torch.manual_seed(0)
    net = NoisePromptNet(sample_size=8, text_embed_dim=32, max_text_tokens=77, swin_kwargs=SMALL_SWIN)
    with torch.no_grad():
        net.alpha.fill_(1.0)
        net.beta.fill_(1.0)
    net.save_pretrained(tmp_path / "npnet")
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--model", model_dir, "--num_images", "3", "--steps", "3",
                 "--batch_size", "2", "--npnet", str(tmp_path / "npnet"), "--nlg", "--nlg_iterations", "2",
                 "--output_dir", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["replay", str(out / "results.json"), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == report["identical"] == 3 and report["max_pixel_difference"] == 0
    assert (out / "replay" / "p000_s0.png").is_file()

    from PIL import Image

    tampered = Image.open(out / "p000_s1.png").convert("RGB")
    tampered.putpixel((0, 0), tuple(255 - v for v in tampered.getpixel((0, 0))))
    tampered.save(out / "p000_s1.png")
    assert main(["replay", str(out / "results.json"), "--output_dir", str(tmp_path / "again"), "--quiet"]) == 1
    assert "2 identical" in capsys.readouterr().out


def test_replay_of_a_shapes_ttsnap_search_reproduces_the_chosen_image(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", "a blue square on a black background", "--strategy", "ttsnap", "--num_candidates", "10",
                 "--steps", "20", "--output_dir", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    best = next(c for c in results["candidates"] if c["best"])
    capsys.readouterr()
    assert main(["replay", str(out / "results.json"), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == report["identical"] >= 1 and best["file"] in os.listdir(out / "replay")


def test_replay_refuses_what_is_not_a_results_file(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "other.json").write_text('{"settings": {}}')
    assert main(["replay", str(tmp_path / "other.json")]) == 2
    assert "holds `images`" in capsys.readouterr().err


def shapes_search(out, *extra, prompts=("a red circle", "a blue square", "a green cross")):
    return ["search", *prompts_flag(out, prompts), "--num_candidates", "1", "--steps", "2", "--output_dir", str(out),
            "--quiet", *extra]


def prompts_flag(out, prompts):
    path = out.parent / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return ["--prompt_file", str(path)]


def without_seconds(results):
    clean = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}  # noqa: E731  (measured times)
    return [clean(p) for p in results["prompts"]], [clean(c) for c in results["candidates"]]


def test_search_resumes_what_is_missing_and_refuses_another_command(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(shapes_search(out)) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["run"]["complete"] and first["run"]["throughput"]["prompts_run"] == 3
    assert {"candidates_per_second", "nfe_per_second", "seconds_per_prompt", "projected_seconds",
            "peak_memory_bytes", "peak_vram_bytes"} <= set(first["run"]["throughput"])
    assert "candidates/s" in capsys.readouterr().out
    assert (out / "index.html").is_file() and (out / "grid.png").is_file()
    (out / ".noisekit" / "prompts" / "p000001.json").unlink()  # a prompt lost (killed while it ran)
    assert main(shapes_search(out)) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["run"]["throughput"]["prompts_run"] == 1 and again["run"]["throughput"]["prompts_skipped"] == 2
    assert without_seconds(again) == without_seconds(first)
    assert main(shapes_search(out)) == 0 and "nothing to run" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["run"]["throughput"]["prompts_run"] == 1  # kept
    assert main(shapes_search(out, "--steps", "3")) == 2
    err = capsys.readouterr().err
    assert "holds a run of other settings (steps)" in err and err.count("\n") == 1
    (out / "index.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "index.html").is_file()


def test_generate_takes_a_prompt_set_by_name(tmp_path, capsys):
    csv = tmp_path / "drawbench.csv"
    csv.write_text("Prompts,Category\na red circle,Colors\na blue square,Positional\na green cross,Colors\n")
    out = tmp_path / "out"
    assert main(["generate", "--prompts", "drawbench:colors", "--prompts_path", str(csv), "--num_images", "1",
                 "--steps", "2", "--output_dir", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["prompt"] for r in results["images"]] == ["a red circle", "a green cross"]
    assert results["run"]["complete"] and (out / "index.html").is_file()
    assert "all 2 prompts" in capsys.readouterr().out
