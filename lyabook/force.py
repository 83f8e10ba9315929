"""FORCE-trained rank-1 rate networks (dissertation Ch. 3, "signal reconstruction").

A population of P networks of N rate units, each learning its own random four-sine target
by recursive least squares (FORCE, Sussillo & Abbott 2009), batched over networks: every
tensor has the population in dim 0, so the chapter's 1200 networks train as one model on a
GPU. Network i draws everything random (its target, connectivity, feedback, initial state)
from its own generator seeded by (seed, i): it is the same whatever the population or shard
it is in, and the same network (up to the scale g) for every g.

Per network (reproduction spec §6.1), dt = 0.1 in units of tau = 1, no external input::

    x_{t+1} = (1 - dt) x_t + dt M r_t + dt w_f z_t,    r_t = tanh(x_t),    z_t = w_o . r_t

With w_o fixed the network is the autonomous map ``x' = (1 - dt) x + dt (M + w_f w_o^T) tanh(x)``
(`ForceMap`), the system whose spectra `force_spectra` computes. For example::

    pop = ForcePopulation(1200, g=torch.linspace(1.1, 2.0, 10).repeat_interleave(120), device="cuda")
    history = fit(pop)                                   # 15 epochs, validation MAE (15, P)
    lyap = force_spectra(pop.closed_loop(history.w_o[5]), history.states[5], n_steps=200)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .lyapunov import _as_int, lyapunov_spectrum

__all__ = ["ForcePopulation", "ForceMap", "ForceTest", "ForceHistory", "fit", "force_spectra", "four_sine"]

# Every sine of the target has period 120 / m_k (time units), so the target repeats every 120:
# one training epoch (1200 steps of dt 0.1) is one period, and a test target that restarts at
# t = 0 is in phase with training.
PERIOD = 120.0


def _number(name: str, value, *, low: float, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or (low_open and value == low):
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, got {value}")
    return value


def _per_network(name: str, value, n: int, *, positive: bool) -> torch.Tensor:
    """A scalar or one value per network -> (n,) float64 on the CPU, checked."""
    try:
        # not as_tensor(value) first: a Python float would round through float32
        t = value.detach().cpu() if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)
        t = t.to(torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or one number per network, got {type(value).__name__}") from None
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must be a scalar or have one value per network ({n}), got {t.numel()} values")
    bad = ~torch.isfinite(t) | ((t <= 0) if positive else (t < 0))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'} for every network; "
                         f"network {i} has {float(t[i])}")
    return t.clone()


def four_sine(amplitudes: torch.Tensor, modes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Raw four-sine ``f(t) = sum_k sin(m_k pi t / 60) / a_k``: amplitudes a, modes m (P, 4),
    t (T,) time units -> (P, T), in t's dtype."""
    phase = modes.to(t).unsqueeze(-1) * (math.pi / 60) * t  # (P, 4, T)
    return (torch.sin(phase) / amplitudes.to(t).unsqueeze(-1)).sum(1)


@dataclass
class ForceTest:
    """A free-running test rollout (`ForcePopulation.test`).

    Attributes:
        mae: (P,) mean absolute error ``|z - f|`` over the rollout, f restarted at t = 0 (NaN for a diverged network).
        finite: (P,) bool, the network's state, output, w_o and RLS matrix stayed finite.
        states: (P, keep, N) the rollout's first ``keep`` states; ``states[:, j]`` is the state
            after j steps (j = 0: the training state the rollout started from).
    """

    mae: torch.Tensor
    finite: torch.Tensor
    states: torch.Tensor


@dataclass
class ForceHistory:
    """Per-epoch record of `fit`; all tensors on the CPU, E epochs, P networks.

    Attributes:
        train_mae: (E, P) mean absolute error ``|z - f|`` over each training epoch (pre-update outputs).
        val_mae: (E, P) validation MAE of the test rollout after each epoch (the chapter's loss).
        finite: (E, P) bool, `ForceTest.finite` after each epoch.
        w_o: (E, P, N) the read-out after each epoch (what `ForcePopulation.closed_loop` needs).
        states: (E, P, S, N) test-rollout states at steps 0, keep_every, ... below ``keep``:
            start points for `force_spectra`.
        keep_every: spacing in steps of the kept states.
    """

    train_mae: torch.Tensor
    val_mae: torch.Tensor
    finite: torch.Tensor
    w_o: torch.Tensor
    states: torch.Tensor
    keep_every: int


class ForcePopulation:
    """P rank-1 FORCE networks of N rate units, trained at once (spec §6.1-6.2).

    Args:
        n_networks: the number of networks, P.
        n_units: N (512 in the dissertation).
        g: gain of the recurrent weights, scalar or (P,).
        density: fraction p of nonzero entries of M, in (0, 1]; exactly round(p N^2) of them
            (as ``scipy.sparse.random``), each N(0, 1) g / sqrt(p N).
        dt: Euler step in units of tau = 1.
        alpha: RLS regularizer, P_0 = I / alpha, scalar or (P,).
        learn_every: steps between RLS updates.
        seed, first: network j of this population is global network ``first + j``; it draws
            its target, M, z_0, x_0 and w_f (in that order) from
            ``torch.Generator().manual_seed(seed * 1_000_003 + first + j)`` on the CPU.
        device, dtype: where and in what precision every tensor lives (float64 by default, as
            the authors' NumPy code; float32 halves memory and time on a GPU).

    State (all with the population in dim 0): ``M`` (P, N, N), ``w_f``, ``w_o``, ``x`` (P, N),
    ``z`` (P,), ``rls`` (P, N, N) the RLS matrix, and ``t`` the steps trained so far. Initial
    x_0 ~ 0.5 N(0, 1), w_o = 0 and, as in the authors' code, z_0 ~ 0.5 N(0, 1) (not
    w_o . tanh(x_0) = 0); z_0 only enters the first step.

    Target of network i (``amplitudes``, ``modes`` (P, 4) integers a_k in 1..10, m_k in 1..5)::

        f(t) = (sum_k sin(m_k pi t / 60) / a_k - mid) / half,   t = step * dt

    with mid and half the midpoint and half-range of the raw sum over one period (120 time
    units, sampled every dt), so f spans [-1, 1]. The authors' code computed ``f / half - mid``
    (divide, then subtract the raw midpoint), which is off-centre; here it is subtract, then divide.

    Timing follows the authors' loop: training step s (counted from 0 over all epochs)
    advances the state, compares the new output z (before any update) with f(s dt), and runs
    an RLS update when ``s % learn_every == 0``.
    """

    def __init__(self, n_networks: int, n_units: int = 512, *, g=1.5, density: float = 0.1, dt: float = 0.1,
                 alpha=1.0, learn_every: int = 2, seed: int = 0, first: int = 0, device=None,
                 dtype: torch.dtype = torch.float64):
        P = _as_int("n_networks", n_networks, 1)
        N = _as_int("n_units", n_units, 1)
        density = _number("density", density, low=0.0)
        if density > 1:
            raise ValueError(f"density must lie in (0, 1], got {density}")
        self.dt = _number("dt", dt, low=0.0)
        self.g = _per_network("g", g, P, positive=False)
        self.alpha = _per_network("alpha", alpha, P, positive=True)
        self.learn_every = _as_int("learn_every", learn_every, 1)
        self.seed = _as_int("seed", seed, 0)
        self.first = _as_int("first", first, 0)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.device, self.dtype = torch.device(device or "cpu"), dtype
        self.n_networks, self.n_units, self.density = P, N, density

        f64 = dict(dtype=torch.float64)
        self.amplitudes = torch.empty(P, 4, dtype=torch.int64)
        self.modes = torch.empty(P, 4, dtype=torch.int64)
        self.M = torch.zeros(P, N, N, device=self.device, dtype=dtype)
        z, x, w_f = torch.empty(P, **f64), torch.empty(P, N, **f64), torch.empty(P, N, **f64)
        nnz = round(density * N * N)
        for j in range(P):  # construction only: each network from its own generator
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.first + j)
            self.amplitudes[j] = torch.randint(1, 11, (4,), generator=gen)
            self.modes[j] = torch.randint(1, 6, (4,), generator=gen)
            m = torch.zeros(N * N, **f64)
            m[torch.randperm(N * N, generator=gen)[:nnz]] = torch.randn(nnz, generator=gen, **f64)
            self.M[j] = (m.view(N, N) * (float(self.g[j]) / math.sqrt(density * N))).to(self.M)
            z[j] = 0.5 * torch.randn((), generator=gen, **f64)
            x[j] = 0.5 * torch.randn(N, generator=gen, **f64)
            w_f[j] = 2 * torch.rand(N, generator=gen, **f64) - 1
        self.x, self.z, self.w_f = (v.to(self.device, dtype) for v in (x, z, w_f))
        self.w_o = torch.zeros(P, N, device=self.device, dtype=dtype)
        eye = torch.eye(N, device=self.device, dtype=dtype)
        self.rls = eye / self.alpha.to(self.device, dtype).view(P, 1, 1)
        self.t = 0

        # midpoint and half-range of the raw target over one period
        t = torch.arange(max(1, round(PERIOD / self.dt)), **f64) * self.dt
        raw = four_sine(self.amplitudes, self.modes, t)
        hi, lo = raw.amax(1), raw.amin(1)
        self.target_mid, self.target_half = (hi + lo) / 2, (hi - lo) / 2

    # ------------------------------------------------------------------ target
    def target(self, steps) -> torch.Tensor:
        """Normalized target at step indices ``steps`` (ints, a range or a tensor, T of them):
        (P, T) in the population's dtype, on its device. Computed in float64."""
        t = torch.as_tensor(steps, dtype=torch.float64).flatten() * self.dt
        raw = four_sine(self.amplitudes, self.modes, t)
        f = (raw - self.target_mid.unsqueeze(-1)) / self.target_half.unsqueeze(-1)
        return f.to(self.device, self.dtype)

    # -------------------------------------------------------------------- steps
    def _advance(self, x, z, w_o):
        """One Euler step of every network: x (P, N), z (P,) -> (x', r' = tanh(x'), z' = w_o . r')."""
        r = torch.tanh(x)
        drive = torch.bmm(self.M, r.unsqueeze(-1)).squeeze(-1) + self.w_f * z.unsqueeze(-1)
        x = (1 - self.dt) * x + self.dt * drive
        r = torch.tanh(x)
        return x, r, (w_o * r).sum(-1)

    def _learn(self, r, e):
        """RLS: k = P r / (1 + r^T P r), P <- P - (P r) k^T, w_o <- w_o - e k; r (P, N), e (P,)."""
        Pr = torch.bmm(self.rls, r.unsqueeze(-1)).squeeze(-1)
        k = Pr / (1 + (r * Pr).sum(-1, keepdim=True))
        self.rls.baddbmm_(Pr.unsqueeze(-1), k.unsqueeze(1), alpha=-1)  # in place: P is the big tensor
        self.w_o.sub_(e.unsqueeze(-1) * k)

    def _train_step(self, f):
        self.x, r, self.z = self._advance(self.x, self.z, self.w_o)
        e = self.z - f
        if self.t % self.learn_every == 0:
            self._learn(r, e)
        self.t += 1
        return e

    def step(self) -> torch.Tensor:
        """One training step (see the class docstring for its timing): returns the error
        e = z - f (P,) of the output before the update."""
        return self._train_step(self.target([self.t])[:, 0])

    def train_epoch(self, n_steps: int = 1200) -> torch.Tensor:
        """``n_steps`` training steps from where training stopped (no reset) -> (P,) mean absolute error ``|z - f|``."""
        n_steps = _as_int("n_steps", n_steps, 1)
        f = self.target(range(self.t, self.t + n_steps)).T.contiguous()  # (T, P): one row per step
        err = torch.zeros_like(self.z)
        for s in range(n_steps):
            err += self._train_step(f[s]).abs()
        return err / n_steps

    def test(self, n_steps: int = 12000, keep: int = 200) -> ForceTest:
        """Free-running rollout with w_o fixed from a copy of the training state (training is
        not advanced); its output is compared with the target restarted at t = 0. Its states
        are the iterates of `closed_loop` from ``states[:, 0]`` whenever the last training step
        made no update (so z = w_o . tanh(x)): always with learn_every 2 and even epochs."""
        n_steps = _as_int("n_steps", n_steps, 1)
        keep = _as_int("keep", keep, 0)
        if keep > n_steps:
            raise ValueError(f"keep must be <= n_steps = {n_steps}, got {keep}")
        f = self.target(range(n_steps)).T.contiguous()
        x, z = self.x.clone(), self.z.clone()
        states = x.new_empty(self.n_networks, keep, self.n_units)
        err = torch.zeros_like(z)
        for s in range(n_steps):
            if s < keep:
                states[:, s] = x
            x, _, z = self._advance(x, z, self.w_o)
            err += (z - f[s]).abs()
        finite = self.finite & torch.isfinite(x).all(-1) & torch.isfinite(err)
        return ForceTest(mae=err / n_steps, finite=finite, states=states)

    @property
    def finite(self) -> torch.Tensor:
        """Whether each network's state, output, w_o and RLS matrix are all finite, (P,) bool."""
        ok = torch.isfinite(self.x).all(-1) & torch.isfinite(self.z) & torch.isfinite(self.w_o).all(-1)
        return ok & torch.isfinite(self.rls).flatten(1).all(1)

    def closed_loop(self, w_o: torch.Tensor | None = None) -> "ForceMap":
        """The autonomous map with the read-out ``w_o`` (P, N) (default: the current one) fed back."""
        w_o = self.w_o if w_o is None else torch.as_tensor(w_o).to(self.device, self.dtype)
        if w_o.shape != self.w_o.shape:
            raise ValueError(f"w_o must have shape {tuple(self.w_o.shape)}, got {tuple(w_o.shape)}")
        return ForceMap(self.M + self.w_f.unsqueeze(-1) * w_o.unsqueeze(1), self.dt)


class ForceMap:
    """P autonomous maps ``x' = (1 - dt) x + dt W tanh(x)``, W = M + w_f w_o^T (P, N, N): a
    population of trained FORCE networks with the read-out fed back, as a system for
    `lyabook.lyapunov_spectrum`.

    Flat state (P*B, N), network p in rows p*B .. p*B+B-1 (like `lyabook.train.PopulationLSTM`);
    ``u`` must be None. Jacobian ``(1 - dt) I + dt W diag(1 - tanh(x)^2)``. The map has a ``dt``
    attribute, so its exponents are per unit time (tau = 1, natural log); multiply by ``dt``
    for exponents per step.

    The dissertation's TL spectra used ``(I - diag(x^2)) (dt M + w_f w_o^T)`` instead: the
    pre-activation x, the diagonal on the wrong side, no leak, no dt on the feedback, applied
    transposed with log2 (spec §6.3). They are spectra of a different matrix product.
    """

    def __init__(self, W: torch.Tensor, dt: float):
        if not torch.is_tensor(W) or not W.is_floating_point():
            raise TypeError(f"W must be a floating torch.Tensor (P, N, N), got {type(W).__name__}")
        if W.ndim != 3 or W.shape[1] != W.shape[2] or W.shape[0] < 1:
            raise ValueError(f"W must have shape (P, N, N), got {tuple(W.shape)}")
        self.W, self.dt = W, _number("dt", dt, low=0.0)
        self.n_networks, self.n_units = W.shape[0], W.shape[1]

    @property
    def time_per_step(self) -> float:
        """The engine's flow protocol: spectra per unit time (`lyapunov.time_per_step`)."""
        return self.dt

    @property
    def state_dim(self) -> int:
        return self.n_units

    @property
    def finite(self) -> torch.Tensor:
        """Whether each network's W is finite, (P,) bool."""
        return torch.isfinite(self.W).flatten(1).all(1)

    def networks(self, index) -> "ForceMap":
        """The maps of the networks ``index`` (a slice, or a (k,) index tensor)."""
        W = self.W[index]
        if W.ndim != 3 or W.shape[0] == 0:
            raise ValueError(f"index must select at least one network as a slice or 1-d index, got {index!r}")
        return ForceMap(W, self.dt)

    def _split(self, x, u):
        if u is not None:
            raise ValueError("ForceMap is autonomous: u must be None")
        P, N = self.n_networks, self.n_units
        if x.ndim != 2 or x.shape[1] != N or x.shape[0] % P:
            raise ValueError(f"x must have shape (P*B, {N}) with P = {P}, got {tuple(x.shape)}")
        return x.reshape(P, -1, N)

    def step(self, x: torch.Tensor, u=None) -> torch.Tensor:
        """x (P*B, N) -> x' (P*B, N)."""
        xs = self._split(x, u)
        return ((1 - self.dt) * xs + self.dt * torch.bmm(torch.tanh(xs), self.W.mT)).reshape(x.shape)

    def step_and_jacobian(self, x: torch.Tensor, u=None):
        """x (P*B, N) -> (x' (P*B, N), J (P*B, N, N)), ``J[b, i, j] = d x'_i / d x_j``."""
        xs = self._split(x, u)
        r = torch.tanh(xs)
        x_next = (1 - self.dt) * xs + self.dt * torch.bmm(r, self.W.mT)
        J = self.dt * self.W.unsqueeze(1) * (1 - r * r).unsqueeze(2)  # (P, B, N, N): W diag(1 - r^2)
        J.diagonal(dim1=-2, dim2=-1).add_(1 - self.dt)
        return x_next.reshape(x.shape), J.reshape(-1, self.n_units, self.n_units)

    def jacobian(self, x: torch.Tensor, u=None) -> torch.Tensor:
        return self.step_and_jacobian(x, u)[1]


def force_spectra(system: ForceMap, x0: torch.Tensor, n_steps: int, *, warmup: int = 0, k: int | None = None,
                  networks_per_call: int | None = None, **kwargs) -> torch.Tensor:
    """(P, k) mean Lyapunov spectrum of every network of ``system`` (float64, CPU; per unit time).

    Args:
        system: `ForceMap` of P networks (`ForcePopulation.closed_loop`).
        x0: (P, B, N) start states, B per network (e.g. `ForceHistory.states` of an epoch), or
            (P, N) for one each. Each network's spectrum is the mean over its B trajectories.
        n_steps, warmup, k, kwargs: as `lyabook.lyapunov_spectrum` (warm-up steps are run and
            orthonormalized but not measured).
        networks_per_call: networks per engine call (default: as many as keep each call's
            float64 Jacobians, P_call x B x N x N, within 2 GiB).

    Networks with a non-finite W or start state get a NaN row; the others are computed.
    """
    if not isinstance(system, ForceMap):
        raise TypeError(f"system must be a ForceMap (ForcePopulation.closed_loop()), got {type(system).__name__}")
    P, N = system.n_networks, system.n_units
    x0 = torch.as_tensor(x0).to(system.W)
    if x0.ndim == 2:
        x0 = x0.unsqueeze(1)
    if x0.ndim != 3 or x0.shape[0] != P or x0.shape[2] != N or x0.shape[1] < 1:
        raise ValueError(f"x0 must have shape (P, B, N) or (P, N) with P = {P}, N = {N}, got {tuple(x0.shape)}")
    B = x0.shape[1]
    k = N if k is None else _as_int("k", k, 1)
    if networks_per_call is None:
        networks_per_call = max(1, (2 << 30) // (B * N * N * 8))
    networks_per_call = _as_int("networks_per_call", networks_per_call, 1)
    ok = (system.finite & torch.isfinite(x0).flatten(1).all(1)).cpu()
    out = torch.full((P, min(k, N)), float("nan"), dtype=torch.float64)
    for ids in ok.nonzero().flatten().split(networks_per_call):
        sub = system.networks(ids.to(system.W.device))
        x = x0[ids.to(x0.device)].reshape(-1, N)
        result = lyapunov_spectrum(sub, x, n_steps, warmup=warmup, k=k, **kwargs)
        out[ids] = result.per_sample.reshape(len(ids), B, -1).mean(1)
    return out


def fit(pop: ForcePopulation, n_epochs: int = 15, *, epoch_steps: int = 1200, test_steps: int = 12000,
        keep: int = 200, keep_every: int = 20, progress: bool = False) -> ForceHistory:
    """Train ``pop`` for ``n_epochs`` epochs of ``epoch_steps`` steps back to back (no reset),
    each followed by a test rollout of ``test_steps`` steps (the authors used 15 x 1200; 10 x
    1200 here by default). Keeps the test states at steps 0, keep_every, ... < keep (the
    chapter's spectra use the first 200 steps). A diverged network is flagged in
    ``finite`` and does not affect the others."""
    n_epochs = _as_int("n_epochs", n_epochs, 1)
    keep_every = _as_int("keep_every", keep_every, 1)
    from .progress import bar

    records = []
    for _ in bar(range(n_epochs), desc="FORCE epochs", progress=progress):
        train_mae = pop.train_epoch(epoch_steps)
        test = pop.test(test_steps, keep)
        # w_o is updated in place: clone it (.cpu() of a CPU tensor is the tensor itself)
        record = (train_mae, test.mae, test.finite, pop.w_o.clone(), test.states[:, ::keep_every])
        records.append(tuple(r.cpu() for r in record))
    train_mae, val_mae, finite, w_o, states = (torch.stack(r) for r in zip(*records))
    return ForceHistory(train_mae=train_mae.double(), val_mae=val_mae.double(), finite=finite, w_o=w_o,
                        states=states, keep_every=keep_every)
