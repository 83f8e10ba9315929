#!/usr/bin/env bash
# Notebook 03 on the population trainer (trainer version 2) on one GPU, in parts of at most
# LIMIT seconds each (a device command's limit); records go to OUT on the GPU machine and a rerun
# resumes from them. When both populations are done, the records come back as one tar file.
# Usage: bash tools/gpu_03_v2.sh OUT LIMIT_S
set -euo pipefail
out=${1:-/tmp/ex3}; limit=${2:-400}
export LYABOOK_DATA_DIR=${LYABOOK_DATA_DIR:-$PWD/.carry/data} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m lyabook exec notebooks/03_training_evolution.ipynb --profile full --device cuda --out "$out" \
    --set char_time_limit_s="$limit" mocap_time_limit_s="$limit" sweep_networks=19 fig26_epochs=13 sweep_epochs=13 mocap_epochs=60 \
    2>&1 | grep -v Warning | tail -25
