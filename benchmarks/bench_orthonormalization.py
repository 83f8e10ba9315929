"""One QR step of the engine against the matrix-product floor, per orthonormalizer (issue 13).

For each (frames, size): the bare product X @ X of the same shapes (the floor a step of the QR
algorithm competes with), cuSOLVER's QR (torch.linalg.qr, eager: it does not capture), and,
captured in a CUDA graph as the engine runs them: `_householder_blocked` (recursive halves,
Triton panels: what the engine runs on a GPU), the same with the torch panel (what it runs
without Triton) and shifted CholeskyQR3. Every orthonormalizer's log diag R (computed eagerly)
is checked against LAPACK's on the CPU for the first four frames.
Prints one line per shape with the times and their ratios to the floor, measured in this one
run, and writes benchmarks/results/orthonormalization_<device>.json naming the device.

    python benchmarks/bench_orthonormalization.py [--quick] [--out DIR]
"""
from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import torch

from lyabook import lyapunov, triton_qr
from lyabook.results import code_version, device_slug

SHAPES = [(250, 1024), (1280, 128), (2000, 512), (10, 512)]  # the CharRNN population first: the headline


def graphed(fn, x, reps):
    """Median ms of ``fn(x)`` replayed from a CUDA graph (captured after two warm-up calls)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(x)
    ms = _time(g.replay, reps)
    del g  # a graph keeps its memory pool (gigabytes at these shapes) until freed
    gc.collect()
    torch.cuda.empty_cache()
    return ms


def eager(fn, x, reps):
    fn(x)
    return _time(lambda: fn(x), reps)


def _time(call, reps):
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def main(quick=False, out_dir=Path(__file__).parent / "results"):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # before the minutes of timing, not after them
    dev = torch.device("cuda")
    rows = []
    for frames, n in SHAPES[:1] if quick else SHAPES:
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(frames, n, n, generator=g, device=dev, dtype=torch.float64) / n**0.5
        reps = 5
        row = {"frames": frames, "size": n}
        row["matmul_ms"] = graphed(lambda a: a @ a, x, reps)
        methods = {"householder_blocked": lambda a: lyapunov._householder_blocked(a),
                   "householder_blocked_torch_panel": lambda a: lyapunov._householder_blocked(a, panel=lyapunov._panel_torch),
                   "cholesky_qr3": lambda a: lyapunov._cholesky_qr3(a)}
        ref = lyapunov._householder(x[:4].cpu())[1]  # LAPACK
        for name, fn in methods.items():
            try:
                log_r = fn(x)[1]  # checked eagerly: a graph's outputs are its own static buffers
                ms = graphed(fn, x, reps)
            except Exception as e:  # report and go on: one failure must not lose the table
                row[f"{name}_error"] = repr(e)[:300]
                continue
            row[f"{name}_ms"] = ms
            row[f"{name}_max_log_r_diff_vs_lapack"] = float((log_r[:4].cpu() - ref).abs().max())
        if frames * n <= 250 * 1024:  # cuSOLVER takes seconds per step beyond
            row["cusolver_ms"] = eager(torch.linalg.qr, x, 3)
        for k in list(row):
            if k.endswith("_ms") and k != "matmul_ms":
                row[k.replace("_ms", "_x_matmul")] = row[k] / row["matmul_ms"]
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        rows.append(row)
        del x
        torch.cuda.empty_cache()
    out = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
           "triton": getattr(triton_qr.triton, "__version__", None), "code": code_version(),
           "what": "median ms of one QR step (5 graph replays; cuSOLVER: 3 eager calls) and the ratio to X @ X",
           "rows": rows}
    path = out_dir / f"orthonormalization_{device_slug(dev)}.json"
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, out_dir=Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else
         Path(__file__).parent / "results")
