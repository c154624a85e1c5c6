"""Every stage composed on the shapes world, each prompt encoded once, and replay across processes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from noisekit.cli import main


class TextEncoderCalls:
    """Counts forward calls of the text encoders (transformers' `*TextModel*` classes) in this process."""

    def __enter__(self):
        self.count = 0

        def hook(module, args, output):
            if type(module).__name__.startswith("CLIPTextModel"):
                self.count += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.slow
def test_search_composes_every_stage_and_encodes_each_prompt_once(tmp_path):
    out = tmp_path / "search"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square on a white background\n")
    with TextEncoderCalls() as calls:
        assert main(["search", "--prompt_file", str(prompts), "--library", "shapes-library", "--npnet", "shapes-npnet",
                     "--nlg", "--nlg_iterations", "1", "--strategy", "ttsnap", "--schedule", "1,3", "--keep",
                     "0.5,0.5", "--budget_nfe", "200", "--steps", "6", "--output_dir", str(out), "--quiet"]) == 0
    assert calls.count == 2 * 2  # two prompts, each encoded once with its unconditional row (CFG)
    results = json.loads((out / "results.json").read_text())
    for summary in results["prompts"]:
        assert summary["cost"] <= 200 and summary["pruning_steps"] == [1, 3]
    chosen = [c for c in results["candidates"] if c["best"]]
    assert len(chosen) == 2
    for candidate in chosen:
        assert [t["name"] for t in candidate["recipe"]["transforms"]] == ["npnet", "nlg"]
        # NLG's 2 evaluations are charged to every candidate, and the library chose the seeds
        assert candidate["nfe"] == 2 + 6 * 2 + 0
    assert results["settings"]["npnet"] == "shapes-npnet" and results["settings"]["library"] == "shapes-library"
    # a search replays its survivors in the batches they ran in: identical, not just close
    assert main(["replay", str(out / "results.json"), "--json", "--quiet"]) == 0


@pytest.mark.slow
def test_generate_then_replay_in_another_process_with_one_thread(tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "a red circle on a black background", "--npnet", "shapes-npnet", "--nlg",
                 "--nlg_iterations", "2", "--num_images", "2", "--steps", "4", "--output_dir", str(out),
                 "--quiet"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    replay = [sys.executable, "-m", "noisekit", "replay", str(out / "results.json"), "--quiet", "--json"]
    done = subprocess.run(replay, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["different"] == 0 and report["images"] == 2
    assert report["noise"]["different"] == 0 and report["max_noise_difference"] <= 1e-3
    tampered = Image.open(out / "p000_s1.png").convert("RGB")
    tampered.putpixel((3, 3), tuple(255 - v for v in tampered.getpixel((3, 3))))
    tampered.save(out / "p000_s1.png")
    done = subprocess.run(replay + ["--output_dir", str(tmp_path / "again")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 1 and json.loads(done.stdout)["different"] == 1


def test_replay_refuses_names_outside_its_folder_and_its_own_folder(tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "a red circle", "--num_images", "1", "--steps", "2", "--output_dir", str(out),
                 "--quiet"]) == 0
    assert main(["replay", str(out / "results.json"), "--output_dir", str(out), "--quiet"]) == 2
    results = json.loads((out / "results.json").read_text())
    results["images"][0]["file"] = "../../escape.png"
    (out / "results.json").write_text(json.dumps(results))
    assert main(["replay", str(out / "results.json"), "--quiet"]) == 2
    assert not (tmp_path.parent / "escape.png").exists()
