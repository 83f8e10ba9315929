"""GPU kernel time of one _householder_blocked call per shape (eager, torch.profiler): total, kernels per call and the top kernels. Usage (on a GPU): python tools/profile_qr_kernels.py OUT.json. Results: benchmarks/results/qr_kernel_profile_nvidia_h100.json."""
import sys, json, torch
from torch.profiler import profile, ProfilerActivity
from lyabook import lyapunov
print("lyapunov from", lyapunov.__file__)
out = {}
for B, n in [(250, 1024), (10, 512), (1280, 128)]:
    X = torch.randn(B, n, n, dtype=torch.float64, device="cuda")
    for _ in range(2):
        lyapunov._householder_blocked(X)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            lyapunov._householder_blocked(X)
        torch.cuda.synchronize()
    ka = p.key_averages()
    rows = sorted(((e.key, e.device_time_total / 3e3, e.count // 3) for e in ka if e.device_time_total > 0), key=lambda r: -r[1])
    tot = sum(r[1] for r in rows)
    print(f"== {B}x{n}: GPU kernel time per call {tot:.2f} ms, kernels per call {sum(r[2] for r in rows)}")
    for k, ms, c in rows[:10]:
        print(f"   {ms:8.3f} ms  {c:5d}x  {k[:90]}")
    out[f"{B}x{n}"] = {"total_ms": tot, "top": rows[:15]}
    del X; torch.cuda.empty_cache()
json.dump(out, open(sys.argv[1], "w"), indent=1)
