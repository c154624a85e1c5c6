#!/usr/bin/env bash
# Rebuild every shapes-world asset from nothing, in order; each step resumes from its checkpoints, and a step
# whose result exists is skipped. CPU: about 3 hours on 2 cores. Usage: bash training/build_shapes_world.sh [RUNS]
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
# The flow twin reuses shapes-t2i's VAE and text encoder; its folder links their files.
[ -d assets/shapes-flow ] || $PY training/train_shapes_flow.py --source assets/shapes-t2i --output_dir "$RUNS/flow" \
  --output_pipeline assets/shapes-flow --max_train_steps 4500
[ -d "$RUNS/clip/clip" ] || $PY training/train_shapes_clip.py --vae "$RUNS/vae/vae" --output_dir "$RUNS/clip" \
  --max_train_steps 600 --num_scenes 10000
[ -d assets/shapes-clip ] || cp -r "$RUNS/clip/clip" assets/shapes-clip
# Noise-aware judge (TTSnap's self-distillation): per-stage checkpoints at the default schedules' steps, in float16.
NAJ="--output_dir $RUNS/naj --num_prompts 384 --num_validation_prompts 64 --num_seeds 8 --steps_per_stage 100"
[ -d "$RUNS/naj/noise-aware" ] || $PY training/train_noise_aware_reward.py $NAJ --publish_stages 2,4,6,11 --publish_dtype float16
[ -d assets/shapes-judge-noise-aware ] || cp -r "$RUNS/naj/noise-aware" assets/shapes-judge-noise-aware
# The judge's latent twin: its features from x0 latents (rendered scenes, then shapes-t2i's trajectories).
[ -d assets/shapes-judge-latent ] || $PY training/train_latent_twin.py --model shapes-t2i --output_dir "$RUNS/twin" \
  --output_folder assets/shapes-judge-latent --max_train_steps 3000
# NoiseQuery library of 10,000 seeds of shapes-t2i (posteriors of the empty prompt; the shapes CLIP for text).
[ -d assets/shapes-library ] || \
  .venv/bin/noisekit library build --num_seeds 10000 --output assets/shapes-library --batch_size 64 --resume --quiet
# NPNet golden noise: NPD of 1536 shapes captions on shapes-t2i, judged by the shapes judge, then the small net.
[ -f "$RUNS/npd-shapes/records.jsonl" ] || $PY training/collect_npd.py --pretrained_model_name_or_path \
  assets/shapes-t2i --dataset shapes --num_prompts 1536 --reward shapes-judge --output_dir "$RUNS/npd-shapes" --batch_size 64
[ -d "$RUNS/npnet-shapes/npnet" ] || $PY training/train_npnet.py --data_dir "$RUNS/npd-shapes" \
  --pretrained_model_name_or_path assets/shapes-t2i --shapes --output_dir "$RUNS/npnet-shapes"
[ -d assets/shapes-npnet ] || cp -r "$RUNS/npnet-shapes/npnet" assets/shapes-npnet
