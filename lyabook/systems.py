"""Dynamical systems that `lyabook.lyapunov_spectrum` accepts.

Every system is batched: states x are (B, d), inputs u are (B, input_size) or None, and
``jacobian(x, u)`` is (B, d, d) with ``J[b, i, j] = d x_next[b, i] / d x[b, j]``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import jacrev, vmap

__all__ = ["Map", "Flow", "Lorenz", "autograd_jacobian"]


def autograd_jacobian(step: Callable, x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """Jacobian of a batched ``step(x, u)`` by ``torch.func.jacrev`` under ``vmap``: (B, d, d)."""

    def one(xi, ui):
        return step(xi.unsqueeze(0), None if ui is None else ui.unsqueeze(0)).squeeze(0)

    return vmap(jacrev(one), in_dims=(0, None if u is None else 0))(x, u)


class Map:
    """A discrete map ``x_next = step(x, u)`` from plain functions.

    Args:
        step: batched function (B, d), (B, input_size) or None -> (B, d).
        jacobian: batched function -> (B, d, d); None uses `autograd_jacobian`.
        state_dim: d.
    """

    def __init__(self, step: Callable, jacobian: Callable | None = None, *, state_dim: int):
        if not callable(step):
            raise TypeError("step must be callable")
        if jacobian is not None and not callable(jacobian):
            raise TypeError("jacobian must be callable or None")
        self._step = step
        self._jacobian = jacobian
        self.state_dim = int(state_dim)

    def step(self, x, u=None):
        return self._step(x, u)

    def jacobian(self, x, u=None):
        if self._jacobian is None:
            return autograd_jacobian(self._step, x, u)
        return self._jacobian(x, u)


class Flow:
    """An ODE ``dx/dt = rhs(x, u)`` integrated with classical fourth-order Runge-Kutta.

    The input u is held constant over a step. The tangent map is the exact derivative of
    the RK4 step (not an approximation of the flow's), so the QR algorithm is exact for
    the discrete map that is actually iterated. Exponents are per unit time.

    Args:
        rhs: batched vector field (B, d), u -> (B, d).
        dt: time step.
        jacobian: batched Jacobian of ``rhs`` -> (B, d, d); None uses autograd.
        state_dim: d.
    """

    def __init__(self, rhs: Callable, dt: float, jacobian: Callable | None = None, *, state_dim: int):
        if not callable(rhs):
            raise TypeError("rhs must be callable")
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self._rhs = rhs
        self._rhs_jacobian = jacobian
        self.dt = float(dt)
        self.state_dim = int(state_dim)

    @property
    def time_per_step(self) -> float:
        """The engine's flow protocol: exponents per unit time (`lyapunov.time_per_step`)."""
        return self.dt

    def rhs(self, x, u=None):
        return self._rhs(x, u)

    def rhs_jacobian(self, x, u=None):
        if self._rhs_jacobian is None:
            return autograd_jacobian(self._rhs, x, u)
        return self._rhs_jacobian(x, u)

    def step(self, x, u=None):
        h = self.dt
        k1 = self.rhs(x, u)
        k2 = self.rhs(x + 0.5 * h * k1, u)
        k3 = self.rhs(x + 0.5 * h * k2, u)
        k4 = self.rhs(x + h * k3, u)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def step_and_jacobian(self, x, u=None):
        """RK4 step and its exact derivative, ``I + h/6 (K1 + 2 K2 + 2 K3 + K4)``, with
        ``K_i = A(stage_i) d stage_i / dx`` (A the Jacobian of rhs)."""
        h = self.dt
        eye = torch.eye(self.state_dim, dtype=x.dtype, device=x.device)
        k1 = self.rhs(x, u)
        K1 = self.rhs_jacobian(x, u)
        x2 = x + 0.5 * h * k1
        k2 = self.rhs(x2, u)
        K2 = self.rhs_jacobian(x2, u) @ (eye + 0.5 * h * K1)
        x3 = x + 0.5 * h * k2
        k3 = self.rhs(x3, u)
        K3 = self.rhs_jacobian(x3, u) @ (eye + 0.5 * h * K2)
        x4 = x + h * k3
        k4 = self.rhs(x4, u)
        K4 = self.rhs_jacobian(x4, u) @ (eye + h * K3)
        x_next = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        J = eye + (h / 6.0) * (K1 + 2.0 * K2 + 2.0 * K3 + K4)
        return x_next, J

    def jacobian(self, x, u=None):
        return self.step_and_jacobian(x, u)[1]


class Lorenz(Flow):
    """The Lorenz system (dissertation Ch. 1, Eq. 1.1) with its analytic Jacobian.

    ``dx/dt = sigma (y - x)``, ``dy/dt = x (rho - z) - y``, ``dz/dt = x y - beta z``.
    The exponents sum to the trace ``-(sigma + 1 + beta)`` (-13.667 for the defaults).
    """

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0, dt: float = 0.001):
        self.sigma, self.rho, self.beta = float(sigma), float(rho), float(beta)
        super().__init__(self._lorenz_rhs, dt, self._lorenz_jacobian, state_dim=3)

    def _lorenz_rhs(self, s, u=None):
        x, y, z = s.unbind(-1)
        return torch.stack((self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z), -1)

    def _lorenz_jacobian(self, s, u=None):
        x, y, z = s.unbind(-1)
        one = torch.ones_like(x)
        zero = torch.zeros_like(x)
        rows = (
            torch.stack((-self.sigma * one, self.sigma * one, zero), -1),
            torch.stack((self.rho - z, -one, -x), -1),
            torch.stack((y, x, -self.beta * one), -1),
        )
        return torch.stack(rows, -2)

    @property
    def trace(self) -> float:
        """Trace of the Jacobian, the exact sum of the exponents (per unit time)."""
        return -(self.sigma + 1.0 + self.beta)

    def fixed_points(self) -> torch.Tensor:
        """(n, 3) fixed points: the origin, and C+/- for rho > 1."""
        pts = [[0.0, 0.0, 0.0]]
        if self.rho > 1:
            a = (self.beta * (self.rho - 1)) ** 0.5
            pts += [[a, a, self.rho - 1], [-a, -a, self.rho - 1]]
        return torch.tensor(pts, dtype=torch.float64)

    def __repr__(self):
        return f"Lorenz(sigma={self.sigma}, rho={self.rho}, beta={self.beta:.6g}, dt={self.dt})"
