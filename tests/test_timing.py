"""Cost as it is spent: seconds by part (denoiser, decode, reward) per search and per run, the measured NFE-equivalent
of a reward call, and budgets in seconds. Nothing here depends on the machine's speed: the seconds are checked for
presence, sign and sums, and the conversions with an injected `TimedCost`."""

import dataclasses
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

from noisekit import Sampler
from noisekit.cli import main
from noisekit.search.budget import CostModel, PruningSchedule, default_schedule, plan_best_of_n, plan_ttsnap
from noisekit.search.draft import cheap_draft
from noisekit.search.strategies import best_of_n, search
from noisekit.search.timing import FIXED_REWARD_COST, RunShape, TimedCost, measure_cost, plan_by_seconds, search_shape

PROMPT = "a large red circle in the top left on a black background"
PARTS = ("denoiser", "decode", "reward")
INJECTED = TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.025)  # 1 s = 100 NFE; a call = 2.5 NFE


def brightness(images, prompts, **_):
    return torch.tensor([float(np.array(image, dtype=np.float32).mean()) for image in images])


@pytest.fixture(scope="module")
def sampler(sd1_pipe):
    with torch.no_grad():
        return Sampler(sd1_pipe, [PROMPT], num_inference_steps=4, guidance_scale=5.0)


def check_seconds(seconds):
    """The three parts are recorded, non-negative, and add up to at most the whole."""
    assert set(seconds) == {*PARTS, "search"}
    assert all(seconds[part] >= 0 for part in PARTS)
    assert sum(seconds[part] for part in PARTS) <= seconds["search"]


def test_a_search_records_the_seconds_of_each_part(sampler):
    for result in (search(sampler, 0, brightness, num_candidates=5, schedule=None),
                   best_of_n(sampler, 0, brightness, num_candidates=3)):
        check_seconds(result.seconds)
        assert result.seconds["denoiser"] > 0 and result.seconds["decode"] > 0
        summary = result.summary()
        assert all(summary[f"{part}_seconds"] >= 0 for part in (*PARTS, "search"))


def test_measured_cost_times_denoiser_and_reward_calls(sampler):
    nfe = sampler.nfe
    cost = measure_cost(sampler, brightness, num_candidates=4, repeats=2)
    assert sampler.nfe - nfe == 3 * (1 + 2 + 4) * 2  # warm-up + 2 timed first steps of 1, 2 and 4 candidates, CFG
    assert cost.probe["nfe"] == 3 * 7 * 2 and cost.probe["images"] == 3 * 7 and cost.probe["reward_calls"] == 21
    assert cost.probe["sizes"] == [1, 2, 4]
    assert cost.seconds_per_nfe > 0 and cost.seconds_per_reward_call > 0 and cost.name == "measured"
    assert cost.seconds_per_denoiser_call >= 0 and cost.seconds_per_scoring >= 0
    # one step of each size, by its rows (CFG: 2 per candidate); a larger batch never reads as cheaper
    assert [rows for rows, _ in cost.step_seconds] == [2, 4, 8] and [n for n, _ in cost.scoring_seconds] == [1, 2, 4]
    for curve in (cost.step_seconds, cost.scoring_seconds):
        assert all(b[1] >= a[1] for a, b in itertools.pairwise(curve))
    assert cost.final_scoring_seconds == ()  # the previews' rewards judge the final images too
    # a call of a measured size is predicted at its measurement; the affine summary passes through the largest
    step_4 = cost.step_seconds[-1][1]
    assert cost.seconds(RunShape(denoiser_calls=1, nfe=8, batches=((8, 1),))) == pytest.approx(step_4)
    assert cost.seconds(RunShape(denoiser_calls=1, nfe=8)) == pytest.approx(step_4, rel=1e-4)
    assert cost.reward_cost == cost.measured_ratio == round(cost.seconds_per_reward_call / cost.seconds_per_nfe, 3)
    assert TimedCost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost
    fixed = cost.as_fixed()
    assert fixed.reward_cost == FIXED_REWARD_COST and fixed.measured_ratio == cost.measured_ratio


def test_the_final_images_are_timed_apart_from_the_previews(sampler):
    """A preview reward that reads latents decodes nothing; the clean reward that judges the final images decodes
    every one: the probe times both, and a plan charges each scoring its own."""

    def latent_mean(x0, prompts, sigma=None):
        return x0.flatten(1).mean(1)

    latent_mean.scores_latents = latent_mean.noise_aware = True
    cost = measure_cost(sampler, latent_mean, final_rewards=brightness, num_candidates=4, repeats=1)
    assert [n for n, _ in cost.final_scoring_seconds] == [1, 2, 4] and "final_scoring_seconds" in cost.probe
    shape = RunShape(previews=(4,), finals=(4,), scorings=2, reward_calls=8)
    final, preview = cost.final_scoring_seconds[-1][1], cost.scoring_seconds[-1][1]
    assert cost.seconds(shape) == pytest.approx(final + preview)
    assert TimedCost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost


def test_the_final_images_calls_are_charged_their_own_ratio(sampler):
    """Previews by a cheap reward, final images by an expensive one: an NFE budget charges each call its own
    measured ratio, so the planned run and the recorded cost both hold the final images' price."""
    cost = TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.002, seconds_per_final_call=0.03)
    assert (cost.reward_cost, cost.final_reward_cost) == (0.2, 3.0)
    assert cost.as_fixed(1).final_reward_cost == 1  # the fixed constant charges both alike
    assert TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.002).final_reward_cost == 0.2  # not timed apart
    assert TimedCost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost
    old = cost.to_dict()
    del old["seconds_per_final_call"], old["final_reward_cost"]
    assert TimedCost.from_dict(old).final_reward_cost == 0.2  # a record from before plans as it did

    model = CostModel(4, 2, 0.2, final_reward_cost=3.0)
    steps, keep = (1,), (0.5,)
    nfe, _, counts = model.ttsnap(8, steps, keep)
    assert model.realised(8, steps, keep) == pytest.approx(nfe + 0.2 * counts[0] + 3.0 * counts[1])
    assert model.realised(5) == pytest.approx(5 * (8 + 3.0)) and plan_best_of_n(55, model) == 5
    assert plan_ttsnap(math.ceil(model.realised(8, steps, keep)), model, steps, keep) == 8
    expected = plan_ttsnap(100, model, steps, keep, "expected")
    assert expected == int(100 // (2 * 2 + 0.2 + 0.5 * (2 * 2 + 3.0)))
    with pytest.raises(ValueError, match="`final_calls` must lie in"):
        model.total(10, 2, 3)

    # 40 NFE-equivalents: 5 candidates (20 NFE + 5 previews x 0.2 to step 1, then 2 survivors x (8 NFE + 3.0)) fit,
    # 6 do not (46.2); charging the final images 0.2 as the previews, 6 would seem to (37.8)
    schedule = PruningSchedule((1,), (0.5,))
    result = search(sampler, 0, brightness, budget=40, cost=cost, schedule=schedule)
    finals = result.counts[-1]
    assert result.reward_cost == 0.2 and result.final_reward_cost == 3.0 and result.counts == (5, 2)
    assert result.cost == pytest.approx(result.nfe + 0.2 * (result.reward_calls - finals) + 3.0 * finals) == 35
    assert result.summary()["final_reward_cost"] == 3.0
    assert plan_ttsnap(40, CostModel(4, 2, 0.2), (1,), (0.5,)) == 6
    bon = best_of_n(sampler, 0, brightness, budget=45, cost=cost)  # every call judges a final image
    assert bon.reward_cost == 3.0 and len(bon.candidates) == 45 // (4 * 2 + 3)
    # a cost measured without curves predicts the final images' calls at their own seconds too
    shape = RunShape(scorings=2, reward_calls=7, previews=(5,), finals=(2,))
    assert cost.seconds(shape) == pytest.approx(5 * 0.002 + 2 * 0.03)


def test_a_plan_makes_the_candidates_its_search_runs(sampler, monkeypatch):
    """The plan's search stage charges the final images their own ratio too: it prepares (noise stages included)
    exactly the candidates the search then runs."""
    from noisekit import plan

    made, prepare = [], plan.prepare
    monkeypatch.setattr(plan, "prepare", lambda *args: made.append(len(args[-1])) or prepare(*args))
    cost = TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.002, seconds_per_final_call=0.03)
    stage = {"rewards": brightness, "strategy": "ttsnap", "budget": 40, "schedule": PruningSchedule((1,), (0.5,)),
             "cost": cost}
    result = plan.search_prompt(sampler, plan.NoisePlan(search=stage), 0, 0)
    assert made == [5] and result.counts == (5, 2) and result.cost <= 40


def test_the_cost_line_names_each_ratio():
    from noisekit.cli.search import describe_cost

    cost = TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.002, seconds_per_final_call=0.03)
    settings = {"reward_cost": 0.2, "final_reward_cost": 3.0, "budget_seconds": None, "cost_model": cost.to_dict()}
    line = describe_cost(settings)
    assert "a preview's reward call = 0.2, a final image's = 3.0 NFE-equivalents" in line
    assert "2 ms per preview reward call, 30 ms per final decode + reward call" in line
    del settings["final_reward_cost"]  # a run recorded before charged one ratio
    assert describe_cost(settings).startswith("cost: a reward call = 0.2 NFE-equivalents (measured; timed here")


def test_a_cost_predicts_calls_between_the_measured_sizes():
    cost = TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.02, step_seconds=((2, 0.1), (8, 0.4)),
                     scoring_seconds=((1, 0.05), (4, 0.08)))
    assert cost.seconds(RunShape(batches=((4, 3),), nfe=12)) == pytest.approx(3 * 0.2)  # between the two
    assert cost.seconds(RunShape(batches=((16, 1),), nfe=16)) == pytest.approx(0.8)  # the last slope beyond
    assert cost.seconds(RunShape(batches=((8, 1),), nfe=8 + 5)) == pytest.approx(0.4 + 5 * 0.01)  # stage NFE
    assert cost.seconds(RunShape(previews=(2,), finals=(4,))) == pytest.approx(0.06 + 0.08)  # no final curve
    # the probe's headroom stays free: n candidates take 4 calls x 0.05 s x 2n rows = 0.4 n s; 2.0 s buys 5, and
    # with 20 % headroom 4, as 1.6 s does
    shape = lambda n: RunShape(batches=((2 * n, 4),), nfe=8 * n)  # noqa: E731
    noisy = dataclasses.replace(cost, headroom=0.2)
    assert plan_by_seconds(cost, 2.0, shape, limit=100) == 5
    assert plan_by_seconds(noisy, 2.0, shape, limit=100) == plan_by_seconds(cost, 1.6, shape, limit=100) == 4
    assert TimedCost.from_dict(json.loads(json.dumps(noisy.to_dict()))) == noisy
    with pytest.raises(ValueError, match="predicted to take .*, and 20% stays free for timings that drift"):
        plan_by_seconds(noisy, 0.01, shape, limit=100)
    with pytest.raises(ValueError, match="`headroom` must lie in"):
        dataclasses.replace(cost, headroom=0.7)
    with pytest.raises(ValueError, match="`step_seconds` must be .* sizes >= 1 increasing"):
        TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.02, step_seconds=((8, 0.1), (2, 0.4)))


def test_budget_seconds_plans_through_an_injected_cost(sampler):
    assert INJECTED.reward_cost == 2.5 and INJECTED.budget_nfe(1.0) == 100 and INJECTED.budget_nfe(0.999) == 99
    result = search(sampler, 0, brightness, budget_seconds=1.5, cost=INJECTED, schedule=None)  # TTSnap's default
    steps = result.steps
    model = CostModel(sampler.num_steps, sampler.nfe_per_step, 2.5)
    assert result.budget == 150 and result.budget_seconds == 1.5 and result.reward_cost == 2.5
    assert len(result.candidates) == plan_ttsnap(150, model, steps, default_schedule(1, 4).keep)
    assert result.cost == result.nfe + 2.5 * result.reward_calls <= 150
    check_seconds(result.seconds)
    bon = best_of_n(sampler, 0, brightness, budget_seconds=1.5, cost=INJECTED)
    assert len(bon.candidates) == plan_best_of_n(150, model) == 150 // (4 * 2 + 2.5)
    assert bon.cost <= 150 and bon.summary()["budget_seconds"] == 1.5


def test_cheap_draft_spends_a_seconds_budget(sd1_pipe, sampler):
    with torch.no_grad():
        drafts = Sampler(sd1_pipe, [PROMPT], num_inference_steps=2, guidance_scale=5.0)
    result = cheap_draft(drafts, sampler, 0, brightness, budget_seconds=1.0, cost=INJECTED, finish=2)
    # 100 NFE-eq: 2 finished candidates cost 2 x (8 + 2.5); each draft 4 + 2.5 -> (100 - 21) // 6.5 = 12 drafts
    assert len(result.drafts.candidates) == 12 and len(result.final.candidates) == 2
    assert result.cost <= 100 and result.budget == 100 and result.budget_seconds == 1.0
    assert set(result.seconds) == {*PARTS, "search"} and all(v >= 0 for v in result.seconds.values())


def totals(shape):
    return shape.denoiser_calls, shape.nfe, shape.scorings, shape.reward_calls


def test_run_shapes_count_calls_rows_and_scorings():
    bon = search_shape(5, (), (), num_steps=4, nfe_per_step=2, num_rewards=1, micro_batch_size=32)
    assert bon == RunShape(denoiser_calls=4, nfe=40, scorings=1, reward_calls=5, batches=((10, 4),), finals=(5,))
    # survivors 8 -> 4 -> 2 at steps 0 and 1; passes 8 x 1 + 4 x 1 + 2 x 2
    pruned = dict(num_steps=4, nfe_per_step=2, num_rewards=2)
    shape = search_shape(8, (0, 1), (0.5, 0.5), micro_batch_size=32, **pruned)
    assert totals(shape) == (4, 32, 3, 28) and shape.batches == ((4, 2), (8, 1), (16, 1))
    assert shape.previews == (8, 4) and shape.finals == (2,)
    # in micro-batches of 2 the flight starts 4 calls a step; a stage of 2 survivors runs at most 2
    shape = search_shape(8, (0, 1), (0.5, 0.5), micro_batch_size=2, **pruned)
    assert totals(shape) == (4 + 4 + 2 * 2, 32, 3, 28) and shape.batches == ((2, 8), (4, 4))
    # 5 candidates in micro-batches of 2 start as 2 + 2 + 1; 3 survivors run one in each of the 3 for 3 steps
    assert search_shape(5, (0,), (0.6,), micro_batch_size=2, **pruned).batches == ((2, 1 + 3 * 3), (4, 2))
    assert search_shape(3, (), (), num_steps=4, nfe_per_step=2, num_rewards=1, micro_batch_size=32,
                        stage_nfe=6).nfe == 24 + 18
    assert totals(bon + bon) == (8, 80, 2, 10) and (bon + bon).finals == (5, 5)


def test_a_fixed_part_per_call_buys_fewer_candidates_than_proportional_seconds(sampler):
    overhead = TimedCost(seconds_per_nfe=0.01, seconds_per_reward_call=0.025, seconds_per_denoiser_call=0.02)
    shape = lambda n: search_shape(n, (), (), num_steps=4, nfe_per_step=2, num_rewards=1, micro_batch_size=32)  # noqa
    # n candidates: 4 calls x 0.02 + 8n x 0.01 + n x 0.025 <= 1.5 -> n <= 13.5; proportional: 150 // 10.5 = 14
    assert plan_by_seconds(overhead, 1.5, shape, limit=100) == 13 and plan_by_seconds(INJECTED, 1.5, shape, limit=100) == 14
    assert overhead.seconds(shape(13)) <= 1.5 < overhead.seconds(shape(14))
    assert plan_by_seconds(INJECTED, 1e6, shape, limit=100) == 101  # "more than the limit": the caller refuses it
    result = best_of_n(sampler, 0, brightness, budget_seconds=1.5, cost=overhead)
    assert len(result.candidates) == 13 and result.budget == 150
    assert TimedCost.from_dict(json.loads(json.dumps(overhead.to_dict()))) == overhead
    newer = ("seconds_per_denoiser_call", "seconds_per_scoring", "step_seconds", "scoring_seconds",
             "final_scoring_seconds", "headroom")
    old = {k: v for k, v in INJECTED.to_dict().items() if k not in newer}
    assert TimedCost.from_dict(old) == INJECTED  # a record from before the fixed parts plans as it did


@pytest.mark.parametrize("kwargs,message", [
    ({"budget_seconds": -1.0, "cost": INJECTED}, "`budget_seconds` must be a finite number of seconds > 0, got -1.0"),
    ({"budget_seconds": 0, "cost": INJECTED}, "`budget_seconds` must be a finite number of seconds > 0, got 0"),
    ({"budget_seconds": math.inf, "cost": INJECTED}, "`budget_seconds` must be a finite number of seconds > 0"),
    ({"budget_seconds": 1.0, "num_candidates": 3}, "not `num_candidates` and `budget_seconds`"),
    ({"budget_seconds": 1.0, "budget": 90}, "not `budget` and `budget_seconds`"),
    ({"num_candidates": 2, "reward_cost": 1, "cost": INJECTED}, "give `reward_cost` .* or `cost`"),
    ({"budget_seconds": 0.05, "cost": INJECTED}, "`budget_seconds` 0.05 buys 5 NFE-equivalents at 0.01 s per NFE.*"
                                                  "smallest run .* predicted to take"),
    ({"budget_seconds": 1e9, "cost": INJECTED}, "`budget_seconds` 1e\\+09 asks for more than 16384 candidates"),
])
def test_seconds_budget_errors_name_what_is_allowed(sampler, kwargs, message):
    with pytest.raises(ValueError, match=message):
        search(sampler, 0, brightness, **kwargs)


# --- the command line ---------------------------------------------------------------------------------------------


def run_search(model_dir, judge_dir, out, *extra):
    return main(["search", PROMPT, "--model", model_dir, "--reward_path", f"shapes-judge={judge_dir}", "--steps", "4",
                 "--output_dir", str(out), "--quiet", *extra])


def test_cli_budget_seconds_records_the_plan_and_the_seconds(tmp_path, model_dir, judge_dir, capsys):
    out = tmp_path / "out"
    # a measurement already in the run folder is the run's (as on resume): the plan follows from it alone
    os.makedirs(out / ".noisekit")
    (out / ".noisekit" / "cost.json").write_text(json.dumps(INJECTED.to_dict()))
    assert run_search(model_dir, judge_dir, out, "--strategy", "ttsnap", "--schedule", "0,1", "--keep", "0.5,0.5",
                      "--budget_seconds", "1.2") == 0
    printed = capsys.readouterr().out
    assert "1.2 s per prompt, 120 NFE-equivalents at the seconds per NFE" in printed and "decode" in printed
    results = json.loads((out / "results.json").read_text())
    settings, summary = results["settings"], results["prompts"][0]
    assert settings["budget_seconds"] == 1.2 and settings["budget_nfe"] == 120 and settings["reward_cost"] == 2.5
    assert settings["cost_model"]["name"] == "measured" and settings["cost_model"]["seconds_per_nfe"] == 0.01
    model = CostModel(4, 2, 2.5)
    assert len(results["candidates"]) == plan_ttsnap(120, model, (0, 1), (0.5, 0.5))
    assert summary["budget"] == 120 and summary["budget_seconds"] == 1.2 and summary["cost"] <= 120
    parts = [summary[f"{part}_seconds"] for part in PARTS]
    assert all(p >= 0 for p in parts) and sum(parts) <= summary["search_seconds"] + 1e-3
    assert summary["search_seconds"] <= summary["seconds"] + 1e-3
    throughput = results["run"]["throughput"]
    totals = [throughput[f"{part}_seconds"] for part in PARTS]
    assert all(t >= 0 for t in totals) and sum(totals) <= throughput["seconds"] + 1e-3


def test_cli_measures_the_reward_cost_unless_fixed(tmp_path, model_dir, judge_dir):
    measured, fixed = tmp_path / "measured", tmp_path / "fixed"
    assert run_search(model_dir, judge_dir, measured, "--num_candidates", "2") == 0
    settings = json.loads((measured / "results.json").read_text())["settings"]
    model = settings["cost_model"]
    assert model["name"] == "measured" and model["probe"]["nfe"] > 0 and model["seconds_per_nfe"] > 0
    assert settings["reward_cost"] == model["measured_ratio"] >= 0 and settings["budget_nfe"] is None
    assert (measured / ".noisekit" / "cost.json").is_file()
    assert run_search(model_dir, judge_dir, fixed, "--num_candidates", "2", "--cost_model", "fixed") == 0
    results = json.loads((fixed / "results.json").read_text())
    assert results["settings"]["cost_model"] == {"name": "fixed", "reward_cost": 1}
    assert not (fixed / ".noisekit" / "cost.json").exists()  # nothing timed: the accounting of earlier runs
    summary = results["prompts"][0]
    assert summary["cost"] == summary["nfe"] + summary["reward_calls"] and summary["reward_cost"] == 1


def test_a_run_that_fails_before_any_prompt_gives_the_folder_back(tmp_path, model_dir, judge_dir, capsys):
    """A budget too small fails after the cost was measured into the folder: the corrected command starts there."""
    out = tmp_path / "run"
    assert run_search(model_dir, judge_dir, out, "--budget_nfe", "5") == 2
    assert "`budget` must be an integer of at least" in capsys.readouterr().err
    assert not (out / ".noisekit").exists()
    assert run_search(model_dir, judge_dir, out, "--budget_nfe", "80") == 0  # room for any measured ratio
    assert json.loads((out / "results.json").read_text())["run"]["complete"]


@pytest.mark.parametrize("extra,message", [
    (("--reward", "shapes-judge-latent"), "--reward shapes-judge-latent scores x0 latents, not final images; give it "
                                          "as --preview_reward"),
    (("--strategy", "ttsnap", "--preview_reward", "shapes-judge"), "--preview_reward shapes-judge scores clean images "
                                                                   "only; leave --preview_reward out"),
])
def test_cli_refuses_a_reward_of_the_wrong_kind_before_it_claims_the_folder(tmp_path, model_dir, judge_dir, capsys,
                                                                            extra, message):
    out = tmp_path / "run"
    assert run_search(model_dir, judge_dir, out, "--num_candidates", "2", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (out / ".noisekit").exists()
