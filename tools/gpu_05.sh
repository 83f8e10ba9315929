#!/usr/bin/env bash
# Notebook 05 (pixel flipping) at full scale on one GPU, in calls of at most LIMIT_S seconds of
# training: each call resumes the run from notebooks/results/05_pixel_flipping_runs (carry that
# folder: its state.pt is git-ignored) and returns it as $OUT/05_runs.tar.gz (records, weights.pt
# and state.pt, about 4 MB). The notebook's code runs through `lyabook exec` (no Jupyter: the
# device image has no papermill); once the 51 epochs are done it runs to the end there and its
# results come back as $OUT/05_pixel_flipping.json. The page itself is then rendered from the
# records (`lyabook run --profile full --device auto --only 05 --out notebooks`: no retraining).
# Usage: bash tools/gpu_05.sh [LIMIT_S=420]
set -uo pipefail
limit=${1:-420}
export LYABOOK_DATA_DIR=${LYABOOK_DATA_DIR:-$PWD/.carry/data} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
out=${OUT:-/tmp/gpu05}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
runs=notebooks/results/05_pixel_flipping_runs
python3 -m lyabook exec notebooks/05_pixel_flipping.ipynb --profile full --device cuda --out notebooks \
    --set train_time_limit_s="$limit" 2>&1 | grep -v Warning | tr '\r' '\n' \
    | grep -E "population|MNIST|time limit|Error|error|units|05_pixel" | tail -12
tar -czf "$out/05_runs.tar.gz" --exclude='*.tmp' "$runs"
ls -la $runs/*/ | tail -4
if ls $runs/*/epoch_051.json >/dev/null 2>&1; then
    cp notebooks/results/05_pixel_flipping.json "$out/" 2>/dev/null && echo "complete"
else
    echo "not complete yet: run this again (carry $runs)"
fi
