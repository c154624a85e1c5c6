#!/usr/bin/env bash
# One prepared GPU check: SDXL- and FLUX.1-architecture timings with random weights (nothing is downloaded).
# Needs a CUDA machine with this repository's .venv (or PYTHON pointing at an interpreter with noisekit installed).
# FAMILIES=sdxl or FAMILIES=flux runs one of the two.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p benchmarks/results
for family in ${FAMILIES:-sdxl flux}; do
    suffix=$([ "$family" = sdxl ] && echo "" || echo "_$family")
    HF_HUB_OFFLINE=1 timeout 580 $PY benchmarks/gpu_check.py --families "$family" \
        --json "benchmarks/results/gpu_check$suffix.json" "$@"
done
