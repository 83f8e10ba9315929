"""Time the pieces of one orthonormalization on a GPU (batch 10, k = d), per call.

Used to choose the engine's CUDA orthonormalization; prints milliseconds per call of the
Gram product, batched Cholesky, triangular solve, a whole shifted CholeskyQR3, Householder
QR, and the J @ Q product it competes with. Each piece is captured in a CUDA graph and
replayed, so the times are GPU time without Python launch overhead.
"""
import sys

import torch

from lyabook.lyapunov import _cholesky_qr3, _householder


def graph_ms(fn, reps=20):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(); fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay(); torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        g.replay()
    b.record(); torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main(sizes):
    torch.manual_seed(0)
    for d in sizes:
        X = torch.randn(10, d, d, dtype=torch.float64, device="cuda")
        G = X.mT @ X
        L = torch.linalg.cholesky(G)
        J32 = torch.randn(10, d, d, device="cuda")
        Q32 = torch.randn(10, d, d, device="cuda")
        rows = {
            "J@Q float32": lambda: J32 @ Q32,
            "J@Q float64 (Gram cost too)": lambda: X @ X,
            "cholesky_ex": lambda: torch.linalg.cholesky_ex(G),
            "solve_triangular": lambda: torch.linalg.solve_triangular(L.mT, X, upper=True, left=False),
            "shifted CholeskyQR3": lambda: _cholesky_qr3(X),
        }
        out = {name: graph_ms(fn) for name, fn in rows.items()}
        try:
            out["householder (linalg.qr)"] = graph_ms(lambda: _householder(X), reps=3)
        except Exception as e:  # not capturable: time eagerly
            torch.cuda.synchronize()
            import time
            t = time.perf_counter(); [_householder(X) for _ in range(3)]; torch.cuda.synchronize()
            out["householder (linalg.qr, eager)"] = (time.perf_counter() - t) / 3 * 1e3
        print(f"d = {d}: " + " | ".join(f"{k} {v:.3f} ms" for k, v in out.items()), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [128, 512, 1024])
