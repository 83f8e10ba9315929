#!/usr/bin/env bash
# Notebook 03 at the committed full-profile scale on the population trainer (version 2), on one
# GPU, in parts of at most LIMIT seconds of training per population (a device command may run 10
# minutes; the records and state.pt stay in OUT on the GPU machine between chained calls, and a
# rerun resumes). Once both populations have every epoch, the records, the executed notebook and
# its results come back as one archive, OUT_ARCHIVE (default $OUT/03_v2.tar.gz when $OUT is set).
# Usage: bash tools/gpu_03_v2.sh [RUN_DIR=/tmp/ex3] [LIMIT_S=420]
# Expected: about 1300 s of H100 time in all (the version-1 run: 387 s training, about 900 s of
# spectra), so three chained calls.
set -euo pipefail
run=${1:-/tmp/ex3}; limit=${2:-420}
export LYABOOK_DATA_DIR=${LYABOOK_DATA_DIR:-$PWD/.carry/data} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m lyabook exec notebooks/03_training_evolution.ipynb --profile full --device cuda --out "$run" \
    --set char_time_limit_s="$limit" mocap_time_limit_s="$limit" sweep_networks=19 fig26_epochs=13 \
          sweep_epochs=13 mocap_epochs=60 2>&1 | grep -v Warning | tail -20
runs="$run/results/03_training_evolution_runs"
python3 tools/watch_runs.py "$runs" || true
n_char=$(ls "$runs"/*/epoch_013.json 2>/dev/null | wc -l)
n_mocap=$(ls "$runs"/*/epoch_060.json 2>/dev/null | wc -l)
if [ "$n_char" -ge 1 ] && [ "$n_mocap" -ge 1 ]; then
    archive=${OUT_ARCHIVE:-${OUT:-$run}/03_v2.tar.gz}
    tar -czf "$archive" -C "$run" --exclude=state.pt --exclude='*.tmp' results
    echo "complete: $archive"
else
    echo "not complete yet (CharRNN done: $n_char, mocap done: $n_mocap): run this again"
fi
