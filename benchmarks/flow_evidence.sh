#!/usr/bin/env bash
# The evidence of shapes-flow (the shapes world's MMDiT), on the same held-out prompts and seeds as the UNet's:
# its quality table, NLG, and seed search / TTSnap. Writes JSON under benchmarks/results/. About 30 minutes on
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
# NoiseQuery on the flow model: a 2,000-seed library of its posteriors (not shipped), then the UNet's protocol.
LIB=${FLOW_LIBRARY:-runs/shapes-flow-library}
.venv/bin/noisekit library build --model shapes-flow --num_seeds 2000 --output "$LIB" --batch_size 64 --resume --quiet
$PY benchmarks/library_evidence.py --library "$LIB" --model shapes-flow --num_prompts 16 --num_reward_prompts 32 \
  --images 2 --output "$OUT/library_shapes-flow.json"
