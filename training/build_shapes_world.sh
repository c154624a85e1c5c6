#!/usr/bin/env bash
# Rebuild every shapes-world asset from nothing, in order; each step resumes from its checkpoints and a step
# whose asset exists is skipped. CPU: about 2 hours on 2 cores. Usage: bash training/build_shapes_world.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=.

[ -d "$RUNS/vae/vae" ] || $PY training/train_shapes_vae.py --output_dir "$RUNS/vae" --max_train_steps 1250
if [ ! -d assets/shapes-t2i-eps ]; then
  $PY training/train_shapes_t2i.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/t2i-eps" --max_train_steps 4500
  cp -r "$RUNS/t2i-eps/pipeline" assets/shapes-t2i-eps
fi
if [ ! -d assets/shapes-judge ]; then
  $PY training/train_shapes_judge.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/judge"
  cp -r "$RUNS/judge/judge" assets/shapes-judge
fi
if [ ! -d assets/shapes-clip ]; then
  $PY training/train_shapes_clip.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/clip"
  cp -r "$RUNS/clip/clip" assets/shapes-clip
fi
if [ ! -d assets/shapes-t2i ]; then
  $PY training/finetune_vpred_ztsnr.py --pretrained_model_name_or_path assets/shapes-t2i-eps --dataset shapes \
    --output_dir "$RUNS/t2i-ztsnr" --max_train_steps 2000
  cp -r "$RUNS/t2i-ztsnr/pipeline" assets/shapes-t2i
fi
