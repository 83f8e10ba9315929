"""Reference implementations used to measure lyabook against common practice.

`per_sample_autograd_spectrum` is the QR algorithm the way third-party reproductions run
it: one trajectory at a time, a `torch.autograd.functional.jacobian` call per step and a
`torch.linalg.qr` per step. It is correct (``Q <- J @ Q``, natural log) but slow; the
benchmark and the chapters' cost tables time it against `lyapunov_spectrum`.
"""
from __future__ import annotations

import time

import torch

__all__ = ["per_sample_autograd_spectrum", "timed"]


def per_sample_autograd_spectrum(system, x0: torch.Tensor, inputs: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
    """Exponents per step (B, d) from x0 (B, d) driven by inputs (B, T, input_size)."""
    n_steps = inputs.shape[1] if n_steps is None else n_steps
    d = system.state_dim
    out = []
    for b in range(x0.shape[0]):
        x = x0[b : b + 1]
        Q = torch.eye(d, dtype=torch.float64, device=x0.device)
        acc = torch.zeros(d, dtype=torch.float64, device=x0.device)
        for t in range(n_steps):
            u = inputs[b : b + 1, t]
            J = torch.autograd.functional.jacobian(lambda v: system.step(v.unsqueeze(0), u).squeeze(0), x.squeeze(0))
            with torch.no_grad():
                x = system.step(x, u)
            Q, R = torch.linalg.qr(J.double() @ Q)
            acc += torch.log(torch.diagonal(R).abs())
        out.append(acc / n_steps)
    return torch.stack(out)


def timed(fn, device=None, repeats: int = 1):
    """(best wall time in seconds over ``repeats`` calls, last result) of ``fn()``; on a CUDA
    ``device`` it synchronizes before and after each call so the time covers the GPU work."""
    cuda = device is not None and torch.device(device).type == "cuda"
    best, out = float("inf"), None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out
