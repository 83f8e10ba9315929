#!/usr/bin/env bash
# How the committed full-profile records of chapter 3 were made on a GPU machine (an H100):
# the notebook runs headless (`lyabook exec`, no papermill needed) with a time limit per
# population; the per-epoch records land in OUT/results/03_training_evolution_runs and are
# then re-rendered anywhere with `python -m lyabook run --profile full --only 03 --set ...`
# naming the epochs that ran.
# Usage: bash tools/gpu_full_03.sh [OUT=/tmp/ex] [CHAR_LIMIT_S=900] [MOCAP_LIMIT_S=240] [NAME=VALUE ...]
# (a limit of null: none; NAME=VALUE: further notebook parameters, e.g. sweep_networks=19, passed
# on to --set). The dissertation's whole scale: bash tools/gpu_full_03.sh /tmp/ex null null
set -euo pipefail
out=${1:-/tmp/ex}; char=${2:-900}; mocap=${3:-240}; shift $(( $# < 3 ? $# : 3 ))
export LYABOOK_DATA_DIR=${LYABOOK_DATA_DIR:-$PWD/.carry/data} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m lyabook exec notebooks/03_training_evolution.ipynb --profile full --device cuda --out "$out" \
    --set char_time_limit_s="$char" mocap_time_limit_s="$mocap" "$@"
