"""Recurrent cells with analytic Jacobians (dissertation Appendix C, Fig. 2.1).

Every cell is a ``torch.nn.Module`` with

* ``forward(inputs, state=None) -> (outputs, state)`` for training: inputs (B, T, input_size)
  batch first, outputs (B, T, hidden_size) of the last layer, state (B, state_dim) flat;
* the system protocol of `lyabook.lyapunov_spectrum`: ``state_dim``, ``step(x, u)``,
  ``jacobian(x, u)`` and ``step_and_jacobian(x, u)`` on the flat state.

Flat state layout, layer by layer (layer 0 first), each layer holding ``blocks`` vectors of
``hidden_size``::

    RNN, GRU, ASRNN, LipschitzRNN, NoisyRNN : [h_0, h_1, ...]
    LSTM                                    : [h_0, c_0, h_1, c_1, ...]
    CoRNN, LEM                              : [y_0, z_0, y_1, z_1, ...]

The first block of a layer is its output (the next layer's input). The Jacobian of the
stacked map is block lower triangular: layer l reads layer l-1's *new* output, so
``d s_l' / d s_m = (d s_l' / d in_l) (d out_{l-1}' / d s_m)`` for m < l. It is assembled in one
pass over the layers (dissertation Fig. 2.1).

``convention="full"`` (default) gives the Jacobian of the whole state. ``convention="h_block"``
(LSTM, CoRNN, LEM) gives the dissertation's convention: the Jacobian restricted to the
output blocks (h, or y) with the second block (c, or z) of the previous step held fixed; the
state still evolves in full, ``tangent_dim`` is ``num_layers * hidden_size``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "RecurrentCell",
    "RNN",
    "LSTM",
    "GRU",
    "ASRNN",
    "CoRNN",
    "LipschitzRNN",
    "NoisyRNN",
    "LEM",
    "from_torch",
    "rnn_spectrum",
    "lstm_jacobian",
    "CELLS",
]


def _rows(scale: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """diag(scale) @ W for a batch: scale (B, n), W (n, m) -> (B, n, m)."""
    return scale.unsqueeze(-1) * W


def _dsigmoid(s):
    return s * (1 - s)


def _dtanh(t):
    return 1 - t * t


class RecurrentCell(nn.Module):
    """Base class: a stack of ``num_layers`` layers with ``blocks`` state vectors each.

    Subclasses implement ``_layer(l, s, u, jac)`` returning ``s_new`` (B, blocks*H) and, when
    ``jac``, also ``(J_ss (B, blocks*H, blocks*H), J_su (B, blocks*H, in_l) or None)``; J_su
    is only needed for layers above the first.
    """

    blocks = 1
    conventions = ("full",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, convention: str = "full"):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, got {v!r}")
        if convention not in self.conventions:
            raise ValueError(f"{type(self).__name__}: convention must be one of {self.conventions}, got {convention!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.convention = convention

    # ---------------------------------------------------------------- layout
    @property
    def layer_dim(self) -> int:
        return self.blocks * self.hidden_size

    @property
    def state_dim(self) -> int:
        return self.num_layers * self.layer_dim

    @property
    def tangent_dim(self) -> int:
        return self.state_dim if self.convention == "full" else self.num_layers * self.hidden_size

    def _tangent_index(self, device) -> torch.Tensor:
        """Indices of the output blocks (h or y) in the flat state, for ``h_block``."""
        H, n = self.hidden_size, self.layer_dim
        return torch.cat([torch.arange(l * n, l * n + H, device=device) for l in range(self.num_layers)])

    def _layer_input_size(self, l: int) -> int:
        return self.input_size if l == 0 else self.hidden_size

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Zero state (B, state_dim)."""
        p = next(self.parameters())
        return torch.zeros(batch, self.state_dim, device=device or p.device, dtype=dtype or p.dtype)

    # ------------------------------------------------------------------ map
    def _check(self, x, u):
        if x.ndim != 2 or x.shape[1] != self.state_dim:
            raise ValueError(f"{type(self).__name__}: state must be (B, {self.state_dim}), got {tuple(x.shape)}")
        if u is None:
            raise ValueError(f"{type(self).__name__}: an input u of shape (B, {self.input_size}) is required")
        if u.ndim != 2 or u.shape != (x.shape[0], self.input_size):
            raise ValueError(
                f"{type(self).__name__}: input must be (B, {self.input_size}) = ({x.shape[0]}, {self.input_size}), "
                f"got {tuple(u.shape)}"
            )

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One time step of all layers: x (B, state_dim), u (B, input_size) -> (B, state_dim)."""
        self._check(x, u)
        if self.num_layers == 1:  # no concatenation: a copy per step (and its backward) in training
            return self._layer(0, x, u, jac=False)
        n, H = self.layer_dim, self.hidden_size
        out, inp = [], u
        for l in range(self.num_layers):
            s_new = self._layer(l, x[:, l * n : (l + 1) * n], inp, jac=False)
            out.append(s_new)
            inp = s_new[:, :H]
        return torch.cat(out, -1)

    def step_and_jacobian(self, x: torch.Tensor, u: torch.Tensor):
        """Step and Jacobian (B, tangent_dim, tangent_dim) in one pass over the layers."""
        self._check(x, u)
        n, H, L = self.layer_dim, self.hidden_size, self.num_layers
        B = x.shape[0]
        if L == 1:
            s_new, J, _ = self._layer(0, x, u, jac=True, input_jac=False)
        else:
            J = x.new_zeros(B, L * n, L * n)
            out, inp, d_out = [], u, None
            for l in range(L):
                a, b = l * n, (l + 1) * n
                s_new, Jss, Jsu = self._layer(l, x[:, a:b], inp, jac=True, input_jac=l > 0)
                J[:, a:b, a:b] = Jss
                if l > 0:
                    # chain through the previous layer's new output: d s_l'/d s_m, m < l
                    J[:, a:b, :a] = Jsu @ d_out
                d_out = J[:, a : a + H, :b]  # d out_l' / d (layers 0..l)
                out.append(s_new)
                inp = s_new[:, :H]
            s_new = torch.cat(out, -1)
        if self.convention != "full":
            idx = self._tangent_index(x.device)
            J = J[:, idx][:, :, idx]
        return s_new, J

    def jacobian(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(B, tangent_dim, tangent_dim), ``J[b, i, j] = d step(x, u)[b, i] / d x[b, j]``."""
        return self.step_and_jacobian(x, u)[1]

    # -------------------------------------------------------------- training
    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None):
        """inputs (B, T, input_size) -> (outputs (B, T, hidden_size), final state (B, state_dim))."""
        return self.unroll(inputs, state)

    def unroll(self, inputs: torch.Tensor, state: torch.Tensor | None = None):
        """`forward` as a loop over `step` (what `lyabook.population.Population` maps over
        networks; the torch-backed cells' `forward` uses torch's fused kernels instead)."""
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: inputs must be (B, T, {self.input_size}), got {tuple(inputs.shape)}"
            )
        x = self.init_state(inputs.shape[0], inputs.device, inputs.dtype) if state is None else state
        n = self.layer_dim
        top = (self.num_layers - 1) * n
        outs = []
        self._per_sequence = {}  # what does not change within a sequence (`_once`), computed once
        try:
            for t in range(inputs.shape[1]):
                x = self.step(x, inputs[:, t])
                outs.append(x[:, top : top + self.hidden_size])
        finally:
            self._per_sequence = None
        return torch.stack(outs, 1), x

    def _once(self, key, compute):
        """``compute()``, once per `unroll` (every step otherwise): e.g. ASRNN's W - W^T - gamma I,
        which a step of training would otherwise rebuild, with its backward, T times."""
        cache = getattr(self, "_per_sequence", None)
        if cache is None:
            return compute()
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def extra_repr(self):
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"convention={self.convention!r}"
        )


# ============================================================ torch-backed cells
class _TorchBacked(RecurrentCell):
    """RNN / LSTM / GRU holding a ``torch.nn`` module: training uses its fused (cuDNN)
    kernels; step and Jacobian read its weights (torch's gate order and names)."""

    torch_type: type = nn.RNNBase

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, convention="full", module=None, **kw):
        if module is None:
            module = self.torch_type(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True, **kw)
        super().__init__(module.input_size, module.hidden_size, module.num_layers, convention)
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError(f"{type(self).__name__}: bidirectional modules and proj_size > 0 are not supported")
        self.module = module

    @property
    def bias(self) -> bool:
        return self.module.bias

    def _w(self, l):
        m = self.module
        w_ih, w_hh = getattr(m, f"weight_ih_l{l}"), getattr(m, f"weight_hh_l{l}")
        if m.bias:
            b = getattr(m, f"bias_ih_l{l}"), getattr(m, f"bias_hh_l{l}")
        else:
            b = None, None
        return w_ih, w_hh, b[0], b[1]

    def _lin(self, W, v, b):
        out = v @ W.T
        return out if b is None else out + b

    def _to_torch_state(self, x):
        B, L, H = x.shape[0], self.num_layers, self.hidden_size
        v = x.reshape(B, L, self.blocks, H).permute(2, 1, 0, 3)  # (blocks, L, B, H)
        return v[0].contiguous() if self.blocks == 1 else tuple(v[i].contiguous() for i in range(self.blocks))

    def _from_torch_state(self, hx):
        parts = hx if isinstance(hx, tuple) else (hx,)
        v = torch.stack(parts, 0).permute(2, 1, 0, 3)  # (B, L, blocks, H)
        return v.reshape(v.shape[0], -1)

    def forward(self, inputs, state=None):
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: inputs must be (B, T, {self.input_size}), got {tuple(inputs.shape)}"
            )
        hx = None if state is None else self._to_torch_state(state)
        seq = inputs if self.module.batch_first else inputs.transpose(0, 1)
        out, hn = self.module(seq, hx)
        if not self.module.batch_first:
            out = out.transpose(0, 1)
        return out, self._from_torch_state(hn)

    def extra_repr(self):
        return super().extra_repr() + f", bias={self.bias}"


class RNN(_TorchBacked):
    """Vanilla (Elman) RNN, ``h' = act(W_ih u + b_ih + W_hh h + b_hh)``, act tanh or relu.

    Jacobian ``diag(act'(pre)) W_hh`` (Eq. 2.4).
    """

    torch_type = nn.RNN

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh", module=None):
        if module is None and nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, module=module, nonlinearity=nonlinearity)

    @property
    def nonlinearity(self):
        return self.module.nonlinearity

    def _layer(self, l, h, u, jac, input_jac=False):
        w_ih, w_hh, b_ih, b_hh = self._w(l)
        pre = self._lin(w_ih, u, b_ih) + self._lin(w_hh, h, b_hh)
        if self.nonlinearity == "tanh":
            h_new = torch.tanh(pre)
            dact = _dtanh(h_new)
        else:
            h_new = torch.relu(pre)
            dact = (pre > 0).to(pre.dtype)
        if not jac:
            return h_new
        return h_new, _rows(dact, w_hh), _rows(dact, w_ih) if input_jac else None


def lstm_jacobian(c, i, f, g, o, tc, w_hh, w_ih=None):
    """Jacobian of one LSTM step (torch's gate order i, f, g, o) from its activations.

    ``c`` is the previous cell state, ``i, f, g, o`` the gate activations and ``tc`` =
    tanh(c_new), all (..., H). ``w_hh`` (4H, H) and ``w_ih`` (4H, I) broadcast against the
    leading dimensions: one network's weights, or a population's as (P, 1, 4H, H) with
    activations (P, B, H). Returns J (..., 2H, 2H) on the state (h, c), and d(h', c')/du
    (..., 2H, I) when ``w_ih`` is given, else None::

        dc'/dh = diag(c f(1-f)) W_f + diag(g i(1-i)) W_i + diag(i (1-g^2)) W_g,  dc'/dc = diag(f)
        dh'/dh = diag(tanh(c') o(1-o)) W_o + diag(o (1-tanh^2 c')) dc'/dh,      dh'/dc = diag(o (1-tanh^2 c') f)
    """
    H = c.shape[-1]
    # d c'/d (pre-activations of i, f, g) and d h'/d (pre-activation of o)
    a_c = torch.cat((g * _dsigmoid(i), c * _dsigmoid(f), i * _dtanh(g)), -1)  # (..., 3H)
    a_o = tc * _dsigmoid(o)
    k = o * _dtanh(tc)

    def through(W):  # (dc'/dv, dh'/dv), each (..., H, m), through the gates' weights W (..., 4H, m)
        dc = _rows(a_c, W[..., : 3 * H, :]).unflatten(-2, (3, H)).sum(-3)
        dh = _rows(a_o, W[..., 3 * H :, :]) + k.unsqueeze(-1) * dc
        return dc, dh

    dc_dh, dh_dh = through(w_hh)
    J = torch.cat((torch.cat((dh_dh, torch.diag_embed(k * f)), -1),
                   torch.cat((dc_dh, torch.diag_embed(f)), -1)), -2)
    if w_ih is None:
        return J, None
    dc_du, dh_du = through(w_ih)
    return J, torch.cat((dh_du, dc_du), -2)


class LSTM(_TorchBacked):
    """LSTM (torch's equations, gate order i, f, g, o); state per layer (h, c).

    ``c' = f c + i g``, ``h' = o tanh(c')``. Full-state Jacobian (2N x 2N per layer)::

        dc'/dh = diag(c f(1-f)) W_f + diag(g i(1-i)) W_i + diag(i (1-g^2)) W_g,  dc'/dc = diag(f)
        dh'/dh = diag(tanh(c') o(1-o)) W_o + diag(o (1-tanh^2 c')) dc'/dh,      dh'/dc = diag(o (1-tanh^2 c') f)

    ``convention="h_block"`` keeps only dh'/dh (the dissertation's Appendix C).
    """

    torch_type = nn.LSTM
    blocks = 2
    conventions = ("full", "h_block")

    def _layer(self, l, s, u, jac, input_jac=False):
        H = self.hidden_size
        h, c = s[:, :H], s[:, H:]
        w_ih, w_hh, b_ih, b_hh = self._w(l)
        gates = self._lin(w_ih, u, b_ih) + self._lin(w_hh, h, b_hh)
        gi, gf, gg, go = gates.chunk(4, -1)
        i, f, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
        c_new = f * c + i * g
        tc = torch.tanh(c_new)
        h_new = o * tc
        s_new = torch.cat((h_new, c_new), -1)
        if not jac:
            return s_new
        J, Ju = lstm_jacobian(c, i, f, g, o, tc, w_hh, w_ih if input_jac else None)
        return s_new, J, Ju


class GRU(_TorchBacked):
    """GRU (torch's equations, gate order r, z, n).

    ``n = tanh(W_in u + b_in + r (W_hn h + b_hn))``, ``h' = (1-z) n + z h``::

        dh'/dh = diag(z) + diag((h-n) z(1-z)) W_hz + diag((1-z)(1-n^2)) [diag(r) W_hn + diag(hn r(1-r)) W_hr]
    """

    torch_type = nn.GRU

    def _layer(self, l, h, u, jac, input_jac=False):
        w_ih, w_hh, b_ih, b_hh = self._w(l)
        gi = self._lin(w_ih, u, b_ih)
        gh = self._lin(w_hh, h, b_hh)
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h_new = (1 - z) * n + z * h
        if not jac:
            return h_new
        a_z = (h - n) * _dsigmoid(z)
        a_n = (1 - z) * _dtanh(n)
        a_r = a_n * hn * _dsigmoid(r)
        Wr, Wz, Wn = w_hh.chunk(3, 0)
        J = _rows(a_z, Wz) + _rows(a_n * r, Wn) + _rows(a_r, Wr)
        J = J + torch.diag_embed(z)
        Ju = None
        if input_jac:
            Vr, Vz, Vn = w_ih.chunk(3, 0)
            Ju = _rows(a_z, Vz) + _rows(a_n, Vn) + _rows(a_r, Vr)
        return h_new, J, Ju


# ================================================================ custom cells
class _Custom(RecurrentCell):
    """Cells whose parameters are registered per layer as ``<name>_l<k>``."""

    def _param(self, name, l):
        return getattr(self, f"{name}_l{l}")

    def _add(self, name, l, *shape):
        self.register_parameter(f"{name}_l{l}", nn.Parameter(torch.empty(*shape)))

    def _constants(self, **values):
        """Register the cell's constants (eps, gamma, dt, ...) as 0-d buffers in the default
        dtype: they move and convert with the parameters, appear in the state dict, and a
        `lyabook.population.Population` stacks them like parameters, so each network of a
        population can have its own."""
        for name, v in values.items():
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{type(self).__name__}: {name} must be finite, got {v!r}")
            self.register_buffer(name, torch.tensor(v, dtype=torch.get_default_dtype()))

    def reset_parameters(self):
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, like torch's recurrent modules."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)


class ASRNN(_Custom):
    """Antisymmetric RNN (Chang et al. 2019; dissertation Eq. 3.3).

    ``h' = h + eps tanh((W - W^T - gamma I) h + V u + b)``, Jacobian
    ``I + eps diag(1 - a^2) (W - W^T - gamma I)`` (Eq. 3.4).
    Defaults eps = 0.01, gamma = 0.01 (within the dissertation's grid).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, eps=0.01, gamma=0.01):
        super().__init__(input_size, hidden_size, num_layers)
        self.bias = bias
        self._constants(eps=eps, gamma=gamma)
        for l in range(num_layers):
            self._add("weight_ih", l, hidden_size, self._layer_input_size(l))
            self._add("weight_hh", l, hidden_size, hidden_size)
            if bias:
                self._add("bias", l, hidden_size)
        self.reset_parameters()

    def recurrent_matrix(self, l=0):
        W = self._param("weight_hh", l)
        return W - W.T - self.gamma * torch.eye(self.hidden_size, dtype=W.dtype, device=W.device)

    def _layer(self, l, h, u, jac, input_jac=False):
        M = self._once(("M", l), lambda: self.recurrent_matrix(l))
        V = self._param("weight_ih", l)
        pre = h @ M.T + u @ V.T
        if self.bias:
            pre = pre + self._param("bias", l)
        a = torch.tanh(pre)
        h_new = h + self.eps * a
        if not jac:
            return h_new
        g = self.eps * _dtanh(a)
        J = _rows(g, M) + torch.eye(self.hidden_size, dtype=h.dtype, device=h.device)
        return h_new, J, _rows(g, V) if input_jac else None


class CoRNN(_Custom):
    """Coupled oscillatory RNN (Rusch & Mishra 2021), IMEX discretization; state (y, z).

    ``z' = z + dt (tanh(W [y; z] + V u + b) - gamma y - epsilon z)``, ``y' = y + dt z'``.
    Defaults dt = 0.042, gamma = 2.7, epsilon = 4.7 (their sequential-MNIST setting).
    ``convention="h_block"``: only dy'/dy with z held fixed, as in the dissertation.
    """

    blocks = 2
    conventions = ("full", "h_block")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, dt=0.042, gamma=2.7, epsilon=4.7,
                 convention="full"):
        super().__init__(input_size, hidden_size, num_layers, convention)
        # stored as delta_t: a `dt` attribute would make the engine report exponents per unit
        # time, while RNN exponents are per step
        self.bias = bias
        self._constants(delta_t=dt, gamma=gamma, epsilon=epsilon)
        for l in range(num_layers):
            self._add("weight_ih", l, hidden_size, self._layer_input_size(l))
            self._add("weight_hh", l, hidden_size, 2 * hidden_size)  # acts on [y; z]
            if bias:
                self._add("bias", l, hidden_size)
        self.reset_parameters()

    def _layer(self, l, s, u, jac, input_jac=False):
        H, dt = self.hidden_size, self.delta_t
        y, z = s[:, :H], s[:, H:]
        W, V = self._param("weight_hh", l), self._param("weight_ih", l)
        pre = s @ W.T + u @ V.T
        if self.bias:
            pre = pre + self._param("bias", l)
        a = torch.tanh(pre)
        z_new = z + dt * (a - self.gamma * y - self.epsilon * z)
        y_new = y + dt * z_new
        s_new = torch.cat((y_new, z_new), -1)
        if not jac:
            return s_new
        eye = torch.eye(H, dtype=s.dtype, device=s.device)
        g = dt * _dtanh(a)
        dz = _rows(g, W)  # (B, H, 2H)
        dz[:, :, :H] -= dt * self.gamma * eye
        dz[:, :, H:] += (1 - dt * self.epsilon) * eye
        dy = dt * dz
        dy[:, :, :H] += eye
        J = torch.cat((dy, dz), 1)
        Ju = None
        if input_jac:
            dzu = _rows(g, V)
            Ju = torch.cat((dt * dzu, dzu), 1)
        return s_new, J, Ju


class LipschitzRNN(_Custom):
    """Lipschitz RNN (Erichson et al. 2021), forward Euler.

    ``h' = h + eps (A h + tanh(W h + U u + b))`` with
    ``A = (1-beta)(M_A + M_A^T) + beta (M_A - M_A^T) - gamma_A I`` and W likewise from M_W.
    Jacobian ``I + eps (A + diag(1 - a^2) W)``. Defaults beta = 0.75, gamma_A = gamma_W = 0.001,
    eps = 0.03 (their pixel-MNIST setting).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, eps=0.03, beta=0.75,
                 gamma_a=0.001, gamma_w=0.001):
        super().__init__(input_size, hidden_size, num_layers)
        self.bias = bias
        self._constants(eps=eps, beta=beta, gamma_a=gamma_a, gamma_w=gamma_w)
        for l in range(num_layers):
            self._add("weight_ih", l, hidden_size, self._layer_input_size(l))
            self._add("m_a", l, hidden_size, hidden_size)
            self._add("m_w", l, hidden_size, hidden_size)
            if bias:
                self._add("bias", l, hidden_size)
        self.reset_parameters()

    def _structured(self, M, gamma):
        eye = torch.eye(self.hidden_size, dtype=M.dtype, device=M.device)
        return (1 - self.beta) * (M + M.T) + self.beta * (M - M.T) - gamma * eye

    def matrices(self, l=0):
        """(A, W) of layer l, both (H, H)."""
        return (self._structured(self._param("m_a", l), self.gamma_a),
                self._structured(self._param("m_w", l), self.gamma_w))

    def _drift(self, l, h, u):
        A, W = self._once(("AW", l), lambda: self.matrices(l))
        U = self._param("weight_ih", l)
        pre = h @ W.T + u @ U.T
        if self.bias:
            pre = pre + self._param("bias", l)
        a = torch.tanh(pre)
        return h @ A.T + a, a, A, W, U

    def _layer(self, l, h, u, jac, input_jac=False):
        drift, a, A, W, U = self._drift(l, h, u)
        h_new = h + self.eps * drift
        if not jac:
            return h_new
        g = self.eps * _dtanh(a)
        J = _rows(g, W) + self.eps * A + torch.eye(self.hidden_size, dtype=h.dtype, device=h.device)
        return h_new, J, _rows(g, U) if input_jac else None


class NoisyRNN(LipschitzRNN):
    """Noisy RNN (Lim et al. 2021): the Lipschitz RNN's Euler step plus, in training mode,
    additive and multiplicative Gaussian noise,
    ``h' = h + eps drift + sqrt(eps) (sigma_add xi_1 + sigma_mult h xi_2)``.

    In ``eval()`` mode (used for every Lyapunov computation) the map is deterministic and
    ``jacobian`` is exact. In training mode ``jacobian`` returns the noise-free part.
    Defaults eps = 0.1, sigma_add = sigma_mult = 0.02.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, eps=0.1, beta=0.75,
                 gamma_a=0.001, gamma_w=0.001, sigma_add=0.02, sigma_mult=0.02):
        super().__init__(input_size, hidden_size, num_layers, bias, eps, beta, gamma_a, gamma_w)
        self._constants(sigma_add=sigma_add, sigma_mult=sigma_mult)

    def _layer(self, l, h, u, jac, input_jac=False):
        out = super()._layer(l, h, u, jac, input_jac)
        if not self.training:
            return out
        # noise is drawn even when both sigmas are 0 (it is then multiplied by 0): a test on the
        # constants' values would be data-dependent control flow, which torch.func.vmap forbids
        h_new = out[0] if jac else out
        s = self.eps.sqrt()
        noise = s * (self.sigma_add * self._normal(h) + self.sigma_mult * h * self._normal(h))
        return (h_new + noise, *out[1:]) if jac else h_new + noise

    # draws per step: 2 per layer. A population hands each network's draws in from the network's
    # own generator, so that a network trains the same in any population or shard.
    noise_draws_per_step = property(lambda self: 2 * self.num_layers)

    def _normal(self, h):
        draws = getattr(self, "_draws", None)
        return torch.randn_like(h) if draws is None else draws.pop()

    def unroll(self, inputs, state=None, noise=None):
        """`RecurrentCell.unroll`; ``noise`` (T * noise_draws_per_step, B, H): standard normal
        draws to use, in order, instead of fresh ones (training mode only)."""
        if noise is None:
            return super().unroll(inputs, state)
        self._draws = list(noise.unbind(0))[::-1]
        try:
            return super().unroll(inputs, state)
        finally:
            self._draws = None


class LEM(_Custom):
    """Long Expressive Memory (Rusch et al. 2022), as in the authors' code; state (y, z)::

        dt1 = dt sigmoid(V1 u + W1 y + b1),  dt2 = dt sigmoid(V2 u + W2 y + b2)
        z'  = (1 - dt2) z + dt2 tanh(Vy u + Wy y + by)
        y'  = (1 - dt1) y + dt1 tanh(Wz z' + Vz u + bz)

    Default dt = 1.
    """

    blocks = 2
    conventions = ("full", "h_block")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, dt=1.0, convention="full"):
        super().__init__(input_size, hidden_size, num_layers, convention)
        self.bias = bias
        self._constants(delta_t=dt)  # not `dt`: exponents stay per step
        for l in range(num_layers):
            self._add("weight_ih", l, 4 * hidden_size, self._layer_input_size(l))  # dt1, dt2, z, y
            self._add("weight_hh", l, 3 * hidden_size, hidden_size)  # dt1, dt2, y
            self._add("weight_z", l, hidden_size, hidden_size)
            if bias:
                self._add("bias_ih", l, 4 * hidden_size)
                self._add("bias_hh", l, 3 * hidden_size)
                self._add("bias_z", l, hidden_size)
        self.reset_parameters()

    def _layer(self, l, s, u, jac, input_jac=False):
        H, dt = self.hidden_size, self.delta_t
        y, z = s[:, :H], s[:, H:]
        V, W, Wz = self._param("weight_ih", l), self._param("weight_hh", l), self._param("weight_z", l)
        gi, gh = u @ V.T, y @ W.T
        if self.bias:
            gi, gh = gi + self._param("bias_ih", l), gh + self._param("bias_hh", l)
        i1, i2, iz, iy = gi.chunk(4, -1)
        h1, h2, hy = gh.chunk(3, -1)
        s1, s2 = torch.sigmoid(i1 + h1), torch.sigmoid(i2 + h2)
        tz = torch.tanh(iy + hy)
        z_new = (1 - dt * s2) * z + dt * s2 * tz
        pz = z_new @ Wz.T + iz
        if self.bias:
            pz = pz + self._param("bias_z", l)
        ty = torch.tanh(pz)
        y_new = (1 - dt * s1) * y + dt * s1 * ty
        s_new = torch.cat((y_new, z_new), -1)
        if not jac:
            return s_new
        W1, W2, W3 = W.chunk(3, 0)
        a2 = dt * (tz - z) * _dsigmoid(s2)
        b2 = dt * s2 * _dtanh(tz)
        a1 = dt * (ty - y) * _dsigmoid(s1)
        b1 = dt * s1 * _dtanh(ty)
        dz_dy = _rows(a2, W2) + _rows(b2, W3)
        dz_dz = 1 - dt * s2  # diagonal
        b1Wz = _rows(b1, Wz)
        dy_dy = _rows(a1, W1) + b1Wz @ dz_dy + torch.diag_embed(1 - dt * s1)
        dy_dz = b1Wz * dz_dz.unsqueeze(-2)
        J = torch.cat((torch.cat((dy_dy, dy_dz), -1), torch.cat((dz_dy, torch.diag_embed(dz_dz)), -1)), 1)
        Ju = None
        if input_jac:
            V1, V2, Vz, Vy = V.chunk(4, 0)
            dz_du = _rows(a2, V2) + _rows(b2, Vy)
            dy_du = _rows(a1, V1) + _rows(b1, Vz) + b1Wz @ dz_du
            Ju = torch.cat((dy_du, dz_du), 1)
        return s_new, J, Ju


CELLS = {c.__name__: c for c in (RNN, LSTM, GRU, ASRNN, CoRNN, LipschitzRNN, NoisyRNN, LEM)}


def from_torch(module: nn.Module, convention: str = "full") -> _TorchBacked:
    """Wrap an existing ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (any layers, bias or not,
    batch_first either way) as a lyabook cell sharing its parameters."""
    for torch_type, cls in ((nn.LSTM, LSTM), (nn.GRU, GRU), (nn.RNN, RNN)):
        if isinstance(module, torch_type):
            if cls is LSTM:
                return cls(module.input_size, module.hidden_size, convention=convention, module=module)
            if convention != "full":
                raise ValueError(f"from_torch: convention {convention!r} applies to LSTM only")
            return cls(module.input_size, module.hidden_size, module=module)
    raise TypeError(f"from_torch: expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")


def rnn_spectrum(cell: RecurrentCell, inputs: torch.Tensor, *, state: torch.Tensor | None = None,
                 warmup: int = 0, t_on: int = 1, k: int | None = None, keep=None, method: str = "auto"):
    """Lyapunov spectrum of ``cell`` driven by a batch of input sequences (B, T, input_size).

    Runs in ``eval()`` mode (restoring the previous mode), with inputs moved to the cell's
    device and dtype; ``state`` (B, state_dim) defaults to zeros. See `lyapunov_spectrum`.
    """
    from .lyapunov import lyapunov_spectrum

    if not torch.is_tensor(inputs):
        raise TypeError(f"inputs must be a torch.Tensor (B, T, input_size), got {type(inputs).__name__}")
    was_training = cell.training
    cell.eval()
    try:
        return lyapunov_spectrum(cell, state, inputs=inputs, warmup=warmup, t_on=t_on, k=k, keep=keep, method=method)
    finally:
        cell.train(was_training)
