#!/usr/bin/env bash
# The smnist sweep at full scale (8 architectures x 200 networks, 10 epochs, a spectrum after every
# epoch) for notebook 06, over every visible GPU (`lyabook launch`: one shard per GPU; about 12
# minutes on one H100, a few on four). The records go to notebooks/results/06_aelle_smnist_runs,
# and come back as $OUT/06_runs.tar.gz (JSON and NPZ records, no checkpoints: about 10 MB). A
# call stopped by its time limit resumes from the records left on the machine when run again on
# it while it is warm. Then, here: extract the archive into notebooks/results and render notebook 06
# (`lyabook run --profile full --device auto --only 06 --out notebooks`; its AeLLEs train on the CPU).
# Usage: bash tools/gpu_06.sh
set -uo pipefail
export LYABOOK_DATA_DIR=${LYABOOK_DATA_DIR:-$PWD/.carry/data} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
out=${OUT:-/tmp/gpu06}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
runs=notebooks/results/06_aelle_smnist_runs
start=$(date +%s)
python3 -m lyabook launch smnist --out "$runs"
echo "launch: $(( $(date +%s) - start )) s"
tar -czf "$out/06_runs.tar.gz" --exclude=state.pt --exclude='*.tmp' "$runs"
n=$(ls $runs/*/epoch_010.json 2>/dev/null | wc -l)
echo "architectures with all 10 epochs: $n of 8"
