#!/usr/bin/env bash
# The evidence of shapes-flow (the shapes world's MMDiT), on the same held-out prompts and seeds as the UNet's:
# its quality table, NLG, and seed search / TTSnap. Writes JSON under benchmarks/results/. About 25 minutes on
# 2 CPU cores. Usage: bash benchmarks/flow_evidence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
$PY benchmarks/shapes_quality.py --model shapes-flow --judge assets/shapes-judge --output "$OUT/quality_shapes-flow.json"
$PY benchmarks/nlg_evidence.py --model shapes-flow --judge assets/shapes-judge --num_prompts 60 \
  --output "$OUT/nlg_shapes-flow.json"
$PY benchmarks/bench_search.py --model shapes-flow --num_candidates 16 --output "$OUT/bench_search_flow.json" \
  --plot "$OUT/bench_search_flow.png" --quiet
