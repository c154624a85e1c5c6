"""The CLI on every family: each method run by `noisekit` on a saved tiny pipeline, then replayed.

    python benchmarks/cli_matrix.py --output benchmarks/results/cli_matrix.json

Every family's tiny random-weight pipeline (`noisekit.testing.families`) is saved to a folder and given to the CLI as
`--model`, as a user's downloaded model would be. Methods: seed search with TTSnap pruning (4 steps, the default
few-step schedule), NLG, golden noise (an untrained NPNet sized to the family, since no published one exists for
most of them), and a 6-seed NoiseQuery library then generation from it. Each run is replayed with `noisekit
replay`; a cell is `identical` / `within tolerance` / `different` as replay reports it, or the one-line refusal.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile

import torch

from noisekit.cli import main as cli
from noisekit.core.families import adapter_for
from noisekit.results import write_json
from noisekit.shapes.assets import asset_path
from noisekit.testing.families import ALL_BUILDERS, ALL_SETTINGS
from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet, pipeline_text_shape

PROMPT = "a red circle"


def run(argv):
    """`(exit code, stdout, stderr's last line)` of one CLI call in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli(argv)
        except SystemExit as exit_:
            code = exit_.code
        except Exception as error:  # a traceback is a finding: the matrix records it instead of stopping
            return 99, "", f"{type(error).__name__}: {error}"
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return code, out.getvalue(), lines[-1] if lines else ""


def replayed(results):
    code, out, err = run(["replay", results, "--json", "--quiet"])
    if code not in (0, 1):
        return f"replay failed: {err}"
    report = json.loads(out)
    verdict = next((v for v in ("different", "within tolerance") if report.get(v)), "identical")
    return f"{verdict} ({report[verdict]}/{report['images']})"


def small_npnet(pipe, folder, size):
    """An untrained NPNet sized to `pipe`'s latents at `size` pixels and to its prompt sequence."""
    tokens, width = pipeline_text_shape(pipe)
    adapter = adapter_for(pipe)
    torch.manual_seed(0)
    net = NoisePromptNet(sample_size=adapter.latent_shape(size, size)[-1], latent_channels=adapter.latent_channels,
                         text_embed_dim=width, max_text_tokens=tokens, swin_kwargs=SMALL_SWIN).eval()
    net.save_pretrained(folder)


def family_row(name, build, settings, work):
    guidance, _, size = settings
    pipe = build()
    model = os.path.join(work, name, "model")
    pipe.save_pretrained(model)
    common = ["--model", model, "--steps", "4", "--guidance_scale", str(guidance), "--height", str(size),
              "--width", str(size), "--device", "cpu", "--quiet"]
    row = {}

    def cell(method, argv, results):
        code, _, err = run(argv)
        row[method] = replayed(results) if code == 0 else f"refused: {err}"

    out = os.path.join(work, name, "ttsnap")
    cell("search + TTSnap", ["search", PROMPT, *common, "--strategy", "ttsnap", "--num_candidates", "8",
                             "--reward", "shapes-judge", "--cost_model", "fixed", "--output_dir", out],
         os.path.join(out, "results.json"))
    out = os.path.join(work, name, "nlg")
    cell("NLG", ["generate", PROMPT, *common, "--nlg", "--num_images", "2", "--output_dir", out],
         os.path.join(out, "results.json"))
    out = os.path.join(work, name, "npnet")
    try:
        small_npnet(pipe, os.path.join(work, name, "net"), size)
        cell("golden noise", ["generate", PROMPT, *common, "--npnet", os.path.join(work, name, "net"),
                              "--num_images", "2", "--output_dir", out], os.path.join(out, "results.json"))
    except ValueError as error:
        row["golden noise"] = f"refused: {error}"
    lib, out = os.path.join(work, name, "library"), os.path.join(work, name, "from-library")
    code, _, err = run(["library", "build", "--model", model, "--output", lib, "--num_seeds", "6", "--steps", "2",
                        "--height", str(size), "--width", str(size), "--shard_size", "4", "--clip",
                        f"local-dir:{asset_path('shapes-clip')}", "--device", "cpu", "--quiet"])
    if code != 0:
        row["library"] = f"refused: {err}"
    else:
        cell("library", ["generate", PROMPT, *common, "--library", lib, "--attribute", "brightness=high",
                         "--num_images", "2", "--output_dir", out], os.path.join(out, "results.json"))
    return type(pipe).__name__, row


def main(args):
    families, settings = ALL_BUILDERS, ALL_SETTINGS
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.families or families:
            pipeline, row = family_row(name, families[name], settings[name], work)
            rows[name] = {"pipeline": pipeline, **row}
            print(f"{name:<14} " + " | ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
    result = {"command": "python benchmarks/cli_matrix.py", "machine": platform.platform(), "torch": torch.__version__,
              "families": rows}
    if args.output:
        write_json(args.output, result)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", help="default: every family")
    parser.add_argument("--output", help="write the matrix as JSON here")
    return parser.parse_args(input_args)


if __name__ == "__main__":
    main(parse_args())
