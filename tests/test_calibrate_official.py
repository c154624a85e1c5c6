"""TTSnap's published trajectory format read into a TrajectoryTable; schedules calibrated, saved beside a reward and
found again; the batched replay equal to the per-subset one."""

import json

import numpy as np
import pytest
import torch

from noisekit.search.budget import DEFAULT_SCHEDULE, PruningSchedule, plan_ttsnap
from noisekit.search.calibrate import (TrajectoryTable, calibrate_schedule, evaluate, in_sigma_units, load_schedule,
                                       named_schedule, omega, save_schedule, shipped_schedule, simulate,
                                       simulate_many)
from noisekit.search.official_tables import (noise_aware_steps, official_cost_model, official_scale,
                                             official_sigmas, read_official_values, read_step)

P, N, T = 6, 12, 20


def write_values(root, model="flux", reward="hps", naft_steps=range(3, 15), seed=0):
    """A small `simulation/values` folder in TTSnap's layout: one YAML per step, prompt index -> N rewards;
    previews approach the final reward as steps go on; `naft` files only for `naft_steps`."""
    rng = np.random.default_rng(seed)
    final = rng.normal(0.28, 0.02, size=(P, N))
    base = {s: final + rng.normal(0, 0.03 * (T - 1 - s) / T, size=(P, N)) for s in range(T)}
    naft = {s: final + rng.normal(0, 0.01 * (T - 1 - s) / T, size=(P, N)) for s in naft_steps}
    for kind, values in (("base", base), ("naft", naft)):
        folder = root / f"{model}_{reward}_val_{kind}"
        folder.mkdir(parents=True)
        for s, array in values.items():
            lines = []
            for p in range(P):
                lines.append(f"{p}:")
                lines.extend(f"- {v!r}" for v in array[p].tolist())
            (folder / f"p{P}_i{N}_s{s:02d}.yaml").write_text("\n".join(lines) + "\n")
    return base, naft


def test_read_official_values_layout_and_fallback(tmp_path):
    base, naft = write_values(tmp_path)
    table = read_official_values(tmp_path, model="flux", reward="hps", num_prompts=P, num_images=N)
    scores = table.scores["hps"]
    assert scores.shape == (P, N, T) and scores.dtype == torch.float32
    assert table.prompts[0] == "p000" and table.seeds == list(range(N)) and table.num_steps == T
    assert noise_aware_steps(tmp_path, model="flux", reward="hps", num_prompts=P, num_images=N) == list(range(3, 15))
    for s in (0, 2, 15, 19):  # no noise-aware file: base values, as TTSnap's loader does
        assert torch.allclose(scores[:, :, s], torch.tensor(base[s], dtype=torch.float32))
    for s in (3, 14):
        assert torch.allclose(scores[:, :, s], torch.tensor(naft[s], dtype=torch.float32))
    plain = read_official_values(tmp_path, model="flux", reward="hps", kind="base", num_prompts=P, num_images=N)
    assert torch.allclose(plain.scores["hps"][:, :, 5], torch.tensor(base[5], dtype=torch.float32))


def test_read_step_sorts_prompt_keys_and_checks_widths(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("1:\n- 2.0\n- 3.0\n0:\n- 0.0\n- 1.0\n")
    assert read_step(path).tolist() == [[0.0, 1.0], [2.0, 3.0]]
    path.write_text("0:\n- 0.0\n1:\n- 2.0\n- 3.0\n")
    with pytest.raises(ValueError, match="same number"):
        read_step(path)
    with pytest.raises(ValueError, match="`model`"):
        read_official_values(tmp_path, model="sd3", reward="hps")
    with pytest.raises(FileNotFoundError, match="simulation/values"):
        read_official_values(tmp_path, model="sdxl", reward="pic")


def test_official_sigmas_match_diffusers():
    from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    flux = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                           max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    flux.set_timesteps(sigmas=np.linspace(1.0, 1 / 20, 20), mu=0.5 + 0.65 * (1024 - 256) / 3840)
    assert np.allclose(flux.sigmas[:20].numpy(), official_sigmas("flux"), atol=1e-6)
    sdxl = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                  timestep_spacing="leading")
    sdxl.set_timesteps(20)
    assert np.allclose(sdxl.sigmas[:20].numpy(), official_sigmas("sdxl"), rtol=1e-5)


def test_official_cost_model_reproduces_ttsnap_counts():
    cost = official_cost_model()  # 0.1 TFLOP units: 9.9 per step, 1.2 per reward call
    assert cost.total(*cost.best_of_n(1)) == 1992
    steps, keep = DEFAULT_SCHEDULE.points, DEFAULT_SCHEDULE.keep
    assert plan_ttsnap(20000, cost, steps, keep, "official") == 38  # the notebook's "images seen in TTSnap"
    assert plan_ttsnap(20000, cost, steps, keep, "expected") == 32
    assert official_scale("hps", 0.29) == pytest.approx(29.0)
    assert official_scale("imr", 0.16717362830052426) == 0.0


def random_table(prompts=5, pool=40, steps=20, rewards=("a",), seed=0):
    g = torch.Generator().manual_seed(seed)
    final = torch.randn(prompts, pool, 1, generator=g)
    noise = (torch.arange(steps) < steps * 3 // 4).float().view(1, 1, steps) * 5.0  # previews useless early
    scores = {r: final + noise * torch.randn(prompts, pool, steps, generator=g) for r in rewards}
    sigmas = [10.0 / (s + 1) for s in range(steps)]
    return TrajectoryTable([f"p{i}" for i in range(prompts)], list(range(pool)), sigmas, 1, scores)


@pytest.mark.parametrize("rewards", [("a",), ("a", "b")])
def test_simulate_many_matches_simulate(rewards):
    table = random_table(rewards=rewards)
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randperm(40, generator=g)[:25].sort().values for _ in range(4)])
    many = simulate_many(table, ids, (2, 6, 11), (0.4, 0.4, 0.5))
    one = torch.stack([simulate(table, row, (2, 6, 11), (0.4, 0.4, 0.5))[0] for row in ids])
    assert torch.equal(many, one)


def test_calibrate_schedule_prefers_late_pruning_and_round_trips(tmp_path):
    table = random_table()  # previews are noise before step 15, exact after: pruning late must win
    cost = table.cost_model()
    grid = [PruningSchedule((1,), (0.4,)), PruningSchedule((17,), (0.4,)), PruningSchedule((2, 6), (0.5, 0.5))]
    schedule, report = calibrate_schedule(table, budgets=[42, 84, 126], cost=cost, schedules=grid, iterations=4,
                                          refine=2, refine_iterations=8)
    assert schedule.unit == "sigma" and schedule.points == (table.sigmas[17],)
    assert schedule.steps(table.num_steps, table.sigmas) == (17,)
    assert report["schedule_steps"] == {"points": [17], "keep": [0.4], "unit": "step"}
    assert report["schedules_searched"] == 3 and len(report["ranked"]) == 2
    assert report["objective"] >= report["ranked"][-1]["objective"]
    written = save_schedule(tmp_path, schedule, calibration={"table": "random"})
    assert written.endswith("schedule.json") and json.load(open(written))["calibration"] == {"table": "random"}
    assert load_schedule(written) == schedule == shipped_schedule(tmp_path)
    assert named_schedule("calibrated", reward_path=tmp_path) == schedule
    assert named_schedule("paper", reward_path=tmp_path) == DEFAULT_SCHEDULE


def test_shipped_schedule_absent_and_malformed(tmp_path):
    assert shipped_schedule(tmp_path) is None and shipped_schedule(None) is None
    with pytest.raises(ValueError, match="no calibrated schedule"):
        named_schedule("calibrated", reward_path=tmp_path)
    with pytest.raises(ValueError, match="'paper' or 'calibrated'"):
        named_schedule("tuned")
    (tmp_path / "schedule.json").write_text(json.dumps({"points": [2]}))
    with pytest.raises(ValueError, match="not a noisekit pruning schedule"):
        shipped_schedule(tmp_path)


def test_in_sigma_units_keeps_the_steps_and_an_infinite_first_sigma():
    sigmas = [float("inf"), 8.0, 4.0, 2.0, 1.0]
    schedule = in_sigma_units(PruningSchedule((0, 2), (0.5, 0.5)), sigmas)
    assert schedule.unit == "sigma" and schedule.steps(5, sigmas) == (0, 2)
    assert in_sigma_units(schedule, sigmas) is schedule


def test_evaluate_with_a_flop_cost_model_on_the_official_layout(tmp_path):
    write_values(tmp_path)
    table = read_official_values(tmp_path, model="flux", reward="hps", num_prompts=P, num_images=N)
    budgets = [4000, 8000, 12000]  # TFLOPs x 10: best-of-2, 4, 6
    bon, counts = evaluate(table, budgets, None, iterations=3, cost=official_cost_model())
    assert counts == [2, 4, 6]
    late = PruningSchedule((5,), (0.5,))
    means, n0 = evaluate(table, budgets, late, iterations=3, formula="official", cost=official_cost_model())
    assert n0[0] > 2 and omega(budgets, means["hps"], bon["hps"]) > -100


def test_the_shapes_noise_aware_judge_ships_a_sigma_schedule():
    from noisekit.shapes.assets import assets_dir

    folder = assets_dir() / "shapes-judge-noise-aware"
    schedule = shipped_schedule(folder)
    assert schedule is not None and schedule.unit == "sigma" and len(schedule.points) == len(schedule.keep)
    record = json.loads((folder / "schedule.json").read_text())
    sigmas = [float("inf") if s is None else s for s in record["calibration"]["sigmas"]]
    assert list(schedule.steps(len(sigmas), sigmas)) == record["calibration"]["schedule_steps"]["points"]


def test_schedule_for_reward_by_name_or_folder(tmp_path):
    from noisekit.search.calibrate import schedule_for_reward

    assert schedule_for_reward("shapes-judge-noise-aware") == shipped_schedule(
        __import__("noisekit.shapes.assets", fromlist=["assets_dir"]).assets_dir() / "shapes-judge-noise-aware")
    assert schedule_for_reward("shapes-judge") is None and schedule_for_reward("hpsv2.1") is None
    save_schedule(tmp_path, DEFAULT_SCHEDULE)
    assert schedule_for_reward("noise-aware", path=tmp_path) == DEFAULT_SCHEDULE


def test_the_hindsight_search_finds_where_previews_rank(monkeypatch):
    """On a table whose previews are noise before step 12 and exact from it, the search in hindsight leaves a
    schedule pruning at step 0 for one whose last stage prunes hard where the previews rank."""
    import argparse
    import os

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from bench_ttsnap_official import hindsight_schedule, neighbours

    start = PruningSchedule((0,), (0.5,))
    moves = neighbours(start, T)
    assert PruningSchedule((1,), (0.5,)) in moves and PruningSchedule((0,), (0.4,)) in moves
    assert PruningSchedule((0, 5), (0.5, 0.5)) in moves and all(max(m.points) <= T - 2 for m in moves)
    generator = torch.Generator().manual_seed(0)
    final = torch.randn(8, 64, 1, generator=generator)
    previews = torch.cat([torch.randn(8, 64, 12, generator=generator), final.expand(-1, -1, T - 13)], -1)
    table = TrajectoryTable([f"p{i}" for i in range(8)], list(range(64)), list(range(T, 0, -1)), 1,
                            {"r": torch.cat([previews, final], -1)})
    args = argparse.Namespace(hindsight_iterations=4, seed=0)
    best, searched = hindsight_schedule(table, start, args)
    assert searched > len(moves) and best.points[-1] >= 12 and best.keep[-1] <= 0.3
