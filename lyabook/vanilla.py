"""Vanilla tanh RNNs in the three stability regimes (dissertation Fig. 2.3).

The dissertation gives "sigma_V^2 = 1/500, 100, 500" with "V orthogonal" and U = I, which
does not fix the network size or the scaling. lyabook reads sigma_V^2 as N g^2 for a
network of N = 100 units whose recurrent matrix is ``V = g O`` with O Haar-orthogonal, so
``g = sigma_V / sqrt(N)`` = 0.0045, 1 and 2.24: a contracting, a marginal (the edge of chaos
of an orthogonal tanh network) and a chaotic network. The chapter shows that this reading
gives the three regimes by the sign of the largest exponent.
"""
from __future__ import annotations

import math

import torch

from .rnn import RNN

__all__ = ["regime_rnn", "simulate", "SIGMA_V2"]

SIGMA_V2 = {"stable": 1 / 500, "marginal": 100.0, "chaotic": 500.0}


def regime_rnn(sigma_v2: float, hidden_size: int = 100, seed: int = 0, dtype=torch.float64) -> RNN:
    """tanh RNN ``h' = tanh(V h + x)`` (U = I, no bias), ``V = sqrt(sigma_v2 / N) O``."""
    if sigma_v2 <= 0:
        raise ValueError(f"sigma_v2 must be > 0, got {sigma_v2}")
    g = torch.Generator().manual_seed(seed)
    O, R = torch.linalg.qr(torch.randn(hidden_size, hidden_size, generator=g, dtype=torch.float64))
    O = O * torch.sign(torch.diagonal(R))  # Haar measure
    cell = RNN(hidden_size, hidden_size, bias=False).to(dtype)
    with torch.no_grad():
        cell.module.weight_ih_l0.copy_(torch.eye(hidden_size))
        cell.module.weight_hh_l0.copy_(math.sqrt(sigma_v2 / hidden_size) * O)
    return cell.eval()


def simulate(cell, x0: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, T, state_dim) of ``cell`` from x0 (B, d) driven by inputs (B, T, n)."""
    x, out = x0, []
    with torch.no_grad():
        for t in range(inputs.shape[1]):
            x = cell.step(x, inputs[:, t])
            out.append(x)
    return torch.stack(out, 1)
