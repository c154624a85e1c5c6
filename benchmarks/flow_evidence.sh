#!/usr/bin/env bash
# The evidence of shapes-flow (the shapes world's MMDiT), on the same held-out prompts and seeds as the UNet's:
# its quality table, NLG, seed search / TTSnap (with the UNet's judges, then with one trained on this model),
# NoiseQuery, golden noise and the composed plan. Writes JSON under benchmarks/results/. About 4 hours on 2 CPU
# cores, most of it the NPD collections and the judge's training (each resumes if interrupted).
# Usage: bash benchmarks/flow_evidence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
$PY benchmarks/shapes_quality.py --model shapes-flow --judge assets/shapes-judge --output "$OUT/quality_shapes-flow.json"
$PY benchmarks/text_position_probe.py --model assets/shapes-t2i  # does the (shared) text encoder carry positions?
$PY benchmarks/nlg_evidence.py --model shapes-flow --judge assets/shapes-judge --num_prompts 60 \
  --output "$OUT/nlg_shapes-flow.json"
$PY benchmarks/bench_search.py --model shapes-flow --num_candidates 16 --output "$OUT/bench_search_flow.json" \
  --plot "$OUT/bench_search_flow.png" --quiet
# A noise-aware judge trained on this model's own previews (sigma units; not shipped), its schedule calibrated on
# the calibration half of the table, then TTSnap with it on two disjoint seed sets.
NAJ=${FLOW_JUDGE:-runs/naj-flow}
[ -d "$NAJ/noise-aware" ] || PYTHONPATH=. $PY training/train_noise_aware_reward.py \
  --pretrained_model_name_or_path assets/shapes-flow --output_dir "$NAJ" --num_prompts 384 \
  --num_validation_prompts 64 --num_seeds 8 --steps_per_stage 100 \
  --step_targets 16,15,14,13,12,11,10,9,8,7,6,5,4,3,2,1,0 --publish_stages 2,4,6,8,11,14 --publish_dtype float16
$PY benchmarks/bench_search.py --model shapes-flow --num_candidates 16 --seed_sets 2 \
  --noise_aware_path "$NAJ/noise-aware" --save_schedule "$NAJ/noise-aware" \
  --output "$OUT/bench_search_flow_judge.json" --plot "$OUT/bench_search_flow_judge.png" --quiet
# NoiseQuery on the flow model: a 2,000-seed library of its posteriors (not shipped), then the UNet's protocol.
LIB=${FLOW_LIBRARY:-runs/shapes-flow-library}
.venv/bin/noisekit library build --model shapes-flow --num_seeds 2000 --output "$LIB" --batch_size 64 --resume --quiet
$PY benchmarks/library_evidence.py --library "$LIB" --model shapes-flow --num_prompts 24 --num_reward_prompts 32 \
  --images 4 --output "$OUT/library_shapes-flow.json"
# Golden noise on the flow model: an NPD of every distinct training caption of 11,000 scenes (7,458) with one seed,
# and of 3,718 of them again with other seeds (re-denoise as an Euler step and its exact inverse; about half the
# pairs are kept), a small NPNet trained on both (not shipped), then the UNet's protocol on 200 held-out prompts.
# (An NPD of 1,024 captions, `runs/npd-flow`, gave the earlier 412-pair net.)
PYTHONPATH=. $PY training/collect_npd.py --pretrained_model_name_or_path assets/shapes-flow --dataset shapes \
  --num_prompts 11000 --reward shapes-judge --output_dir runs/npd-flow-big --batch_size 64
PYTHONPATH=. $PY training/collect_npd.py --pretrained_model_name_or_path assets/shapes-flow --dataset shapes \
  --num_prompts 4500 --seed_offset 1000000 --reward shapes-judge --output_dir runs/npd-flow-big2 --batch_size 64
[ -d runs/npnet-flow-big/npnet ] || PYTHONPATH=. $PY training/train_npnet.py \
  --data_dir runs/npd-flow-big runs/npd-flow-big2 --pretrained_model_name_or_path assets/shapes-flow --small_swin \
  --output_dir runs/npnet-flow-big
$PY benchmarks/npnet_evidence.py --npnet runs/npnet-flow-big/npnet --model shapes-flow --num_prompts 200 \
  --timing_repeats 2 --output "$OUT/npnet_shapes-flow-big.json"
# Every method and the composed plan at equal NFE (library -> golden -> NLG -> TTSnap with the flow judge).
$PY benchmarks/plan_evidence.py --model shapes-flow --library "$LIB" --npnet runs/npnet-flow-big/npnet \
  --preview_reward_path "$NAJ/noise-aware" --output "$OUT/plan_shapes-flow.json"
