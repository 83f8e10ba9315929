"""Loss gradients and Q vectors (dissertation Chapter 4, Eqs. 4.8-4.15, Appendix B).

* `step_gradients`: the per-sample, per-step gradients of the recurrent weights, Delta V_t =
  dL_t / dW_hh with L_t the loss as if the sequence ended at step t (Appendix B), all at once with
  ``torch.func`` (vmap over samples of the Jacobian of the T losses), not a loop over samples.
* `qr_trajectory`: states, Q_t and R_t of the forward QR iteration ``J_t Q_{t-1} = Q_t R_t``.
* `jacobian_product`: d h_s / d h_t rebuilt from Q and R, ``Q_s (R_s ... R_{t+1}) Q_t^T``, and
  the dissertation's ordering (Eqs. 4.12-4.13, from the ``J^T`` iteration), which is a different
  product; `tests/test_gradients.py` checks the first against autograd to 1e-10.
* `alignment`: cosines between Q vectors and the right singular vectors of Delta V_t (Eq. 4.15);
  `participation_ratio` of singular values, in [1/N, 1].
"""
from __future__ import annotations

import torch
from torch.func import functional_call, jacrev, vmap

from .lyapunov import _as_int

__all__ = ["step_gradients", "qr_trajectory", "jacobian_product", "alignment", "alignment_study",
           "participation_ratio"]


def step_gradients(cell, readout: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                   state: torch.Tensor | None = None, weight: str = "module.weight_hh_l0") -> torch.Tensor:
    """Delta V_t for every sample and step: (B, T) + the weight's shape.

    ``cell`` a `lyabook.rnn` cell, ``readout`` maps its outputs (B, H) to logits; inputs (B, T, I),
    targets (B,) class indices; ``state`` (B, state_dim) the initial states (default zeros).
    L_t(b) = cross-entropy of readout(h_t(b)) against targets[b], the loss as if sequence b ended
    at step t; Delta V_t[b] = d L_t(b) / d ``weight`` (a parameter name of ``cell``).
    In eval mode (no dropout): the gradients and the Q vectors then see the same map (the
    authors' gradients had dropout on and started from another random state than their Q
    vectors, spec section 11.2)."""
    if not torch.is_tensor(inputs) or inputs.ndim != 3:
        raise ValueError(f"inputs must be (B, T, I), got {getattr(inputs, 'shape', inputs)}")
    B, T = inputs.shape[:2]
    if not torch.is_tensor(targets) or targets.shape != (B,):
        raise ValueError(f"targets must be ({B},) class indices, got {getattr(targets, 'shape', targets)}")
    params = dict(cell.named_parameters())
    if weight not in params:
        raise ValueError(f"weight must name a parameter of the cell ({', '.join(params)}), got {weight!r}")
    h0 = cell.init_state(B, inputs.device, inputs.dtype) if state is None else state
    was_cell, was_read = cell.training, readout.training
    cell.eval(), readout.eval()
    H = cell.hidden_size

    def losses(w, x, y, s0):  # (T,) losses of one sample as a function of the weight
        p = {**params, weight: w}
        s, out = s0.unsqueeze(0), []
        for t in range(T):
            s = _step(cell, p, s, x[t])
            logits = readout(s[:, :H])
            out.append(torch.nn.functional.cross_entropy(logits, y.unsqueeze(0)))
        return torch.stack(out)

    try:
        g = vmap(jacrev(losses), in_dims=(None, 0, 0, 0))(params[weight].detach(), inputs, targets, h0)
    finally:
        cell.train(was_cell), readout.train(was_read)
    return g.detach()


class _Step(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, s, u):
        return self.cell.step(s, u)


def _step(cell, params, s, u):
    """One step of ``cell`` with ``params`` substituted (functional_call reaches only forward)."""
    return functional_call(_Step(cell), {f"cell.{k}": v for k, v in params.items()}, (s, u.unsqueeze(0)))


def qr_trajectory(cell, inputs: torch.Tensor, state: torch.Tensor | None = None, *, transpose: bool = False):
    """States and full QR factors along inputs (B, T, I): returns (states (T + 1, B, d), Q (T + 1, B,
    d, d) with Q_0 = I, R (T, B, d, d)), ``J_t Q_{t-1} = Q_t R_t`` with diag(R) >= 0 (in eval
    mode, full state). ``transpose=True``: the authors' iteration ``J_t^T Q_{t-1} = Q_t R_t``."""
    B, T = inputs.shape[:2]
    s = cell.init_state(B, inputs.device, inputs.dtype) if state is None else state
    d = s.shape[1]
    Q = torch.eye(d, dtype=s.dtype, device=s.device).expand(B, d, d)
    states, Qs, Rs = [s], [Q], []
    was = cell.training
    cell.eval()
    try:
        with torch.no_grad():
            for t in range(T):
                s, J = cell.step_and_jacobian(s, inputs[:, t])
                q, r = torch.linalg.qr((J.mT if transpose else J) @ Q)
                sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
                sign = torch.where(sign == 0, torch.ones_like(sign), sign)
                Q, r = q * sign.unsqueeze(-2), r * sign.unsqueeze(-1)
                states.append(s), Qs.append(Q), Rs.append(r)
    finally:
        cell.train(was)
    return torch.stack(states), torch.stack(Qs), torch.stack(Rs)


def jacobian_product(Q: torch.Tensor, R: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """d h_s / d h_t = J_s ... J_{t+1} (B, d, d) from `qr_trajectory`'s factors, 0 <= t < s <= T:
    ``Q_s (R_s ... R_{t+1}) Q_t^T``. The gradient of a loss at step s with respect to h_t is its
    transpose times dL/dh_s: ``Q_t (R_s ... R_{t+1})^T Q_s^T dL/dh_s`` (spec section 11.3; the
    dissertation's Eqs. 4.12-4.13 build the product in the other order)."""
    T = R.shape[0]
    t, s = _as_int("t", t, 0), _as_int("s", s, 1)
    if not t < s <= T:
        raise ValueError(f"need 0 <= t < s <= {T}, got t = {t}, s = {s}")
    P = R[t]
    for k in range(t + 1, s):
        P = R[k] @ P  # R_s ... R_{t+1}: the latest factor on the left
    return Q[s] @ P @ Q[t].mT


def alignment(Q: torch.Tensor, delta_v: torch.Tensor, q_index, sv_index) -> torch.Tensor:
    """Cosines between Q vectors and right singular vectors of Delta V (Eq. 4.15).

    Q (..., d, d) (columns are the vectors), delta_v (..., d, d) the gradient of W_hh; returns
    (..., len(q_index), len(sv_index)): column q of Q against the right singular vector j of
    Delta V = U S V^H (a row of V^H: a direction of h_{t-1}, the space Q spans)."""
    _, _, vh = torch.linalg.svd(delta_v)
    q = Q[..., :, list(q_index)]
    v = vh[..., list(sv_index), :]
    return q.mT @ v.mT


def participation_ratio(singular_values: torch.Tensor) -> torch.Tensor:
    """(sum s^2)^2 / (N sum s^4) over the last dimension: 1/N when one direction carries everything,
    1 when all N carry the same."""
    lam = singular_values.square()
    N = lam.shape[-1]
    return lam.sum(-1).square() / (N * lam.square().sum(-1))


@torch.no_grad()
def alignment_study(Q: torch.Tensor, delta_v: torch.Tensor, q_sets: dict, sv_sets: dict) -> dict:
    """Figs. 4.1-4.2's statistics of the alignment between Q vectors after step t and the
    gradient of the loss ending at step t, for t = 1..T.

    Q (T + 1, B, N, N) from `qr_trajectory`, delta_v (B, T, N, N) from `step_gradients`;
    ``q_sets`` / ``sv_sets``: {name: indices} of Q vectors and of right singular vectors.
    Returns {(q_name, sv_name): {"values": (T, B, nq, nsv) cosines, "pooled_std": the standard
    deviation of all of them (what Fig. 4.1's caption describes), "code_std": the mean over
    (step, singular vector) of the standard deviation over (sample, Q vector) (what the authors'
    code printed)}} and, per sv set, {("all", sv_name): {"std_by_step_and_q": (T, N), the standard
    deviation over (sample, singular vector) for every Q index (Fig. 4.2)}}."""
    T, N = delta_v.shape[1], delta_v.shape[-1]
    out = {}
    for sv_name, sv in sv_sets.items():
        full = torch.stack([alignment(Q[t], delta_v[:, t - 1], range(N), sv) for t in range(1, T + 1)])  # (T, B, N, nsv)
        out[("all", sv_name)] = {"std_by_step_and_q": full.transpose(1, 2).flatten(2).std(-1)}
        for q_name, q in q_sets.items():
            v = full[:, :, list(q)]
            out[(q_name, sv_name)] = {"values": v, "pooled_std": float(v.std()),
                                      "code_std": float(v.permute(0, 3, 1, 2).flatten(2).std(-1).mean())}
    return out
