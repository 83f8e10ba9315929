"""Benchmark: Lyapunov spectrum of an LSTM (full (h, c) state), several ways, in one run.

For hidden sizes 64, 256, 512 (state 2N), batch 10, 100 measured steps:

* lyabook, analytic Jacobians, t_on = 1 and t_on = 10 (the device's default
  orthonormalization; on CUDA also the Householder variant for comparison);
* the same engine with ``torch.func`` Jacobians (vmap of jacrev of the cell's step);
* a per-sample ``torch.autograd.functional.jacobian`` loop with ``torch.linalg.qr`` each
  step, the way third-party reproductions do it (measured over fewer steps where it is
  slow and scaled to 100 steps; the JSON records how many steps were measured);
* the floor: 100 bare ``J @ Q`` batched matmuls on the same shapes (float32 and float64;
  the engine propagates Q in float64).

Prints a table of times and ratios and writes ``benchmarks/results/lstm_spectrum_<device>.json``
(`lyabook.results.device_slug`: ``cpu``, ``nvidia_h200``), naming the device and the code that ran.
Speed is measured here, never asserted in tests.

Usage: python benchmarks/bench_lstm_spectrum.py [--device cpu|cuda] [--sizes 64 256 512]
"""
from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

import lyabook
from lyabook import lyapunov_spectrum, rnn
from lyabook.results import code_version, device_slug
from lyabook.reference import per_sample_autograd_spectrum, timed
from lyabook.systems import Map

BATCH, STEPS, INPUT = 10, 100, 32


def matmul_floor(d, device, dtype):
    J = torch.randn(BATCH, d, d, device=device, dtype=dtype) / d**0.5
    Q0 = torch.linalg.qr(torch.randn(BATCH, d, d, device=device, dtype=dtype))[0]

    def run():
        Q = Q0
        for _ in range(STEPS):
            Q = J @ Q
        return Q

    return run


def bench_size(hidden, device, autograd_steps, repeats):
    torch.manual_seed(0)
    cell = rnn.LSTM(INPUT, hidden).to(device).eval()
    inputs = torch.randn(BATCH, STEPS, INPUT, device=device)
    d = cell.state_dim
    row = {"hidden": hidden, "state_dim": d}

    def analytic(t_on, method="auto"):
        return lambda: lyapunov_spectrum(cell, inputs=inputs, t_on=t_on, method=method)

    func_sys = Map(cell.step, state_dim=d)  # same cell, Jacobians by torch.func

    analytic(1)()  # warm-up: kernels, allocator, cuSOLVER handles
    row["analytic_t_on_1_s"], res1 = timed(analytic(1), device, repeats)
    row["analytic_method"] = res1.method
    row["analytic_cuda_graph"] = res1.cuda_graph
    row["analytic_t_on_10_s"], res10 = timed(analytic(10), device, repeats)
    row["analytic_t_on_10_method"] = res10.method  # CholeskyQR3 breaks down over long intervals
    if device.type == "cuda":
        row["analytic_householder_t_on_1_s"], resh = timed(analytic(1, "householder"), device, 1)
        row["max_abs_diff_cholesky_vs_householder"] = float((res1.exponents - resh.exponents).abs().max())
    with torch.no_grad():
        lyapunov_spectrum(func_sys, inputs=inputs[:, :2])
    row["torch_func_s"], resf = timed(lambda: lyapunov_spectrum(func_sys, inputs=inputs), device, 1)
    row["max_abs_diff_analytic_vs_torch_func"] = float((res1.exponents - resf.exponents).abs().max())
    row["max_abs_diff_t_on_1_vs_10_first_10"] = float((res1.exponents[:10] - res10.exponents[:10]).abs().max())

    n_ag = min(autograd_steps, STEPS)
    t_ag, _ = timed(lambda: per_sample_autograd_spectrum(cell, cell.init_state(BATCH), inputs, n_ag), device, 1)
    row["autograd_loop_measured_steps"] = n_ag
    row["autograd_loop_s"] = t_ag * STEPS / n_ag  # scaled to 100 steps (cost is linear in steps)

    if device.type == "cuda":  # where the time goes, per 100 steps (too slow to do on the CPU)
        x = cell.init_state(BATCH)
        with torch.no_grad():
            row["breakdown_step_and_jacobian_s"], (_, J) = timed(
                lambda: [cell.step_and_jacobian(x, inputs[:, t]) for t in range(STEPS)][-1], device, repeats)
        Jd = J.double()
        Q = torch.linalg.qr(torch.randn_like(Jd))[0]
        for name in ("householder", "cholesky"):
            lyabook.orthonormalize(Jd @ Q, name)
            row[f"breakdown_{name}_s"], _ = timed(
                lambda: [lyabook.orthonormalize(Jd @ Q, name) for _ in range(STEPS)], device, repeats)

    for name, dtype in (("floor_matmul_float32_s", torch.float32), ("floor_matmul_float64_s", torch.float64)):
        run = matmul_floor(d, device, dtype)
        run()
        row[name], _ = timed(run, device, max(repeats, 3))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    p.add_argument("--autograd-steps", type=int, nargs="+", default=None,
                   help="steps measured for the autograd loop per size (default 100, 10, 3 on CPU; 100, 20, 5 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="best of N for the fast paths (default 1 CPU, 3 CUDA)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)  # before the minutes of timing, not after them
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    default_ag = {"cpu": [100, 10, 3], "cuda": [100, 20, 5]}[device.type]
    ag = args.autograd_steps or default_ag
    ag = (ag + [ag[-1]] * len(args.sizes))[: len(args.sizes)]
    repeats = args.repeats or (3 if device.type == "cuda" else 1)

    info = {
        "benchmark": "lstm_spectrum",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "lyabook": lyabook.__version__,
        "code": code_version(),
        "batch": BATCH,
        "steps": STEPS,
        "input_size": INPUT,
        "rows": [],
    }
    for hidden, n_ag in zip(args.sizes, ag):
        row = bench_size(hidden, device, n_ag, repeats)
        info["rows"].append(row)
        a = row["analytic_t_on_1_s"]
        print(
            f"hidden {hidden:4d} (state {row['state_dim']:4d}) [{row['analytic_method']}]: "
            f"analytic t_on=1 {a:8.3f} s | t_on=10 {row['analytic_t_on_10_s']:8.3f} s | "
            f"torch.func {row['torch_func_s']:8.3f} s | autograd loop {row['autograd_loop_s']:9.2f} s "
            f"({row['autograd_loop_measured_steps']} steps measured) | floor f32 {row['floor_matmul_float32_s']:.4f} s "
            f"f64 {row['floor_matmul_float64_s']:.4f} s",
            flush=True,
        )
        print(
            f"    ratios: autograd loop / analytic {row['autograd_loop_s'] / a:7.1f}x | "
            f"torch.func / analytic {row['torch_func_s'] / a:5.1f}x | "
            f"analytic / floor f64 {a / row['floor_matmul_float64_s']:6.1f}x | "
            f"analytic / floor f32 {a / row['floor_matmul_float32_s']:6.1f}x"
            + (f" | householder / analytic {row['analytic_householder_t_on_1_s'] / a:5.1f}x"
               if "analytic_householder_t_on_1_s" in row else ""),
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"lstm_spectrum_{device_slug(device)}.json"
    path.write_text(json.dumps(info, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
