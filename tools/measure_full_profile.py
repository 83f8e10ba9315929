"""Wall time and peak GPU memory of each notebook under the full profile (book/how_to_run.md).

Each notebook runs in its own child process (so one notebook's CUDA caches and peak do not
carry into the next): the child resets torch's peak-memory counters, runs the notebook's code
in-process with `lyabook.cli.exec_notebook` (profile full, no Jupyter, figures discarded) and
reports its wall time and `torch.cuda.max_memory_allocated` / `max_memory_reserved`. The
parent writes one JSON file after every notebook (a call that is cut off still leaves the
notebooks that finished), naming the GPU, driver, torch and the sha256 of the package sources.

    PYTHONPATH=. python tools/measure_full_profile.py [--only 00 02 ...] [--out DIR]
        [--set NOTEBOOK:NAME=VALUE ...] [--deadline-s SECONDS] [--device cuda]

``--set 03:sweep_epochs=1`` passes ``sweep_epochs=1`` to notebook 03 only (a reduced run; the
JSON lists every reduction). For training notebooks the per-epoch records the run wrote
(``results/*_runs/*/epoch_*.json``: train_time_s, spectrum_time_s) are copied into the JSON,
so a full-scale time can be extrapolated from a run of one epoch. The JSON goes to
``$OUT/full_profile_<gpu>.json`` when $OUT is set, else to ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def source_hash() -> str:
    """sha256 over the package's .py files and the notebooks (names and contents, sorted)."""
    h = hashlib.sha256()
    for p in sorted(list((ROOT / "lyabook").glob("*.py")) + list(NOTEBOOKS.glob("*.ipynb"))
                    + list((NOTEBOOKS / "profiles").glob("*/*.yaml"))):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except Exception:
        return None


def machine() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, check=True).stdout.strip()
        except Exception:
            info["driver"] = None
    else:
        info.update(gpu=None, cpu_threads=torch.get_num_threads())
    return info


def child(name: str, device: str, out: Path, overrides: dict, result: Path) -> int:
    """Run one notebook in this process; write {wall_time_s, peak memory, rc} to ``result``."""
    import torch

    from lyabook.cli import exec_notebook

    cuda = device == "cuda"
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rc = exec_notebook(NOTEBOOKS / f"{name}.ipynb", profile="full", device=device, out=out, overrides=overrides)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    rec = {"rc": rc, "wall_time_s": round(wall, 2)}
    if cuda:
        rec["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        rec["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    result.write_text(json.dumps(rec))
    return rc


def epoch_records(out: Path) -> dict:
    """Per-epoch timings of the population runs the notebook wrote, by run folder."""
    runs = {}
    for d in sorted(out.glob("results/*_runs/*")):
        rows = []
        for f in sorted(d.glob("epoch_*.json")):
            j = json.loads(f.read_text())
            r, cfg = j["results"], j["provenance"].get("config", {})
            rows.append({k: r.get(k) for k in ("epoch", "train_time_s", "spectrum_time_s", "spectrum_time_s_h_block",
                                                 "spectrum_method") if k in r})
        if rows:
            runs[d.name] = {"part": cfg.get("part"), "networks": len(j["results"]["valid_loss"]),
                            "hidden": cfg.get("hidden"), "epochs": rows}
    return runs


def parse_sets(items) -> dict:
    """["03:sweep_epochs=1", ...] -> {"03": {"sweep_epochs": 1}} (values parsed as YAML)."""
    import yaml

    sets: dict = {}
    for item in items or []:
        nb, sep, assign = item.partition(":")
        name, sep2, value = assign.partition("=")
        if not sep or not sep2:
            raise SystemExit(f"--set expects NOTEBOOK:NAME=VALUE, got {item!r}")
        sets.setdefault(nb, {})[name] = yaml.safe_load(value)
    return sets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="notebook names or prefixes (default: all)")
    ap.add_argument("--set", nargs="+", default=None, metavar="NOTEBOOK:NAME=VALUE")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="working folder for the notebooks' results (default: a temp folder)")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop starting notebooks after this many seconds "
                    "and kill one still running at the deadline (recorded as timed out)")
    ap.add_argument("--json", default=None, help="output JSON (default: $OUT/full_profile_<gpu>.json)")
    ap.add_argument("--child", nargs=4, metavar=("NAME", "OUT", "OVERRIDES_JSON", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        name, out, ov, result = args.child
        return child(name, args.device, Path(out), json.loads(ov), Path(result))

    import tempfile

    t_start = time.perf_counter()
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    if args.only:
        names = [n for n in names if any(n.startswith(o) for o in args.only)]
    sets = parse_sets(args.set)
    info = machine()
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", info.get("gpu") or "cpu").strip("_").lower()
    dest = Path(args.json) if args.json else Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results") / f"full_profile_{gpu}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lyabook_full_"))
    doc = {"benchmark": "full_profile", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([Path(sys.executable).name, "tools/measure_full_profile.py"] + (argv or sys.argv[1:])),
           "machine": info, "lyabook_commit": os.environ.get("LYABOOK_COMMIT") or git_commit(),
           "source_sha256": source_hash(), "data_dir": os.environ.get("LYABOOK_DATA_DIR"),
           "method": "each notebook in its own process: lyabook.cli.exec_notebook(profile='full'), wall time around the "
                     "call, torch.cuda.max_memory_allocated/max_memory_reserved after it (peak since the process started)",
           "notebooks": {}}
    for name in names:
        overrides = next((v for k, v in sets.items() if name.startswith(k)), {})
        out = work / name
        result = out / "_measure.json"
        out.mkdir(parents=True, exist_ok=True)
        left = None if args.deadline_s is None else args.deadline_s - (time.perf_counter() - t_start)
        entry = {"overrides": overrides}
        if left is not None and left < 10:
            entry["status"] = "not started (deadline)"
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--device", args.device,
                   "--child", name, str(out), json.dumps(overrides), str(result)]
            print(f"== {name} {overrides or ''} (deadline in {left:.0f} s)" if left else f"== {name} {overrides or ''}", flush=True)
            t0 = time.perf_counter()
            log = []
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=False)
            try:
                import threading

                def pump():
                    for line in proc.stdout:
                        print(f"  {line}", end="", flush=True)
                        log.append(line)
                th = threading.Thread(target=pump, daemon=True)
                th.start()
                proc.wait(timeout=left)
                th.join(5)
                entry.update(json.loads(result.read_text()) if result.is_file() else {"rc": proc.returncode})
                entry["status"] = "ok" if entry.get("rc") == 0 else "failed"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                entry.update(status="timed out (deadline)", wall_time_s_at_kill=round(time.perf_counter() - t0, 1))
            entry["cells_s"] = {m.group(1): float(m.group(2)) for line in log
                                if (m := re.match(r"cell (\d+): ([0-9.]+) s", line))}
            errors = [line.strip() for line in log if line.startswith("error:") or "Error" in line]
            if errors and entry["status"] != "ok":
                entry["errors"] = errors[-5:]
            runs = epoch_records(out)
            if runs:
                entry["population_runs"] = runs
        doc["notebooks"][name] = entry
        doc["total_wall_time_s"] = round(time.perf_counter() - t_start, 1)
        dest.write_text(json.dumps(doc, indent=1))
        print(f"   {name}: {entry.get('status')}, {entry.get('wall_time_s', entry.get('wall_time_s_at_kill'))} s, "
              f"peak {entry.get('max_memory_allocated_gib')} GiB allocated; written {dest}", flush=True)
    return 0 if all(e.get("status") == "ok" for e in doc["notebooks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
