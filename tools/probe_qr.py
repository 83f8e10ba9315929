"""Which matrix-product Householder QR is fastest on this GPU (issue 13): one QR step per
variant, captured in a CUDA graph as the engine runs it, against X @ X of the same shapes;
then, at 250 frames, the Triton panel alone per width, warps and first column. With
PROFILE_FIRST=<variant> it first prints torch.profiler's table of that variant (one eager call).

    python tools/probe_qr.py OUT_DIR [frames size ...]     (default: 250 1024 1280 128 2000 512 10 512)

Results of 2026-11-27: benchmarks/results/qr_variants_probe_nvidia_h100.json.

Prints one JSON line per measurement as it goes and writes OUT_DIR/probe_qr.json."""
import functools
import os
import json
import sys
import time
from pathlib import Path

import torch

from lyabook import lyapunov, triton_qr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchmarks.bench_orthonormalization as bench  # noqa: E402  (one timer for the probe and the benchmark)

T0 = time.time()
out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)  # before the minutes of timing, not after them
args = [int(a) for a in sys.argv[2:]] or [250, 1024, 1280, 128, 2000, 512, 10, 512]
rows = []


def emit(**row):
    row["elapsed_s"] = round(time.time() - T0, 1)
    print(json.dumps(row), flush=True)
    rows.append(row)
    (out_dir / "probe_qr.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


def timed(call, reps=5):
    """Median ms of ``call()`` run eagerly."""
    return bench._time(call, reps)


def graphed(fn, x, reps=5):
    return bench.graphed(fn, x, reps)


for frames, n in zip(args[::2], args[1::2]):
    x = torch.randn(frames, n, n, generator=torch.Generator(device="cuda").manual_seed(0), device="cuda",
                    dtype=torch.float64) / n**0.5
    floor = graphed(lambda a: a @ a, x)
    emit(shape=[frames, n], variant="matmul", ms=floor)
    ref = lyapunov._householder(x[:4].cpu())[1]
    variants = {"cholesky_qr3": lyapunov._cholesky_qr3,
                "blocked_torch_panel_b16_q256": functools.partial(lyapunov._householder_blocked, panel=lyapunov._panel_torch)}
    for base in (8, 16, 32):
        for qb in (128, 256):
            variants[f"blocked_triton_b{base}_q{qb}"] = functools.partial(lyapunov._householder_blocked, base=base, q_block=qb)
    if os.environ.get("PROFILE_FIRST"):  # where the time of the variant named goes, before anything else
        fn = variants[os.environ["PROFILE_FIRST"]]
        from torch.profiler import ProfilerActivity, profile

        fn(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(x)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=70)
        print(table, flush=True)
        (out_dir / f"profile_{frames}x{n}.txt").write_text(table)
    for name, fn in variants.items():
        if "torch_panel" in name and frames * n > 250 * 1024 or "b32" in name and n > 512:
            continue
        try:
            log_r = fn(x)[1][:4].cpu()
            err = float((log_r - ref).abs().max())
            ms = graphed(fn, x)
        except Exception as e:
            emit(shape=[frames, n], variant=name, error=repr(e)[:300])
            continue
        emit(shape=[frames, n], variant=name, ms=ms, x_matmul=ms / floor, max_log_r_err=err)
        if time.time() - T0 > 400:
            break
    if frames == 250:
        for base in (8, 16):
            for w in (4, 8, 16):
                for j0 in (0, 512):
                    y = x.clone()
                    ms = timed(lambda: triton_qr.panel(y, j0, base, num_warps=w))
                    emit(shape=[frames, n], variant=f"panel_only_b{base}_w{w}_j{j0}", ms=ms)
                    del y
    del x
    torch.cuda.empty_cache()
    if time.time() - T0 > 480:
        emit(stopped="time", after=[frames, n])
        break
