"""Covariant Lyapunov vectors by the forward-backward algorithm of Ginelli et al. (2007).

The Q vectors of the QR algorithm are orthonormal and depend on the frame's history; the
covariant vectors v_i(t) are the directions that the dynamics carries into each other,
``J_t v_i(t-1) = c v_i(t)``, each growing at its own exponent (dissertation Chapter 4, "A covariant
basis", uses Q vectors in their place). Forward: ``J_t Q_{t-1} = Q_t R_t`` as in
`lyabook.lyapunov_spectrum`. Backward: from a random upper-triangular C at the end,
``C_{t-1} = R_t^{-1} C_t`` with unit columns, and ``v(t) = Q_t C_t``; the last
``backward_transient`` steps only let C converge.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .lyapunov import _as_int, _step_and_jacobian, _system_device_dtype, time_per_step

__all__ = ["covariant_lyapunov_vectors", "CLVResult"]


@dataclass
class CLVResult:
    """``vectors`` (n_steps, B, d, k): unit covariant vectors after each measured step (columns
    ordered like the exponents); ``exponents`` (B, k) from the forward pass over the same steps
    (natural log, per step or per unit time for systems with ``dt``)."""

    vectors: torch.Tensor
    exponents: torch.Tensor


def _qr_positive(a):
    q, r = torch.linalg.qr(a)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return q * sign.unsqueeze(-2), r * sign.unsqueeze(-1)


@torch.no_grad()
def covariant_lyapunov_vectors(system, x0=None, n_steps: int | None = None, *, inputs: torch.Tensor | None = None,
                               warmup: int = 0, k: int | None = None, backward_transient: int | None = None,
                               seed: int = 0) -> CLVResult:
    """Covariant Lyapunov vectors of ``system`` (the protocol of `lyapunov_spectrum`) along the
    trajectory from ``x0`` (B, d) (zeros by default).

    Args:
        n_steps: measured steps (None with ``inputs``: what the inputs leave after the warm-up and
            the backward transient).
        inputs: (B, T, input_size); T >= warmup + n_steps + backward_transient.
        warmup: forward steps (orthonormalized) before the measured window, to forget Q_0.
        k: number of vectors (the leading k; default all).
        backward_transient: steps after the window that only let the backward iteration converge
            (default: as many as the window, at least 100).
        seed: the random upper-triangular start of the backward pass.
    Full state only (the system's ``tangent_dim`` must equal its ``state_dim``).
    """
    d = _as_int("system.state_dim", system.state_dim, 1)
    if getattr(system, "tangent_dim", d) != d:
        raise ValueError("covariant vectors need the full-state Jacobian (tangent_dim == state_dim)")
    k = d if k is None else _as_int("k", k, 1)
    if k > d:
        raise ValueError(f"k must be <= the state dimension {d}, got {k}")
    warmup = _as_int("warmup", warmup, 0)
    device, dtype = _system_device_dtype(system, x0, inputs)
    if inputs is not None:
        if not torch.is_tensor(inputs) or inputs.ndim != 3:
            raise ValueError(f"inputs must be (B, T, input_size), got {getattr(inputs, 'shape', inputs)}")
        T = inputs.shape[1]
        if n_steps is None:
            bt = 100 if backward_transient is None else backward_transient
            n_steps = T - warmup - bt
        inputs = inputs.to(device=device, dtype=dtype)
    if n_steps is None:
        raise ValueError("n_steps is required when no inputs are given")
    n_steps = _as_int("n_steps", n_steps, 1)
    bt = max(100, n_steps) if backward_transient is None else _as_int("backward_transient", backward_transient, 0)
    total = warmup + n_steps + bt
    if inputs is not None and inputs.shape[1] < total:
        raise ValueError(f"inputs has {inputs.shape[1]} steps, fewer than warmup + n_steps + backward_transient = {total}")
    B = inputs.shape[0] if inputs is not None else (1 if x0 is None or torch.as_tensor(x0).ndim == 1 else len(x0))
    x = torch.zeros(B, d, device=device, dtype=dtype) if x0 is None else torch.as_tensor(x0).to(device, dtype).reshape(B, d)
    f = _step_and_jacobian(system)
    Q = torch.eye(d, k, dtype=torch.float64, device=device).expand(B, d, k).contiguous()
    Qs, Rs, log_r = [], [], torch.zeros(B, k, dtype=torch.float64, device=device)
    for t in range(total):
        x, J = f(x, None if inputs is None else inputs[:, t])
        Q, R = _qr_positive(J.to(torch.float64) @ Q)
        if not (torch.isfinite(Q).all() and torch.isfinite(R).all()):
            raise FloatingPointError(f"non-finite frame at step {t}; the system diverged or its Jacobian is singular there")
        if t >= warmup:
            Rs.append(R)  # R_t for t = warmup .. total - 1
            if t < warmup + n_steps:
                Qs.append(Q)
                log_r += torch.log(torch.diagonal(R, dim1=-2, dim2=-1))
    g = torch.Generator().manual_seed(_as_int("seed", seed, 0))
    C = torch.triu(torch.rand(B, k, k, generator=g, dtype=torch.float64)).to(device) + torch.eye(k, dtype=torch.float64, device=device)
    C = C / C.norm(dim=-2, keepdim=True)
    vectors = [None] * n_steps
    for t in range(total - 1, warmup, -1):  # C_t -> C_{t-1} through R_t
        if t - warmup < n_steps:
            vectors[t - warmup] = Qs[t - warmup] @ C
        C = torch.linalg.solve_triangular(Rs[t - warmup], C, upper=True)
        C = C / C.norm(dim=-2, keepdim=True)
    vectors[0] = Qs[0] @ C
    V = torch.stack(vectors)
    return CLVResult(vectors=V.to(dtype), exponents=(log_r / (n_steps * time_per_step(system))).cpu())
