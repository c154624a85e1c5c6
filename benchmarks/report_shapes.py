"""Write assets/README.md from the assets' TRAINING.json records and benchmarks/results/*.json.

    python benchmarks/report_shapes.py
"""

import json
import os
import subprocess

ASSETS = "assets"
RESULTS = "benchmarks/results"
BARS = {"color": 0.90, "background": 0.85, "size": 0.75, "shape": 0.60}
DESCRIPTIONS = {
    "shapes-t2i": "v-prediction, zero-terminal-SNR StableDiffusionPipeline (the default model): shapes-t2i-eps "
                  "fine-tuned by training/finetune_vpred_ztsnr.py (text encoder frozen, EMA)",
    "shapes-t2i-eps": "epsilon twin on SD 1.x's schedule (scaled_linear, non-zero terminal SNR); VAE (factor 4), "
                      "3-layer 64-wide CLIP text encoder with the real CLIP BPE tokenizer, UNet, trained jointly",
    "shapes-flow": "rectified-flow StableDiffusion3Pipeline: an MMDiT (6 joint blocks, 128 wide, 2 x 2 patches) trained "
                   "on shapes-t2i's frozen VAE and CLIP text encoder, whose files it links (the size counts its own "
                   "files only); no T5",
    "shapes-clip": "open_clip model (custom config: ViT 64 px, patch 8; 3-layer text tower) trained with "
                   "open_clip's ClipLoss; loads with open_clip.create_model_and_transforms('local-dir:...')",
    "shapes-judge": "attribute classifier (ShapesJudge); reward = mean probability of the prompt's stated attributes",
    "shapes-judge-noise-aware": "shapes-judge distilled onto x0 previews of shapes-t2i (TTSnap self-distillation, "
                                "curriculum 14 -> 0): a sigma-conditioned model plus per-stage checkpoints; weights "
                                "in float16",
    "shapes-judge-latent": "shapes-judge's latent twin (LatentTwin): a 1.1M-parameter CNN predicts the judge's "
                           "features from x0 latents of shapes-t2i and the judge's heads score them (no VAE decode); "
                           "trained on rendered scenes and on trajectories (self-distillation); float16",
    "shapes-npnet": "NoisePromptNet with the small residual branch (16 x 16 latents, 32 x 64 prompt embeddings), "
                    "trained on an NPD collected from shapes-t2i with the shapes judge as the filter",
}
LIBRARY = "shapes-library"


def load(path):
    with open(path) as f:
        return json.load(f)


def size_mb(folder):
    """Megabytes of the files in `folder`; a link to another asset's file counts as the link only."""
    total = sum(os.lstat(os.path.join(r, n)).st_size for r, _, files in os.walk(folder) for n in files)
    return total / 2**20


def quality_rows(name, label):
    path = os.path.join(RESULTS, f"quality_{name}.json")
    if not os.path.exists(path):
        return []
    result = load(path)
    rows = []
    for attribute in ("color", "background", "size", "shape", "position", "two objects present", "relation"):
        row = result["attributes"].get(attribute)
        if row is None:
            continue
        bar = BARS.get(attribute)
        judge = "-" if row["judge"] != row["judge"] else f"{row['judge']:.1%}"
        agree = "-" if row["agreement"] != row["agreement"] else f"{row['agreement']:.1%}"
        verdict = "" if bar is None else (" (meets)" if min(row["pixel"], row["judge"] if judge != "-" else 1) >= bar
                                           else " (below)")
        rows.append(f"| {label} | {attribute} | {row['n']} | {judge} | {row['pixel']:.1%} | {agree} | "
                    f"{'' if bar is None else f'>= {bar:.0%}'}{verdict} |")
    b = result["border_brightness"]
    rows.append(f"| {label} | border brightness, black / white bg (median) | {b['black']['n']} / {b['white']['n']} "
                f"| | {b['black']['median']:.3f} / {b['white']['median']:.3f} | | < 0.06 / > 0.94 |")
    d = result["diversity_a_red_circle"]
    rows.append(f"| {label} | `a red circle`, 16 seeds: distinct positions / sizes / backgrounds | 16 | | "
                f"{d['distinct positions']} / {d['distinct sizes']} / {d['distinct backgrounds']} | | |")
    return rows


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def library_row():
    """The library is built, not trained: its row comes from its manifest and shard records."""
    folder = os.path.join(ASSETS, LIBRARY)
    if not os.path.isdir(folder):
        return []
    shards = [load(os.path.join(folder, "shards", n)) for n in os.listdir(os.path.join(folder, "shards"))
              if n.endswith(".json")]
    manifest = load(os.path.join(folder, "manifest.json"))
    entries, seconds = sum(r["rows"] for r in shards), sum(r.get("seconds", 0) for r in shards)
    return [f"| `{LIBRARY}` | NoiseQuery library of shapes-t2i: seeds, checksums and features "
            f"({', '.join(manifest['extractors'])}) of each seed's posterior (empty prompt, "
            f"{manifest['posterior']['num_inference_steps']} DDIM steps); built by `noisekit library build` | "
            f"{entries} seeds | {duration(seconds)} | {size_mb(folder):.1f} MB |"]


def main():
    lines = ["# The shapes world's assets", "",
             "Trained on CPU (2 cores) by the scripts in `training/`; `bash training/build_shapes_world.sh` rebuilds "
             "all of them in order. Each folder's `TRAINING.json` records the exact command, the data seed and the "
             "training time. Diffusion and CLIP weights are stored in float16 (loaded as float32). Regenerate this page with "
             "`python benchmarks/report_shapes.py`.", "",
             "| asset | what it is | steps | train time | size |", "|---|---|---|---|---|"]
    for name in DESCRIPTIONS:
        folder = os.path.join(ASSETS, name)
        if not os.path.isdir(folder):
            continue
        record = load(os.path.join(folder, "TRAINING.json"))
        lines.append(f"| `{name}` | {DESCRIPTIONS[name]} | {record.get('steps')} | "
                     f"{duration(record.get('train_seconds', 0))} | {size_mb(folder):.1f} MB |")
    lines += library_row()
    vae_record = os.path.join(ASSETS, "shapes-t2i-eps", "vae", "TRAINING.json")
    vae = load(vae_record) if os.path.exists(vae_record) else None
    if vae:
        lines += ["", f"The VAE inside both pipelines: {vae['steps']} steps, {vae['train_seconds'] / 60:.0f} min "
                      f"(`{vae['command']}`)."]
    lines += ["", "Commands:", ""] + [f"- `{name}`: `{load(os.path.join(ASSETS, name, 'TRAINING.json'))['command']}`"
                                      for name in DESCRIPTIONS if os.path.isdir(os.path.join(ASSETS, name))]
    if os.path.isdir(os.path.join(ASSETS, LIBRARY)):
        lines.append(f"- `{LIBRARY}`: `noisekit library build --num_seeds 10000 --output assets/{LIBRARY} "
                     f"--batch_size 64`")
    lines += ["", "## Quality", "",
              "Held-out prompts (captions removed from every training set), 20 steps, CFG 5, one image per prompt and "
              "seed; each attribute is read by the learned judge and by the non-learned pixel check "
              "(`noisekit/shapes/pixelcheck.py`, exact on rendered scenes), and their agreement validates the judge. "
              "Commands: `bash benchmarks/shapes_evidence.sh`, `bash benchmarks/flow_evidence.sh` (shapes-flow).", "",
              "| model | attribute | n | judge | pixel check | agreement | bar |", "|---|---|---|---|---|---|---|"]
    for name, label in (("shapes-t2i", "shapes-t2i"), ("shapes-t2i_rescale0.7", "shapes-t2i, CFG rescale 0.7"),
                        ("shapes-t2i-eps", "shapes-t2i-eps"), ("shapes-t2i-eps_trailing", "shapes-t2i-eps, trailing"),
                        ("shapes-flow", "shapes-flow")):
        lines += quality_rows(name, label)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines += ["", f"Page generated at commit {commit}; the quality rows are read from "
                  f"`benchmarks/results/quality_*.json`, measured on this repository's CPU machine (2 cores)."]
    with open(os.path.join(ASSETS, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
