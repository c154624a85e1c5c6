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
from noisekit.search.strategies import MAX_CANDIDATES, best_of_n, search

PROMPT = "a red circle on a black background"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sd1_pipe):
    folder = tmp_path_factory.mktemp("model")
    sd1_pipe.save_pretrained(folder)
    return str(folder)


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
    err = one_line_error(["search", PROMPT, "--model", model_dir, "--steps", "2", "--budget_nfe", str(10**12),
                          "--output_dir", str(tmp_path / "out"), "--quiet"], capsys, f"at most {MAX_CANDIDATES}")
    assert "`budget` 1000000000000" in err
    one_line_error(["search", PROMPT, "--model", model_dir, "--steps", "2", "--num_candidates", str(10**11),
                    "--output_dir", str(tmp_path / "out"), "--quiet"], capsys, f"at most {MAX_CANDIDATES}")


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
