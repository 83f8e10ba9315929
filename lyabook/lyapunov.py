"""The Lyapunov (QR) engine.

`lyapunov_spectrum` runs the standard QR algorithm (Benettin et al. 1980; dissertation
Alg. 1 / Eq. 2.5): a k-frame Q of tangent vectors is pushed forward with the Jacobian of
the map, ``Q <- J @ Q``, and re-orthonormalized every ``t_on`` steps, ``Q, R = qr(Q)``;
the exponents are the time averages of ``log diag(R)``.

Conventions (see the book's "Errata and conventions" page):

* ``J[b, i, j] = d x_next[b, i] / d x[b, j]`` and the frame is propagated as ``J @ Q``
  (the dissertation's code used ``J^T @ Q``, which changes every exponent but the sum).
* Natural log; exponents per step for maps, per unit time for flows: a system that is a flow
  says so with ``time_per_step`` (`time_per_step`); no attribute named ``dt`` is read, since
  RNN cells use that name for a constant of their update, not for time.
* The warm-up is orthonormalized like the measured part, its inputs are consumed once,
  and inputs shorter than ``warmup + 1`` steps are an error, never silently truncated.
* ``log diag(R)`` is accumulated in float64 whatever the system's dtype; the frame Q
  itself is kept in float64 too.
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import torch

__all__ = [
    "LyapunovResult",
    "lyapunov_spectrum",
    "kaplan_yorke_dimension",
    "orthonormalize",
    "ORTHONORMALIZERS",
    "time_per_step",
]

_KEEP_CHOICES = frozenset({"r", "q", "last"})
_METHODS = ("auto", "householder", "cholesky")  # what lyapunov_spectrum's ``method`` accepts
# How many steps the engine runs between two checks for non-finite values. A check
# synchronizes with the device; once per block keeps GPU runs asynchronous while still
# naming the exact step that went wrong.
_CHECK_EVERY = 64
# Batch from which Householder QR on a GPU uses `_householder_blocked` instead of cuSOLVER,
# whose time grows with the batch (one matrix at a time) while the blocked form's launch count
# does not. Measured on an H100 (float64, eager): batch 100 x 512^2 equal (224 vs 206 ms);
# batch 250 x 1024^2 blocked 421 ms, cuSOLVER 1285 ms; at batch 10 x 512^2 cuSOLVER is faster.
# With Triton's panel kernel the blocked form is faster at every batch (10 x 512^2 on an H100:
# 3.3 ms against cuSOLVER's 19 ms), so the threshold only applies without Triton.
_BLOCKED_QR_MIN_BATCH = 100

# Largest accepted max |Q^T Q - I| of a CholeskyQR3 frame (float64); CholeskyQR3 reaches
# ~1e-15 wherever it works, and a frame off by 1e-10 changes exponents by ~1e-10 per step.
_ORTHO_TOL = 1e-10

# Smallest accepted R_kk / ||column k|| within an interval of t_on > 1 steps. Below it column k
# was nearly parallel to the earlier ones before orthonormalization, and rounding (unit
# roundoff 1.1e-16 of the column's length) can leave R_kk with a relative error above 1e-3: the
# trailing exponents lose meaning (a smaller t_on is the remedy).
_COLLAPSE_TOL = 1e-13


# --------------------------------------------------------------------------- result
@dataclass
class LyapunovResult:
    """Result of `lyapunov_spectrum`. All tensors are float64 on the CPU.

    Attributes:
        exponents: (k,) mean over the batch, sorted as the QR algorithm returns them
            (descending on average). Natural log, per step, or per unit time for a flow (``time_per_step``).
        per_sample: (B, k) exponents of each trajectory.
        stderr: (k,) standard error of the mean over the batch (NaN when B == 1).
        log_r: (n_intervals, B, k) ``log diag(R)`` of every measured orthonormalization
            (the dissertation's Chapter 4 "R values"), when ``keep`` includes ``"r"``.
        q: (n_intervals, B, d, k) the orthonormal frame after every measured
            orthonormalization, when ``keep`` includes ``"q"``.
        q_last: (B, d, k) the frame at the end of the run, when ``keep`` includes ``"last"``.
        interval_steps: (n_intervals,) number of steps in each measured interval.
        time_per_step: the system's time per step (`time_per_step`; 1.0 for maps).
        n_steps, warmup, t_on: the run's settings.
        method: the orthonormalizer that produced the result (a key of `ORTHONORMALIZERS`:
            "householder", "householder_blocked" or "cholesky").
        cuda_graph: whether the run replayed CUDA graphs.
    """

    per_sample: torch.Tensor
    interval_steps: torch.Tensor
    time_per_step: float
    n_steps: int
    warmup: int
    t_on: int
    method: str
    log_r: torch.Tensor | None = None
    q: torch.Tensor | None = None
    q_last: torch.Tensor | None = None
    cuda_graph: bool = False
    exponents: torch.Tensor = field(init=False)
    stderr: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.exponents = self.per_sample.mean(0)
        b = self.per_sample.shape[0]
        if b > 1:
            self.stderr = self.per_sample.std(0, unbiased=True) / math.sqrt(b)
        else:
            self.stderr = torch.full_like(self.exponents, float("nan"))

    @property
    def k(self) -> int:
        return self.per_sample.shape[1]

    def _need_r(self, what: str) -> torch.Tensor:
        if self.log_r is None:
            raise ValueError(f"{what} needs the R values: call lyapunov_spectrum(..., keep='r')")
        return self.log_r

    def ftle(self) -> torch.Tensor:
        """Finite-time exponents of each interval: (n_intervals, B, k), per step or unit time."""
        log_r = self._need_r("ftle()")
        return log_r / (self.interval_steps.to(log_r) * self.time_per_step)[:, None, None]

    def running_exponents(self) -> torch.Tensor:
        """Running estimate after each interval: (n_intervals, B, k).

        Entry t is the spectrum measured over the first t + 1 intervals; its last entry
        equals `per_sample`. Average over dim 1 for the batch mean.
        """
        log_r = self._need_r("running_exponents()")
        elapsed = torch.cumsum(self.interval_steps.to(log_r), 0) * self.time_per_step
        return torch.cumsum(log_r, 0) / elapsed[:, None, None]

    def running_time(self) -> torch.Tensor:
        """(n_intervals,) time (steps times dt) at the end of each measured interval."""
        return torch.cumsum(self.interval_steps.to(torch.float64), 0) * self.time_per_step

    def kaplan_yorke_dimension(self) -> float:
        """Kaplan-Yorke dimension of the mean spectrum (see `kaplan_yorke_dimension`)."""
        return kaplan_yorke_dimension(self.exponents)

    def summary(self) -> dict:
        """Scalar statistics of the mean spectrum used throughout the dissertation."""
        e = self.exponents
        return {
            "max": float(e.max()),
            "mean": float(e.mean()),
            "variance": float(e.var(unbiased=False)),
            "sum": float(e.sum()),
            "n_positive": int((e > 0).sum()),
            "max_stderr": float(self.stderr[int(e.argmax())]),
            "kaplan_yorke_dimension": self.kaplan_yorke_dimension(),
        }

    def to_dict(self) -> dict:
        """JSON-ready dictionary of the spectrum and the run's settings."""
        return {
            "exponents": self.exponents.tolist(),
            "stderr": self.stderr.tolist(),
            "per_sample": self.per_sample.tolist(),
            "time_per_step": self.time_per_step,
            "n_steps": self.n_steps,
            "warmup": self.warmup,
            "t_on": self.t_on,
            "method": self.method,
            "cuda_graph": self.cuda_graph,
            "summary": self.summary(),
        }


def kaplan_yorke_dimension(exponents) -> float:
    """Kaplan-Yorke (Lyapunov) dimension ``j + sum_{i<=j} l_i / |l_{j+1}|``.

    ``j`` is the largest number of leading exponents (sorted descending) with a
    non-negative sum. 0 when the largest exponent is negative; ``len(exponents)`` when
    every partial sum is non-negative (then the value is only a lower bound).
    """
    e = torch.as_tensor(exponents, dtype=torch.float64).flatten().sort(descending=True).values
    if e.numel() == 0:
        raise ValueError("kaplan_yorke_dimension: exponents is empty")
    if bool(torch.isnan(e).any()) or bool(torch.isposinf(e).any()):
        raise ValueError("kaplan_yorke_dimension: exponents contain NaN or +inf (a run whose state diverged?); "
                         "-inf (an exactly singular Jacobian) is allowed")
    csum = torch.cumsum(e, 0)
    nonneg = (csum >= 0).nonzero()
    if len(nonneg) == 0:
        return 0.0
    j = int(nonneg[-1]) + 1  # number of leading exponents with non-negative sum
    if j == e.numel():
        return float(j)
    return j + float(csum[j - 1]) / abs(float(e[j]))


# ------------------------------------------------------------------ orthonormalization
def _householder(q: torch.Tensor):
    """QR with diag(R) > 0. Returns (Q, log diag R, ok=None)."""
    Q, R = torch.linalg.qr(q)
    d = R.diagonal(dim1=-2, dim2=-1)
    # Sign fix: a zero diagonal entry keeps its column (sign +1) instead of zeroing it;
    # its log is -inf and the engine reports the step.
    sign = torch.where(d < 0, -1.0, 1.0).to(q.dtype)
    return Q * sign.unsqueeze(-2), torch.log(d.abs()), None


def _panel_torch(A: torch.Tensor, j0: int, block: int, out=None):
    """Householder-factor columns j0 .. j0 + block - 1 of every frame of ``A`` (B, m, n) in place,
    below row j0, one column at a time with batched torch operations. Returns (V (B, m - j0,
    b), T (B, b, b), beta (B, b)): reflectors ``H_c = I - tau_c v_c v_c^T`` (v_c zero above its
    diagonal row) in compact WY form ``H_1 ... H_b = I - V T V^T`` and R's diagonal entries
    before the sign fix; ``out``: (V, T, beta) views of those shapes to write into.
    `triton_qr.panel` is the same arithmetic fused into one kernel."""
    B, m, n = A.shape
    b = min(block, n - j0)
    P = A[:, j0:, j0 : j0 + b]  # view: the panel, rows j0.. (updated in place)
    V = torch.zeros(B, m - j0, b, dtype=A.dtype, device=A.device) if out is None else out[0].zero_()
    tau = torch.zeros(B, b, dtype=A.dtype, device=A.device)
    beta = torch.empty(B, b, dtype=A.dtype, device=A.device)
    for c in range(b):
        x = P[:, c:, c]
        alpha = x[:, 0]
        s = torch.where(alpha >= 0, 1.0, -1.0).to(A.dtype)
        bet = -s * torch.linalg.vector_norm(x, dim=-1)  # R's diagonal entry
        v = x.clone()
        v[:, 0] = alpha - bet  # = alpha + sign(alpha) |x|: no cancellation
        vv = (v * v).sum(-1)
        t = torch.where(vv > 0, 2.0 / torch.where(vv > 0, vv, 1.0), 0.0)  # v = 0: H = I
        P[:, c:, c:] -= (t.unsqueeze(-1) * v).unsqueeze(-1) * (v.unsqueeze(1) @ P[:, c:, c:])
        V[:, c:, c] = v
        tau[:, c] = t
        beta[:, c] = bet
    T = _t_factor(V, tau)
    if out is not None:
        out[1].copy_(T)
        out[2].copy_(beta)
        return out
    return V, T, beta


def _t_factor(V: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """T of the compact WY form ``H_1 ... H_b = I - V T V^T`` (V (B, r, b), tau (B, b)) by the
    UT transform, ``T^-1 = diag(1/tau) + striu(V^T V)`` (a zero reflector, tau = 0, keeps a
    unit diagonal entry: its column of V is zero, so it adds nothing)."""
    Tinv = torch.triu(V.mT @ V, diagonal=1)
    Tinv.diagonal(dim1=-2, dim2=-1).copy_(torch.where(tau > 0, 1.0 / torch.where(tau > 0, tau, 1.0), 1.0))
    b = V.shape[-1]
    eye = torch.eye(b, dtype=V.dtype, device=V.device).expand(V.shape[0], b, b)
    return torch.linalg.solve_triangular(Tinv, eye, upper=True)


def _apply_wy(C: torch.Tensor, V: torch.Tensor, T: torch.Tensor, transpose: bool):
    """``C <- (I - V T V^T) C``, or with T^T (``transpose``: the reflections' transpose, as R's
    trailing columns need), in place: C (B, r, c) a view, V (B, r, w), T (B, w, w). The last
    product accumulates into C (``baddbmm_``) instead of writing a temporary and subtracting it."""
    W = V.mT @ C
    W = (T.mT if transpose else T) @ W
    C.baddbmm_(V, W, alpha=-1.0)


def _triton_panel(device) -> bool:
    """Whether `_householder_blocked` factors its panels with Triton on ``device`` (a CUDA device
    with Triton installed)."""
    from . import triton_qr

    return torch.device(device).type == "cuda" and triton_qr.available(device)


def _householder_blocked(q: torch.Tensor, base: int = 16, q_block: int = 256, panel=None):
    """Householder QR from batched matrix products, for GPUs: ``q`` (B, m, n), m >= n ->
    (Q (B, m, n), log |diag R| (B, n), ok=None), with diag(R) > 0 as in `_householder`.

    cuSOLVER factors a batch one matrix at a time (about 0.3 TFLOP/s on an H100 for 250 frames
    of 1024). Here the columns are factored in recursive halves (Elmroth and Gustavson 2000):
    factor the left half, apply its reflections to the right half with batched products, factor
    the right half. Panels of ``base`` columns are factored column by column by ``panel``
    (default: `triton_qr.panel`, one kernel per panel, for CUDA tensors where Triton is
    installed, else `_panel_torch`, the same arithmetic as batched torch operations). A range
    of at most ``q_block`` columns gathers its reflections into one compact WY form
    ``I - V T V^T`` (T of its halves joined as ``[[T1, -T1 V1^T V2 T2], [0, T2]]``); wider
    ranges apply their halves' WY blocks one after another, so most of the work is products of
    rank up to ``q_block`` and no T wider than that is formed. Q is then formed from the
    identity block by block, last block first, each touching only its trailing rows and columns
    (the rest of Q is still the identity's there). Same reflections and signs as LAPACK's QR,
    so the same accuracy, singular frames included (unlike CholeskyQR3).

    Measured (benchmarks/bench_orthonormalization.py; H100, one step in a CUDA graph, in units of
    the product X @ X of the same shapes, 2026-11-28): 250 frames of 1024 4.4x (the earlier loop
    over panels of 32: 25x, cuSOLVER: 133x), 2000 of 512 6.6x, 1280 of 128 14.7x, 10 of 512 31x
    (latency: the panel kernel runs one program per frame, so 10 frames use 10 of the card's 132
    SMs; CholeskyQR3 54x, cuSOLVER 307x).
    """
    B, m, n = q.shape
    if m < n:
        raise ValueError(f"_householder_blocked needs m >= n, got {m} x {n}")
    if panel is None:
        from . import triton_qr

        panel = triton_qr.panel if q.dtype == torch.float64 and _triton_panel(q.device) else _panel_torch
    A = q.clone()
    V = torch.zeros(B, m, n, dtype=q.dtype, device=q.device)  # reflector j: column j, rows j.. (zero above)
    # The T of a range of at most q_block columns (the panels write theirs, each join its upper-right
    # block and the zeros below) is the diagonal block of one upper triangular T, of which only
    # those blocks are ever read: T_store keeps rows j0..j1 - 1 of the range that starts at column
    # o in its columns j0 - o .. j1 - o - 1 (`t_block`), a quarter of a (B, n, n) buffer at n = 1024
    # (2.4 GB instead of 9.4 GB for 1,125 frames)
    T_store = torch.empty(B, n, min(n, max(q_block, base)), dtype=q.dtype, device=q.device)
    beta = torch.empty(B, n, dtype=q.dtype, device=q.device)
    blocks = []  # (j0, j1): the WY blocks of columns j0 .. j1 - 1, left to right (each range its own origin)

    def t_block(r0: int, r1: int, c0: int, c1: int, o: int) -> torch.Tensor:
        """T's rows r0..r1 - 1 and columns c0..c1 - 1 (B, r1 - r0, c1 - c0), of the range starting at column o."""
        return T_store[:, r0:r1, c0 - o:c1 - o]

    def factor(j0: int, w: int, o: int | None = None) -> bool:
        """Factor columns j0 .. j0 + w - 1 (rows j0..); True when their T is formed (w <= q_block),
        else their WY blocks are in ``blocks``. ``o``: the first column of the widest range of at
        most q_block columns around this one (where its T is stored), None above that width."""
        j2 = j0 + w
        if o is None and w <= max(q_block, base):
            o = j0
        if w <= base:
            panel(A, j0, w, out=(V[:, j0:, j0:j2], t_block(j0, j2, j0, j2, o), beta[:, j0:j2]))
            return True
        j1 = j0 + base * max(1, (w // 2 + base - 1) // base)  # the left half: whole panels
        inner = o if w <= q_block else None
        left_formed = factor(j0, j1 - j0, inner)
        if left_formed and w > q_block:
            blocks.append((j0, j1))
        left = [(j0, j1)] if left_formed else [blk for blk in blocks if j0 <= blk[0] < j1]
        for jb, je in left:  # H_left^T = I - V T^T V^T on the right half
            origin = o if w <= q_block else jb  # a block of `blocks` starts its own range
            _apply_wy(A[:, jb:, j1:j2], V[:, jb:, jb:je], t_block(jb, je, jb, je, origin), transpose=True)
        if factor(j1, j2 - j1, inner) and w > q_block:
            blocks.append((j1, j2))
        if w > q_block:
            return False
        V1, V2 = V[:, j1:, j0:j1], V[:, j1:, j1:j2]  # V1's rows above j1 meet V2's zeros
        t_block(j1, j2, j0, j1, o).zero_()
        t_block(j0, j1, j1, j2, o).baddbmm_(t_block(j0, j1, j0, j1, o), (V1.mT @ V2) @ t_block(j1, j2, j1, j2, o),
                                            beta=0.0, alpha=-1.0)
        return True

    formed = factor(0, n)
    del factor  # it calls itself through its closure: a reference cycle that would hold A, V and T
    # until Python's cycle collector ran; on a GPU that memory piled up call after call (a 512-unit
    # LSTM population's spectra ran out of 140 GiB: tools/probe_spectrum_memory.py)
    if formed:
        blocks.append((0, n))
    # Q = H_1 ... H_n [I; 0] S, S = diag(sign R_jj) making diag R > 0: start from [S; 0] (S commutes
    # past the reflections, which act from the left) and apply the blocks, last first
    Q = torch.zeros(B, m, n, dtype=q.dtype, device=q.device)
    Q.diagonal(dim1=-2, dim2=-1).copy_(torch.where(beta < 0, -1.0, 1.0))
    for j0, j1 in reversed(blocks):  # earlier columns: still [S; 0]'s
        _apply_wy(Q[:, j0:, j0:], V[:, j0:, j0:j1], T_store[:, j0:j1, :j1 - j0], transpose=False)
    return Q, torch.log(beta.abs()), None


def _cholesky_pass(x: torch.Tensor, shift: torch.Tensor | None = None):
    """One CholeskyQR pass: ``G = X^T X (+ shift I) = R^T R``, ``Q = X R^-1``.

    Returns (Q, log diag R, Cholesky info)."""
    g = x.mT @ x
    if shift is not None:
        g.diagonal(dim1=-2, dim2=-1).add_(shift.unsqueeze(-1))
    l, info = torch.linalg.cholesky_ex(g)
    q = torch.linalg.solve_triangular(l.mT, x, upper=True, left=False)
    return q, torch.log(l.diagonal(dim1=-2, dim2=-1)), info


def _cholesky_qr3(q: torch.Tensor):
    """Shifted CholeskyQR3 (Fukaya, Kannan, Nakatsukasa, Yamamoto, Yanagisawa 2020).

    Pass one Cholesky-factors ``X^T X + s I`` with ``s = 11 (d k + k (k + 1)) u ||X||_F^2``,
    which cannot break down and leaves ``cond(Q1) <~ 1/sqrt(s)``; two plain passes
    (CholeskyQR2) then make Q orthonormal to working precision. ``R = R3 R2 R1`` is upper
    triangular with ``log diag R`` the sum of the passes' logs. Backward error
    ``||X - QR|| = O(u ||X||)`` like Householder QR, for cond(X) up to about 1/u.

    It is built from matrix products, batched Cholesky and triangular solves, which GPUs
    run far faster than batched Householder QR. Returns ``ok``, a 0-d bool tensor (no
    synchronization): False when a Cholesky broke down or the returned frame is not
    orthonormal to ``_ORTHO_TOL`` (checked directly, ``max |Q^T Q - I|``: one more Gram
    product, the cheapest part of a pass), in which case the engine falls back to
    Householder QR. (A Gershgorin bound on the last pass's Gram matrix is not a usable
    test: its row sums grow with k and reject frames that are orthonormal to 1e-15.)
    """
    d, k = q.shape[-2], q.shape[-1]
    u = torch.finfo(q.dtype).eps / 2
    shift = 11.0 * (d * k + k * (k + 1)) * u * q.square().sum((-2, -1))
    q1, lr1, info1 = _cholesky_pass(q, shift)
    q2, lr2, info2 = _cholesky_pass(q1)
    q3, lr3, info3 = _cholesky_pass(q2)
    gram = q3.mT @ q3
    gram.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # Q^T Q - I
    orthogonal = gram.abs().amax().le(_ORTHO_TOL)  # False for NaN too
    ok = info1.eq(0).all() & info2.eq(0).all() & info3.eq(0).all() & orthogonal
    return q3, lr1 + lr2 + lr3, ok


# Every orthonormalizer: q (B, d, k) -> (Q, log diag R, ok), ok None or a 0-d bool tensor
# (False: the result lost accuracy and the engine redoes the run with Householder).
ORTHONORMALIZERS = {
    "householder": _householder,                 # LAPACK / cuSOLVER QR, one matrix at a time
    "householder_blocked": _householder_blocked,  # the same reflections from batched products and Triton panels (GPUs)
    "cholesky": _cholesky_qr3,                   # shifted CholeskyQR3: matrix products, fails on singular frames
}


def orthonormalize(q: torch.Tensor, method: str = "householder"):
    """Orthonormalize a batch of frames: ``q`` (B, d, k) -> (Q (B, d, k), log diag R (B, k)).

    ``Q R = q`` with diag(R) > 0. ``method`` names an entry of `ORTHONORMALIZERS`:
    "householder" (LAPACK / cuSOLVER QR), "householder_blocked" (`_householder_blocked`: the same
    reflections from batched matrix products, panels by `triton_qr` on CUDA; the engine's choice on
    a GPU) or "cholesky" (shifted CholeskyQR3, see `_cholesky_qr3`; raises where it loses accuracy).
    """
    if method not in ORTHONORMALIZERS:
        raise ValueError(f"orthonormalize: method must be one of {list(ORTHONORMALIZERS)}, got {method!r}")
    if not torch.is_tensor(q) or q.ndim != 3 or not q.is_floating_point():
        raise ValueError(f"orthonormalize: q must be a floating tensor (B, d, k), got "
                         f"{tuple(q.shape) if torch.is_tensor(q) else type(q).__name__}")
    if q.shape[-2] < q.shape[-1]:
        raise ValueError(f"orthonormalize: a frame needs d >= k, got {q.shape[-2]} x {q.shape[-1]}")
    Q, log_r, ok = ORTHONORMALIZERS[method](q)
    if ok is not None and not bool(ok):
        raise FloatingPointError("orthonormalize: CholeskyQR3 lost accuracy (frame numerically rank deficient)")
    return Q, log_r


def time_per_step(system) -> float:
    """Time per step of ``system``: its ``time_per_step`` (a flow: exponents per unit time) or
    1.0 when it has none or None (a map: exponents per step). The attribute is the whole
    protocol; a system with ``dt`` but no ``time_per_step`` is an error, since lyabook no longer
    reads ``dt`` (RNN cells use that name for a constant of their update)."""
    value = getattr(system, "time_per_step", None)
    if value is None:
        if hasattr(system, "dt") and not hasattr(system, "time_per_step"):
            raise TypeError(f"{type(system).__name__} has 'dt' but no 'time_per_step': a flow declares its time per "
                            "step as system.time_per_step (exponents per unit time); set time_per_step = None for a "
                            "map (exponents per step)")
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"system.time_per_step must be a positive number or None, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"system.time_per_step must be a finite number > 0 (the time one step covers), got {value}")
    return value


# ------------------------------------------------------------------------- engine
def _as_int(name: str, value, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # accepts Python and NumPy integers, not floats
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _system_device_dtype(system, *tensors):
    params = []
    if isinstance(system, torch.nn.Module):
        params = [p for p in system.parameters()] + [b for b in system.buffers() if b.is_floating_point()]
    for p in params:
        return p.device, p.dtype
    for t in tensors:
        if t is not None and torch.is_tensor(t):
            dt = t.dtype if t.is_floating_point() else torch.get_default_dtype()
            return t.device, dt
    return torch.device("cpu"), getattr(system, "dtype", torch.float64)


def _check_q0(q0, batch: int, m: int, k: int, device) -> torch.Tensor | None:
    """``q0`` as a float64 (B, m, k) tensor on ``device``; a ValueError unless it has orthonormal columns."""
    if q0 is None:
        return None
    if not torch.is_tensor(q0):
        raise TypeError(f"q0 must be a torch.Tensor ({batch}, {m}, {k}) or ({m}, {k}), got {type(q0).__name__}")
    q = q0.to(device=device, dtype=torch.float64)
    q = q.unsqueeze(0) if q.ndim == 2 else q
    if q.ndim != 3 or q.shape[1:] != (m, k) or q.shape[0] not in (1, batch):
        raise ValueError(f"q0 must have shape ({batch}, {m}, {k}) or ({m}, {k}), got {tuple(q0.shape)}")
    eye = torch.eye(k, dtype=torch.float64, device=device)
    if not bool(torch.isfinite(q).all()) or float((q.mT @ q - eye).abs().max()) > 1e-6:
        raise ValueError("q0 must have orthonormal columns (e.g. a previous run's q_last)")
    return q.expand(batch, m, k)


def _parse_keep(keep) -> frozenset:
    if keep is None:
        return frozenset()
    if isinstance(keep, str):
        items = {keep} if keep in _KEEP_CHOICES else set(keep)
    else:
        items = set(keep)
    bad = items - _KEEP_CHOICES
    if bad:
        raise ValueError(f"keep must contain only 'r', 'q' and/or 'last', got {sorted(map(str, bad))}")
    return frozenset(items)


def lyapunov_spectrum(
    system,
    x0: torch.Tensor | None = None,
    n_steps: int | None = None,
    *,
    inputs: torch.Tensor | None = None,
    warmup: int = 0,
    t_on: int = 1,
    k: int | None = None,
    keep: str | Iterable[str] | None = None,
    method: str = "auto",
    cuda_graph: bool | None = None,
    progress: bool = False,
    nonfinite: str = "raise",
    q0: torch.Tensor | None = None,
) -> LyapunovResult:
    """Lyapunov spectrum of a batched dynamical system by the QR algorithm.

    Args:
        system: object with ``state_dim``, ``step(x, u) -> x_next`` and
            ``jacobian(x, u) -> J`` on batches: x (B, d), u (B, input_size) or None,
            J (B, m, m) with ``J[b, i, j] = d x_next[b, i] / d x[b, j]``. ``m`` is
            ``system.tangent_dim`` when the system defines it (the dissertation's h-block
            convention), else ``d``. Optional: ``step_and_jacobian(x, u)`` returning both
            at once (used when present), and ``time_per_step`` (a flow: the time one step
            covers; exponents are then per unit time; see `time_per_step`).
        x0: (B, d) initial states, or (d,) for one; None means zeros (B from ``inputs``,
            else 1).
        n_steps: measured steps. None with ``inputs`` means every step after the warm-up.
        inputs: (B, T, input_size), batch first. The first ``warmup`` steps drive the
            warm-up, the next ``n_steps`` the measurement; T must be >= warmup + n_steps.
        warmup: steps run (and orthonormalized) before measuring.
        t_on: orthonormalization interval; the last partial interval is always closed. A
            RuntimeWarning says when an interval was so long that a column of the frame became
            nearly parallel to the earlier ones (R_kk / ||column|| < 1e-13): the trailing
            exponents are then unreliable and t_on should be smaller.
        k: number of leading exponents (Q is m x k); default all m.
        keep: "r" to keep log diag R per interval, "q" to keep the frames, "last" to keep
            only the frame at the end (``q_last``: e.g. to start another run from it), or
            several of them.
        method: orthonormalization, "householder", "cholesky" (shifted CholeskyQR3, falling
            back to Householder for the whole run if it ever loses accuracy) or "auto"
            (Householder; CholeskyQR3 on a GPU without Triton, where it is the faster one). On
            a GPU, Householder runs as "householder_blocked" (`_householder_blocked`: batched
            products and Triton panels; without Triton only for 100 frames or more); the
            result's ``method`` names the orthonormalizer that ran.
        cuda_graph: on CUDA, capture one step and one orthonormalization as CUDA graphs and
            replay them (removes kernel-launch overhead, the main cost for RNN-sized
            systems). None: try, and run eagerly if the system cannot be captured; False: never.
        nonfinite: "raise" (default): FloatingPointError at the first non-finite state or R
            value; "keep": go on, so that the batch entries where it happened end with NaN or
            -inf exponents (an R value of exactly 0: the Jacobian was singular, e.g. a dead relu
            or a tanh saturated beyond rounding) and the others with their own. Batch entries
            never mix, so one entry's failure does not change another's exponents.
        progress: show a progress bar over the steps (warm-up included) on the terminal
            (`lyabook.progress.bar`: never in a notebook's outputs), updated every 64 steps.
        q0: the initial frame, (B, m, k) or (m, k) with orthonormal columns (e.g. ``q_last``
            of a warm-up run over other inputs); default the first k unit vectors.

    Returns:
        LyapunovResult (natural log; per step, or per unit time for systems with ``dt``).

    Raises:
        TypeError / ValueError naming the offending parameter; FloatingPointError naming
        the step at which the state, the Jacobian or an R value stopped being finite.
    """
    for attr in ("state_dim", "step", "jacobian"):
        if not hasattr(system, attr):
            raise TypeError(f"system must have 'state_dim', 'step' and 'jacobian'; {type(system).__name__} has no {attr!r}")
    d = _as_int("system.state_dim", system.state_dim, 1)
    m = _as_int("system.tangent_dim", getattr(system, "tangent_dim", d), 1)
    step_time = time_per_step(system)
    t_on = _as_int("t_on", t_on, 1)
    warmup = _as_int("warmup", warmup, 0)
    k = m if k is None else _as_int("k", k, 1)
    if k > m:
        raise ValueError(f"k must be <= the tangent dimension {m}, got {k}")
    keep = _parse_keep(keep)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if cuda_graph not in (None, True, False):
        raise ValueError(f"cuda_graph must be None, True or False, got {cuda_graph!r}")
    if progress not in (True, False):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    if nonfinite not in ("raise", "keep"):
        raise ValueError(f"nonfinite must be 'raise' or 'keep', got {nonfinite!r}")

    device, dtype = _system_device_dtype(system, x0, inputs)

    # ---- inputs and step counts
    if inputs is not None:
        if not torch.is_tensor(inputs):
            raise TypeError(f"inputs must be a torch.Tensor (B, T, input_size), got {type(inputs).__name__}")
        if inputs.ndim != 3:
            raise ValueError(f"inputs must have shape (B, T, input_size), got {tuple(inputs.shape)}")
        batch, T = inputs.shape[0], inputs.shape[1]
        if batch < 1:
            raise ValueError(f"inputs must hold at least one sequence, got shape {tuple(inputs.shape)}")
        if T < warmup + 1:
            raise ValueError(f"inputs has {T} steps, fewer than warmup + 1 = {warmup + 1}")
        if n_steps is None:
            n_steps = T - warmup
        n_steps = _as_int("n_steps", n_steps, 1)
        if warmup + n_steps > T:
            raise ValueError(f"inputs has {T} steps, fewer than warmup + n_steps = {warmup + n_steps}")
        inputs = inputs.to(device=device, dtype=dtype)
    else:
        if n_steps is None:
            raise ValueError("n_steps is required when no inputs are given")
        n_steps = _as_int("n_steps", n_steps, 1)
        batch = None

    # ---- initial state
    if x0 is None:
        x = torch.zeros(batch or 1, d, device=device, dtype=dtype)
    else:
        x = torch.as_tensor(x0).to(device=device, dtype=dtype)
        if x.ndim == 1:
            x = x.unsqueeze(0)
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"x0 must have shape (B, {d}) for this system, got {tuple(torch.as_tensor(x0).shape)}")
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"x0 has batch size {x.shape[0]} but inputs has batch size {batch}")
        if x.shape[0] < 1:
            raise ValueError(f"x0 must hold at least one initial state, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x0 contains non-finite values")
    q0 = _check_q0(q0, batch, m, k, device)

    if method == "auto":  # Householder (blocked on a GPU); CholeskyQR3 only on a GPU without Triton, where it is faster
        method = "cholesky" if device.type == "cuda" and not _triton_panel(device) else "householder"
    from .progress import bar

    with bar(total=warmup + n_steps, desc="Lyapunov spectrum", progress=progress, unit="step") as pbar:
        if method == "cholesky":
            result = _run(system, x, inputs, n_steps, warmup, t_on, m, k, keep, "cholesky", cuda_graph, pbar, nonfinite, q0,
                          step_time)
            if result is not None:
                return result
            method = "householder"  # CholeskyQR3 lost accuracy somewhere: redo with Householder
        return _run(system, x, inputs, n_steps, warmup, t_on, m, k, keep, method, cuda_graph, pbar, nonfinite, q0, step_time)


def _step_and_jacobian(system):
    if hasattr(system, "step_and_jacobian"):
        return system.step_and_jacobian

    def both(x, u):
        return system.step(x, u), system.jacobian(x, u)

    return both


class _Rerun(Exception):
    """A graphed run saw a problem; the eager loop re-runs to name the exact step."""


class _EagerLoop:
    """State x, frame Q and the two operations of the QR algorithm, run op by op.

    ``advance(t)``: ``x, J = f(x, u_t)``, ``Q <- J @ Q``; ``close(t)``: orthonormalize Q and
    return log diag R (B, k). Finite checks are queued as device flags with their step and
    resolved by ``check()`` every few steps, so GPU runs do not synchronize every step.
    """

    def __init__(self, f, ortho, x, inputs, Q, warmup, watch_collapse=False):
        self.f, self.ortho, self.x, self.inputs, self.Q, self.warmup = f, ortho, x, inputs, Q, warmup
        self.pending, self.chol_ok = [], []
        self.watch_collapse = watch_collapse
        self.collapse = torch.full((), math.inf, dtype=torch.float64, device=x.device)  # min log(R_kk / ||column||)

    def advance(self, t):
        u = self.inputs[:, t] if self.inputs is not None else None
        x_next, J = self.f(self.x, u)
        if t == 0:
            b, m = self.Q.shape[0], self.Q.shape[1]
            if tuple(J.shape) != (b, m, m):
                raise ValueError(f"system.jacobian returned shape {tuple(J.shape)}, expected (B, d, d) = {(b, m, m)}")
            if tuple(x_next.shape) != tuple(self.x.shape):
                raise ValueError(f"system.step returned shape {tuple(x_next.shape)}, expected {tuple(self.x.shape)}")
        self.pending.append((t, "Jacobian", torch.isfinite(J).all()))
        self.Q = J.to(torch.float64) @ self.Q
        self.x = x_next
        self.pending.append((t, "state", torch.isfinite(x_next).all()))

    def close(self, t):
        self.Q, log_r, ok = _orthonormalize_watching(self.ortho, self.Q, self.collapse if self.watch_collapse else None)
        if ok is not None:
            self.chol_ok.append(ok)
        self.pending.append((t, "R value", torch.isfinite(log_r).all()))
        return log_r

    def check(self, raise_nonfinite=True):
        """False if CholeskyQR3 lost accuracy; raises FloatingPointError naming the step."""
        if self.chol_ok and not bool(torch.stack(self.chol_ok).all()):
            return False
        self.chol_ok = []
        if self.pending and raise_nonfinite:
            flags = torch.stack([p[2] for p in self.pending])
            if not bool(flags.all()):
                step, what, _ = self.pending[int((~flags).nonzero()[0])]
                phase = f"warm-up step {step}" if step < self.warmup else f"measured step {step - self.warmup}"
                raise FloatingPointError(
                    f"non-finite {what} at step {step} ({phase}); the system diverged or its Jacobian is singular there"
                )
        self.pending = []
        return True


def _capture(graph, fn, pool=None):
    """Capture ``fn()`` into ``graph`` (`torch.cuda.graph`). A capture that fails (a system that
    synchronizes, say) leaves torch's CUDA generator of the current device in capture mode: its
    capture_end never ran, and every later random draw on that device raised "Offset increment
    outside graph capture encountered unexpectedly". The generator gets its state back (same seed
    and offset, out of capture mode) before the error goes on."""
    gen = torch.cuda.default_generators[torch.cuda.current_device()]
    try:
        with torch.cuda.graph(graph, pool=pool):
            fn()
    except Exception:
        gen.graphsafe_set_state(gen.clone_state())
        raise


class _GraphLoop:
    """The same two operations captured once as CUDA graphs and replayed.

    A step of an RNN launches tens of small kernels; replaying a captured graph removes the
    per-kernel launch cost that otherwise dominates on a GPU. Flags accumulate on the device;
    a non-finite value raises `_Rerun` (the eager loop then names the step).
    """

    def __init__(self, f, ortho, x, inputs, Q, watch_collapse=False):
        self.f, self.ortho, self.inputs, self.watch_collapse = f, ortho, inputs, watch_collapse
        self.x, self.Q = x.clone(), Q.clone()
        self.u = inputs[:, 0].clone() if inputs is not None else None
        dev = x.device
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.ok = torch.ones((), dtype=torch.bool, device=dev)
        self.log_r = torch.zeros(Q.shape[0], Q.shape[2], dtype=torch.float64, device=dev)
        self.collapse = torch.full((), math.inf, dtype=torch.float64, device=dev)
        saved = self.x.clone(), self.Q.clone()
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up before capture, as CUDA graphs require
            for _ in range(2):
                self._advance()
                self._close()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.g_advance, self.g_close = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        _capture(self.g_advance, self._advance)
        _capture(self.g_close, self._close, pool=self.g_advance.pool())
        self.x.copy_(saved[0])
        self.Q.copy_(saved[1])
        self.bad.zero_()
        self.ok.fill_(True)
        self.collapse.fill_(math.inf)

    def _advance(self):
        x_next, J = self.f(self.x, self.u)
        torch.logical_or(self.bad, ~torch.isfinite(J).all(), out=self.bad)
        self.Q.copy_(J.to(torch.float64) @ self.Q)
        self.x.copy_(x_next)
        torch.logical_or(self.bad, ~torch.isfinite(x_next).all(), out=self.bad)

    def _close(self):
        Q, log_r, ok = _orthonormalize_watching(self.ortho, self.Q, self.collapse if self.watch_collapse else None)
        self.Q.copy_(Q)
        self.log_r.copy_(log_r)
        torch.logical_or(self.bad, ~torch.isfinite(log_r).all(), out=self.bad)
        if ok is not None:
            torch.logical_and(self.ok, ok, out=self.ok)

    def advance(self, t):
        if self.inputs is not None:
            self.u.copy_(self.inputs[:, t])
        self.g_advance.replay()

    def close(self, t):
        self.g_close.replay()
        return self.log_r

    def check(self, raise_nonfinite=True):
        if not bool(self.ok):
            return False
        if raise_nonfinite and bool(self.bad):
            raise _Rerun
        return True


def _orthonormalize_watching(ortho, Q: torch.Tensor, collapse: torch.Tensor | None = None):
    """``ortho(Q)`` for both loops; with ``collapse`` (a 0-d float64 tensor) also lower it in place
    to the smallest log(R_kk / ||column k||) of this orthonormalization: how far a column had
    collapsed onto the earlier ones since the last one. An R value of exactly 0 (a singular
    Jacobian) or a non-finite one is not a collapse and counts as +inf."""
    before = None if collapse is None else torch.log(torch.linalg.vector_norm(Q, dim=-2))
    out = ortho(Q)
    if collapse is not None:
        ratio = (out[1] - before).nan_to_num(nan=math.inf, posinf=math.inf, neginf=math.inf).amin()
        torch.minimum(collapse, ratio, out=collapse)
    return out


@torch.no_grad()  # the system may hold trainable parameters: never build autograd graphs here
def _run(system, x, inputs, n_steps, warmup, t_on, m, k, keep, method, cuda_graph, pbar=None, nonfinite="raise", q0=None,
         step_time=1.0):
    """One pass of the QR algorithm. Returns None if CholeskyQR3 lost accuracy. ``pbar``
    (a tqdm bar, possibly disabled) advances at every finiteness check (every 64 steps)."""
    device = x.device
    batch = x.shape[0]
    total = warmup + n_steps
    f = _step_and_jacobian(system)
    if method == "householder" and device.type == "cuda" and (batch >= _BLOCKED_QR_MIN_BATCH or _triton_panel(device)):
        method = "householder_blocked"  # cuSOLVER factors one matrix at a time: slow for large batches
    ortho = ORTHONORMALIZERS[method]
    watch = t_on > 1  # at t_on = 1 a nearly parallel column is the Jacobian's own (no smaller t_on helps)
    Q = (torch.eye(m, k, dtype=torch.float64, device=device) if q0 is None else q0).expand(batch, m, k).contiguous()

    loop = None
    if cuda_graph is not False and device.type == "cuda":
        # validate shapes eagerly first (a graph would hide the error), then capture
        _EagerLoop(f, ortho, x, inputs, Q, warmup).advance(0)
        try:
            loop = _GraphLoop(f, ortho, x, inputs, Q, watch)
        except Exception as e:  # a system that synchronizes or is otherwise not capturable
            if cuda_graph is True:
                raise RuntimeError(f"cuda_graph=True but the system could not be captured: {e}") from e
            loop = None
    if loop is None:
        loop = _EagerLoop(f, ortho, x, inputs, Q, warmup, watch)

    if pbar is not None:
        pbar.reset(total=total)  # a re-run (Householder after CholeskyQR3, eager after a graph) starts over
    acc = torch.zeros(batch, k, dtype=torch.float64, device=device)
    log_rs, qs, interval_steps = [], [], []
    since = 0
    for t in range(total):
        loop.advance(t)
        since += 1
        if since == t_on or t == warmup - 1 or t == total - 1:
            log_r = loop.close(t)
            if t >= warmup:
                acc += log_r
                interval_steps.append(since)
                if "r" in keep:
                    log_rs.append(log_r.clone())
                if "q" in keep:
                    qs.append(loop.Q.cpu())
            since = 0
        if (t + 1) % _CHECK_EVERY == 0 or t == total - 1:
            try:
                if not loop.check(raise_nonfinite=nonfinite == "raise"):
                    return None
            except _Rerun:
                return _run(system, x, inputs, n_steps, warmup, t_on, m, k, keep, method, False, pbar, nonfinite, q0,
                            step_time)
            if pbar is not None:
                pbar.update(t + 1 - pbar.n)

    if watch and float(loop.collapse) < math.log(_COLLAPSE_TOL):
        warnings.warn(f"t_on = {t_on}: within one interval a column of the frame became nearly parallel to the earlier "
                      f"ones (it kept {math.exp(float(loop.collapse)):.1e} of its length after removing them, below "
                      f"{_COLLAPSE_TOL:g}), so rounding decided its R value: the trailing exponents are unreliable; "
                      "use a smaller t_on", RuntimeWarning, stacklevel=3)
    steps = torch.tensor(interval_steps, dtype=torch.int64)
    per_sample = (acc / (n_steps * step_time)).cpu()
    return LyapunovResult(
        per_sample=per_sample,
        interval_steps=steps,
        time_per_step=step_time,
        n_steps=n_steps,
        warmup=warmup,
        t_on=t_on,
        method=method,
        log_r=torch.stack(log_rs).cpu() if "r" in keep else None,
        q=torch.stack(qs) if "q" in keep else None,
        q_last=loop.Q.cpu() if "last" in keep else None,
        cuda_graph=isinstance(loop, _GraphLoop),
    )
