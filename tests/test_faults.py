"""Faults and bad input on the shapes world: NaN rewards, huge budgets, corrupt NPNet files, edited results, bad
output folders, memory, large grids, interrupted training. Each ends in one line naming the problem, never in a
traceback, and nothing wrong is accepted silently. (Library faults: test_library_faults.py.)"""

import json
import math
import os

import pytest
import torch

from noisekit import Sampler
from noisekit.cli import main
from noisekit.rewards.combine import rank_sum, top_positions
from noisekit.search.strategies import best_of_n, search

PROMPT = "a red circle on a black background"


def one_line_error(argv, capsys, message):
    """Run the CLI: exit status 2 and one line on stderr holding `message`."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    return err


class ScriptedReward:
    """A reward that returns the next scores of `script` for each call (one list per call), as a broken reward
    model would: NaN or +/-inf for some candidates."""

    def __init__(self, *script):
        self.script = list(script)

    def __call__(self, images, prompts, sigma=None):
        scores = self.script.pop(0)
        assert len(scores) == len(images)
        return torch.tensor(scores, dtype=torch.float32)


# --- NaN and infinite rewards are failures ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rank_sum_puts_a_non_finite_score_last(bad):
    assert top_positions(rank_sum({"r": torch.tensor([bad, 0.99999, 0.5])}), 1).tolist() == [1]
    two = rank_sum({"a": torch.tensor([bad, 0.1, 0.2]), "b": torch.tensor([9.0, 0.1, 0.2])})
    assert two[0] == -math.inf and top_positions(two, 2).tolist() == [1, 2]
    assert top_positions(torch.tensor([math.nan, 1.0]), 1).tolist() == [1]  # torch sorts NaN first


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_best_of_n_never_chooses_a_non_finite_score(sd1_pipe, bad):
    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=2, guidance_scale=1.0)
    result = search(sampler, 0, ScriptedReward([bad, 0.99999, 0.5]), num_candidates=3, schedule=())
    assert result.best.seed == 1
    failed = result.candidates[0]
    assert failed.failed == f"reward scored {bad} on the final image" and not failed.best
    record = failed.to_dict()
    assert record["final_scores"] == {"reward": None} and "failed" in record
    json.dumps(record, allow_nan=False)  # the record stays valid JSON
    assert "failed" not in result.candidates[1].to_dict()


def test_anytime_best_of_n_keeps_a_failed_candidate_out(sd1_pipe):
    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=2, guidance_scale=1.0)
    reward = ScriptedReward([math.nan, 0.2], [0.1])
    small = best_of_n(sampler, 0, reward, num_candidates=2)
    large = best_of_n(sampler, 0, reward, num_candidates=3, previous=small)
    assert small.best.seed == 1 and large.best.seed == 1 and large.candidates[0].failed


def test_ttsnap_prunes_non_finite_previews_first_and_reports_them(sd1_pipe):
    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=4, guidance_scale=1.0)
    preview = ScriptedReward([math.nan, 0.1, math.inf, 0.2])
    from noisekit.search.budget import PruningSchedule

    result = search(sampler, 0, ScriptedReward([0.5, 0.4]), preview_rewards={"reward": preview}, num_candidates=4,
                    schedule=PruningSchedule((0,), (0.5,)))
    kept = [c.stages[0]["kept"] for c in result.candidates]
    assert kept == [False, True, False, True] and result.best.seed == 1
    assert result.candidates[0].failed == "reward scored nan at step 0"
    assert result.candidates[2].failed == "reward scored inf at step 0"
    assert result.candidates[0].to_dict()["stages"][0]["scores"] == {"reward": None}


def test_a_run_where_every_candidate_fails_says_so(sd1_pipe):
    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=2, guidance_scale=1.0)
    with pytest.raises(ValueError, match="every one of the 2 candidates failed on the final image") as error:
        search(sampler, 0, ScriptedReward([math.nan, math.inf]), num_candidates=2, schedule=())
    assert "\n" not in str(error.value)


# --- a huge budget is refused before anything is allocated -----------------------------------------------------


def test_huge_budget_is_one_line_not_memory_error(model_dir, capsys, tmp_path):
    from noisekit.search.strategies import MAX_CANDIDATES

    err = one_line_error(["search", PROMPT, "--model", model_dir, "--steps", "2", "--budget_nfe", str(10**12),
                          "--output_dir", str(tmp_path / "out"), "--quiet"], capsys, f"more than {MAX_CANDIDATES} candidates")
    assert "`budget` 1000000000000" in err
    one_line_error(["search", PROMPT, "--model", model_dir, "--steps", "2", "--num_candidates", str(10**11),
                    "--output_dir", str(tmp_path / "out2"), "--quiet"], capsys, f"more than {MAX_CANDIDATES} candidates")


# --- NPNet files that are not NPNets -----------------------------------------------------------------------------


def _write_bad_checkpoint(path, kind):
    if kind == "garbage":
        path.write_text("this is not a checkpoint")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(bytes(range(256)) * 16)  # fixed "random" bytes: no header, no pickle


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("kind", ["garbage", "empty", "random"])
def test_unreadable_npnet_file_is_one_line(model_dir, tmp_path, capsys, suffix, kind):
    path = tmp_path / f"npnet{suffix}"
    _write_bad_checkpoint(path, kind)
    one_line_error(["generate", PROMPT, "--model", model_dir, "--steps", "2", "--num_images", "1", "--npnet",
                    str(path), "--output_dir", str(tmp_path / "out"), "--quiet"], capsys,
                   "is not a readable NPNet checkpoint")


def test_safetensors_npnet_with_only_some_keys_is_one_line(model_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet

    torch.manual_seed(0)
    net = NoisePromptNet(sample_size=8, text_embed_dim=32, max_text_tokens=77, swin_kwargs=SMALL_SWIN)
    state = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("unet_embedding.")}
    save_file(state, tmp_path / "partial.safetensors")
    err = one_line_error(["generate", PROMPT, "--model", model_dir, "--steps", "2", "--num_images", "1", "--npnet",
                          str(tmp_path / "partial.safetensors"), "--output_dir", str(tmp_path / "out"), "--quiet"],
                         capsys, "does not hold a whole NPNet")
    assert "weights missing ['unet_embedding." in err


# --- replay checks what it reads before it runs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    assert main(["generate", PROMPT, "--model", model_dir, "--steps", "2", "--num_images", "2", "--output_dir",
                 str(out), "--quiet"]) == 0
    return out


def edited_copy(generated, tmp_path, edit):
    """A copy of the generated results.json (images beside it) with `edit(results)` applied."""
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(generated, folder)
    results = json.loads((folder / "results.json").read_text())
    edit(results)
    (folder / "results.json").write_text(json.dumps(results))
    return str(folder / "results.json")


@pytest.mark.parametrize("edit", [
    lambda r: r["settings"].update(steps=r["settings"]["steps"] + 1),
    lambda r: r["settings"].update(seed=r["settings"]["seed"] + 7),
    lambda r: r["settings"].update(guidance_scale=9.0),
    lambda r: [image.update(prompt="a blue square") for image in r["images"]],
], ids=["steps", "top-level-seed", "guidance", "prompt"])
def test_replay_refuses_edited_settings_before_running(generated, tmp_path, capsys, edit):
    assert "settings_digest" in json.loads((generated / "results.json").read_text())
    one_line_error(["replay", edited_copy(generated, tmp_path, edit), "--quiet"], capsys,
                   "was edited after it was written")
    assert not (tmp_path / "edited" / "replay").exists()  # refused before any image was made


def test_replay_refuses_a_seed_that_disagrees_with_its_recipe(generated, tmp_path, capsys):
    def edit(results):
        results.pop("settings_digest", None)  # a file from before digests: the recipe still disagrees
        results["images"][0]["seed"] += 1
    one_line_error(["replay", edited_copy(generated, tmp_path, edit), "--quiet"], capsys, "but its recipe seed")


@pytest.mark.parametrize("name", ["../../x.png", "/tmp/x.png", "sub/x.png"])
def test_replay_refuses_file_names_outside_its_folder(generated, tmp_path, capsys, name):
    path = edited_copy(generated, tmp_path, lambda r: r["images"][0].update(file=name))
    one_line_error(["replay", path, "--quiet"], capsys, "a file name must be a plain *.png name")
    assert not (tmp_path / "x.png").exists() and not os.path.exists("/tmp/x.png")


def test_replay_never_writes_into_the_results_own_folder(generated, capsys):
    one_line_error(["replay", str(generated / "results.json"), "--output_dir", str(generated), "--quiet"], capsys,
                   "is the results' own folder")


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.pop("settings"), "lacks the settings ['model', 'steps', 'guidance_scale']"),
    (lambda r: r["settings"].update(steps="five"), "records steps 'five'"),
    (lambda r: r["settings"].update(guidance_scale=None), "records guidance_scale None"),
    (lambda r: r["images"][0].pop("recipe"), "lacks its recipe"),
], ids=["no-settings", "steps-text", "guidance-null", "no-recipe"])
def test_replay_of_a_results_file_without_what_it_needs_is_one_line(generated, tmp_path, capsys, edit, message):
    one_line_error(["replay", edited_copy(generated, tmp_path, edit), "--quiet"], capsys, message)


def unwritable_folders(tmp_path):
    """`(a file, a folder that cannot be created, a read-only folder or None when running as root)`."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o500)
    read_only = None if os.access(locked, os.W_OK) else locked  # root writes anywhere
    return a_file, a_file / "sub", read_only


@pytest.mark.parametrize("which,message", [(0, "is a file; give a folder"), (1, "cannot create output folder"),
                                           (2, "is not writable")], ids=["file", "under-a-file", "read-only"])
def test_replay_into_a_file_or_read_only_folder_is_one_line(generated, tmp_path, capsys, which, message):
    folder = unwritable_folders(tmp_path)[which]
    if folder is None:
        pytest.skip("running as root, who can write into a read-only folder")
    one_line_error(["replay", str(generated / "results.json"), "--output_dir", str(folder), "--quiet"], capsys,
                   message)


# --- large searches ----------------------------------------------------------------------------------------------


def test_grid_of_256_candidates_wraps_instead_of_growing_to_32768_px():
    from PIL import Image

    from noisekit.grid import MAX_COLUMNS, labelled_grid

    cells = [[Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(256)], [Image.new("RGB", (8, 8))] * 3]
    labels = [[f"{i}: 0.50" for i in range(len(row))] for row in cells]
    sheet = labelled_grid(cells, ["p0", "p1"], labels)
    assert sheet.width == MAX_COLUMNS * 128 == 2048  # was 256 * 128 = 32,768
    assert sheet.height == 16 + 16 * (128 + 14) + 16 + (128 + 14)  # 16 lines for p0, one for p1
    assert sheet.getpixel((5 * 128 + 3, 16 + 2 * 142 + 3)) == (2 * 16 + 5, 0, 0)  # candidate 37: line 2, cell 5
    assert labelled_grid(cells[1:], ["p1"]).size == (3 * 128, 16 + 128)  # small grids are unchanged


def test_search_decodes_in_pieces_so_memory_does_not_grow_with_candidates(sd1_pipe, monkeypatch):
    from noisekit.search import strategies

    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=2, guidance_scale=1.0)
    sizes = []
    decode = sampler.decode
    monkeypatch.setattr(sampler, "decode", lambda latents, output_type="pil": sizes.append(len(latents)) or
                        decode(latents, output_type))
    result = search(sampler, 0, ScriptedReward([0.1] * 19), num_candidates=19, schedule=())
    assert sizes == [8, 8, 3] and len(result.candidates) == 19 and strategies.DECODE_BATCH == 8


# --- interrupted training ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_npnet_training_resumed_after_a_kill_ends_with_the_same_weights(tmp_path_factory, tmp_path, sd1_pipe):
    """A run stopped at its step-2 checkpoint (as kill -9 leaves it) and resumed equals an uninterrupted run."""
    import sys

    from safetensors.torch import load_file

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
    import collect_npd
    import train_npnet
    from test_npnet_training import collect_args

    from noisekit.shapes.judge import ShapesJudge

    assets = tmp_path_factory.mktemp("assets")
    sd1_pipe.save_pretrained(assets / "pipe")
    torch.manual_seed(0)
    ShapesJudge(width=8).save_pretrained(assets / "judge")
    collect_npd.main(collect_args(assets, tmp_path / "npd", "--margin", "-1"))

    def train(output_dir, steps):
        return train_npnet.main(train_npnet.parse_args([
            "--data_dir", str(tmp_path / "npd"), "--pretrained_model_name_or_path", str(assets / "pipe"),
            "--output_dir", str(output_dir), "--small_swin", "--train_batch_size", "4", "--checkpointing_steps", "2",
            "--validation_steps", "100", "--max_train_steps", str(steps)]))

    train(tmp_path / "whole", 4)
    train(tmp_path / "resumed", 2)  # the checkpoint a kill after step 2 leaves
    train(tmp_path / "resumed", 4)
    whole = load_file(tmp_path / "whole" / "npnet" / "diffusion_pytorch_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "npnet" / "diffusion_pytorch_model.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


# --- the command line: flags, folders, devices, memory -----------------------------------------------------------


@pytest.mark.parametrize("flags,message", [
    (["--guidance_scale", "nan"], "--guidance_scale must be a finite number >= 0, got nan"),
    (["--batch_size", "0"], "--batch_size must be a positive integer, got 0"),
    (["--height", "0"], "--height must be a positive integer, got 0"),
    (["--height", "-16"], "--height must be a positive integer, got -16"),
    (["--width", "-16"], "--width must be a positive integer, got -16"),
], ids=["guidance-nan", "batch-0", "height-0", "height-negative", "width-negative"])
@pytest.mark.parametrize("command", ["generate", "search"])
def test_bad_sampling_flags_are_one_line(model_dir, tmp_path, capsys, command, flags, message):
    extra = ["--num_images", "1"] if command == "generate" else ["--num_candidates", "1"]
    one_line_error([command, PROMPT, "--model", model_dir, "--steps", "2", *extra, *flags, "--output_dir",
                    str(tmp_path / "out"), "--quiet"], capsys, message)
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("which,message", [(0, "is a file; give a folder"), (1, "cannot create output folder"),
                                           (2, "is not writable")], ids=["file", "under-a-file", "read-only"])
@pytest.mark.parametrize("command", ["generate", "search"])
def test_unwritable_output_folder_fails_before_sampling(model_dir, tmp_path, capsys, monkeypatch, command, which,
                                                        message):
    from noisekit.core import sampler

    folder = unwritable_folders(tmp_path)[which]
    if folder is None:
        pytest.skip("running as root, who can write into a read-only folder")
    monkeypatch.setattr(sampler.Sampler, "__init__", lambda *a, **k: pytest.fail("sampled before the check"))
    extra = ["--num_images", "1"] if command == "generate" else ["--num_candidates", "1"]
    one_line_error([command, PROMPT, "--model", model_dir, "--steps", "2", *extra, "--output_dir", str(folder),
                    "--quiet"], capsys, message)


@pytest.mark.parametrize("which,message", [(0, "cannot be written"), (1, "cannot be written"),
                                           (2, "cannot be written")], ids=["file", "under-a-file", "read-only"])
def test_library_build_into_a_file_or_read_only_folder_is_one_line(model_dir, tmp_path, capsys, which, message):
    folder = unwritable_folders(tmp_path)[which]
    if folder is None:
        pytest.skip("running as root, who can write into a read-only folder")
    one_line_error(["library", "build", "--model", model_dir, "--clip", "none", "--num_seeds", "4", "--steps", "2",
                    "--output", str(folder), "--quiet"], capsys, message)


def test_cuda_without_a_gpu_is_one_line(model_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(["generate", PROMPT, "--model", model_dir, "--device", "cuda", "--output_dir", str(tmp_path),
                    "--quiet"], capsys, "needs a CUDA GPU")


def test_a_size_too_large_for_memory_is_one_line(model_dir, tmp_path, capsys):
    # 4 x 500,000 x 500,000 float32 latents: 4 TB, refused by torch's allocator (a RuntimeError, not MemoryError)
    one_line_error(["generate", PROMPT, "--model", model_dir, "--height", "1000000", "--width", "1000000", "--steps",
                    "2", "--num_images", "1", "--output_dir", str(tmp_path / "out"), "--quiet"], capsys,
                   "out of memory (torch tried to allocate")


def test_an_empty_prompt_is_an_unconditional_image(model_dir, tmp_path, capsys):
    assert main(["generate", "", "--model", model_dir, "--steps", "2", "--num_images", "1", "--output_dir",
                 str(tmp_path), "--quiet"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["images"][0]["prompt"] == ""


def test_ctrl_c_during_a_search_keeps_the_finished_prompts(model_dir, tmp_path, capsys, monkeypatch):
    from noisekit import plan

    search_prompt, calls = plan.search_prompt, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return search_prompt(*args, **kwargs)

    monkeypatch.setattr(plan, "search_prompt", interrupted)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green cross\n")
    out = tmp_path / "out"
    assert main(["search", "--prompt_file", str(prompts), "--model", model_dir, "--num_candidates", "2", "--steps",
                 "2", "--output_dir", str(out), "--quiet"]) == 130
    results = json.loads((out / "results.json").read_text())
    assert [p["prompt_index"] for p in results["prompts"]] == [0] and len(results["candidates"]) == 2
    assert all((out / r["file"]).is_file() and r["recipe"] for r in results["candidates"])


def test_search_denoises_in_micro_batches_by_default_and_records_their_size(sd1_pipe):
    from noisekit.core.candidates import from_seeds
    from noisekit.search.strategies import MICRO_BATCH, Flight

    sampler = Sampler(sd1_pipe, [PROMPT], num_inference_steps=2, guidance_scale=1.0)
    flight = Flight(sampler, from_seeds(sampler.shape, range(MICRO_BATCH + 3)))
    assert [len(chunk) for chunk in flight.chunks] == [MICRO_BATCH, 3]  # not one batch of every candidate
    result = search(sampler, 0, ScriptedReward([0.1, 0.2]), num_candidates=2, schedule=())
    assert result.micro_batch_size == MICRO_BATCH and result.summary()["micro_batch_size"] == MICRO_BATCH


def test_a_reward_path_that_is_not_there_names_the_flag(model_dir, capsys, tmp_path):
    err = one_line_error(["search", PROMPT, "--model", model_dir, "--steps", "2", "--num_candidates", "2",
                          "--reward_path", f"shapes-judge={tmp_path / 'missing'}", "--output_dir",
                          str(tmp_path / "out"), "--quiet"], capsys, "--reward_path shapes-judge=")
    assert "cannot load it" in err
