"""Seed search: exact budgets, TTSnap pruning, anytime best-of-N, the calibrator, Omega, noise-aware rewards, CLI."""

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import with_scheduler
from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

from noisekit import Sampler, sample, seed_generators, seed_noise
from noisekit.search.budget import (DEFAULT_MULTI_SCHEDULE, DEFAULT_SCHEDULE, CostModel, PruningSchedule, default_schedule,
                             plan_best_of_n, plan_ttsnap, survivor_counts, ttsnap_candidate_cost)
from noisekit.search.calibrate import (TrajectoryTable, bon_equivalent, evaluate, expected_best_of_n, grid_search,
                                kendall_tau, omega, record_table, simpson, simulate)
from noisekit.rewards import combine_scores, load_reward
from noisekit.search.strategies import best_of_n, rank_sum, search, step_sigmas, top_positions

PROMPTS = ["a large red circle in the top left on a black background", "a blue square on a white background"]


@pytest.fixture(scope="module")
def judge_dirs(tmp_path_factory):
    from noisekit.shapes.judge import ShapesJudge

    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(f"judge{seed}")
        ShapesJudge(width=8).save_pretrained(folder)
        folders.append(str(folder))
    return folders


@pytest.fixture(scope="module")
def judge(judge_dirs):
    return load_reward("shapes-judge", path=judge_dirs[0])


def make_sampler(pipe, guidance_scale=5.0, steps=4, prompts=PROMPTS):
    return Sampler(pipe, prompts, num_inference_steps=steps, guidance_scale=guidance_scale)


# --- cost formula and planning ---------------------------------------------------------------------------------


def test_cost_formula_counts_s_plus_1_and_keeps_the_official_one():
    steps, keep = DEFAULT_SCHEDULE.points, DEFAULT_SCHEDULE.keep
    official = ttsnap_candidate_cost(steps, keep, 20, 9.9, 1.2, "official")
    corrected = ttsnap_candidate_cost(steps, keep, 20, 9.9, 1.2, "expected")
    assert official == pytest.approx(51.864) and corrected == pytest.approx(official + 9.9)
    cost = CostModel(num_steps=20, nfe_per_step=1, reward_cost=0)
    assert plan_ttsnap(2000, cost, steps, keep, "official", step_cost=9.9, call_cost=1.2) == 38
    assert plan_ttsnap(2000, cost, steps, keep, "expected", step_cost=9.9, call_cost=1.2) == 32
    # realised, rounded: 38 -> 15 -> 6 -> 3 costs 38*3 + 15*4 + 6*5 + 3*8 NFEs and 38 + 15 + 6 + 3 reward calls
    nfe, calls, counts = cost.ttsnap(38, steps, keep)
    assert (nfe, calls, counts) == (228, 62, [38, 15, 6, 3])
    assert 228 * 9.9 + 62 * 1.2 > 2000  # the official plan overspends; the exact one cannot
    assert plan_ttsnap(228, cost, steps, keep) == 38 and plan_ttsnap(227, cost, steps, keep) == 37
    # a schedule that keeps everyone costs exactly best-of-N: reaching step s took s + 1 evaluations
    full = CostModel(num_steps=20, nfe_per_step=2, reward_cost=3)
    nfe, calls, _ = full.ttsnap(5, (6,), (1.0,))
    assert nfe == full.best_of_n(5)[0] and calls == 2 * full.best_of_n(5)[1]
    assert DEFAULT_MULTI_SCHEDULE.points == (4, 6, 11) and DEFAULT_MULTI_SCHEDULE.keep == (0.4, 0.5, 0.6)
    assert survivor_counts(10, (0.04, 0.5)) == [10, 1, 1]  # never below one survivor


@pytest.mark.parametrize("nfe_per_step,reward_cost", [(1, 0), (2, 1), (2, 5)])
def test_exact_plans_are_the_largest_that_fit(nfe_per_step, reward_cost):
    cost = CostModel(num_steps=7, nfe_per_step=nfe_per_step, reward_cost=reward_cost, num_rewards=2)
    steps, keep = (1, 3), (0.5, 0.4)
    total = lambda n: cost.total(*cost.ttsnap(n, steps, keep)[:2])  # noqa: E731
    for budget in range(total(1), total(1) + 600, 7):
        n0 = plan_ttsnap(budget, cost, steps, keep)
        assert total(n0) <= budget < total(n0 + 1)
        n = plan_best_of_n(budget, cost)
        assert cost.total(*cost.best_of_n(n)) <= budget < cost.total(*cost.best_of_n(n + 1))


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, HeunDiscreteScheduler], ids=lambda c: c.__name__)
@pytest.mark.parametrize("guidance_scale", [1.0, 5.0])
def test_realised_cost_never_exceeds_the_budget(sd1_pipe, judge, scheduler_class, guidance_scale):
    pipe = with_scheduler(sd1_pipe, scheduler_class)
    sampler = make_sampler(pipe, guidance_scale, steps=3)
    per_step = 2 if guidance_scale > 1 else 1
    assert sampler.num_steps == (5 if scheduler_class is HeunDiscreteScheduler else 3)
    schedule = PruningSchedule((0, 1), (0.5, 0.5))
    cost = CostModel.for_sampler(sampler)
    smallest = cost.total(*cost.ttsnap(1, (0, 1), schedule.keep)[:2])
    for budget in (smallest, smallest + 5, smallest + 23, 4 * smallest + 1):
        for chosen in (schedule, ()):
            before = sampler.nfe
            if chosen == () and budget < cost.total(*cost.best_of_n(1)):
                continue
            result = search(sampler, 0, judge, seeds=3, budget=budget, schedule=chosen, micro_batch_size=3)
            assert result.cost <= budget and result.nfe == sampler.nfe - before
            assert result.nfe == sum(c.nfe for c in result.candidates)
            assert result.reward_calls == sum(c.reward_calls for c in result.candidates)
            n = len(result.candidates)
            predicted = cost.ttsnap(n, (0, 1), schedule.keep)[:2] if chosen else cost.best_of_n(n)
            assert (result.nfe, result.reward_calls) == predicted
            for candidate in result.candidates:  # s + 1 evaluations to reach step s
                passes = sampler.num_steps if candidate.pruned_at is None else candidate.pruned_at + 1
                assert candidate.nfe == passes * per_step


# --- pruning ---------------------------------------------------------------------------------------------------


def test_pruning_keeps_the_top_and_survivors_equal_their_lone_runs(sd2_pipe, judge):
    pipe = with_scheduler(sd2_pipe, EulerDiscreteScheduler)
    sampler = make_sampler(pipe)
    result = search(sampler, 0, {"judge": judge}, seeds=10, num_candidates=7,
                    schedule=PruningSchedule((0, 2), (0.5, 0.5)), micro_batch_size=3)
    assert result.counts == (7, 4, 2) and result.steps == (0, 2)
    alive = result.candidates
    for stage in range(2):
        scores = torch.tensor([c.stages[stage]["scores"]["judge"] for c in alive])
        top = set(top_positions(scores, result.counts[stage + 1]).tolist())
        assert [c.stages[stage]["kept"] for c in alive] == [i in top for i in range(len(alive))]
        assert all(c.stages[stage]["sigma"] == step_sigmas(sampler)[result.steps[stage]] for c in alive)
        alive = [c for i, c in enumerate(alive) if i in top]
    survivors = [c for c in result.candidates if c.pruned_at is None]
    assert survivors == alive and result.best in survivors and sum(c.best for c in result.candidates) == 1
    assert result.best.final_scores["judge"] == max(c.final_scores["judge"] for c in survivors)
    seeds = [c.seed for c in survivors]
    noise = seed_noise(pipe, seeds)
    alone = sample(pipe, PROMPTS[0], noise, num_inference_steps=4, guidance_scale=5.0,
                   generator=seed_generators(seeds, noise.shape[1:]))
    for candidate, image in zip(survivors, alone.images):
        diff = np.abs(np.asarray(candidate.image, dtype=int) - np.asarray(image, dtype=int)).max()
        assert diff <= 1
        assert candidate.recipe["seed"] == candidate.seed and candidate.recipe["checksum"]


def test_sigma_pruning_points_resolve_on_any_schedule(sd1_pipe):
    for steps in (4, 8):
        sampler = make_sampler(sd1_pipe, steps=steps)
        sigmas = step_sigmas(sampler)
        schedule = PruningSchedule((sigmas[1] + 1e-6, sigmas[2]), (0.5, 0.5), unit="sigma")
        assert schedule.steps(steps, sigmas) == (1, 2)
    assert default_schedule(1, 20) == DEFAULT_SCHEDULE
    assert default_schedule(1, 40).points == (5, 13, 23)


def test_anytime_best_of_n_reuses_the_smaller_run(sd1_pipe, judge):
    sampler = make_sampler(sd1_pipe)
    small = best_of_n(sampler, 1, judge, seeds=0, num_candidates=3)
    before = sampler.nfe
    large = best_of_n(sampler, 1, judge, seeds=0, num_candidates=6, previous=small)
    assert sampler.nfe - before == 3 * 4 * 2 == large.nfe and large.reward_calls == 3
    assert large.candidates[:3] == small.candidates[:3]
    fresh = best_of_n(make_sampler(sd1_pipe), 1, judge, seeds=0, num_candidates=6)
    assert fresh.best.seed == large.best.seed and fresh.cost == small.cost + large.cost
    scores = [c.final_scores["reward"] for c in fresh.candidates]
    assert fresh.best.seed == int(np.argmax(scores))
    budget = best_of_n(sampler, 1, judge, seeds=0, budget=3 * 9 + 8, previous=large)
    assert len(budget.candidates) == 3 and budget.nfe == 0


def test_several_rewards_combine_by_rank_sum(sd1_pipe, judge_dirs):
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([400.0, 100.0, 300.0, 200.0])  # a larger scale must not dominate
    combined = rank_sum({"a": a, "b": b})
    assert combined.argsort().tolist() == combine_scores({"a": a, "b": b}).double().argsort().tolist()
    assert top_positions(combined, 1).tolist() == [2]  # ranks 2 + 2 beat 0 + 3 and 3 + 1
    rewards = {name: load_reward("shapes-judge", path=path) for name, path in zip("ab", judge_dirs)}
    result = search(make_sampler(sd1_pipe), 0, rewards, seeds=0, num_candidates=5, schedule=())
    finals = {n: torch.tensor([c.final_scores[n] for c in result.candidates]) for n in rewards}
    assert result.best is result.candidates[int(top_positions(rank_sum(finals), 1)[0])]
    assert result.reward_calls == 5 * 2


# --- calibrator and Omega ---------------------------------------------------------------------------------------


def test_calibrator_reproduces_an_online_run(sd1_pipe, judge, tmp_path):
    sampler = make_sampler(sd1_pipe)
    table = record_table(sampler, {"judge": judge}, seeds=range(20, 28), micro_batch_size=5)
    assert table.scores["judge"].shape == (2, 8, 4) and table.num_steps == 4
    table.save(tmp_path / "table.safetensors")
    loaded = TrajectoryTable.load(tmp_path / "table.safetensors")
    assert loaded.prompts == PROMPTS and torch.equal(loaded.scores["judge"], table.scores["judge"])
    schedule = PruningSchedule((0, 1), (0.5, 0.5))
    best, kept = simulate(loaded, range(8), (0, 1), schedule.keep)
    for p in range(2):
        online = search(sampler, p, {"judge": judge}, seeds=20, num_candidates=8, schedule=schedule)
        for stage in range(2):
            seeds = [c.seed for c in online.candidates if len(c.stages) > stage and c.stages[stage]["kept"]]
            assert seeds == [20 + i for i in kept[stage][p].tolist()]
        assert online.best.seed == 20 + int(best[p])
        assert online.best.final_scores["judge"] == pytest.approx(float(loaded.scores["judge"][p, best[p], -1]), abs=1e-4)


def hand_table(prompts=6, pool=12, steps=5, seed=0):
    """Previews that predict the final reward perfectly from step 1 on: pruning can only help."""
    generator = torch.Generator().manual_seed(seed)
    final = torch.rand(prompts, pool, generator=generator)
    scores = final[:, :, None].repeat(1, 1, steps)
    scores[:, :, 0] = torch.rand(prompts, pool, generator=generator)  # step 0 is noise
    return TrajectoryTable([f"p{i}" for i in range(prompts)], list(range(pool)), [4.0, 3.0, 2.0, 1.0, 0.5], 1,
                           {"r": scores})


def test_omega_simpson_and_best_of_n_equivalents():
    budgets = [1, 2, 3, 4, 5]
    assert simpson([0, 1, 2, 3, 4], budgets) == pytest.approx(8.0)
    assert omega(budgets, [0, 2, 3, 4, 5], [0, 1, 2, 3, 4]) == pytest.approx(100 * (35 / 3 - 8) / 8)
    assert omega(budgets, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]) == 0.0
    uneven = [0.0, 1.0, 3.0, 4.0]
    assert simpson([x**2 for x in uneven], uneven) == pytest.approx(64 / 3)  # exact on parabolas, odd intervals too
    scipy = pytest.importorskip("scipy.integrate")
    y = [0.3, 1.2, 0.7, 2.2, 1.9, 2.5]
    assert simpson(y, [1, 2, 4, 5, 7, 8]) == pytest.approx(scipy.simpson(y, x=[1, 2, 4, 5, 7, 8]))
    with pytest.raises(ValueError, match="Omega is undefined"):
        omega(budgets, [1] * 5, [1] * 5)


def test_offline_evaluation_grid_search_and_equivalents():
    table = hand_table()
    final = table.scores["r"][:, :, -1]
    import itertools

    brute = np.mean([[max(row[list(s)]) for s in itertools.combinations(range(12), 3)] for row in final.numpy()])
    assert expected_best_of_n(final, 3) == pytest.approx(brute)
    assert bon_equivalent(table, expected_best_of_n(final, 4)) == pytest.approx(4.0)
    assert kendall_tau(final, final) == pytest.approx(1.0) and kendall_tau(-final, final) == pytest.approx(-1.0)
    budgets = [10, 15, 20, 25, 30]
    schedule = PruningSchedule((1,), (0.25,))
    ttsnap_curve, counts = evaluate(table, budgets, schedule, reward_cost=0, iterations=10)
    bon_curve, bon_counts = evaluate(table, budgets, None, reward_cost=0, iterations=10)
    assert bon_counts == [2, 3, 4, 5, 6] and all(n > b for n, b in zip(counts, bon_counts))
    assert omega(budgets, ttsnap_curve["r"], bon_curve["r"]) > 0
    split = grid_search(table.split(range(3)), table.split(range(3, 6)), budget=20, reward_cost=0,
                        schedules=[schedule, PruningSchedule((0,), (0.25,))], iterations=5, top_k=2)
    assert split[0]["schedule"]["points"] == [1] and split[0]["calibration"] >= split[1]["calibration"]
    with pytest.raises(ValueError, match="the table holds 12"):
        evaluate(table, [100], None, reward_cost=0)


# --- noise-aware rewards ---------------------------------------------------------------------------------------


def test_noise_aware_reward_round_trip_and_stage_choice(judge, judge_dirs, tmp_path):
    from noisekit.rewards import list_rewards
    from noisekit.rewards.noise_aware import DistilledReward, DistilledRewardModel, load_model

    assert {"noise-aware", "shapes-judge-noise-aware"} <= set(list_rewards())
    model = DistilledRewardModel("shapes-judge", {"path": judge_dirs[0]}, "sigma", adapter_width=8)
    images = torch.rand(3, 3, 16, 16)
    start = DistilledReward([model])(images, PROMPTS[0], sigma=[0.5, 2.0, 9.0])
    torch.testing.assert_close(start, judge(images, PROMPTS[0]))  # zero-initialised adapter: starts as the teacher
    with torch.no_grad():
        model.adapter.conv_out.bias.fill_(0.1)
    model.save_pretrained(tmp_path / "sigma")
    reloaded = load_reward("noise-aware", path=str(tmp_path / "sigma"))
    torch.testing.assert_close(reloaded(images, PROMPTS[0], sigma=2.0), DistilledReward([model])(images, PROMPTS[0],
                                                                                                   sigma=2.0))
    stages = DistilledReward([load_model(tmp_path / "sigma")] * 2, stage_sigmas=[1.0, 8.0])
    assert [stages.stage_of(s) for s in (0.0, 1.5, 3.9, 100.0)] == [0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="train one with"):
        load_reward("noise-aware", path=str(tmp_path / "missing"))


# --- CLI -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sd1_pipe):
    folder = tmp_path_factory.mktemp("model")
    sd1_pipe.save_pretrained(folder)
    return str(folder)


def parse(argv):
    from noisekit.cli.search import register as add_search

    parser = argparse.ArgumentParser(prog="noisekit")
    add_search(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_ttsnap_writes_best_grid_and_results(tmp_path, model_dir, judge_dirs):
    out = tmp_path / "out"
    args = parse(["search", PROMPTS[0], "--model", model_dir, "--reward_path", f"shapes-judge={judge_dirs[0]}",
                  "--strategy", "ttsnap", "--schedule", "0,1", "--keep", "0.5,0.5", "--budget_nfe", "60",
                  "--steps", "4", "--seed", "5", "--output_dir", str(out), "--quiet"])
    args.run(args)
    results = json.loads((out / "results.json").read_text())
    assert (out / "best.png").is_file() and (out / "grid.png").is_file()
    summary, records = results["prompts"][0], results["candidates"]
    assert summary["cost"] <= 60 and summary["strategy"] == "ttsnap" and summary["pruning_steps"] == [0, 1]
    assert [r["seed"] for r in records] == list(range(5, 5 + len(records)))
    assert sum(r["best"] for r in records) == 1 and sum(r["nfe"] for r in records) == summary["nfe"]
    for record in records:
        assert (out / record["file"]).is_file() and record["recipe"]["seed"] == record["seed"]
        assert record["stages"][0]["scores"]["shapes-judge"] >= 0 and record["seconds"] > 0
        assert (record["final_scores"] is None) == (record["pruned_at"] is not None)


def test_cli_best_of_n_prompt_file_json(tmp_path, model_dir, judge_dirs, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    args = parse(["search", "--prompt_file", str(prompts), "--model", model_dir, "--reward", "shapes-judge",
                  "--reward_path", f"shapes-judge={judge_dirs[0]}", "--num_candidates", "3", "--steps", "2",
                  "--output_dir", str(out), "--quiet", "--json"])
    args.run(args)
    printed = json.loads(capsys.readouterr().out)
    assert [p["best_file"] for p in printed["prompts"]] == ["best_p000.png", "best_p001.png"]
    assert all((out / p["best_file"]).is_file() for p in printed["prompts"])
    records = json.loads((out / "results.json").read_text())["candidates"]
    assert len(records) == 6 and all(r["nfe"] == 2 * 2 for r in records)


@pytest.mark.parametrize("extra,error,message", [
    (["--num_images", "3"], "UserError", "--num_images does not apply"),
    (["--strategy", "ttsnap", "--schedule", "0,1"], "UserError", "--schedule and --keep together"),
    (["--reward", "nonexistent"], "UserError", "is not registered; choose from"),
    (["--strategy", "ttsnap", "--schedule", "0,3", "--keep", "0.5,0.5"], "ValueError", "below the last step 3"),
    (["--budget_nfe", "4", "--cost_model", "fixed"], "ValueError", "`budget` must be an integer of at least 5"),
    (["--budget_nfe", "3", "--reward_cost", "0"], "ValueError", "`budget` must be an integer of at least 4"),
    (["--budget_seconds", "-3"], "UserError", "--budget_seconds must be a number of seconds > 0 .* got -3.0"),
    (["--budget_seconds", "0"], "UserError", "--budget_seconds must be a number of seconds > 0"),
    (["--budget_seconds", "nan"], "UserError", "--budget_seconds must be a number of seconds > 0"),
    (["--budget_seconds", "5", "--budget_nfe", "50"], "UserError",
     "give one of --num_candidates, --budget_nfe, --budget_seconds, not --budget_nfe and --budget_seconds"),
    (["--num_candidates", "2", "--budget_nfe", "50"], "UserError", "not --num_candidates and --budget_nfe"),
    (["--cost_model", "measured", "--reward_cost", "2"], "UserError", "--reward_cost applies to --cost_model fixed"),
    (["--reward_cost", "-1"], "UserError", "--reward_cost must be a number >= 0"),
    (["--budget_seconds", "1e-9"], "ValueError", "`budget_seconds` 1e-09 buys 0 NFE-equivalents at .* s per NFE"),
    (["--schedule", "1", "--keep", "0.5"], "UserError", "apply to --strategy ttsnap only"),
])
def test_cli_errors_name_the_argument(tmp_path, model_dir, judge_dirs, extra, error, message):
    args = parse(["search", PROMPTS[0], "--model", model_dir, "--reward_path", f"shapes-judge={judge_dirs[0]}",
                  "--steps", "4", "--guidance_scale", "1.0", "--output_dir", str(tmp_path), "--quiet", *extra])
    with pytest.raises(Exception, match=message) as raised:
        args.run(args)
    assert type(raised.value).__name__ == error


def test_library_errors_name_the_argument(sd1_pipe, judge):
    with pytest.raises(ValueError, match=r"`keep` ratios must lie in \(0, 1\], got \[1.5\]"):
        PruningSchedule((1,), (1.5,))
    with pytest.raises(ValueError, match="must increase strictly"):
        PruningSchedule((3, 1), (0.5, 0.5))
    with pytest.raises(ValueError, match="`unit` must be one of"):
        PruningSchedule((1,), (0.5,), unit="percent")
    with pytest.raises(ValueError, match="a 1-step loop has none"):
        default_schedule(1, 1)
    assert default_schedule(1, 4) == PruningSchedule((0, 1), (0.4 * 0.4, 0.5))  # few-step models fit
    sampler = make_sampler(sd1_pipe)
    with pytest.raises(ValueError, match="give one of `num_candidates`, `budget` .* not `num_candidates` and `budget`"):
        search(sampler, 0, judge, num_candidates=3, budget=50)
    with pytest.raises(ValueError, match="`formula` must be one of"):
        plan_ttsnap(50, CostModel(4), (1,), (0.5,), "guess")
    with pytest.raises(ValueError, match=r"`reward_cost` must be a finite number >= 0 \(NFE-equivalents per reward "
                                         r"call\), got -0.5"):
        CostModel(4, reward_cost=-0.5)


def test_training_script_smoke_and_resume(tmp_path, model_dir, judge_dirs, capsys):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "training", "train_noise_aware_reward.py")
    spec = importlib.util.spec_from_file_location("train_noise_aware_reward", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--pretrained_model_name_or_path", model_dir, "--teacher_kwargs", json.dumps({"path": judge_dirs[0]}),
            "--output_dir", str(tmp_path), "--num_prompts", "3", "--num_validation_prompts", "2", "--num_seeds", "2",
            "--num_inference_steps", "3", "--steps_per_stage", "2", "--train_batch_size", "2"]
    script.main(script.parse_args(argv))
    folder = tmp_path / "noise-aware"
    record = json.loads((folder / "TRAINING.json").read_text())
    assert record["step_targets"] == [1, 0] and record["steps"] == 4 and set(record["validation"]) == {"step-1", "step-0"}
    for mode in ("sigma", "stages"):
        reward = load_reward("noise-aware", path=str(folder), mode=mode)
        assert reward(torch.rand(2, 3, 16, 16), PROMPTS[0], sigma=[0.5, 3.0]).shape == (2,)
    script.main(script.parse_args(argv))  # resumes from the last checkpoint: nothing left to train
    assert "resumed from" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--step_targets must be distinct steps in \\[0, 1\\]"):
        script.parse_args([*argv, "--step_targets", "2,1"])


def test_ranking_loss_rewards_the_order_within_each_prompt(tmp_path, model_dir, judge_dirs):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "training", "train_noise_aware_reward.py")
    spec = importlib.util.spec_from_file_location("train_noise_aware_reward", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    labels = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.2, 0.8])
    ordered, reversed_ = labels.clone(), -labels
    assert script.pairwise_loss(ordered, labels, 3, 0.05) < script.pairwise_loss(reversed_, labels, 3, 0.05)
    # a shift of one prompt's scores changes nothing: only the order inside a prompt counts
    shifted = ordered + torch.tensor([5.0, 5.0, 5.0, 0.0, 0.0, 0.0])
    loss = lambda scores: script.pairwise_loss(scores, labels, 3, 0.05)  # noqa: E731
    assert torch.allclose(loss(shifted), loss(ordered))
    argv = ["--pretrained_model_name_or_path", model_dir, "--teacher_kwargs", json.dumps({"path": judge_dirs[0]}),
            "--output_dir", str(tmp_path), "--num_prompts", "3", "--num_validation_prompts", "2", "--num_seeds", "2",
            "--num_inference_steps", "3", "--steps_per_stage", "2", "--train_batch_size", "4", "--loss", "ranking",
            "--publish_stages", "0", "--publish_dtype", "float16"]
    script.main(script.parse_args(argv))
    stages = json.loads((tmp_path / "noise-aware" / "stages" / "stages.json").read_text())
    assert [s["step"] for s in stages] == [0]
    reward = load_reward("noise-aware", path=str(tmp_path / "noise-aware"), mode="stages")
    assert reward(torch.rand(2, 3, 16, 16), PROMPTS[0], sigma=[float("inf"), 1.0]).dtype == torch.float32
    with pytest.raises(ValueError, match="multiple of --num_seeds"):
        script.parse_args([*argv[:-6], "--train_batch_size", "3", "--loss", "ranking"])
