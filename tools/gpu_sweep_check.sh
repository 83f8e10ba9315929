#!/usr/bin/env bash
# The SMNIST sweep (8 architectures x 200 networks, row-wise MNIST) for EPOCHS epochs as one
# shard per visible GPU (`lyabook launch`), timed; prints each job's records and the wall time.
# Usage: bash tools/gpu_sweep_check.sh OUT EPOCHS
set -euo pipefail
out=${1:-/tmp/sweep}; epochs=${2:-1}
export LYABOOK_DATA_DIR=${LYABOOK_DATA_DIR:-$PWD/.carry/data} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s.%N)
python3 -m lyabook launch smnist --out "$out" --epochs "$epochs" 2>&1 | grep -v Warning
t1=$(date +%s.%N)
python3 - "$out" "$t0" "$t1" <<'PY'
import json, sys, pathlib
out, t0, t1 = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
rows = []
for f in sorted(out.glob("*/*/epoch_*.json")):
    r = json.loads(f.read_text())
    res, prov = r["results"], r["provenance"]
    loss = [v for v in res["valid_loss"] if isinstance(v, float)]
    rows.append({"job": f.parent.parent.name, "epoch": res["epoch"], "networks": len(res["valid_loss"]),
                 "train_time_s": res["train_time_s"], "spectrum_time_s": res.get("spectrum_time_s"),
                 "median_valid_loss": sorted(loss)[len(loss) // 2] if loss else None,
                 "median_valid_accuracy": sorted(res["valid_accuracy"])[len(res["valid_accuracy"]) // 2],
                 "diverged": len(res["diverged"]), "device": prov["device"]})
    print(rows[-1])
doc = {"wall_s": t1 - t0, "rows": rows}
print("wall", round(t1 - t0, 1), "s for", len({r['job'] for r in rows}), "jobs")
pathlib.Path(sys.argv[1], "summary.json").write_text(json.dumps(doc, indent=1))
PY
