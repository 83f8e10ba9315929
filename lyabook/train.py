"""Training populations (`lyabook.population.Population`) with records that cannot go stale.

`train_population` is the loop; each of its parts does one job and is usable alone:
`train_epoch` (the optimizer steps), `evaluate` (losses and accuracies), `finite_networks`
(which networks diverged), `epoch_spectra` (every network's Lyapunov spectrum, through
`lyabook.population.population_exponents`), and `RunRecords` (the run's folder: epoch records
written with `lyabook.results.save_results`, the checkpoint, resuming, shards and their merge).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .population import (Population, PopulationAdam, _PerNetworkOptimizer, per_network, population_exponents,
                         shard_path, shard_range)
from .rnn import LSTM

__all__ = ["PopulationLSTM", "train_population", "check_run", "restore", "train_epoch", "evaluate", "finite_networks", "epoch_spectra",
           "RunRecords", "merge_shards", "device_seconds", "run_settings", "run_hash", "config_hash", "TRAINER_VERSION"]


def PopulationLSTM(n_networks: int, input_size: int, hidden_size: int, output_size: int, *, init_p=0.08,
                   dropout=0.0, bias: bool = False, seed: int = 0) -> Population:
    """P single-layer LSTMs with linear read-outs: ``Population(rnn.LSTM, ...)`` (the CharRNN and
    mocap networks of the dissertation's Chapter 2; the CharRNN has no biases)."""
    return Population(LSTM, n_networks, input_size, hidden_size, output_size, init_p=init_p, dropout=dropout,
                      seed=seed, bias=bias)


# ------------------------------------------------------------------ identity
# Bumped whenever a change to this module changes the numbers a run records: records made by
# another trainer version then live in another folder and are never reused.
# 2: lyabook.population (torch's LSTM biases b_ih and b_hh instead of one bias; dropout masks
#    from per-network generators; one-step input products instead of a whole-sequence one).
TRAINER_VERSION = 2


def _digest(tensors) -> str:
    """sha256 (16 hex digits) of tensors' shapes, dtypes and bytes, in order."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _data_settings(batches) -> dict:
    items = [t for xy in batches for t in xy]
    if getattr(batches, "per_network", False):  # the shared data and each network's selection of it
        items = list(batches.identity_tensors())
    return {"batches": len(batches), "per_network": bool(getattr(batches, "per_network", False)), "data": _digest(items)}


def run_settings(model: Population, train_batches, valid_batches, spectrum_inputs, spectrum_warmup: int,
                 spectrum_conventions, task: str, encode=None) -> dict:
    """Everything besides the caller's ``config`` that changes a run's numbers: the trainer's
    version, the task, the architecture, sizes and initialization (seed, p, dropout, the cell's
    settings), the training and validation data and the spectrum's inputs (digests of their
    bytes), warm-up and conventions. Part of the run's identity, so a changed setting never
    reuses another run's records."""
    kwargs = {k: (v.tolist() if hasattr(v, "tolist") else list(v) if isinstance(v, tuple) else v)
              for k, v in model.cell_kwargs.items()}
    first_x = train_batches[0][0]
    encoded = (encode or (lambda x: x))(first_x[:1])  # what encode makes of the data (one-hot size, dtype, ...)
    return {"trainer": TRAINER_VERSION, "task": task, "dtype": str(model.weight_out.dtype).replace("torch.", ""),
            "encoded_inputs": _digest([encoded]),
            "model": {"cell": model.cell_class.__name__, "networks": model.n_networks, "init": _init_name(model),
                      "sizes": [model.input_size, model.hidden_size, model.output_size], "cell_kwargs": kwargs,
                      "init_p": model.init_p.tolist(), "dropout": model.dropout.tolist(), "seed": model.seed},
            "train": _data_settings(train_batches), "valid": _data_settings(valid_batches),
            "spectrum": None if spectrum_inputs is None else {"inputs": _digest([spectrum_inputs]), "warmup": spectrum_warmup,
                                                              "conventions": list(spectrum_conventions)}}


def _init_name(model) -> str:
    """"uniform" (U(-p, p)) or the custom init function's module and name (its code is not hashed:
    rename a changed init function, or put its settings in the config)."""
    init = getattr(model, "init", None)
    return "uniform" if init is None else f"{getattr(init, '__module__', '?')}.{getattr(init, '__qualname__', repr(init))}"


def run_hash(config: dict, settings: dict, lr_decay: float, decay_after: int) -> str:
    """The run folder's name: the caller's configuration, the learning-rate schedule and `run_settings`."""
    return config_hash({**config, "lr_decay": lr_decay, "decay_after": decay_after, "run": settings})


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-serializable configuration."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------ one epoch
TASKS = ("classification", "regression")


def _loss(out, y, task):
    """Per-network mean loss (P,) and, for classification, accuracy (P,).

    out (P, B, T, C). Classification: y (P, B, T) class indices at every step (CharRNN), or
    (P, B) one per sequence, read out at the last step (sequential MNIST). Regression: y
    (P, B, T, O), or (P, B, O) read out at the last step (mocap); mean squared error."""
    if y.ndim == out.ndim - (2 if task == "classification" else 1):  # one target per sequence
        out = out[:, :, -1]
    if task == "classification":
        logp = torch.log_softmax(out, -1)
        loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).flatten(1).mean(1)
        acc = (out.argmax(-1) == y).to(out.dtype).flatten(1).mean(1)
        return loss, acc
    return (out - y).square().flatten(1).mean(1), None


def _batch(model: Population, x, y, encode, per_network: bool):
    """Inputs for the population, (B, T, I) shared or (P, B, T, I) per network, and targets (P, B, ...)."""
    dev = model.weight_out.device
    x, y = encode(x.to(dev)), y.to(dev)
    return x, (y if per_network else y.unsqueeze(0).expand(model.n_networks, *y.shape))


class _Graphed:
    """A population's training step (forward, loss, backward, Adam) or evaluation (forward,
    loss) captured as a CUDA graph per batch shape and replayed: a step launches hundreds of
    small kernels (T steps of every cell operation, their backward, Adam on every parameter),
    and launching them one by one from Python, not the arithmetic, is what takes the time.
    The step's random numbers (dropout masks, NoisyRNN's noise) are hashes of the networks'
    ids and a counter on the device (`Population.random_draws`), computed inside the graph, so
    a replayed step is the eager step (`tests/test_population.py` checks this on CUDA)."""

    def __init__(self, model: Population, opt: PopulationAdam | None, task: str):
        self.model, self.opt, self.task, self.graphs = model, opt, task, {}

    def _body(self, g):
        out, _ = self.model(g["x"])
        loss, acc = _loss(out, g["y"], self.task)
        if self.opt is not None:
            loss.sum().backward()
            self.opt.step()
        return loss.detach(), acc

    def _capture(self, x, y):
        model, opt = self.model, self.opt
        saved = _snapshot(model, opt)  # before anything draws from the networks' generators
        g = {"x": x.clone(), "y": y.clone()}
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up before capture, as CUDA graphs require; undone below
            for _ in range(2):
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                self._body(g)
        torch.cuda.current_stream(x.device).wait_stream(side)
        _restore(model, opt, saved)
        g["graph"] = torch.cuda.CUDAGraph()
        if opt is not None:
            opt.zero_grad(set_to_none=True)  # the captured backward writes the gradients afresh on every replay
        with torch.cuda.graph(g["graph"]):
            g["loss"], g["acc"] = self._body(g)
        return g

    def __call__(self, x, y):
        key = (tuple(x.shape), x.dtype, tuple(y.shape), self.model.training)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, y)
        g = self.graphs[key]
        g["x"].copy_(x)
        g["y"].copy_(y)
        g["graph"].replay()
        return g["loss"], g["acc"]


def _snapshot(model, opt):
    """Copies of what a warm-up step changes: weights, optimizer state, the draw counter."""
    state = {} if opt is None else {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()
                                     if opt.state[p]}
    return [p.detach().clone() for p in model.parameters()], state, model.draw_count.clone()


@torch.no_grad()
def _restore(model, opt, saved):
    """Put back `_snapshot`'s copies in place (a captured graph keeps the tensors' addresses);
    optimizer state created by the warm-up is reset to Adam's initial zeros."""
    weights, state, count = saved
    for p, w in zip(model.parameters(), weights):
        p.copy_(w)
    if opt is not None:
        for p in model.parameters():
            for k, v in opt.state[p].items():
                if id(p) in state:
                    v.copy_(state[id(p)][k])
                elif k != "lr":
                    v.zero_()
    model.draw_count.copy_(count)


def _graphed(owner, model, opt, task) -> _Graphed:
    """The graphs of this model (and optimizer) and task, kept on ``owner`` across epochs."""
    g = getattr(owner, "_lyabook_graphs", None)
    if g is None or g.model is not model or g.opt is not opt or g.task != task:
        g = _Graphed(model, opt, task)
        object.__setattr__(owner, "_lyabook_graphs", g)
    return g


def _use_graphs(model: Population, cuda_graph: bool | None) -> bool:
    if cuda_graph not in (None, True, False):
        raise ValueError(f"cuda_graph must be None, True or False, got {cuda_graph!r}")
    return model.weight_out.is_cuda and cuda_graph is not False


def train_epoch(model: Population, opt: PopulationAdam, batches, task: str, encode=None,
                cuda_graph: bool | None = None) -> torch.Tensor:
    """One pass over ``batches`` (lists of (x, y), shared by every network or, for
    ``batches.per_network``, one batch per network): returns the mean training loss (P,) float64.
    ``cuda_graph``: replay each step as a CUDA graph (`_Graphed`; default: on CUDA)."""
    if len(batches) == 0:
        raise ValueError("batches is empty: an epoch needs at least one (x, y) batch")
    encode = encode or (lambda x: x)
    per = bool(getattr(batches, "per_network", False))
    model.train()
    graphed = _graphed(opt, model, opt, task) if _use_graphs(model, cuda_graph) else None
    total = torch.zeros(model.n_networks, dtype=torch.float64, device=model.weight_out.device)  # no sync per batch
    for x, y in batches:
        xin, yin = _batch(model, x, y, encode, per)
        if graphed is not None:
            loss, _ = graphed(xin, yin)
        else:
            opt.zero_grad(set_to_none=True)
            out, _ = model(xin)
            loss, _ = _loss(out, yin, task)
            loss.sum().backward()  # networks are independent: the sum's gradient is each network's own
            opt.step()
        total += loss.detach().double()
    return (total / max(len(batches), 1)).cpu()


def evaluate(model: Population, batches, task: str, encode=None, cuda_graph: bool | None = None):
    """Mean loss (P,) and accuracy (P,) (None for regression) over ``batches``, in eval mode."""
    if len(batches) == 0:
        raise ValueError("batches is empty: evaluation needs at least one (x, y) batch")
    encode = encode or (lambda x: x)
    per = bool(getattr(batches, "per_network", False))
    was = model.training
    model.eval()
    graphed = _graphed(model, model, None, task) if _use_graphs(model, cuda_graph) else None
    P, dev = model.n_networks, model.weight_out.device
    tot, acc = torch.zeros(P, dtype=torch.float64, device=dev), torch.zeros(P, dtype=torch.float64, device=dev)
    with torch.no_grad():
        for x, y in batches:
            xin, yin = _batch(model, x, y, encode, per)
            loss, a = graphed(xin, yin) if graphed is not None else _loss(model(xin)[0], yin, task)
            tot += loss.double()
            if a is not None:
                acc += a.double()
    model.train(was)
    n = max(len(batches), 1)
    return (tot / n).cpu(), ((acc / n).cpu() if task == "classification" else None)


def finite_networks(model: Population, loss: torch.Tensor) -> torch.Tensor:
    """(P,) bool: networks whose loss and every weight are finite (the others diverged)."""
    ok = torch.isfinite(loss.cpu())
    for prm in model.parameters():
        ok &= torch.isfinite(prm.detach()).flatten(1).all(1).cpu()
    return ok


def _key_suffix(convention: str) -> str:
    """Record keys per convention: "exponents" for the full state, "exponents_h_block" etc."""
    return "" if convention == "full" else f"_{convention}"


def _householder_ran(methods) -> bool:
    """Whether a spectrum's orthonormalizers (names of `lyapunov.ORTHONORMALIZERS`) include a
    Householder one (chosen from the start, as "auto" does on a GPU with Triton, or after
    CholeskyQR3 broke down): later epochs then go straight to Householder."""
    return any(m.startswith("householder") for m in methods)


def epoch_spectra(model: Population, inputs: torch.Tensor, warmup: int, conventions, methods: dict,
                  networks=None) -> dict:
    """Record entries for every convention: ``exponents<suffix>`` (P, k) float32 (NaN rows for
    networks left out), ``spectrum_method<suffix>`` and ``spectrum_time_s<suffix>``.

    ``methods`` maps each convention to the orthonormalization to try; once CholeskyQR3 breaks
    down for a convention (trained LSTMs' saturated gates make their Jacobians numerically
    singular) it is set to Householder, so later epochs skip the failed attempt."""
    rec = {}
    for conv in conventions:
        t0 = time.perf_counter()
        spec = population_exponents(model, inputs, warmup=warmup, convention=conv, networks=networks,
                                    method=methods[conv])
        if _householder_ran(spec.methods):
            methods[conv] = "householder"
        suffix = _key_suffix(conv)
        rec[f"spectrum_time_s{suffix}"] = time.perf_counter() - t0
        rec[f"spectrum_method{suffix}"] = sorted(set(spec.methods))
        rec[f"exponents{suffix}"] = spec.exponents.to(torch.float32).numpy()  # ~1e-7 relative, far below the stderr
    return rec


# ------------------------------------------------------------------ records
def _rng_state(dev) -> dict:
    """The random streams training draws from: the global ones (the model's own draw counter is
    in its state dict), saved with every checkpoint so that a resumed run draws what an
    uninterrupted one would."""
    out = {"rng_cpu": torch.get_rng_state()}
    if dev.type == "cuda":
        out["rng_cuda"] = torch.cuda.get_rng_state(dev)
    return out


def _set_rng_state(state: dict) -> None:
    # torch takes RNG states as CPU byte tensors; a checkpoint loaded onto the GPU holds them there
    torch.set_rng_state(state["rng_cpu"].cpu())
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng_cuda"].cpu())


class RunRecords:
    """A run's folder: ``epoch_<e>.json`` (+ ``.npz``) per finished epoch and ``state.pt``.

    Each epoch is committed atomically: the record with `lyabook.results.save_results`
    (temporary files, then renames; the JSON, written last, marks the epoch done), then the
    checkpoint (temporary file, then rename). A kill between the two leaves a record one epoch
    ahead of the checkpoint, which the next `train_population` call recomputes."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)

    def epochs(self, epochs: int) -> list:
        """The finished epochs' records 0, 1, ... (at most ``epochs + 1``)."""
        from .results import load_results

        records = []
        for e in range(epochs + 1):
            f = self.dir / f"epoch_{e:03d}.json"
            if not f.is_file():  # the JSON is written last: without it the epoch did not finish
                break
            records.append(load_results(f)["results"])  # the spectra come back from the NPZ beside it
        return records

    def check_resumable(self, n_records: int, epochs: int) -> None:
        """Before any long work: if the records stop short of ``epochs``, ``state.pt`` must exist;
        if it is missing (a fresh clone: checkpoints are not committed), this raises a one-line
        error saying what to do."""
        if 0 < n_records <= epochs and not (self.dir / "state.pt").is_file():
            last = n_records - 1
            raise RuntimeError(f"{self.dir}: the records end at epoch {last} but state.pt (the checkpoint to continue "
                               f"from, not committed with the records) is missing, so epochs {last + 1}-{epochs} cannot "
                               f"be trained from it; ask for at most {last} epochs to use the records as they are, or "
                               "delete the folder to train from scratch")

    def _read(self, name: str, device, what: str, remedy: str):
        """``name`` in the run folder loaded as data only (``weights_only=True``: a crafted file
        cannot run code); a file that does not load is one line naming it, ``what`` it should be
        and the ``remedy``."""
        import pickle

        path = self.dir / name
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise RuntimeError(f"{path}: not a lyabook {what} that loads as data ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}); {remedy}") from None

    def _write(self, name: str, obj) -> None:
        """``obj`` saved as ``name`` in the run folder atomically (a temporary file, then a rename)."""
        tmp = self.dir / f"{name}.tmp"
        torch.save(obj, tmp)
        tmp.replace(self.dir / name)

    def load_checkpoint(self, device, last_record: int) -> dict:
        """state.pt, loaded as data only, checked against the records; every problem is one line
        naming the file and what to do."""
        path = self.dir / "state.pt"
        state = self._read("state.pt", device, "checkpoint", "delete it and the records after it")
        keys = {"epoch", "model", "optimizer", "lr", "rng_cpu"}
        if not isinstance(state, dict) or not keys <= set(state):
            raise RuntimeError(f"{path}: not a lyabook checkpoint of this trainer (keys {sorted(keys)} expected); "
                               "delete the folder to restart")
        if state["epoch"] > last_record or state["epoch"] < last_record - 1:
            raise RuntimeError(f"{path}: checkpoint of epoch {state['epoch']} does not follow the records, which end at "
                               f"epoch {last_record}; delete the folder to restart")
        return state

    def save_weights(self, e: int, model: torch.nn.Module) -> None:
        """``weights.pt``: the model's weights after epoch e alone (a few MB for one network, small
        enough to commit, unlike ``state.pt`` with the optimizer state), written atomically."""
        self._write("weights.pt", {"epoch": e, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}})

    def load_weights(self, device, last_record: int) -> dict:
        """The state dict in ``weights.pt``, loaded as data only; a one-line error naming the file
        unless it holds the weights of the records' last epoch."""
        path = self.dir / "weights.pt"
        saved = self._read("weights.pt", device, "weights file", "delete it and rerun the training")
        if not isinstance(saved, dict) or set(saved) != {"epoch", "model"}:
            raise RuntimeError(f"{path}: not a lyabook weights file (keys 'epoch' and 'model' expected)")
        if saved["epoch"] != last_record:
            raise RuntimeError(f"{path}: weights of epoch {saved['epoch']}, but the records end at epoch {last_record}; "
                               "delete it and rerun the training")
        return saved["model"]

    def commit(self, e: int, rec: dict, prov: dict, checkpoint: dict | None) -> None:
        """Write epoch e's record, then the checkpoint (None: none, e.g. a merged shard record)."""
        from .results import save_results

        arrays = {k: v for k, v in rec.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in rec.items() if k not in arrays}
        self.dir.mkdir(parents=True, exist_ok=True)
        save_results(self.dir / f"epoch_{e:03d}.json", scalars, prov, arrays=arrays or None)
        if checkpoint is not None:
            self._write("state.pt", checkpoint)


def _shard_dir(run_dir: Path, shard) -> Path:
    """``run_dir/shard-<i>-of-<n>``, and ``.../shard-<j>-of-<m>`` below it for a part of a shard."""
    for i, n in shard_path(shard) if shard else ():
        run_dir = run_dir / f"shard-{i}-of-{n}"
    return run_dir


def _shard_record(shard, model: Population) -> dict:
    """A shard record's place: index and of (its own level), its networks, the levels above."""
    path = shard_path(shard)
    first = model.first_network
    return {"index": path[-1][0], "of": path[-1][1], "networks": [first, first + model.n_networks],
            **({"within": [list(p) for p in path[:-1]]} if len(path) > 1 else {})}


def _merge_up(run_dir: Path, shard, epochs: int) -> None:
    """After a shard's epoch: merge the parts of each level, the deepest first (a part of shard i
    of n completes shard i's records, which then merge with the other shards' into the run's)."""
    path = shard_path(shard)
    for k in range(len(path) - 1, -1, -1):
        merge_shards(_shard_dir(run_dir, path[:k]), path[k][1], epochs)


def _check_levels_may_extend(run_dir: Path, shard, epochs: int) -> None:
    """`_check_shards_may_extend` at every level of a (nested) shard."""
    path = shard_path(shard)
    for k in range(len(path)):
        _check_shards_may_extend(_shard_dir(run_dir, path[:k]), path[k][1], epochs)


def _made_by(prov: dict) -> dict:
    """What a merged record says of one shard's record: its place, device, code and date; for a
    shard itself merged from parts (trained over sessions), its place and its parts' entries."""
    if "shards" in prov:
        return {**(prov.get("shard") or {}), "parts": prov["shards"]}
    made = ("device", "device_name", "git_commit", "git_dirty", "source_sha256", "torch", "date")
    return {**(prov.get("shard") or {}), **{k: prov.get(k) for k in made}}


def merge_shards(run_dir, n_shards: int, epochs: int) -> list:
    """Merge the records of shards 0..n-1 (``run_dir/shard-<i>-of-<n>``) into ``run_dir``'s own
    epoch records, for every epoch that all shards finished: per-network lists and arrays are
    concatenated in network order, times are the slowest shard's (they ran in parallel) and
    ``summed_<time>`` their sum over every shard and part (the population's device-seconds,
    whatever the layout: what a cost ratio such as Table 1's should use), the diverged networks
    are renumbered. Returns the merged records (those already merged included).
    ``run_dir`` may itself be a shard's folder, whose parts (a nested shard) merge into it."""
    from .results import load_results

    from .lyapunov import _as_int

    n_shards, epochs = _as_int("n_shards", n_shards, 1), _as_int("epochs", epochs, 0)
    run_dir = Path(run_dir)
    out = RunRecords(run_dir)
    merged = out.epochs(epochs)
    shards = [RunRecords(_shard_dir(run_dir, (i, n_shards))) for i in range(n_shards)]
    for e in range(len(merged), epochs + 1):
        files = [s.dir / f"epoch_{e:03d}.json" for s in shards]
        if not all(f.is_file() for f in files):
            break
        docs = [load_results(f) for f in files]
        # shards of one run record the same keys (less the sums that a shard merged from parts has and
        # a shard trained whole has not); anything else is damage
        for f, d in zip(files, docs):
            if _own_keys(d) != _own_keys(docs[0]) or "valid_loss" not in d["results"]:
                raise RuntimeError(f"{f}: its keys {sorted(_own_keys(d))} are not those of the other shards' records "
                                   f"{sorted(_own_keys(docs[0]))}; delete this shard's folder and rerun the shard")
        offsets = np.cumsum([0] + [len(d["results"]["valid_loss"]) for d in docs])
        rec = {}
        for key, first in docs[0]["results"].items():
            if key.startswith("summed_"):  # written beside its time below
                continue
            vals = [d["results"][key] for d in docs]
            if isinstance(first, np.ndarray):
                rec[key] = np.concatenate(vals)
            elif key == "diverged":
                rec[key] = [int(i + o) for v, o in zip(vals, offsets) for i in v]
            elif key.startswith("spectrum_method"):
                rec[key] = sorted(set().union(*vals))
            elif key.endswith("_time_s") or key.startswith("spectrum_time_s"):
                rec[key] = max(vals)
                rec["summed_" + key] = sum(device_seconds(d["results"], key) for d in docs)
            elif isinstance(first, list):
                rec[key] = [v for part in vals for v in part]
            else:  # the epoch number
                rec[key] = first
        # each shard's own device, code and date: the parts of one population may run in
        # different sessions, on different cards, from different commits
        prov = {**docs[0]["provenance"], "shards": [_made_by(d["provenance"]) for d in docs]}
        first, last = (d["provenance"].get("shard") or {} for d in (docs[0], docs[-1]))
        prov.pop("shard", None)
        if first.get("within"):  # run_dir is shard (i, n) of a level above: its merged record says so
            (i, n), above = first["within"][-1], first["within"][:-1]
            prov["shard"] = {"index": i, "of": n, "networks": [first["networks"][0], last["networks"][1]],
                             **({"within": above} if above else {})}
        out.commit(e, rec, prov, None)
        merged.append(rec)
    return merged


def device_seconds(record: dict, key: str) -> float:
    """The seconds a population's epoch record says its ``key`` (e.g. ``"train_time_s"``) took on
    its devices: summed over every shard and part where the population ran sharded (the
    ``summed_<key>`` that `merge_shards` writes), else the record's own ``key``. Cost ratios and
    totals use these; a merged record's own ``key`` is the slowest shard's, the wall time of
    shards that ran side by side."""
    return float(record.get("summed_" + key, record[key]))


def _own_keys(doc: dict) -> set:
    """A record's result keys less the sums that merging adds (``summed_<time>``)."""
    return {k for k in doc["results"] if not k.startswith("summed_")}


# ------------------------------------------------------------------ the loop
def _check_shards_may_extend(run_dir: Path, n_shards: int, epochs: int) -> None:
    """Before a shard trains: the population's merged records, if they stop short of ``epochs``,
    must have been merged from ``n_shards`` shards, or the merge would append this training's
    epochs to another run's (a run's records reproduce its training, but not the exact rounding
    of spectra made by other code, and their provenance would lie). A one-line error says what to do."""
    from .results import load_results

    n = len(RunRecords(run_dir).epochs(epochs))
    if n == 0 or n > epochs:
        return
    made = load_results(run_dir / "epoch_000.json", arrays=False)["provenance"].get("shards")
    if not isinstance(made, list) or len(made) != n_shards:
        how = "unsharded" if not isinstance(made, list) else f"from {len(made)} shards"
        raise RuntimeError(f"{run_dir}: its records of epochs 0-{n - 1} were made {how}, and {n_shards} shards would "
                           f"append epochs {n}-{epochs} to them; continue that run as it was made, or delete "
                           f"{run_dir}/epoch_* to train every epoch in {n_shards} shards")


def _run_folder(model, train_batches, valid_batches, config, out_dir, task, lr_decay, decay_after, spectrum_inputs,
                spectrum_warmup, spectrum_conventions, shard, encode=None):
    """(run_settings, hash, the population's folder, the RunRecords this call writes)."""
    from .lyapunov import _as_int

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not isinstance(model, Population):
        raise TypeError(f"model must be a lyabook.population.Population, got {type(model).__name__}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (JSON-serializable), got {type(config).__name__}")
    if isinstance(lr_decay, bool) or not isinstance(lr_decay, (int, float)) or not (0 < lr_decay < float("inf")):
        raise ValueError(f"lr_decay must be a finite number > 0, got {lr_decay!r}")
    _as_int("decay_after", decay_after, 0)
    for name, batches in (("train_batches", train_batches), ("valid_batches", valid_batches)):
        _check_batches(name, batches, model, task)
    settings = run_settings(model, train_batches, valid_batches, spectrum_inputs, spectrum_warmup, spectrum_conventions,
                            task, encode)
    h = run_hash(config, settings, lr_decay, decay_after)
    run_dir = Path(out_dir) / h
    if not run_dir.exists():  # records of these settings made on another CPU may carry another name
        run_dir = _same_run_elsewhere(Path(out_dir), config, settings, lr_decay, decay_after) or run_dir
        h = run_dir.name
    return settings, h, run_dir, RunRecords(run_dir if shard is None else _shard_dir(run_dir, shard))


# the relative difference below which two settings' floats are the same number computed on two
# machines: a log-uniform draw (exp of a uniform) can differ in its last bit between CPUs with and
# without AVX-512 (numpy's SIMD exp: notebook 03's learning rates and dropouts), and the run's
# name, a hash of the exact digits, with it
SAME_FLOAT_RTOL = 1e-12


def _same_run_elsewhere(out_dir: Path, config: dict, settings: dict, lr_decay, decay_after) -> Path | None:
    """The one run folder under ``out_dir`` whose records were made with these settings up to
    `SAME_FLOAT_RTOL` in their floats (and exactly this learning-rate schedule), or None. Read
    only when the folder named by this machine's hash is missing: one record per sibling folder."""
    import json
    import warnings

    from .results import load_results

    def plain(x):  # what the record's JSON holds
        return json.loads(json.dumps(x, sort_keys=True, default=str))

    want = plain({"config": config, "run": settings})
    found = []
    for d in sorted(p for p in out_dir.iterdir() if p.is_dir()) if out_dir.is_dir() else ():
        first = next(d.rglob("epoch_000.json"), None)  # the run's, a shard's or a part's: one config
        if first is None:
            continue
        try:
            prov = load_results(first, arrays=False)["provenance"]
        except (OSError, ValueError, KeyError):
            continue  # damaged records are reported when their own run reads them
        cfg, rs = prov.get("config"), prov.get("run_settings")
        if not isinstance(cfg, dict) or not isinstance(rs, dict) or run_hash(cfg, rs, lr_decay, decay_after) != d.name:
            continue  # another schedule, or records without their settings
        if _close(plain({"config": cfg, "run": rs}), want):
            found.append(d)
    if len(found) != 1:
        return None
    if found[0].resolve() not in _SAID_SAME_RUN:  # once per folder: check_run, then train_population
        _SAID_SAME_RUN.add(found[0].resolve())
        warnings.warn(f"using the records in {found[0]}: made with these settings, their floats differing from "
                      f"this machine's in the last digits (below {SAME_FLOAT_RTOL:g} relative), e.g. a draw whose "
                      f"exp rounds differently on another CPU", stacklevel=4)  # at the caller of train_population
    return found[0]


_SAID_SAME_RUN: set = set()


def _close(a, b) -> bool:
    """JSON values equal, floats to `SAME_FLOAT_RTOL` relative (ints, strings and booleans exactly)."""
    import math

    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool)
                and not isinstance(b, bool) and math.isclose(a, b, rel_tol=SAME_FLOAT_RTOL, abs_tol=0.0))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _check_batches(name: str, batches, model: Population, task: str) -> None:
    """Before any work: batches exist, are (x, y) pairs of tensors with matching batch sizes, one
    batch per network where they say so, and classification targets are class indices of the
    read-out (an index out of range is a device-side assert on a GPU, not a message)."""
    per = bool(getattr(batches, "per_network", False))
    if len(batches) == 0:
        raise ValueError(f"{name} is empty: at least one (x, y) batch is needed")
    for k in range(len(batches)) if not per else (0,):
        item = batches[k]
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(torch.is_tensor(t) for t in item)):
            raise TypeError(f"{name}[{k}] must be a pair (x, y) of tensors, got {type(item).__name__}")
        x, y = item
        lead = 2 if per else 1
        if x.ndim < lead + 1 or x.shape[:lead] != y.shape[:lead]:
            raise ValueError(f"{name}[{k}]: x {tuple(x.shape)} and y {tuple(y.shape)} must share their leading "
                             f"{'(networks, batch)' if per else 'batch'} dimension(s)")
        if per and x.shape[0] != model.n_networks:
            raise ValueError(f"{name}: one batch per network needs {model.n_networks} networks in dim 0, got {x.shape[0]}")
        if task == "classification":
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise TypeError(f"{name}[{k}]: classification targets must be integer class indices, got {y.dtype}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= model.output_size):
                raise ValueError(f"{name}[{k}]: class indices must lie in [0, {model.output_size}) (the read-out's "
                                 f"output_size), got {int(y.min())}..{int(y.max())}")


def check_run(model: Population, train_batches, valid_batches, *, epochs: int, config: dict, out_dir,
              task: str = "classification", lr_decay: float = 0.95, decay_after: int = 10,
              spectrum_inputs: torch.Tensor | None = None, spectrum_warmup: int = 0, spectrum_conventions=("full",),
              shard: tuple[int, int] | None = None, encode=None, **_ignored) -> int:
    """Check, before any long work, that `train_population` with these arguments can run: returns
    how many epochs its records already hold, or raises the one-line error of a run whose
    records stop short of ``epochs`` without the checkpoint to continue from (a fresh clone).
    Takes `train_population`'s arguments (those that do not change the folder are ignored), so
    that a caller training several populations checks them all first."""
    *_, run_dir, records = _run_folder(model, train_batches, valid_batches, config, out_dir, task, lr_decay,
                                       decay_after, spectrum_inputs, spectrum_warmup, spectrum_conventions, shard, encode)
    n = len(records.epochs(epochs))
    if shard is not None:
        _check_levels_may_extend(run_dir, shard, epochs)
    records.check_resumable(n, epochs)
    return n


def _full_config(config: dict, optimizer, spectrum_epochs, extras: dict) -> dict:
    """The caller's config plus the settings that change a run's numbers and are not in
    `run_settings` (named only when not the defaults, so runs without them keep their names)."""
    return {**config, **({"optimizer": optimizer.__name__} if optimizer is not PopulationAdam else {}),
            **({"spectrum_epochs": sorted(spectrum_epochs)} if spectrum_epochs is not None else {}),
            **({"extras": {k: f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"
                           for k, f in sorted(extras.items())}} if extras else {})}


def restore(model: Population, train_batches, valid_batches, *, epochs: int, config: dict, out_dir,
            task: str = "classification", lr_decay: float = 0.95, decay_after: int = 10,
            spectrum_inputs: torch.Tensor | None = None, spectrum_warmup: int = 0, spectrum_conventions=("full",),
            encode=None, **kwargs) -> Population:
    """Load into ``model`` the weights a finished `train_population` run with these arguments
    ended with (its ``state.pt``, else ``weights.pt``), e.g. to analyse the trained networks after a rerun that only
    read the records. Takes `train_population`'s arguments; a missing checkpoint is a one-line
    error."""
    from .lyapunov import _as_int

    config = _full_config(config, kwargs.get("optimizer", PopulationAdam), kwargs.get("spectrum_epochs"),
                          kwargs.get("extras") or {})
    *_, records = _run_folder(model, train_batches, valid_batches, config, out_dir, task, lr_decay, decay_after,
                              spectrum_inputs, spectrum_warmup, spectrum_conventions, None, encode)
    n = len(records.epochs(_as_int("epochs", epochs, 0)))
    dev = model.weight_out.device
    if (records.dir / "state.pt").is_file():
        model.load_state_dict(records.load_checkpoint(dev, n - 1)["model"])
    elif (records.dir / "weights.pt").is_file():
        model.load_state_dict(records.load_weights(dev, n - 1))
    else:
        raise RuntimeError(f"{records.dir}: neither state.pt nor weights.pt to restore the trained weights from "
                           "(checkpoints are not committed); train the run on this machine first")
    return model


def train_population(model: Population, train_batches, valid_batches, *, epochs: int, lr, config: dict,
                     out_dir, task: str = "classification", lr_decay: float = 0.95, decay_after: int = 10,
                     spectrum_inputs: torch.Tensor | None = None, spectrum_warmup: int = 0,
                     spectrum_conventions=("full",), encode=None, progress: bool = True,
                     spectrum_method: str = "auto", time_limit_s: float | None = None,
                     shard: tuple[int, int] | None = None, optimizer: type = PopulationAdam,
                     spectrum_epochs=None, extras: dict | None = None, save_weights: bool = False) -> list[dict]:
    """Train a population, recording per network and epoch: training and validation loss,
    accuracy (classification), and the Lyapunov spectrum on held-out sequences.

    ``train_batches`` / ``valid_batches``: lists of (x, y) with x (B, T, ...) shared by every
    network, or objects with ``per_network = True`` whose items have a leading network
    dimension (`lyabook.data.NetworkBatches`: each network its own subset). ``encode`` maps x
    to float inputs (e.g. one-hot characters). Epoch 0 records the untrained networks.
    Every epoch is committed by `RunRecords` to ``out_dir/<hash>/``; a rerun with the same
    settings resumes after the last finished epoch, bit for bit as if never interrupted
    (every random stream is in the checkpoint), and a finished run is loaded from its records.
    The folder's name hashes ``config``, ``lr_decay``, ``decay_after`` and `run_settings` (data,
    architecture, sizes, seed, spectrum inputs, trainer version): a changed setting never reuses
    records. Leave the number of epochs out of ``config``: a run asked for more epochs later
    continues the records of a shorter one.
    A network whose loss or weights stop being finite is listed in the record's ``diverged``
    and gets NaN spectra; the others go on. ``spectrum_conventions``: "full" (``exponents``)
    and/or "h_block" (``exponents_h_block``, the dissertation's convention). The learning rate
    is multiplied by ``lr_decay`` after every epoch past ``decay_after``.
    ``time_limit_s``: stop after the first epoch that ends past this many seconds (a GPU
    session's budget); a rerun resumes.
    ``optimizer``: `PopulationAdam` (default), `lyabook.population.PopulationAdagrad`,
    ``PopulationRMSprop`` or ``PopulationSGD``, one learning rate per network. ``spectrum_epochs``: the epochs whose spectra are computed
    (default: every epoch), e.g. only the last of a long run.
    ``extras``: {name: function(model) -> array (P, ...)} computed when the spectra are (e.g. the
    ASRNN Jacobian's eigenvalues) and stored in the record as arrays under ``name``; a function's
    module and name are part of the run's identity.
    ``save_weights``: after the last epoch also write ``weights.pt`` (the weights alone, small
    enough to commit beside the records, so that `restore` works on a fresh clone).
    ``shard=(i, n)``: train only networks `lyabook.population.shard_range` (P, (i, n)) into
    ``out_dir/<hash>/shard-<i>-of-<n>`` (the hash is the whole population's); when every shard
    has finished an epoch, `merge_shards` writes the population's records, equal to an
    unsharded run's. ``shard=((i, n), (j, m))``: part j of m of shard i, into
    ``.../shard-<i>-of-<n>/shard-<j>-of-<m>``, for a shard too long for one GPU session (the
    parts merge into shard i's records, and those with the other shards'). Returns this call's
    records (the shard's, for a shard).
    """
    from .lyapunov import _as_int
    from .results import provenance
    from .progress import bar as progress_bar  # on the terminal, never in a notebook's outputs

    epochs = _as_int("epochs", epochs, 0)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (JSON-serializable), got {type(config).__name__}")
    if not (isinstance(optimizer, type) and issubclass(optimizer, _PerNetworkOptimizer)):
        raise TypeError("optimizer must be one of lyabook.population's per-network optimizers (a class, e.g. "
                        f"PopulationAdam), got {optimizer!r}")
    if spectrum_epochs is not None:
        spectrum_epochs = sorted({_as_int("spectrum_epochs", e, 0) for e in spectrum_epochs})
    extras = dict(extras or {})
    for name, fn in extras.items():
        if not callable(fn) or not isinstance(name, str) or name.startswith(("exponents", "spectrum_")):
            raise TypeError(f"extras must map names (not exponents*/spectrum_*) to functions of the model, got {name!r}: {fn!r}")
    config = _full_config(config, optimizer, spectrum_epochs, extras)
    settings, h, run_dir, records = _run_folder(model, train_batches, valid_batches, config, out_dir, task, lr_decay,
                                                decay_after, spectrum_inputs, spectrum_warmup, spectrum_conventions,
                                                shard, encode)
    lrs = per_network(lr, model.n_networks, "lr", minimum=0.0)
    if shard is not None:
        ids = shard_range(model.n_networks, shard)
        model, lrs = model.subset(ids), lrs[ids.start : ids.stop]
        train_batches, valid_batches = (b.select(ids) if getattr(b, "per_network", False) else b
                                        for b in (train_batches, valid_batches))
    done = records.epochs(epochs)
    if len(done) > epochs:
        if shard is not None:
            _merge_up(run_dir, shard, epochs)
        return done
    if shard is not None:
        _check_levels_may_extend(run_dir, shard, epochs)
    records.check_resumable(len(done), epochs)  # before any long work
    dev = model.weight_out.device
    opt = optimizer(model.parameters(), lr=lrs)
    if done:
        state = records.load_checkpoint(dev, len(done) - 1)
        done = done[: state["epoch"] + 1]  # killed between an epoch's record and its checkpoint: redo that epoch
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        opt.set_lr(state["lr"])
        _set_rng_state(state)
    methods = {conv: spectrum_method for conv in spectrum_conventions}
    for conv in spectrum_conventions:  # a resumed run remembers where CholeskyQR3 broke down
        if done and _householder_ran(done[-1].get(f"spectrum_method{_key_suffix(conv)}", [])):
            methods[conv] = "householder"
    prov_run = {"config": config, "config_hash": h, "run_settings": settings,
                "shard": None if shard is None else _shard_record(shard, model)}
    t_call = time.perf_counter()
    bar = progress_bar(range(len(done), epochs + 1), desc=f"population {h} ({model.n_networks} networks)", progress=progress)
    for e in bar:
        t0 = time.perf_counter()
        train_loss = None
        if e > 0:
            train_loss = train_epoch(model, opt, train_batches, task, encode).tolist()
            if e > decay_after:
                opt.set_lr(opt.param_groups[0]["lr"] * lr_decay)
        t_train = time.perf_counter() - t0  # train_epoch ends with a copy to the CPU: the device is done
        valid_loss, valid_acc = evaluate(model, valid_batches, task, encode)
        finite = finite_networks(model, valid_loss)  # nothing couples the networks: the others go on
        rec = {"epoch": e, "train_loss": train_loss, "valid_loss": valid_loss.tolist(),
               "valid_accuracy": None if valid_acc is None else valid_acc.tolist(), "train_time_s": t_train,
               "diverged": [i for i in range(model.n_networks) if not finite[i]]}
        if spectrum_epochs is None or e in spectrum_epochs:
            if spectrum_inputs is not None:
                spec_in = (encode or (lambda x: x))(spectrum_inputs.to(dev))
                rec.update(epoch_spectra(model, spec_in, spectrum_warmup, spectrum_conventions, methods, finite.tolist()))
            for name, fn in extras.items():
                value = np.asarray(fn(model))
                if value.ndim < 1 or value.shape[0] != model.n_networks:
                    raise ValueError(f"extras[{name!r}] must return one row per network ({model.n_networks}), "
                                     f"got shape {value.shape}")
                rec[name] = value
        prov = {**prov_run, **provenance(None, dev), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
        records.commit(e, rec, prov, {"epoch": e, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "lr": opt.param_groups[0]["lr"], **_rng_state(dev)})
        if save_weights and e == epochs:
            records.save_weights(e, model)
        done.append(rec)
        bar.set_postfix(valid_loss=f"{float(valid_loss.nanmean()):.3f}")
        if time_limit_s is not None and e < epochs and time.perf_counter() - t_call > time_limit_s:
            print(f"population {h}: time limit of {time_limit_s:.0f} s reached after epoch {e} of {epochs}; "
                  "the records so far are saved and a rerun resumes")
            break
    if shard is not None:
        _merge_up(run_dir, shard, epochs)
    return done
