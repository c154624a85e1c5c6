#!/usr/bin/env bash
# One prepared GPU check: SDXL-architecture timings with random weights (nothing is downloaded). Needs a CUDA
# machine with this repository's .venv (or PYTHON pointing at an interpreter with noisekit installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p benchmarks/results
HF_HUB_OFFLINE=1 timeout 580 $PY benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json "$@"
