"""Population training: P independent networks trained at once as one batched model.

A sweep over hyperparameters (learning rate, dropout, initialization half-width p of
U(-p, p)) trains P networks of equal size. Stacking their weights along a leading dimension
turns P small matrix products into one batched product, so tens to thousands of networks
train at GPU speed. Nothing couples the networks: the loss is the sum of the networks' own
losses, and Adam is elementwise with a per-network learning rate, so the result equals
training each network alone (`tests/test_train.py` checks this).

The population is also a system for `lyabook.lyapunov_spectrum`: its state stacks the P
networks' LSTM states, so one engine call computes every network's spectrum.
"""
from __future__ import annotations

import torch
from torch import nn

from .lyapunov import _as_int
from .rnn import lstm_jacobian

__all__ = ["PopulationLSTM", "PopulationAdam", "population_spectra", "population_exponents", "network_exponents"]


def _per_network(value, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must be a scalar or have one value per network ({n}), got {t.numel()}")
    return t.clone()


class PopulationLSTM(nn.Module):
    """P single-layer LSTMs (torch's gate order i, f, g, o) with linear read-outs.

    Args:
        n_networks: P.
        input_size, hidden_size, output_size: sizes shared by the population.
        init_p: half-width p of the uniform initialization U(-p, p), scalar or (P,).
        dropout: dropout rate on the LSTM output before the read-out, scalar or (P,).
        bias: LSTM biases (the dissertation's CharRNN has none).
        seed: initialization seed; network i's weights depend only on (seed, i).

    Parameters have a leading P dimension: ``weight_ih`` (P, 4H, I), ``weight_hh`` (P, 4H, H),
    ``bias`` (P, 4H) if bias, ``weight_out`` (P, O, H), ``bias_out`` (P, O).
    """

    def __init__(self, n_networks: int, input_size: int, hidden_size: int, output_size: int, *,
                 init_p=0.08, dropout=0.0, bias: bool = False, seed: int = 0):
        super().__init__()
        if n_networks < 1:
            raise ValueError(f"n_networks must be >= 1, got {n_networks}")
        P, H = n_networks, hidden_size
        self.n_networks, self.input_size, self.hidden_size, self.output_size = P, input_size, H, output_size
        self.init_p = _per_network(init_p, P, "init_p")
        self.dropout = _per_network(dropout, P, "dropout")
        if ((self.dropout < 0) | (self.dropout >= 1)).any():
            raise ValueError("dropout must lie in [0, 1) for every network")
        self.has_bias = bias
        self.seed = seed
        self.weight_ih = nn.Parameter(torch.empty(P, 4 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(P, 4 * H, H))
        self.bias = nn.Parameter(torch.empty(P, 4 * H)) if bias else None
        self.weight_out = nn.Parameter(torch.empty(P, output_size, H))
        self.bias_out = nn.Parameter(torch.empty(P, output_size))
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int = 0):
        """Network i: every parameter ~ U(-p_i, p_i) from its own generator (seed, i)."""
        with torch.no_grad():
            for i in range(self.n_networks):
                g = torch.Generator().manual_seed(seed * 1_000_003 + i)
                p = float(self.init_p[i])
                for prm in self.parameters():
                    prm[i].copy_((torch.rand(prm[i].shape, generator=g) * 2 - 1) * p)

    def networks(self, index: slice) -> "PopulationLSTM":
        """The sub-population ``index`` (a slice of networks), sharing this one's parameters
        (views, no copy): used to compute spectra of a large population in parts."""
        if not isinstance(index, slice):
            raise TypeError(f"index must be a slice of networks, got {type(index).__name__}")
        ids = range(self.n_networks)[index]
        if len(ids) == 0:
            raise ValueError(f"slice {index} selects no network of the {self.n_networks}")
        sub = PopulationLSTM.__new__(PopulationLSTM)
        nn.Module.__init__(sub)
        sub.n_networks, sub.input_size, sub.hidden_size, sub.output_size = len(ids), self.input_size, self.hidden_size, self.output_size
        sub.init_p, sub.dropout, sub.has_bias, sub.seed = self.init_p[index], self.dropout[index], self.has_bias, self.seed
        for name, prm in self.named_parameters():
            setattr(sub, name, nn.Parameter(prm.detach()[index], requires_grad=False))
        if self.bias is None:
            sub.bias = None
        sub.train(self.training)
        return sub

    # ----------------------------------------------------------------- forward
    def _input_projection(self, x):
        """W_ih x (+ b) for inputs x (P, B, [T,] I): computed for a whole sequence at once,
        outside the time loop (one large product instead of T small ones)."""
        shape = x.shape
        z = torch.bmm(x.reshape(shape[0], -1, shape[-1]), self.weight_ih.mT)
        if self.bias is not None:
            z = z + self.bias.unsqueeze(1)
        return z.reshape(*shape[:-1], 4 * self.hidden_size)

    def _activations(self, z_t, h, c):
        """Gate activations i, f, g, o, the new cell state and tanh of it, all (P, B, H),
        from the input projection z_t (P, B, 4H) and h, c (P, B, H): one LSTM step for
        every network."""
        gates = torch.baddbmm(z_t, h, self.weight_hh.mT)
        gi, gf, gg, go = gates.chunk(4, -1)
        i, f, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
        c_new = f * c + i * g
        return i, f, g, o, c_new, torch.tanh(c_new)

    def _cell(self, z_t, h, c):
        """One step for all networks: z_t (P, B, 4H) input projection, h, c (P, B, H) -> (h', c')."""
        _, _, _, o, c_new, tc = self._activations(z_t, h, c)
        return o * tc, c_new

    def forward(self, x: torch.Tensor, state=None):
        """x (P, B, T, I) -> (outputs (P, B, T, O), (h, c) each (P, B, H))."""
        P, B, T, _ = x.shape
        if P != self.n_networks:
            raise ValueError(f"inputs have {P} networks in dim 0, the population has {self.n_networks}")
        h, c = state if state is not None else (x.new_zeros(P, B, self.hidden_size),) * 2
        # unbind, not z[:, :, t]: the backward of T slices would write T zero tensors of z's size
        zs = self._input_projection(x).unbind(2)  # T of (P, B, 4H)
        hs = []
        for z_t in zs:
            h, c = self._cell(z_t, h, c)
            hs.append(h)
        hs = torch.stack(hs, 2)  # (P, B, T, H)
        if self.training and bool((self.dropout > 0).any()):
            keep = (1 - self.dropout).to(hs).view(P, 1, 1, 1)
            hs = hs * (torch.rand_like(hs) < keep) / keep
        out = torch.einsum("pbth,poh->pbto", hs, self.weight_out) + self.bias_out.view(P, 1, 1, -1)
        return out, (h, c)

    # ----------------------------------------------------- system protocol
    convention = "full"  # or "h_block" (set by population_spectra)

    @property
    def state_dim(self) -> int:
        """Flat state of all networks for the engine: batch entry (p, b) is row p * B + b."""
        return 2 * self.hidden_size

    @property
    def tangent_dim(self) -> int:
        return 2 * self.hidden_size if self.convention == "full" else self.hidden_size

    def _split(self, x):
        """Flat rows (P*B, 2H) -> h, c (P, B, H) each."""
        P, H = self.n_networks, self.hidden_size
        B = x.shape[0] // P
        if x.shape[0] != P * B:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of the population size {P}")
        return x[:, :H].reshape(P, B, H), x[:, H:].reshape(P, B, H)

    def step_and_jacobian(self, x: torch.Tensor, u: torch.Tensor):
        """x (P*B, 2H) flat (h, c) per row, u (P*B, I) -> (x_next, J (P*B, 2H, 2H)); rows are
        grouped by network (all B rows of network 0 first)."""
        P, H = self.n_networks, self.hidden_size
        h, c = self._split(x)
        B = h.shape[1]
        i, f, g, o, c_new, tc = self._activations(self._input_projection(u.reshape(P, B, -1)), h, c)
        h_new = o * tc
        # the single-network LSTM Jacobian, with each network's weights broadcast over its rows
        J, _ = lstm_jacobian(c, i, f, g, o, tc, self.weight_hh.unsqueeze(1))
        x_next = torch.cat((h_new, c_new), -1).reshape(P * B, 2 * H)
        J = J.reshape(P * B, 2 * H, 2 * H)
        if self.convention == "h_block":  # the dissertation's dh'/dh with c held fixed
            J = J[:, :H, :H]
        return x_next, J

    def step(self, x, u):
        h, c = self._split(x)
        h_new, c_new = self._cell(self._input_projection(u.reshape(h.shape[0], h.shape[1], -1)), h, c)
        return torch.cat((h_new, c_new), -1).reshape(x.shape)

    def jacobian(self, x, u):
        return self.step_and_jacobian(x, u)[1]


class PopulationAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba) with one learning rate per network.

    Every parameter has the population in dim 0; ``lr`` is (P,). Updates are elementwise,
    so each network's trajectory equals plain Adam on that network alone.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        params = list(params)
        P = params[0].shape[0]
        super().__init__(params, dict(lr=_per_network(lr, P, "lr"), betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                lr = group["lr"].to(p).view(-1, *([1] * (p.ndim - 1)))
                step_size = lr / (1 - b1**t)
                denom = (st["v"] / (1 - b2**t)).sqrt_().add_(group["eps"])
                p.sub_(step_size * st["m"] / denom)
        return loss


def population_spectra(model: PopulationLSTM, inputs: torch.Tensor, warmup: int = 0, convention: str = "full", **kw):
    """Spectra of every network driven by the same sequences: inputs (B, T, I) ->
    LyapunovResult whose per_sample is (P*B, k), network p in rows p*B .. p*B+B-1.
    ``convention="h_block"`` gives the dissertation's N-exponent h-block spectra."""
    from .lyapunov import lyapunov_spectrum

    if convention not in ("full", "h_block"):
        raise ValueError(f"convention must be 'full' or 'h_block', got {convention!r}")
    P = model.n_networks
    was = model.training
    model.eval()
    model.convention = convention
    try:
        x = inputs.to(model.weight_hh).unsqueeze(0).expand(P, *inputs.shape).reshape(P * inputs.shape[0], *inputs.shape[1:])
        return lyapunov_spectrum(model, None, inputs=x, warmup=warmup, **kw)
    finally:
        model.convention = "full"
        model.train(was)


def population_exponents(model: PopulationLSTM, inputs: torch.Tensor, warmup: int = 0, convention: str = "full",
                         networks_per_call: int | None = None, **kw) -> torch.Tensor:
    """(P, k) mean spectrum of every network over the sequences ``inputs`` (B, T, I), computed
    ``networks_per_call`` networks at a time (default: as many as keep each float64 frame
    buffer (networks x B x d x d) within 2 GiB; CholeskyQR3 holds several such buffers, so a
    population of 60 LSTMs of 512 units in one call would need tens of GiB)."""
    return _population_exponents(model, inputs, warmup, convention, networks_per_call, **kw)[0]


def _population_exponents(model, inputs, warmup, convention, networks_per_call, finite=None, **kw):
    """`population_exponents` and the orthonormalization each part ended on (list of str).
    ``finite``: (P,) bool, the networks to compute; the others (diverged) get NaN rows."""
    d = 2 * model.hidden_size if convention == "full" else model.hidden_size
    if networks_per_call is None:
        networks_per_call = max(1, (2 << 30) // (inputs.shape[0] * d * d * 8))
    networks_per_call = _as_int("networks_per_call", networks_per_call, 1)
    P = model.n_networks
    finite = [True] * P if finite is None else [bool(f) for f in finite]
    out, methods = torch.full((P, d), float("nan"), dtype=torch.float64), []
    for a, b in _runs(finite, networks_per_call):
        sub = model.networks(slice(a, b))
        result = population_spectra(sub, inputs, warmup=warmup, convention=convention, **kw)
        out[a:b] = network_exponents(result, sub.n_networks).cpu()
        methods.append(result.method)
        if model.weight_hh.is_cuda:  # hand the finished part's CUDA-graph memory pool back before the next part
            torch.cuda.empty_cache()
    return out, methods


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


def network_exponents(result, n_networks: int) -> torch.Tensor:
    """(P, k) mean spectrum of each network from `population_spectra`'s result."""
    ps = result.per_sample
    return ps.reshape(n_networks, -1, ps.shape[-1]).mean(1)



# ------------------------------------------------------------------ training loop
# Bumped whenever a change to this module changes the numbers a run records: records made by
# another trainer version then live in another folder and are never reused.
TRAINER_VERSION = 1


def _digest(tensors) -> str:
    """sha256 (16 hex digits) of tensors' shapes, dtypes and bytes, in order."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def run_settings(model: PopulationLSTM, train_batches, valid_batches, spectrum_inputs, spectrum_warmup: int,
                 spectrum_conventions, task: str) -> dict:
    """Everything besides the caller's ``config`` that changes a run's numbers: the trainer's
    version, the task, the model's sizes and initialization (seed, p, dropout), the training and
    validation data and the spectrum's inputs (digests of their bytes), warm-up and conventions.
    Part of the run's identity, so a changed setting never reuses another run's records."""
    return {"trainer": TRAINER_VERSION, "task": task,
            "model": {"networks": model.n_networks, "sizes": [model.input_size, model.hidden_size, model.output_size],
                      "bias": model.has_bias, "init_p": model.init_p.tolist(), "dropout": model.dropout.tolist(),
                      "seed": model.seed},
            "train": {"batches": len(train_batches), "data": _digest(t for xy in train_batches for t in xy)},
            "valid": {"batches": len(valid_batches), "data": _digest(t for xy in valid_batches for t in xy)},
            "spectrum": None if spectrum_inputs is None else {"inputs": _digest([spectrum_inputs]), "warmup": spectrum_warmup,
                                                              "conventions": list(spectrum_conventions)}}


def run_hash(config: dict, settings: dict, lr_decay: float, decay_after: int) -> str:
    """The run folder's name: the caller's configuration, the learning-rate schedule and `run_settings`."""
    return config_hash({**config, "lr_decay": lr_decay, "decay_after": decay_after, "run": settings})


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-serializable configuration."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _loss(out, y, task):
    """Per-network mean loss (P,) and, for classification, accuracy (P,)."""
    if task == "classification":  # out (P, B, T, C), y (P, B, T) class indices
        logp = torch.log_softmax(out, -1)
        loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean((1, 2))
        acc = (out.argmax(-1) == y).to(out.dtype).mean((1, 2))
        return loss, acc
    if y.ndim == out.ndim - 1:  # one target per sequence: read out the last step
        out = out[:, :, -1]
    loss = (out - y).square().mean(tuple(range(1, out.ndim)))  # regression: MSE per network
    return loss, None


def _key_suffix(convention: str) -> str:
    """Record keys per convention: "exponents" for the full state, "exponents_h_block" etc."""
    return "" if convention == "full" else f"_{convention}"


def _rng_state(dev) -> dict:
    """The random streams training draws from (dropout): saved with every checkpoint so that a
    resumed run draws what an uninterrupted one would."""
    out = {"rng_cpu": torch.get_rng_state()}
    if dev.type == "cuda":
        out["rng_cuda"] = torch.cuda.get_rng_state(dev)
    return out


def _set_rng_state(state: dict) -> None:
    if "rng_cpu" in state:  # checkpoints from before RNG states were saved have none
        torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng_cuda"])


def _load_checkpoint(path, device, last_record: int, epochs: int) -> dict:
    """state.pt, loaded as data only (``weights_only=True``: a crafted file cannot run code),
    checked against the records; every problem is one line naming the file and what to do."""
    import pickle

    if not path.is_file():
        raise RuntimeError(f"{path.parent}: the records end at epoch {last_record} but state.pt (the checkpoint to "
                           f"continue from, not committed with the records) is missing, so epochs {last_record + 1}-{epochs} "
                           f"cannot be trained from it; ask for at most {last_record} epochs to use the records as they are, "
                           "or delete the folder to train from scratch")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise RuntimeError(f"{path}: not a lyabook checkpoint that loads as data ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); delete it and the records after it") from None
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "lr"} <= set(state):
        raise RuntimeError(f"{path}: not a lyabook checkpoint (keys epoch, model, optimizer, lr missing)")
    if state["epoch"] > last_record or state["epoch"] < last_record - 1:
        raise RuntimeError(f"{path}: checkpoint of epoch {state['epoch']} does not follow the records, which end at "
                           f"epoch {last_record}; delete the folder to restart")
    return state


def train_population(model: PopulationLSTM, train_batches, valid_batches, *, epochs: int, lr, config: dict,
                     out_dir, task: str = "classification", lr_decay: float = 0.95, decay_after: int = 10,
                     spectrum_inputs: torch.Tensor | None = None, spectrum_warmup: int = 0,
                     spectrum_conventions=("full",), encode=None, progress: bool = True,
                     spectrum_method: str = "auto", time_limit_s: float | None = None) -> list[dict]:
    """Train a population, recording per network and epoch: training and validation loss,
    accuracy (classification), and the Lyapunov spectrum on held-out sequences.

    ``train_batches`` / ``valid_batches``: lists of (x, y) with x (B, T, ...) shared by every
    network (``encode`` maps x to float inputs (B, T, I), e.g. one-hot characters).
    Epoch 0 records the untrained networks. After every epoch the record is written with
    `lyabook.results.save_results` to ``out_dir/<hash>/epoch_<e>.json`` (its provenance: the
    configuration, its hash and `lyabook.results.provenance`, whose "device" here is the
    device's name; the spectra as float32 arrays in ``epoch_<e>.npz`` beside it), then the
    model, optimizer and random-number states to ``state.pt``, each atomically; a rerun with
    the same configuration resumes after the last finished epoch, bit for bit as if never
    interrupted (dropout included), and a finished run is loaded from its records, not
    recomputed (the records alone suffice: ``state.pt`` is only read, as data, to continue
    training; a missing one is a one-line error saying what to do).
    ``spectrum_conventions``: "full" (exponents) and/or "h_block" (exponents_h_block, the
    dissertation's convention). ``spectrum_method``: the engine's orthonormalization ("auto":
    CholeskyQR3 on a GPU, Householder on a CPU); once CholeskyQR3 breaks down for a convention
    (trained LSTMs' saturated gates make their Jacobians numerically singular), later epochs go
    straight to Householder. Each record names the method its spectra ended on.
    The learning rate is multiplied by ``lr_decay`` after every epoch past ``decay_after``.
    The run folder's name hashes ``config``, ``lr_decay``, ``decay_after`` and `run_settings`
    (data, sizes, seed, spectrum inputs, trainer version): any setting that changes
    the numbers changes the folder, so records made under other settings are never reused.
    Leave the number of epochs out of ``config``: nothing before epoch e depends on it, so a
    run asked for more epochs later continues the records of a shorter one.
    ``time_limit_s``: stop after the first epoch that ends past this many seconds of this
    call (a GPU session's budget, say); the records so far are kept and a rerun resumes.
    Returns the list of epoch records (fewer than ``epochs + 1`` when the time limit stopped it).
    """
    import time
    from pathlib import Path

    import numpy as np

    from .progress import bar as progress_bar  # on the terminal, never in a notebook's outputs

    from .results import load_results, provenance, save_results

    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    encode = encode or (lambda x: x)
    settings = run_settings(model, train_batches, valid_batches, spectrum_inputs, spectrum_warmup, spectrum_conventions, task)
    h = run_hash(config, settings, lr_decay, decay_after)
    run_dir = Path(out_dir) / h
    run_dir.mkdir(parents=True, exist_ok=True)
    opt = PopulationAdam(model.parameters(), lr=lr)
    records = []
    for e in range(epochs + 1):
        f = run_dir / f"epoch_{e:03d}.json"
        if not f.is_file():  # the JSON is written last: without it the epoch did not finish
            break
        records.append(load_results(f)["results"])  # the spectra come back from the NPZ beside it
    start = len(records)
    if start > epochs:
        return records
    if start > 0:
        state = _load_checkpoint(run_dir / "state.pt", model.weight_hh.device, start - 1, epochs)
        if state["epoch"] < start - 1:  # killed between an epoch's record and its checkpoint: redo that epoch
            records = records[: state["epoch"] + 1]
            start = len(records)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        opt.param_groups[0]["lr"] = state["lr"]
        _set_rng_state(state)
    dev = model.weight_hh.device
    P = model.n_networks
    methods = {conv: spectrum_method for conv in spectrum_conventions}
    for conv in spectrum_conventions:  # a resumed run remembers where CholeskyQR3 broke down
        if records and "householder" in records[-1].get(f"spectrum_method{_key_suffix(conv)}", []):
            methods[conv] = "householder"
    t_call = time.perf_counter()

    def population_batch(x, y):  # the same batch for every network: (P, B, T, I), targets (P, B, ...)
        return encode(x.to(dev)).unsqueeze(0).expand(P, *x.shape[:2], -1), y.to(dev).unsqueeze(0).expand(P, *y.shape)

    def evaluate(batches):
        model.eval()
        tot, acc, n = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64), 0
        with torch.no_grad():
            for x, y in batches:
                xin, yin = population_batch(x, y)
                out, _ = model(xin)
                l, a = _loss(out, yin, task)
                tot += l.double().cpu(); n += 1
                if a is not None:
                    acc += a.double().cpu()
        model.train()
        return tot / max(n, 1), (acc / max(n, 1) if task == "classification" else None)

    bar = progress_bar(range(start, epochs + 1), desc=f"population {h} ({P} networks)", progress=progress)
    for e in bar:
        t0 = time.perf_counter()
        train_loss = torch.zeros(P, dtype=torch.float64, device=dev)  # summed on the device: no sync per batch
        if e > 0:
            model.train()
            for x, y in train_batches:
                xin, yin = population_batch(x, y)
                opt.zero_grad(set_to_none=True)
                out, _ = model(xin)
                l, _ = _loss(out, yin, task)
                l.sum().backward()  # networks are independent: the sum's gradient is each network's own
                opt.step()
                train_loss += l.detach().double()
            train_loss /= max(len(train_batches), 1)
            if e > decay_after:
                opt.param_groups[0]["lr"] = opt.param_groups[0]["lr"] * lr_decay
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_train = time.perf_counter() - t0
        valid_loss, valid_acc = evaluate(valid_batches)
        # a network whose loss or weights stop being finite is marked diverged and left out of the
        # spectra; nothing couples the networks, so the others go on unchanged
        finite = torch.isfinite(valid_loss).to(dev)
        for prm in model.parameters():
            finite &= torch.isfinite(prm.detach()).flatten(1).all(1)
        finite = finite.cpu()
        rec = {"epoch": e, "train_loss": train_loss.cpu().tolist() if e > 0 else None, "valid_loss": valid_loss.tolist(),
               "valid_accuracy": None if valid_acc is None else valid_acc.tolist(), "train_time_s": t_train,
               "diverged": [i for i in range(P) if not finite[i]]}
        if spectrum_inputs is not None:
            for conv in spectrum_conventions:
                t1 = time.perf_counter()
                ex, used = _population_exponents(model, encode(spectrum_inputs.to(dev)), spectrum_warmup, conv, None,
                                                 finite=finite, method=methods[conv])
                if "householder" in used:  # CholeskyQR3 broke down: training only saturates gates further, so
                    methods[conv] = "householder"  # later epochs skip the failed attempt (up to 64 steps)
                suffix = _key_suffix(conv)
                rec[f"spectrum_time_s{suffix}"] = time.perf_counter() - t1
                rec[f"spectrum_method{suffix}"] = sorted(set(used))
                rec[f"exponents{suffix}"] = ex.to(torch.float32).numpy()  # stored as float32: ~1e-7 relative, far below the stderr
        records.append(rec)
        # one writer for every result: arrays go to the NPZ beside the JSON (a JSON list of
        # 66 x 1536 exponents per epoch would be megabytes); the JSON, written last, marks the
        # epoch as finished. "device" names the device (the GPU's name, or "cpu"), as in every record.
        arrays = {k: v for k, v in rec.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in rec.items() if k not in arrays}
        prov = {"config": config, "config_hash": h, "run_settings": settings, **provenance(None, dev),
                "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
        save_results(run_dir / f"epoch_{e:03d}.json", scalars, prov, arrays=arrays or None)
        # the checkpoint after the record: a kill between the two leaves a record one epoch ahead of
        # state.pt, which a rerun recomputes from state.pt (the other order lost every epoch)
        tmp = run_dir / "state.pt.tmp"
        torch.save({"epoch": e, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "lr": opt.param_groups[0]["lr"], **_rng_state(dev)}, tmp)
        tmp.replace(run_dir / "state.pt")
        bar.set_postfix(valid_loss=f"{float(valid_loss.mean()):.3f}")
        if time_limit_s is not None and e < epochs and time.perf_counter() - t_call > time_limit_s:
            print(f"population {h}: time limit of {time_limit_s:.0f} s reached after epoch {e} of {epochs}; "
                  "the records so far are saved and a rerun resumes")
            break
    return records
