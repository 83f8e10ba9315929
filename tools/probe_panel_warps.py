"""Does the panel kernel's latency at a few frames fall with more warps per program?

At 10 frames of 512 the QR takes 31 times X @ X (H100): its panel kernel runs one program per
frame, 10 of 132 SMs, and about half the QR's time is that kernel's per-column reductions
(tools/profile_qr_kernels.py). More warps per program split each reduction over more threads.
Prints, for each shape and num_warps, the median ms of one QR in a CUDA graph and its ratio to
X @ X, and writes benchmarks/results/panel_warps_<device>.json after each shape. GPU only. On an H200
(2026-11-29) 140 s covered 4 of the 6 settings of the first shape: the timings take milliseconds,
the rest is start-up and compiling one set of kernels per num_warps.
    python tools/probe_panel_warps.py
"""
import functools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_orthonormalization import graphed  # noqa: E402  (the benchmark's own timing)

from lyabook import lyapunov, triton_qr  # noqa: E402
from lyabook.results import code_version, device_slug  # noqa: E402


def main():
    if not torch.cuda.is_available():
        sys.exit("probe_panel_warps needs a CUDA GPU")
    out = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"panel_warps_{device_slug('cuda')}.json"
    rows = []
    for frames, size in [(10, 512), (10, 1024), (1280, 128), (250, 1024)]:
        x = torch.randn(frames, size, size, dtype=torch.float64, device="cuda")
        row = {"frames": frames, "size": size, "matmul_ms": graphed(lambda a: a @ a, x, 20)}
        for warps in (None, 2, 4, 8, 16, 32):
            panel = functools.partial(triton_qr.panel, num_warps=warps)
            ms = graphed(lambda a: lyapunov._householder_blocked(a, panel=panel), x, 10)
            row[f"warps_{warps or 'default'}_ms"] = ms
            row[f"warps_{warps or 'default'}_x_matmul"] = ms / row["matmul_ms"]
            print(f"{frames} x {size}, num_warps {warps or 'default'}: {ms:.3f} ms ({ms / row['matmul_ms']:.1f}x X @ X)", flush=True)
        rows.append(row)
        del x
        torch.cuda.empty_cache()
        # after every shape, so that a run stopped early (each num_warps compiles its own kernels,
        # most of the probe's time) keeps the shapes it finished
        out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                   "code": code_version(), "what": __doc__.splitlines()[0], "rows": rows}, indent=1))
        print("wrote", out, flush=True)


if __name__ == "__main__":
    main()
