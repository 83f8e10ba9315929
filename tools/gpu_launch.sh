#!/usr/bin/env bash
# A sweep (`lyabook launch`) on one GPU machine, detached (setsid) so that it outlives the
# 10-minute device command:
#   SWEEP=charrnn JOBS=charrnn-64,charrnn-128 bash tools/gpu_launch.sh start   copy the tree to
#         $WORK and launch jobs x GPUs shards: each job split in one part per GPU, so that every
#         GPU gets one part of every job (lyabook.sweeps.plan: shard i is part i mod GPUs);
#         returns at once. SWEEP=evolution (notebook 03's two populations, JOBS=charrnn,mocap)
#         writes where notebook 03 reads (notebooks/results/03_training_evolution_runs).
#   SWEEP=evolution SHARDS="charrnn:0/6 mocap:0/2" ... start   only those shards (`lyabook sweep
#         --jobs J --shard i/n`), shard k on GPU k mod GPUs: a population too large for one session
#         trained in parts over sessions (the parts merge when the last one finishes beside the
#         others' committed records)
#   SWEEP=evolution SHARDS="charrnn:4/6:0/3" ... start   part 0 of 3 of shard 4 (`--shard i/n:j/m`):
#         a shard too long for one device command, trained in parts that each finish inside one
#         command; the parts merge into shard 4's records, those with the other shards'
#   MPS=1 ... start   start NVIDIA's Multi-Process Service first, so that several shards on one GPU
#         run their kernels side by side instead of taking turns (time-slicing, which slowed a
#         CharRNN part from 13.2 to 25 s of training per epoch beside a mocap shard that alone needs
#         about 3 s). Measured on H200 (2026-11-28): two CharRNN parts per GPU under MPS take 27 s per
#         epoch each against 17.6 s alone, 1.3 times the throughput of one part per GPU
#   bash tools/gpu_launch.sh wait S   wait up to S seconds for the launch to end, then pack the
#         records it wrote (never the checkpoints) into $OUT/<sweep>_runs.tar.gz (split in 15 MiB
#         pieces where larger) and print each shard's progress
# One device command = one machine, in practice: put start and wait in the same command
#   (`... start && bash tools/gpu_launch.sh wait 560`). The machine goes back 30 s after a command
#   ends, and twice on 2026-11-29 it was gone before the next command of a chain reached it (a
#   CharRNN part 18 and 30 epochs in, 1,640 s of device time lost with nothing back): plan every
#   training to end, and its records to be packed, inside one 10-minute command.
#   Commands back to back may land on the same machine (held 30 s after each): give each its own
#   `export WORK=/root/lyabook-<name>` (start and wait both read it), or start refuses (it would
#   otherwise find the last command's launch, and wait would pack that one).
# Each job's training must finish on the machine that started it: a 512-unit population's
# checkpoint (about 4 GB with Adam's state) cannot come back. Measured: 64-256 units, 1,162 s on
# 4 x H200 (2026-11-27); charrnn-512, 613 s on 4 x H200 (2026-11-28, recursive Householder with
# Triton panels): per shard of 75 networks 20.6 s per training epoch, full-state spectra 56 s and
# h-block spectra 18 s per spectrum epoch (epochs 6 and 15). Its first attempt ran out of memory
# at epoch 15's spectra: the QR's workspace waited for the cycle collector (fixed in f1b7964; the
# run that landed had a work-around, branch charrnn-512-run-code; tools/probe_spectrum_memory.py).
# Notebook 03 (SWEEP=evolution SHARDS="charrnn:0/6 charrnn:1/6 mocap:0/2 mocap:1/2"): 970 s on
# 2 x H200 (2026-11-28); a CharRNN part of 11 networks alone on its GPU: 13.2 s of training and
# 5.8 s of spectra per epoch, 40 epochs. The tree must fit the device's 64 MiB with the data:
# bash tools/device_tree.sh slim first.
# The data travel as the device call's carry paths, from an ignored .carry/ in this checkout:
#   mkdir -p .carry/data && cp -r ../shared/data/{war_and_peace,cmu_mocap} .carry/data
#   echo .carry >> .git/info/exclude   # then carry [".carry/data/war_and_peace", ".carry/data/cmu_mocap"]
set -uo pipefail
WORK=${WORK:-/root/lyabook-launch}
out=${OUT:-/tmp/gpu_launch_out}
sweep=${SWEEP:-charrnn}
[ "${1:-}" = wait ] && [ -f "$WORK/log/sweep" ] && sweep=$(cat "$WORK/log/sweep")  # what start launched
case $sweep in
    charrnn) runs=notebooks/results/09_aelle_charrnn_runs ;;
    evolution) runs=notebooks/results/03_training_evolution_runs; JOBS=${JOBS:-charrnn,mocap} ;;
    *) echo "SWEEP must be charrnn or evolution, got $sweep"; exit 2 ;;
esac
mode=${1:?usage: gpu_launch.sh start | wait SECONDS}

if [ "$mode" = start ]; then
    if [ -d "$WORK/log" ]; then  # a machine still held from an earlier command keeps its $WORK
        echo "a launch already started in $WORK ($(cat "$WORK/log/time" 2>/dev/null | tr '\n' ' ')); set WORK=<another folder>"
        exit 4
    fi
    mkdir -p "$WORK" && cp -a . "$WORK/" && mkdir -p "$WORK/log" && echo "$sweep" > "$WORK/log/sweep"
    n=$(nvidia-smi -L | wc -l)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    cd "$WORK"
    export LYABOOK_DATA_DIR=$WORK/.carry/data PYTHONUNBUFFERED=1 PYTHONPATH=$WORK
    if [ "${MPS:-0}" = 1 ]; then  # one MPS daemon for every GPU; the shards connect to it
        export CUDA_MPS_PIPE_DIRECTORY=$WORK/log/mps-pipe CUDA_MPS_LOG_DIRECTORY=$WORK/log/mps
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        nvidia-cuda-mps-control -d && echo "MPS daemon started" || { echo "MPS could not start"; exit 3; }
    fi
    if [ -n "${SHARDS:-}" ]; then  # chosen shards: "job:i/n ..." (the rest in another session), GPU k mod n
        cmd="" k=0
        for s in $SHARDS; do
            cmd="$cmd CUDA_VISIBLE_DEVICES=$(( k % n )) OMP_NUM_THREADS=4 ${PY:-python3} -m lyabook sweep $sweep \
                --jobs ${s%%:*} --shard ${s#*:} --out $runs --profile full --device cuda --quiet \
                > log/shard-$k.log 2>&1 & pids=\"\$pids \$!\";"
            k=$(( k + 1 ))
        done
        cmd="$cmd rc=0; for p in \$pids; do wait \$p || rc=\$?; done; exit \$rc"
        what="shards $SHARDS"
    else
        njobs=$(echo "${JOBS:?JOBS=comma-separated job names}" | tr ',' '\n' | grep -c .)
        cmd="${PY:-python3} -m lyabook launch $sweep --gpus $(( njobs * n )) --jobs $JOBS --out $runs"
        what="$(( njobs * n )) shards ($JOBS)"
    fi
    setsid bash -c "t0=\$(date +%s); echo start \$t0 > log/time
        ( $cmd ) > log/launch.log 2>&1; echo \$? > log/rc; echo end \$(date +%s) elapsed \$(( \$(date +%s) - t0 )) s >> log/time" \
        < /dev/null > /dev/null 2>&1 &
    sleep 5; echo "launched $what of $sweep on $n GPUs"
    exit 0
fi

limit=${2:?usage: gpu_launch.sh wait SECONDS}
t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt "$limit" ] && [ ! -f "$WORK/log/rc" ]; do sleep 10; done
cd "$WORK" && mkdir -p "$out"
echo "== after $(( $(date +%s) - t0 )) s of waiting: $(cat log/time | tr '\n' ' ') rc=$(cat log/rc 2>/dev/null || echo running)"
for d in $runs/*/ $runs/*/*/; do  # [job/]hash/[shard-i-of-n/]
    for s in "$d" "$d"shard-*/; do
        [ -d "$s" ] && echo "$s: $(ls "$s" 2>/dev/null | grep -c 'epoch_.*json') epochs recorded"
    done
done | sort | uniq
for f in log/*.log; do echo "-- $f"; grep -v Warning "$f" | tail -3; done
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
# Only what this launch wrote (records committed before it stay behind: with them the archive passed
# the 16 MiB a device call returns, 2026-11-28), in pieces of 15 MiB where it is larger still:
# cat <sweep>_runs.tar.gz* | tar -xz
started=$(awk '/^start/ {print $2}' log/time)
tar -czf "$out/${sweep}_runs.tar.gz" --newer-mtime="@$started" --exclude=state.pt --exclude='*.tmp' \
    --exclude='*.tmp.npz' $runs log
if [ "$(stat -c %s "$out/${sweep}_runs.tar.gz")" -gt $(( 15 * 1024 * 1024 )) ]; then
    split -b 15M -d "$out/${sweep}_runs.tar.gz" "$out/${sweep}_runs.tar.gz.part-" && rm "$out/${sweep}_runs.tar.gz"
fi
ls -la "$out"
