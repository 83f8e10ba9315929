"""Print the progress of population runs from their per-epoch records (for long GPU runs).

Usage: python tools/watch_runs.py RUNS_DIR [PACK.tar.gz]   (PACK: the JSON and NPZ records, no checkpoints)
"""
import json
import sys
import tarfile
from pathlib import Path

runs = Path(sys.argv[1])
for d in sorted(p for p in runs.glob("*") if p.is_dir()):
    files = sorted(d.glob("epoch_*.json"))
    if not files:
        continue
    last = json.loads(files[-1].read_text())
    r, cfg = last["results"], last["provenance"].get("config", {})
    n = len(r["valid_loss"])
    spec = r.get("spectrum_time_s", 0) + r.get("spectrum_time_s_h_block", 0)
    print(f"{d.name} {cfg.get('part')}: {n} networks, epoch {r['epoch']}, train {r['train_time_s']:.1f} s, "
          f"spectra {spec:.1f} s, mean valid loss {sum(r['valid_loss']) / n:.4f}", flush=True)
if len(sys.argv) > 2:
    with tarfile.open(sys.argv[2], "w:gz") as tar:
        for f in sorted(runs.glob("*/epoch_*.json")) + sorted(runs.glob("*/epoch_*[0-9].npz")):
            tar.add(f, arcname=f"{runs.name}/{f.parent.name}/{f.name}")
