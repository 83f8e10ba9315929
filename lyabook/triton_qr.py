"""A fused Householder panel factorization in Triton, for `lyapunov._householder_blocked`.

Factoring ``block`` columns one at a time is a chain of small reductions and rank-1 updates,
which torch runs as ~10 kernels per column, each reading the whole panel of every frame from
memory. `panel` does all of a panel's columns in one kernel, one program per frame, with the
panel held in registers (rows j0 .. m - 1 only: one compiled kernel per power of two of
m - j0); the reflectors stay below the diagonal as LAPACK stores them and V is written once, at
the end. The trailing updates and the forming of Q stay batched matrix products (tensor cores).

Measured (H100, one step of 250 frames of 1024 in a CUDA graph; tools/probe_qr.py and
benchmarks/bench_orthonormalization.py): in the recursive `_householder_blocked` with panels of
16, 43 ms against 127 ms with the torch panel (9.2 ms for X @ X). The kernel takes about a
quarter of that time (64 calls, about 0.2 ms each: latency of its per-column block reductions,
not memory). Panels of 32 do not fit the registers at 1,024 rows (267 ms); 16 is the default.
Panels of at most 512 rows also form their WY factor T in the kernel (LAPACK's larft, column by
column), which saves the ~10 small kernels of forming it from V afterwards: at 10 frames of 512,
261 kernels per QR instead of 957 and 31 times X @ X instead of 52 (H100, 2026-11-28). Past 512
rows the in-kernel T made the kernel itself 3.3 times slower (register pressure: 30 ms against
9.2 ms for the 64 panels at 250 x 1,024), so there T is formed from V and tau (`T_IN_KERNEL_MAX`).

The arithmetic is that of `lyapunov._panel_torch`, column by column (same reflections, same
signs: diag R > 0 after the sign fix), so the two agree to rounding. On the CPU, Triton's
interpreter (``TRITON_INTERPRET=1``) runs the same kernel, which is how the CPU test suite
checks it; without Triton, `available()` is False and the engine keeps the torch panel.
"""
from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch; a CPU install may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

__all__ = ["available", "panel"]

T_IN_KERNEL_MAX = 512 * 16  # panels of at most this many entries (rows x columns) form T in the kernel


def available(device) -> bool:
    """Whether `panel` can run for tensors on ``device``: Triton is installed, ``LYABOOK_TRITON``
    is not "0" (the way to keep the torch panel, e.g. to compare), and the device is a CUDA GPU of
    compute capability 7.0 or later (Triton's minimum), or Triton's interpreter is on
    (``TRITON_INTERPRET=1``) for CPU tensors."""
    import os

    if triton is None or os.environ.get("LYABOOK_TRITON") == "0":
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (7, 0)
    return os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _panel_kernel(A, V, TT, TAU, BETA, m, n_end, j0, s_ab, s_ar, s_ac, s_vb, s_vr, s_vc, s_tb, s_tr, s_tc,
                      s_ub, s_bb, s_bc, BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, WITH_T: tl.constexpr):
        """Factor columns j0 .. min(j0 + BLOCK, n_end) - 1 of frame ``program_id`` in place (rows j0 ..),
        writing the reflectors (V: rows j0 .., zero above their diagonal), R's diagonal and either
        (``WITH_T``) their compact WY factor T (``H_1 ... H_b = I - V T V^T``) or their tau."""
        f = tl.program_id(0)
        rows = j0 + tl.arange(0, BLOCK_M)  # the panel's rows j0 .. m - 1 (BLOCK_M >= m - j0)
        cols = tl.arange(0, BLOCK)
        a_ptr = A + f * s_ab + rows[:, None] * s_ar + (j0 + cols)[None, :] * s_ac
        live = (rows[:, None] < m) & ((j0 + cols)[None, :] < n_end)
        P = tl.load(a_ptr, mask=live, other=0.0)
        v_diag = tl.zeros((BLOCK,), dtype=P.dtype)  # each reflector's entry on its diagonal row
        t_rows = tl.arange(0, BLOCK)
        T = tl.zeros((BLOCK, BLOCK), dtype=P.dtype)
        for c in tl.static_range(BLOCK):
            r = j0 + c  # this column's diagonal row
            is_c = cols[None, :] == c
            col = tl.sum(tl.where(is_c, P, 0.0), axis=1)  # (BLOCK_M,) column c
            x = tl.where(rows >= r, col, 0.0)
            alpha = tl.sum(tl.where(rows == r, x, 0.0), axis=0)
            norm = tl.sqrt(tl.sum(x * x, axis=0))
            beta = tl.where(alpha >= 0, -norm, norm)  # R's diagonal entry, sign opposite to alpha
            v = tl.where(rows == r, alpha - beta, x)  # alpha + sign(alpha) |x|: no cancellation
            vv = tl.sum(v * v, axis=0)
            tau = tl.where(vv > 0, 2.0 / tl.where(vv > 0, vv, 1.0), 0.0)  # v = 0: H = I
            vp = tl.sum(v[:, None] * P, axis=0)  # (BLOCK,) v^T P
            w = tl.where(cols > c, vp * tau, 0.0)  # only the later columns of the panel
            # T's column c (LAPACK's larft): T[:c, c] = -tau T[:c, :c] V[:, :c]^T v, T[c, c] = tau.
            # V[:, :c]^T v is already in vp: below their diagonals the earlier columns hold their
            # reflectors, and v is zero above row r
            if WITH_T:
                z = tl.where(cols < c, vp, 0.0)
                t_col = -tau * tl.sum(T * z[None, :], axis=1)
                t_col = tl.where(t_rows < c, t_col, tl.where(t_rows == c, tau, 0.0))
                T = tl.where(cols[None, :] == c, t_col[:, None], T)
            else:
                tl.store(TAU + f * s_ub + c, tau)
            P = P - v[:, None] * w[None, :]
            # column c keeps R above and on its diagonal and, below, the reflector (as LAPACK
            # stores it): later steps change only later columns, and V is written once at the end
            P = tl.where(is_c, tl.where(rows == r, beta, col)[:, None], P)
            v_diag = tl.where(cols == c, alpha - beta, v_diag)
            tl.store(BETA + f * s_bb + c * s_bc, beta, mask=j0 + c < n_end)
        diag = (j0 + cols)[None, :]  # each column's diagonal row
        v_tile = tl.where(rows[:, None] > diag, P, tl.where(rows[:, None] == diag, v_diag[None, :], 0.0))
        tl.store(V + f * s_vb + (rows - j0)[:, None] * s_vr + cols[None, :] * s_vc, v_tile, mask=live)
        tl.store(a_ptr, tl.where(rows[:, None] > diag, 0.0, P), mask=live)
        if WITH_T:
            t_live = ((j0 + t_rows)[:, None] < n_end) & ((j0 + cols)[None, :] < n_end)
            tl.store(TT + f * s_tb + t_rows[:, None] * s_tr + cols[None, :] * s_tc, T, mask=t_live)


def panel(A: torch.Tensor, j0: int, block: int, num_warps: int | None = None, out=None):
    """Householder-factor columns ``j0 .. j0 + block - 1`` of every frame of ``A`` (B, m, n)
    in place, below row j0 (the earlier rows were finished by earlier panels).

    Returns (V (B, m - j0, b), T (B, b, b), beta (B, b)), b = min(block, n - j0): the reflectors
    in compact WY form, ``H_1 ... H_b = I - V T V^T`` (v_c zero above its diagonal row; T upper
    triangular, built column by column as LAPACK's larft does), and R's diagonal entries (before
    the sign fix), as `lyapunov._panel_torch` returns them. ``out``: (V, T, beta) views of those
    shapes to write into (saves copies), else new tensors. ``num_warps``: Triton's warps per
    program (default: about 32 float64 of the panel per thread).
    """
    if triton is None:
        raise RuntimeError("lyabook.triton_qr.panel needs Triton (pip install triton)")
    B, m, n = A.shape
    if A.dtype != torch.float64:
        raise TypeError(f"panel: A must be float64, got {A.dtype}")
    b = min(block, n - j0)
    width = max(2, triton.next_power_of_2(b))  # Triton's ranges are powers of two; columns from j0 + b are masked
    shapes = ((B, m - j0, b), (B, b, b), (B, b))
    if out is None:
        out = tuple(torch.empty(shape, dtype=A.dtype, device=A.device) for shape in shapes)
    if len(out) != 3 or any(tuple(o.shape) != shape for o, shape in zip(out, shapes)):
        raise ValueError(f"panel: out must be (V, T, beta) of shapes {shapes}, got {[tuple(o.shape) for o in out]}")
    V, T, beta = out
    block_m = max(16, triton.next_power_of_2(m - j0))  # one compiled kernel per power of two
    # the panel lives in registers: about 32 float64 per thread
    warps = num_warps or max(4, min(16, block_m * width // 1024))
    # T in the kernel saves the ~10 kernels of forming it from V (3.3 times fewer kernels per QR at
    # 10 x 512), but past 512 x 16 panel entries it slows the kernel itself (H100, 250 frames of
    # 1,024: 30 ms for its 64 panels against 9.2 ms without): there T comes from V and tau
    with_t = block_m * width <= T_IN_KERNEL_MAX
    tau = T if with_t else torch.empty(B, width, dtype=A.dtype, device=A.device)  # (unused when with_t)
    _panel_kernel[(B,)](A, V, T, tau, beta, m, j0 + b, j0, A.stride(0), A.stride(1), A.stride(2), V.stride(0),
                        V.stride(1), V.stride(2), T.stride(0), T.stride(1), T.stride(2), tau.stride(0), beta.stride(0),
                        beta.stride(1), BLOCK=width, BLOCK_M=block_m, WITH_T=with_t, num_warps=warps)
    if not with_t:
        from .lyapunov import _t_factor

        T.copy_(_t_factor(V, tau[:, :b]))
    return V, T, beta
