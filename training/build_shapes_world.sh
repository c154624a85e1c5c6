#!/usr/bin/env bash
# Rebuild every shapes-world asset from nothing, in order; each step resumes from its checkpoints, and a step
# whose result exists is skipped. CPU: about 2 hours on 2 cores. Usage: bash training/build_shapes_world.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=.

[ -d "$RUNS/vae/vae" ] || $PY training/train_shapes_vae.py --output_dir "$RUNS/vae" --max_train_steps 1250
[ -d "$RUNS/t2i-eps/pipeline" ] || \
  $PY training/train_shapes_t2i.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/t2i-eps" --max_train_steps 4500
if [ ! -d assets/shapes-t2i-eps ]; then
  cp -r "$RUNS/t2i-eps/pipeline" assets/shapes-t2i-eps
  cp "$RUNS/vae/vae/TRAINING.json" assets/shapes-t2i-eps/vae/TRAINING.json  # how the VAE inside was made
fi
[ -d "$RUNS/judge/judge" ] || $PY training/train_shapes_judge.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/judge"
[ -d assets/shapes-judge ] || cp -r "$RUNS/judge/judge" assets/shapes-judge
[ -d "$RUNS/t2i-ztsnr/pipeline" ] || \
  $PY training/finetune_vpred_ztsnr.py --pretrained_model_name_or_path assets/shapes-t2i-eps --dataset shapes \
    --output_dir "$RUNS/t2i-ztsnr" --max_train_steps 2000
[ -d assets/shapes-t2i ] || cp -r "$RUNS/t2i-ztsnr/pipeline" assets/shapes-t2i
[ -d "$RUNS/clip/clip" ] || $PY training/train_shapes_clip.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/clip" \
  --max_train_steps 600 --num_scenes 10000
[ -d assets/shapes-clip ] || cp -r "$RUNS/clip/clip" assets/shapes-clip
