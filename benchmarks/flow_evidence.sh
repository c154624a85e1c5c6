#!/usr/bin/env bash
# The evidence of shapes-flow (the shapes world's MMDiT), on the same held-out prompts and seeds as the UNet's:
# its quality table, NLG, and seed search / TTSnap. Writes JSON under benchmarks/results/. About 45 minutes on
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
# Golden noise on the flow model: an NPD of ~1,000 shapes captions (re-denoise as an Euler step and its exact
# inverse), a small NPNet trained on it (not shipped), then the UNet's protocol on 100 held-out prompts.
PYTHONPATH=. $PY training/collect_npd.py --pretrained_model_name_or_path assets/shapes-flow --dataset shapes \
  --num_prompts 1024 --reward shapes-judge --output_dir runs/npd-flow --batch_size 64
[ -d runs/npnet-flow/npnet ] || PYTHONPATH=. $PY training/train_npnet.py --data_dir runs/npd-flow \
  --pretrained_model_name_or_path assets/shapes-flow --small_swin --output_dir runs/npnet-flow
$PY benchmarks/npnet_evidence.py --npnet runs/npnet-flow/npnet --model shapes-flow --num_prompts 100 \
  --timing_repeats 2 --output "$OUT/npnet_shapes-flow.json"
