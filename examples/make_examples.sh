#!/usr/bin/env bash
# Rebuilds the shipped example runs with `alignctl train` (CPU, about a minute):
#   sparse-parity-baseline   the paper's sparse parity setup, 400 epochs: fits the training data
#                            but has not generalised yet (grokking comes ~1500 epochs later)
#   sparse-parity-grokalign  the same seed with GrokAlign (lambda 0.1): generalises by epoch ~85
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p checkpoints
alignctl train --task sparse-parity --seed 0 --epochs 400 --save-schedule log:8 \
    --out checkpoints/sparse-parity-baseline --force --quiet --device cpu
alignctl train --task sparse-parity --seed 0 --reg grokalign --epochs 200 --save-schedule log:8 \
    --out checkpoints/sparse-parity-grokalign --force --quiet --device cpu
# run state for resuming is not needed to analyse: keep the examples small
rm -rf checkpoints/*/checkpoints/state
