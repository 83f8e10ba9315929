"""Where the Triton panel's time goes (issue 13; for a GPU session): the panel kernel alone, per
frame size, panel width and warps, against the torch panel and against one pass of reading and
writing the panel (the memory floor of a panel), then the whole step with the best setting.

    python tools/profile_triton_panel.py [frames size ...]   (default: 250 1024 2000 512 1280 128)

Prints one line per setting (median ms of 5 calls after a warm-up, eager: a kernel's own time)."""
import sys
import time

import torch

from lyabook import lyapunov, triton_qr


def ms(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(1e3 * (time.perf_counter() - t0))
    return sorted(out)[reps // 2]


args = [int(a) for a in sys.argv[1:]] or [250, 1024, 2000, 512, 1280, 128]
for frames, n in zip(args[::2], args[1::2]):
    x = torch.randn(frames, n, n, device="cuda", dtype=torch.float64) / n**0.5
    floor = ms(lambda: x[:, :, :16].clone())
    print(f"{frames} x {n}: read+write of a 16-column panel {floor:.3f} ms", flush=True)
    for block in (8, 16, 32):
        t_torch = ms(lambda: lyapunov._panel_torch(x.clone(), 0, block)) - ms(lambda: x.clone())
        for warps in (2, 4, 8, 16):
            try:
                t = ms(lambda: triton_qr.panel(x.clone(), 0, block, num_warps=warps)) - ms(lambda: x.clone())
                print(f"  block {block:2d} warps {warps:2d}: triton panel {t:8.3f} ms, torch panel {t_torch:8.3f} ms", flush=True)
            except Exception as e:
                print(f"  block {block} warps {warps}: {repr(e)[:200]}", flush=True)
    del x
    torch.cuda.empty_cache()
