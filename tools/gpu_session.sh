#!/usr/bin/env bash
# The full-scale GPU runs of Chapters 3 and 4 on one machine of up to 4 GPUs, detached (setsid) so
# that they outlive the 10-minute device command and run while later calls wait on them:
#   bash tools/gpu_session.sh start     copy the tree to $WORK and start the chains; returns at once
#   bash tools/gpu_session.sh wait S [CHAIN...]   wait up to S seconds for the chains (default: 05,
#                                       smnist, force, asrnn), then pack what is done into $OUT (7
#                                       archives, each well under 16 MiB) and print status
# Chains, on GPU (i mod n) of the n visible:
#   05      GPU 0: notebook 05 at full scale (51 epochs of the 512-unit RNN, then the page; ~20 min)
#   sweeps  GPUs 1, 2: the smnist sweep (notebook 06; 2 shards), then the force sweep (notebook 08),
#           then one epoch of each charrnn population, to time the full charrnn sweep (not used)
#   asrnn   GPU 3: the ASRNN grid (notebook 07)
# Every chain writes its records as it goes; the archives hold records (and 05's state.pt, 3 MB, so
# that a later machine can resume it), never the sweeps' checkpoints. Each chain's start, end and
# exit status go to $WORK/log/<chain>.{log,rc,time}. The first use (2026-11-27, 4 x H200): smnist
# 379 s, force 640 s, asrnn 700 s; chain 05 stopped at once (papermill), fixed since; the charrnn
# timing epoch had not finished when the machine went back.
set -uo pipefail
WORK=${WORK:-/root/lyabook-gpu}
out=${OUT:-/tmp/gpu_session_out}
mode=${1:?usage: gpu_session.sh start | wait SECONDS}

chain() {  # chain NAME GPUS COMMAND...: run COMMAND in $WORK with CUDA_VISIBLE_DEVICES=GPUS, timed
    local name=$1 gpus=$2; shift 2
    ( cd "$WORK" && export CUDA_VISIBLE_DEVICES=$gpus && t0=$(date +%s) && echo "start $t0 gpus $gpus" > log/$name.time
      bash -c "$*" > log/$name.log 2>&1; rc=$?
      echo "end $(date +%s) elapsed $(( $(date +%s) - t0 )) s" >> log/$name.time; echo $rc > log/$name.rc )
}

if [ "$mode" = start ]; then
    if [ -d "$WORK/log" ]; then echo "already started in $WORK"; exit 0; fi
    mkdir -p "$WORK" && cp -a . "$WORK/" && mkdir -p "$WORK/log"
    n=$(nvidia-smi -L | wc -l); g() { echo $(( $1 % n )); }
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    export LYABOOK_DATA_DIR=$WORK/.carry/data PYTHONUNBUFFERED=1 PYTHONPATH=$WORK
    export -f chain; export WORK
    py=${PY:-python3}  # PY: a stand-in for tests of this script
    # lyabook exec, not run: the device image has no papermill (the page renders later from the records)
    setsid bash -c "chain 05 $(g 0) '$py -m lyabook exec notebooks/05_pixel_flipping.ipynb --profile full --device cuda --out notebooks 2>&1 | grep -v Warning'" \
        < /dev/null > /dev/null 2>&1 &
    setsid bash -c "chain smnist $(g 1),$(g 2) '$py -m lyabook launch smnist --out notebooks/results/06_aelle_smnist_runs' &&
                    chain force $(g 1),$(g 2) '$py -m lyabook launch force --out notebooks/results/08_aelle_force_runs' &&
                    chain charrnn_timing $(g 1),$(g 2) '$py -m lyabook launch charrnn --epochs 1 --out /root/charrnn_timing'" \
        < /dev/null > /dev/null 2>&1 &
    setsid bash -c "chain asrnn $(g 3) '$py -m lyabook launch asrnn --out notebooks/results/07_asrnn_eigenvalues_runs'" \
        < /dev/null > /dev/null 2>&1 &
    sleep 5; ls "$WORK/log"; echo "started on $n GPUs"
    exit 0
fi

limit=${2:?usage: gpu_session.sh wait SECONDS [CHAIN...]}
shift 2; waited_for=${*:-05 smnist force asrnn}   # charrnn_timing only when named
t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
    left=0; for c in $waited_for; do [ -f "$WORK/log/$c.rc" ] || left=1; done
    [ $left = 0 ] && break
    sleep 15
done
mkdir -p "$out"; cd "$WORK"
echo "== status after $(( $(date +%s) - t0 )) s of waiting"
for c in 05 smnist force asrnn charrnn_timing; do
    echo "-- $c: $(cat log/$c.time 2>/dev/null | tr '\n' ' ') rc=$(cat log/$c.rc 2>/dev/null || echo running)"
    tail -c 600 log/$c.log 2>/dev/null | tr '\r' '\n' | tail -3
done
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
x='--exclude=*.tmp --exclude=*.tmp.npz'
r=notebooks/results
tar -czf "$out/05.tar.gz" $x $r/05_pixel_flipping_runs $(ls notebooks/05_pixel_flipping.ipynb $r/05_pixel_flipping.json 2>/dev/null)
tar -czf "$out/06a_runs.tar.gz" $x --exclude=state.pt $(ls -d $r/06_aelle_smnist_runs/smnist-row-{LSTM,GRU,RNN,ASRNN} 2>/dev/null)
tar -czf "$out/06b_runs.tar.gz" $x --exclude=state.pt $(ls -d $r/06_aelle_smnist_runs/smnist-row-{CoRNN,LipschitzRNN,NoisyRNN,LEM} 2>/dev/null)
[ -d $r/07_asrnn_eigenvalues_runs ] && tar -czf "$out/07_asrnn_eigenvalues_runs.tar.gz" $x --exclude=state.pt $r/07_asrnn_eigenvalues_runs
[ -d $r/08_aelle_force_runs ] && tar -czf "$out/08_force_runs.tar.gz" $x --exclude=state.pt $r/08_aelle_force_runs
[ -d /root/charrnn_timing ] && tar -czf "$out/charrnn_timing.tar.gz" $x --exclude=state.pt --exclude='*.npz' -C /root charrnn_timing
tar -czf "$out/logs.tar.gz" log
ls -la "$out"
