"""Populations: P networks of one architecture, trained and analysed as one batched model.

A population of any cell in `lyabook.rnn` stacks the P networks' parameters (and constants
such as eps, gamma, dt) along a leading population dimension and maps the cell's own code
over it with ``torch.func.vmap``: one mechanism for all eight architectures, and every
network computes exactly what the cell computes alone (`Population.network` returns it as a
standalone cell; `tests/test_population.py` checks forward pass, loss, optimizer step and
Jacobians against it). Nothing couples the networks: the loss is the sum of the networks'
own losses and `PopulationAdam` is elementwise with one learning rate per network, so
training P networks together equals training each alone. For example::

    pop = Population(rnn.GRU, 200, 28, 64, 10, init_p=torch.linspace(0.1, 3, 200), seed=0, bias=False)
    out, state = pop(images)                      # (B, T, I) shared, or (P, B, T, I) per network
    spectra = population_exponents(pop, inputs, warmup=28)   # (P, k), the one spectrum entry point
"""
from __future__ import annotations

import gc
import math
import numbers
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from .lyapunov import _as_int, lyapunov_spectrum
from .rnn import CELLS, RecurrentCell

__all__ = ["Population", "Network", "PopulationAdam", "PopulationAdagrad", "PopulationRMSprop", "PopulationSGD", "population_exponents", "PopulationSpectrum",
           "per_network", "shard_range", "shard_path"]


def per_network(value, n: int, name: str, minimum: float | None = None) -> torch.Tensor:
    """(n,) float64 from a scalar or one value per network; a clear error otherwise (not a
    number, a bool, the wrong length, not finite, below ``minimum``)."""
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be a number or one number per network ({n}), got {type(value).__name__} {value!r}")
    try:  # only the conversion: lists of strings, ragged lists
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or one number per network ({n}), got {value!r}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real number or one per network ({n}), got {t.dtype} {value!r}")
    t = torch.as_tensor(value, dtype=torch.float64).flatten()  # Python floats straight to float64, not via float32
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must be a scalar or have one value per network ({n}), got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite for every network")
    if minimum is not None and bool((t < minimum).any()):
        raise ValueError(f"{name} must be >= {minimum} for every network, got {t.min().item()!r}")
    return t.clone()


def _varies(value) -> bool:
    """Whether a cell keyword argument gives one value per network (a sequence, not a scalar)."""
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        return value.ndim > 0
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes))


def _check_shard(shard) -> tuple[int, int]:
    """(i, n) as Python ints with 0 <= i < n, or a ValueError naming ``shard``."""
    if not isinstance(shard, (tuple, list)) or len(shard) != 2:
        raise ValueError(f"shard must be a pair (i, n) with 0 <= i < n, got {shard!r}")
    if any(isinstance(v, bool) or not hasattr(v, "__index__") for v in shard):
        raise ValueError(f"shard must be (i, n) of integers with 0 <= i < n, got {shard!r}")
    i, n = (operator.index(v) for v in shard)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    return i, n


def shard_path(shard) -> tuple[tuple[int, int], ...]:
    """A shard as its path of (i, n) levels: (i, n) -> ((i, n),); ((i, n), (j, m), ...) is part j of
    m of shard i of n (and so on down), for a shard too long for one GPU session trained in parts
    whose records merge into the shard's. A ValueError names ``shard`` when a level is not (i, n)."""
    if isinstance(shard, (tuple, list)) and shard and all(isinstance(s, (tuple, list)) for s in shard):
        return tuple(_check_shard(s) for s in shard)
    return (_check_shard(shard),)


def shard_range(n_networks: int, shard) -> range:
    """Networks of shard i of n: contiguous blocks as equal as possible (``numpy.array_split``);
    of a nested shard ((i, n), (j, m)): block j of m of block i of n."""
    n_networks = _as_int("n_networks", n_networks, 1)
    ids = range(n_networks)
    for i, n in shard_path(shard):
        if n > len(ids):
            raise ValueError(f"shard: {n} shards for {len(ids)} networks leaves some shards empty")
        q, r = divmod(len(ids), n)
        start = i * q + min(i, r)
        ids = ids[start : start + q + (i < r)]
    return ids


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding 32-bit unsigned values (the per-network keys)."""
    m = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & m
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def _lowbias32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors (wrapping multiplication, logical shifts by masking)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * (0x846CA68B - 2**32)
    return x ^ ((x >> 16) & 0xFFFF)


class _Method(nn.Module):
    """Calls one method of a cell: `torch.func.functional_call` reaches only ``forward``."""

    def __init__(self, cell: nn.Module, method: str):
        super().__init__()
        self.cell, self.method = cell, method

    def forward(self, *args):
        return getattr(self.cell, self.method)(*args)


class Network(nn.Module):
    """One network: a cell, dropout on its outputs and a linear read-out.

    ``forward(inputs (B, T, I), state=None) -> (outputs (B, T, O), final state (B, state_dim))``
    uses the cell's own ``forward`` (torch's fused kernels for RNN, LSTM and GRU).
    """

    def __init__(self, cell: RecurrentCell, readout: nn.Linear, dropout: float = 0.0):
        super().__init__()
        self.cell, self.readout, self.dropout = cell, readout, float(dropout)

    def forward(self, inputs, state=None):
        """inputs (B, T, I) -> (outputs (B, T, O), final state (B, state_dim))."""
        hs, state = self.cell(inputs, state)
        return self.readout(nn.functional.dropout(hs, self.dropout, self.training)), state


class Population(nn.Module):
    """P networks of one architecture (``cell_class`` from `lyabook.rnn`), each with a linear read-out.

    Args:
        cell_class: RNN, LSTM, GRU, ASRNN, CoRNN, LipschitzRNN, NoisyRNN or LEM.
        n_networks: the number of networks, P.
        input_size, hidden_size, output_size: sizes shared by the population.
        init_p: half-width p of U(-p, p) for every parameter (read-out included), scalar or (P,);
            with ``init``, the scale handed to it.
        init: None (U(-p, p) for every parameter), or ``init(name, shape, p, generator) -> tensor``
            giving each parameter's initial value: ``name`` is "cell.<parameter>" or
            "readout.weight" / "readout.bias", ``p`` network i's ``init_p``, ``generator`` network
            i's own (e.g. the ASRNN grid's N(0, 1) input and N(0, p^2 / n) recurrent weights).
        seed: network i's weights depend only on (seed, i): the same in any population or shard.
        dropout: dropout rate on the cell's outputs before the read-out, scalar or (P,).
        **cell_kwargs: the cell's own arguments. A constant (eps, gamma, dt, beta, sigma_add,
            ...) may be a scalar or one value per network; a structural setting (bias,
            nonlinearity, num_layers) must be shared.

    Registered tensors: ``cell_params.<name>`` (P, ...) for each of the cell's parameters (dots in
    the cell's names become ``__``), ``weight_out`` (P, O, H), ``bias_out`` (P, O); the
    constants are buffers ``cell_constants.<name>`` (P,).
    """

    def __init__(self, cell_class: type, n_networks: int, input_size: int, hidden_size: int, output_size: int, *,
                 init_p=0.08, seed: int = 0, dropout=0.0, init=None, **cell_kwargs):
        super().__init__()
        if not (isinstance(cell_class, type) and issubclass(cell_class, tuple(CELLS.values()))):
            # a base class such as RecurrentCell builds, but has no parameters and no map
            raise TypeError(f"cell_class must be one of lyabook.rnn's cells ({', '.join(CELLS)}) or a subclass, "
                            f"got {cell_class!r}")
        P = _as_int("n_networks", n_networks, 1)
        input_size, hidden_size, output_size = (_as_int(name, v, 1) for name, v in (
            ("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)))
        if isinstance(seed, bool) or not hasattr(seed, "__index__") or operator.index(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        seed = operator.index(seed)
        if "convention" in cell_kwargs:
            raise ValueError("convention is an argument of population_exponents, not of the population")
        self.cell_class, self.n_networks, self.first_network = cell_class, P, 0
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.seed = seed
        if init is not None and not callable(init):
            raise TypeError(f"init must be None or a function init(name, shape, p, generator), got {type(init).__name__}")
        self.init = init
        self.init_p = per_network(init_p, P, "init_p", minimum=0.0)  # the half-width of U(-p, p)
        self.dropout = per_network(dropout, P, "dropout")
        if ((self.dropout < 0) | (self.dropout >= 1)).any():
            raise ValueError("dropout must lie in [0, 1) for every network")
        self.cell_kwargs = cell_kwargs
        varying = {k for k, v in cell_kwargs.items() if _varies(v)}
        for k in varying:
            v = cell_kwargs[k]
            if not isinstance(v, (list, tuple, np.ndarray, torch.Tensor)):
                raise TypeError(f"{cell_class.__name__}: {k} must be a scalar or a list, tuple, array or tensor with one "
                                f"value per network ({P}), got {type(v).__name__}")
            if hasattr(v, "ndim") and v.ndim > 1 and math.prod(v.shape) != len(v):
                raise ValueError(f"{cell_class.__name__}: {k} must have one value per network, shape ({P},), "
                                 f"got shape {tuple(v.shape)}")
            if len(v) != P:
                raise ValueError(f"{cell_class.__name__}: {k} must be a scalar or have one value per network ({P}), "
                                 f"got {len(cell_kwargs[k])}")
        self._varying = sorted(varying)
        networks = [self._build(i) for i in range(P)]
        def structure(cell):  # what every network must share: settings, parameter names and shapes
            return repr(cell), [(n, tuple(t.shape)) for n, t in cell.named_parameters()]

        if varying and any(structure(n.cell) != structure(networks[0].cell) for n in networks):
            raise ValueError(f"{cell_class.__name__}: {', '.join(sorted(varying))} must be the same for every network "
                             "(only the cell's constants, such as eps, gamma or dt, may differ)")
        self._names = [n for n, _ in networks[0].cell.named_parameters()]
        self._constant_names = [n for n, _ in networks[0].cell.named_buffers()]
        self.cell_params = nn.Module()
        for n in self._names:
            self.cell_params.register_parameter(n.replace(".", "__"), nn.Parameter(
                torch.stack([net.cell.get_parameter(n).detach() for net in networks])))
        self.cell_constants = nn.Module()
        for n in self._constant_names:
            self.cell_constants.register_buffer(n.replace(".", "__"), torch.stack([net.cell.get_buffer(n) for net in networks]))
        self.weight_out = nn.Parameter(torch.stack([net.readout.weight.detach() for net in networks]))
        self.bias_out = nn.Parameter(torch.stack([net.readout.bias.detach() for net in networks]))
        # the random draws' state (random_draws): each network's id and the number of draws so far
        self.register_buffer("network_ids", (seed * 1_000_003 + torch.arange(P, dtype=torch.int64)) % 2**31)
        self.register_buffer("draw_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("dropout_keep", 1 - self.dropout, persistent=False)
        # the code the networks share, with no data (on "meta"); kept out of the module tree so that
        # its placeholder parameters are never trained, moved or saved
        object.__setattr__(self, "_cell", networks[0].cell.to("meta"))

    # ------------------------------------------------------------ networks
    def _kwargs(self, i: int) -> dict:
        return {k: (v[i].item() if torch.is_tensor(v[i]) else v[i]) if k in self._varying else v
                for k, v in self.cell_kwargs.items()}

    def _build(self, i: int) -> Network:
        """Network i as initialized: every parameter ~ U(-p_i, p_i), or ``init``'s, from its own generator."""
        cell = self.cell_class(self.input_size, self.hidden_size, **self._kwargs(i))
        net = Network(cell, nn.Linear(self.hidden_size, self.output_size), float(self.dropout[i]))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        p = float(self.init_p[i])
        init = getattr(self, "init", None)
        with torch.no_grad():
            for name, prm in net.named_parameters():
                if init is None:
                    prm.copy_((torch.rand(prm.shape, generator=g) * 2 - 1) * p)
                    continue
                value = torch.as_tensor(init(name, tuple(prm.shape), p, g))
                if value.shape != prm.shape or not bool(torch.isfinite(value).all()):
                    raise ValueError(f"init({name!r}, {tuple(prm.shape)}, ...) must return a finite tensor of that "
                                     f"shape, got {tuple(value.shape)}")
                prm.copy_(value)
        return net

    def network(self, i: int) -> Network:
        """Network i as a standalone `Network` (its ``cell_class`` cell and read-out) with a copy
        of its current weights and constants, on the population's device and dtype."""
        i = _as_int("i", i, 0)
        if i >= self.n_networks:
            raise IndexError(f"network {i} of a population of {self.n_networks}")
        ref = self.weight_out
        net = self._build(i).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            state = {f"cell.{n}": t[i] for n, t in self.cell_tensors().items()}
            state.update({"readout.weight": self.weight_out[i], "readout.bias": self.bias_out[i]})
            net.load_state_dict(state)
        return net.train(self.training)

    def subset(self, index: range | slice) -> "Population":
        """The networks ``index`` (consecutive) as a population of their own, with copies of
        their weights: a shard, or a part of a large population."""
        ids = range(self.n_networks)[index] if isinstance(index, slice) else index
        if not isinstance(ids, range) or ids.step != 1 or len(ids) == 0 or ids.start < 0 or ids.stop > self.n_networks:
            raise ValueError(f"index must select consecutive networks of the {self.n_networks}, got {index!r}")
        a, b = ids.start, ids.stop
        sub = Population.__new__(Population)
        nn.Module.__init__(sub)
        for k in ("cell_class", "input_size", "hidden_size", "output_size", "seed", "_names", "_constant_names", "_varying",
                  "init"):
            setattr(sub, k, getattr(self, k))
        object.__setattr__(sub, "_cell", self._cell)
        sub.n_networks = b - a
        sub.init_p, sub.dropout = self.init_p[a:b].clone(), self.dropout[a:b].clone()
        sub.cell_kwargs = {k: (v[a:b] if k in self._varying else v) for k, v in self.cell_kwargs.items()}
        sub.first_network = getattr(self, "first_network", 0) + a
        sub.cell_params, sub.cell_constants = nn.Module(), nn.Module()
        for n, t in self.cell_params.named_parameters():
            sub.cell_params.register_parameter(n, nn.Parameter(t.detach()[a:b].clone()))
        for n, t in self.cell_constants.named_buffers():
            sub.cell_constants.register_buffer(n, t[a:b].clone())
        sub.weight_out = nn.Parameter(self.weight_out.detach()[a:b].clone())
        sub.bias_out = nn.Parameter(self.bias_out.detach()[a:b].clone())
        sub.register_buffer("network_ids", self.network_ids[a:b].clone())
        sub.register_buffer("draw_count", self.draw_count.clone())
        sub.register_buffer("dropout_keep", self.dropout_keep[a:b].clone(), persistent=False)
        return sub.train(self.training)

    def cell_tensors(self) -> dict:
        """The cell's parameters and constants under the cell's own names, each (P, ...)."""
        out = {n: getattr(self.cell_params, n.replace(".", "__")) for n in self._names}
        out.update({n: getattr(self.cell_constants, n.replace(".", "__")) for n in self._constant_names})
        return out

    def _map(self, method: str, *args, in_dims, tensors=None):
        """Call the cell's ``method`` for every network (vmap over the population dimension);
        ``in_dims`` for ``args`` (0: per network, None: shared)."""
        cell = self._cell
        cell.train(self.training)
        fn = _Method(cell, method)
        tensors = self.cell_tensors() if tensors is None else tensors

        def one(t, *a):
            return functional_call(fn, {f"cell.{n}": v for n, v in t.items()}, a)

        # "different": NoisyRNN's noise differs between networks, as for networks run alone
        return vmap(one, in_dims=(0, *in_dims), randomness="different")(tensors, *args)

    # ------------------------------------------------------------ forward
    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None, draws: dict | None = None):
        """inputs (B, T, I) shared by every network, or (P, B, T, I) one batch per network ->
        (outputs (P, B, T, O), final state (P, B, state_dim)). ``draws``: `random_draws`'s
        output to use in training mode (default: drawn now)."""
        P = self.n_networks
        if not torch.is_tensor(inputs):
            raise TypeError(f"inputs must be a tensor (B, T, {self.input_size}) or ({P}, B, T, {self.input_size}), "
                            f"got {type(inputs).__name__}")
        if inputs.ndim == 3:
            dims = (None,)
        elif inputs.ndim == 4 and inputs.shape[0] == P:
            dims = (0,)
        elif inputs.ndim == 4:
            raise ValueError(f"inputs: one batch per network must have the population's {P} networks in dim 0, "
                             f"got {tuple(inputs.shape)} (a batch of another population, or of a shard?)")
        else:
            raise ValueError(f"inputs must be (B, T, {self.input_size}) or ({P}, B, T, {self.input_size}), "
                             f"got {tuple(inputs.shape)}")
        if inputs.shape[-1] != self.input_size:
            raise ValueError(f"inputs have {inputs.shape[-1]} features, the population's input_size is {self.input_size}")
        if inputs.shape[-3] < 1 or inputs.shape[-2] < 1:
            raise ValueError(f"inputs must hold at least one sequence of at least one step, got {tuple(inputs.shape)}")
        self._check_like_weights("inputs", inputs)
        if state is not None:
            if not torch.is_tensor(state) or state.shape != (P, inputs.shape[-3], self._cell.state_dim):
                raise ValueError(f"state must be a tensor ({P}, B={inputs.shape[-3]}, {self._cell.state_dim}), got "
                                 f"{tuple(state.shape) if torch.is_tensor(state) else type(state).__name__}")
            self._check_like_weights("state", state)
        args, in_dims = (inputs, state), dims + (None if state is None else 0,)
        if self.training and draws is None:
            draws = self.random_draws(inputs)
        if self.training and draws.get("noise") is not None:  # NoisyRNN: each network's own draws
            args, in_dims = args + (draws["noise"],), in_dims + (0,)
        hs, state = self._map("unroll", *args, in_dims=in_dims)
        if self.training and draws.get("dropout") is not None:
            hs = hs * draws["dropout"]
        out = torch.einsum("pbth,poh->pbto", hs, self.weight_out) + self.bias_out.view(P, 1, 1, -1)
        return out, state

    def _check_like_weights(self, name: str, t: torch.Tensor) -> None:
        """A TypeError naming ``name`` unless ``t`` has the parameters' floating dtype and device."""
        w = self.weight_out
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point ({w.dtype}, the population's dtype), got {t.dtype}: "
                            f"encode them first (e.g. one-hot) or convert with .to({w.dtype})")
        if t.dtype != w.dtype:
            raise TypeError(f"{name} are {t.dtype} but the population's parameters are {w.dtype}: convert one to the "
                            f"other ({name}.to({w.dtype}), or population.to({t.dtype}))")
        if t.device != w.device:
            raise ValueError(f"{name} are on {t.device} but the population is on {w.device}: move one to the other")

    def jacobians(self, states: torch.Tensor, inputs: torch.Tensor, convention: str = "full") -> torch.Tensor:
        """Each network's Jacobian at given points: states (P, B, state_dim), inputs (P, B, I) ->
        (P, B, m, m) (m = tangent dimension of ``convention``), in eval mode; e.g. the ASRNN
        eigenvalues of Eq. 3.4 at a random input and hidden state (`torch.linalg.eigvals`)."""
        d = self._cell.state_dim
        if not (torch.is_tensor(states) and torch.is_tensor(inputs) and states.ndim == 3 and inputs.ndim == 3
                and states.shape[:2] == inputs.shape[:2] and states.shape[0] == self.n_networks
                and states.shape[2] == d and inputs.shape[2] == self.input_size):
            raise ValueError(f"states must be ({self.n_networks}, B, {d}) and inputs ({self.n_networks}, B, "
                             f"{self.input_size}), got {getattr(states, 'shape', states)} and {getattr(inputs, 'shape', inputs)}")
        self._check_like_weights("states", states)
        self._check_like_weights("inputs", inputs)
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                system = _System(self, self.cell_tensors(), convention)
                _, J = system.step_and_jacobian(states.flatten(0, 1), inputs.flatten(0, 1))
        finally:
            self.train(was)
        return J.reshape(self.n_networks, states.shape[1], *J.shape[1:])

    def random_draws(self, inputs: torch.Tensor) -> dict:
        """A training step's random numbers: "dropout", inverted-dropout masks (P, B, T, H) or
        None without dropout; "noise" (NoisyRNN), standard normal draws (P, T * draws per step,
        B, H), else None. Advances ``draw_count``.

        Network i's numbers are a hash of (its id, ``draw_count``, element index) (`_uniform`):
        they do not depend on the other networks, so a shard trains as the whole population;
        they are the same on any device and inside a CUDA graph; and the state to checkpoint
        is one counter. (One ``torch.Generator`` per network gave the same independence at the
        cost of P random kernels per step, 11 ms of a 16 ms step for 200 networks on an H100.)"""
        B, T, dtype = inputs.shape[-3], inputs.shape[-2], self.weight_out.dtype
        out = {"dropout": None, "noise": None}
        if hasattr(self._cell, "noise_draws_per_step"):
            shape = (T * self._cell.noise_draws_per_step, B, self.hidden_size)
            u1, u2 = self._uniform(shape, 1), self._uniform(shape, 2)
            # Box-Muller; u1 in (0, 1]: log is finite
            out["noise"] = (torch.sqrt(-2 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)).to(dtype)
        if bool((self.dropout > 0).any()):
            keep = self.dropout_keep.to(dtype).view(-1, 1, 1, 1)  # on the device: no copy inside a CUDA graph
            out["dropout"] = (self._uniform((B, T, self.hidden_size), 3) < keep).to(dtype) / keep
        self.draw_count += 1
        return out

    def _uniform(self, shape, salt: int) -> torch.Tensor:
        """(P, *shape) float32 uniform on [0, 1) with 24 random bits: the 32-bit integer hash
        "lowbias32" (C. Wellons) of each element's index mixed with a per-network key
        (network id, draw_count, salt), twice. Integer arithmetic wraps, as the hash needs."""
        n = math.prod(shape)
        dev = self.draw_count.device
        key = _mix32((self.network_ids * 0x9E3779B1 + self.draw_count * 0x85EBCA77 + salt * 0xC2B2AE3D) & 0xFFFFFFFF)
        key2 = _mix32(key ^ 0x5BD1E995)
        key, key2 = (torch.where(k >= 2**31, k - 2**32, k).to(torch.int32).view(-1, 1) for k in (key, key2))  # signed 32-bit
        # two keyed rounds: with one (hash(index ^ key)) two keys' streams are the same numbers
        # in another order whenever the keys differ by less than n
        x = _lowbias32(torch.arange(n, device=dev, dtype=torch.int32).view(1, -1) ^ key)
        x = _lowbias32(x ^ key2)
        return (((x >> 8) & 0xFFFFFF).to(torch.float32) * 2.0**-24).view(-1, *shape)

    def extra_repr(self):
        return (f"{self.cell_class.__name__}, n_networks={self.n_networks}, sizes=({self.input_size}, "
                f"{self.hidden_size}, {self.output_size}), seed={self.seed}")


class _System:
    """The networks ``tensors`` (P, ...) of a population as one system for `lyapunov_spectrum`:
    flat state (P*B, state_dim), rows grouped by network (network p in rows p*B .. p*B+B-1)."""

    def __init__(self, pop: Population, tensors: dict, convention: str):
        cell = pop._cell
        if convention not in cell.conventions:
            raise ValueError(f"convention must be one of {cell.conventions} for {pop.cell_class.__name__}, got {convention!r}")
        self.pop, self.tensors, self.convention = pop, tensors, convention
        self.P = next(iter(tensors.values())).shape[0]
        self.state_dim = cell.state_dim
        self.tangent_dim = cell.state_dim if convention == "full" else cell.num_layers * cell.hidden_size
        self._index = None if convention == "full" else cell._tangent_index("cpu")

    def _split(self, x, u):
        B = x.shape[0] // self.P
        if x.shape[0] != self.P * B:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of the population size {self.P}")
        return x.reshape(self.P, B, -1), u.reshape(self.P, B, -1)

    def step(self, x, u):
        xs, us = self._split(x, u)
        return self.pop._map("step", xs, us, in_dims=(0, 0), tensors=self.tensors).reshape(x.shape)

    def step_and_jacobian(self, x, u):
        xs, us = self._split(x, u)
        x_next, J = self.pop._map("step_and_jacobian", xs, us, in_dims=(0, 0), tensors=self.tensors)
        J = J.flatten(0, 1)
        if self._index is not None:  # the dissertation's h-block: the output blocks, the others held fixed
            idx = self._index.to(J.device)
            J = J[:, idx][:, :, idx]
        return x_next.reshape(x.shape), J

    def jacobian(self, x, u):
        return self.step_and_jacobian(x, u)[1]


@dataclass
class PopulationSpectrum:
    """``exponents`` (P, k) float64 on the CPU: each network's spectrum averaged over the
    input sequences (natural log, per step; NaN rows for networks left out or whose state
    stopped being finite, -inf for exponents of an exactly singular Jacobian); ``methods``: the
    orthonormalization each part of the computation ended on."""

    exponents: torch.Tensor
    methods: list


def population_exponents(pop: Population, inputs: torch.Tensor, *, warmup: int = 0, convention: str = "full",
                         networks=None, networks_per_call: int | None = None, method: str = "auto",
                         k: int | None = None, dtype: torch.dtype = torch.float64) -> PopulationSpectrum:
    """Lyapunov spectrum of every network of ``pop`` driven by the same sequences.

    Args:
        inputs: (B, T, I), the same B sequences for every network (zero initial state).
        warmup: orthonormalized warm-up steps before measuring (`lyapunov_spectrum`).
        convention: "full" (the whole state) or, for LSTM, CoRNN and LEM, "h_block" (the
            dissertation's output-block Jacobian with the other block held fixed).
        networks: (P,) bool, the networks to compute (default all); the others get NaN rows
            (networks whose training diverged).
        networks_per_call: networks per engine call; default: as many as keep each float64
            frame buffer (networks x B x d x d) within 2 GiB (CholeskyQR3 holds several).
        method, k: as in `lyapunov_spectrum`.
        dtype: the spectrum's precision, float64 by default whatever the population's: in
            float32 a saturated tanh has derivative exactly 0 at ``|x| > 9`` (float64: 19), so a
            trained network's Jacobian is singular and its smallest exponents are -inf.

    A network whose state stops being finite gets NaN exponents; a Jacobian that is exactly
    singular somewhere (a dead relu unit, a tanh saturated beyond rounding) gives -inf for the
    exponents it kills and finite values for the others; the other networks are unaffected.
    """
    if not isinstance(pop, Population):
        raise TypeError(f"pop must be a lyabook.population.Population, got {type(pop).__name__}")
    if not torch.is_tensor(inputs) or inputs.ndim != 3 or inputs.shape[-1] != pop.input_size:
        raise ValueError(f"inputs must be a tensor (B, T, {pop.input_size}), got "
                         f"{tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__}")
    if inputs.shape[0] < 1:
        raise ValueError(f"inputs must hold at least one sequence, got {tuple(inputs.shape)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs must be finite: a NaN or inf input would make every exponent NaN")
    tensors = pop.cell_tensors()
    system = _System(pop, tensors, convention)  # checks the convention
    d, B, P = system.tangent_dim, inputs.shape[0], pop.n_networks
    if networks_per_call is None:
        networks_per_call = max(1, (2 << 30) // (B * d * d * 8))
    networks_per_call = _as_int("networks_per_call", networks_per_call, 1)
    keep = [True] * P if networks is None else list(networks.tolist() if hasattr(networks, "tolist") else networks)
    if not all(isinstance(f, (bool, np.bool_)) for f in keep):  # [0, 2] would read as a mask, not as indices
        raise TypeError(f"networks must be a ({P},) mask of booleans (True: compute that network), got {networks!r}")
    keep = [bool(f) for f in keep]
    if len(keep) != P:
        raise ValueError(f"networks must have one entry per network ({P}), got {len(keep)}")
    out, methods = torch.full((P, k or d), float("nan"), dtype=torch.float64), []
    dev = pop.weight_out.device
    x_all = inputs.to(device=dev, dtype=dtype)
    was = pop.training
    pop.eval()

    def compute(a, b):  # networks a..b-1; one network's failure leaves the others' exponents unchanged
        part = _System(pop, {n: t[a:b].to(dtype) for n, t in tensors.items()}, convention)
        x = x_all.unsqueeze(0).expand(b - a, *x_all.shape).reshape((b - a) * B, *x_all.shape[1:])
        res = lyapunov_spectrum(part, None, inputs=x, warmup=warmup, method=method, k=k, nonfinite="keep")
        out[a:b] = res.per_sample.reshape(b - a, B, -1).mean(1).cpu()
        methods.append(res.method)

    try:
        with torch.no_grad():
            for a, b in _runs(keep, networks_per_call):
                compute(a, b)
                if dev.type == "cuda":  # hand the finished part's memory back before the next part, including
                    gc.collect()  # any held in a reference cycle (the QR's workspace once was: 16 GiB per part)
                    torch.cuda.empty_cache()
    finally:
        pop.train(was)
    return PopulationSpectrum(out, methods)


def _runs(keep, size: int):
    """(start, stop) of the consecutive runs of True in ``keep``, each at most ``size`` long."""
    runs, start = [], None
    for i, k in enumerate(list(keep) + [False]):
        if k and start is None:
            start = i
        if start is not None and (not k or i - start == size):
            runs.append((start, i))
            start = i if k else None
    return runs


class _PerNetworkOptimizer(torch.optim.Optimizer):
    """An optimizer whose learning rate is one value per network (the population is dim 0 of
    every parameter), kept on the device so that a step can be captured in a CUDA graph."""

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params or not all(torch.is_tensor(p) for p in params):
            raise ValueError("params must be one or more tensors (a population's parameters), got "
                             f"{[type(p).__name__ for p in params] or 'none'}")
        if any(p.ndim == 0 for p in params) or len({p.shape[0] for p in params}) != 1:
            raise ValueError("params must all have the population in dim 0 (the same number of networks), got shapes "
                             f"{sorted({tuple(p.shape) for p in params})}")
        defaults["lr"] = per_network(defaults["lr"], params[0].shape[0], "lr", minimum=0.0)
        if "eps" in defaults and (isinstance(defaults["eps"], bool) or not isinstance(defaults["eps"], numbers.Real)
                                  or not 0 <= defaults["eps"] < math.inf):
            raise ValueError(f"eps must be a finite number >= 0, got {defaults['eps']!r}")
        super().__init__(params, defaults)

    def _init_state(self, p, group) -> dict:
        """A parameter's state besides its learning rates (created at its first step)."""
        return {}

    def _update(self, p, st, group) -> None:
        """Update ``p`` in place from ``p.grad`` and its state ``st``."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter with a gradient. Capturable in a CUDA graph: the state
        (step counts, learning rates, moments) lives on the parameters' device."""
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(self._init_state(p, group))
                    st["lr"] = group["lr"].to(device=p.device, dtype=p.dtype).view(-1, *([1] * (p.ndim - 1)))
                self._update(p, st, group)
        return loss

    def set_lr(self, lr) -> None:
        """Set every network's learning rate (scalar or (P,)), in place where the step reads it
        (so that a step captured in a CUDA graph sees the new values)."""
        for group in self.param_groups:
            group["lr"] = per_network(lr, len(group["lr"]), "lr", minimum=0.0)
            for p in group["params"]:
                if "lr" in self.state[p]:
                    self.state[p]["lr"].copy_(group["lr"].view(-1, *([1] * (p.ndim - 1))))


class PopulationAdam(_PerNetworkOptimizer):
    """Adam (Kingma & Ba) with one learning rate per network.

    Every parameter has the population in dim 0; ``lr`` is (P,). Updates are elementwise,
    so each network's trajectory equals plain Adam on that network alone (hand-written:
    torch's Adam takes one learning rate per parameter group, not per slice).
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")  # b = 1: NaN weights
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    def _init_state(self, p, group) -> dict:
        return {"step": torch.zeros((), dtype=torch.float64, device=p.device), "m": torch.zeros_like(p),
                "v": torch.zeros_like(p)}

    def _update(self, p, st, group):
        b1, b2 = group["betas"]
        st["step"] += 1
        t = st["step"]
        st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
        st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        step_size = st["lr"] / (1 - b1**t)
        denom = (st["v"] / (1 - b2**t)).sqrt_().add_(group["eps"])
        p.sub_(step_size * st["m"] / denom)


class PopulationSGD(_PerNetworkOptimizer):
    """Plain gradient descent, ``p -= lr g``, one learning rate per network (Chapter 4's networks:
    the authors' SGD on a batch-summed loss is this with lr x batch size on the mean loss)."""

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))

    def _update(self, p, st, group):
        p.sub_(st["lr"] * p.grad)


class PopulationAdagrad(_PerNetworkOptimizer):
    """Adagrad (Duchi et al.; torch's, without learning-rate decay) with one learning rate per
    network: ``sum += g^2``, ``p -= lr g / (sqrt(sum) + eps)`` (the ASRNN grid of Sec. 3.1)."""

    def __init__(self, params, lr, eps=1e-10):
        super().__init__(params, dict(lr=lr, eps=eps))

    def _init_state(self, p, group) -> dict:
        return {"sum": torch.zeros_like(p)}

    def _update(self, p, st, group):
        st["sum"].addcmul_(p.grad, p.grad)
        p.sub_(st["lr"] * p.grad / (st["sum"].sqrt() + group["eps"]))


class PopulationRMSprop(_PerNetworkOptimizer):
    """RMSprop (torch's, no momentum, not centered) with one learning rate per network:
    ``v = alpha v + (1 - alpha) g^2``, ``p -= lr g / (sqrt(v) + eps)`` (the pixel-flipping
    network of Chapter 4: nnRNN's sMNIST script, lr 2e-4, alpha 0.99)."""

    def __init__(self, params, lr, alpha=0.99, eps=1e-8):
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha < 1:
            raise ValueError(f"alpha must be a number in [0, 1), got {alpha!r}")
        super().__init__(params, dict(lr=lr, alpha=float(alpha), eps=eps))

    def _init_state(self, p, group) -> dict:
        return {"square_avg": torch.zeros_like(p)}

    def _update(self, p, st, group):
        a = group["alpha"]
        st["square_avg"].mul_(a).addcmul_(p.grad, p.grad, value=1 - a)
        p.sub_(st["lr"] * p.grad / (st["square_avg"].sqrt() + group["eps"]))
