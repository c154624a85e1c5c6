#!/usr/bin/env bash
# The shapes-world evidence: quality tables of both diffusion models, the zero-terminal-SNR comparison and NLG.
# Writes JSON under benchmarks/results/. About 10 minutes on 2 CPU cores. Usage: bash benchmarks/shapes_evidence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
Q="$PY benchmarks/shapes_quality.py --judge assets/shapes-judge"
# Quality table (the spec's protocol: 20 steps, CFG 5) and the zero-SNR arms on the same prompts and seeds:
# (a) the epsilon model as trained, (b) with trailing spacing only, (c = d) shapes-t2i, the fine-tuned v/ZTSNR model.
$Q --model assets/shapes-t2i-eps --output "$OUT/quality_shapes-t2i-eps.json"
$Q --model assets/shapes-t2i-eps --zero_snr trailing --output "$OUT/quality_shapes-t2i-eps_trailing.json"
$Q --model assets/shapes-t2i --output "$OUT/quality_shapes-t2i.json"
# NLG against the baseline and best-of-2 at equal NFE.
$PY benchmarks/nlg_evidence.py --model assets/shapes-t2i-eps --judge assets/shapes-judge --output "$OUT/nlg_shapes-t2i-eps.json"
$PY benchmarks/nlg_evidence.py --model assets/shapes-t2i --judge assets/shapes-judge --num_prompts 60 --output "$OUT/nlg_shapes-t2i.json"
