"""Named population sweeps, their shards and a launcher over GPUs.

A sweep is a list of jobs, each one population trained by `lyabook.train.train_population`.
``lyabook sweep NAME --shard i/n`` runs shard i of n: with at least as many jobs as shards a
shard takes whole jobs (job j goes to shard j mod n, no merge needed); with fewer, every job's
networks are split into n // jobs parts (`lyabook.population.shard_range`) whose records
merge into the unsharded run's; ``--shard i/n:j/m`` trains part j of m of shard i, whose
records merge into shard i's (a shard too long for one GPU session). ``lyabook launch NAME``
starts one such process per visible GPU; `book/how_to_run.md` shows the same as a SLURM job array.

Sweeps:

* ``smnist``: the dissertation's Chapter 3 task C: 200 networks of each of the eight
  architectures, hidden 64, row-wise MNIST (28 steps of 28 pixels), batch 128, Adam 0.01,
  dropout 0.1 on the outputs, 10 epochs, U(-p, p) with p drawn uniformly from each
  architecture's range (Table A1; ASRNN 0.1-50 as in the text and the authors' code, Table A1
  says 30), spectra of every epoch 0-10 on 15 test images (the authors' ``le_batch_size``;
  text: 128), warm-up over the 28 rows and measured over the same 28 rows again (the authors'
  ``warmup = 500`` on 28 steps). Validation loss: mean cross-entropy on the MNIST test set
  (the authors' code reports it divided by 100; spec section 8).
* ``smnist-permuted``: the same on permuted pixel-wise MNIST (784 steps of one pixel).
* ``charrnn``: task B: 300 LSTMs (no biases) of each of 64, 128, 256 and 512 units on War and
  Peace, p ~ U(0.04, 0.40) rounded to 3 decimals, Adam 0.002, batch 32 sequences of 99
  characters (the authors' 100-character chunks: 99 inputs, the next character as target at
  every position), dropout 0.1, 15 epochs; every network trains and is validated on its own
  random 20 % of the batches (`lyabook.data.NetworkBatches`). 20 %, not the text's 30 %: the
  published numbers came from the code, which keeps 20 % (``keep_amt = 0.2``, spec section 7).
  Spectra after epochs 6 (40 % of training: Fig. 3.1's PredNet input) and 15 (the AeLLE input)
  on 15 validation sequences of 100 characters, warm-up over the sequence and measured over it
  again (the authors' setting), full state and h-block. (Every epoch's spectra of 1200 LSTMs
  up to 512 units would cost hours of GPU time and no figure uses them.)
* ``asrnn``: Figs. 3.2-3.4: 315 antisymmetric RNNs of 128 units, the grid sigma in {1, 2, 4, 8,
  16} (the text's six values give 378 networks, not its 315; 315 = 5 x 3 x 3 x 7 and "35 networks
  each" = 5 sigma x 7 lr, so one sigma was not used; we drop 0, a network without recurrence),
  eps in {0.01, 0.1, 1}, gamma in {0.001, 0.01, 0.1}, Adagrad with lr in {0.1, ..., 1} (7
  values), batch 128, 142 epochs of 352 batches (50,000 iterations) on row-wise MNIST split
  75/25; input weights N(0, 1) and recurrent W N(0, sigma^2 / n) as the text says (the authors'
  code: std 1/d and sigma/n). Validation loss of every epoch; at the last epoch the spectrum
  (20 sequences of 36 validation images' rows, 500 warm-up and 500 measured steps) and the
  eigenvalues of the Jacobian (Eq. 3.4) at a random input row and hidden state per network.
  Row-wise, not pixel-wise: the text does not say, and 50,000 pixel-wise iterations of 315
  networks would take about an hour of one GPU.
* ``evolution``: notebook 03's two populations (`lyabook.evolution`: Fig. 2.6's CharRNN LSTMs
  and the learning-rate/dropout sweep in one population of 512-unit LSTMs on every batch of War
  and Peace, and the CMU mocap LSTMs), spectra after every epoch, under notebook 03's own
  profiles; the records go where the notebook reads them (``--out
  notebooks/results/03_training_evolution_runs``), so ``lyabook launch evolution`` trains the
  chapter's populations sharded over GPUs and the notebook then renders from their records.
* ``force``: task A: 120 FORCE-trained rank-1 networks of 512 units for each g in 1.1, 1.2,
  ..., 2.0 (`lyabook.force`; the text's grid, without the authors' duplicated g = 1.1), 15
  epochs, validation MAE after each; spectra (per unit time, with the correct closed-loop
  Jacobian) after epochs 5 (the authors' AeLLE inputs) and 14 (the last), from 10 states of
  each network's test rollout, 100 warm-up and 200 measured steps. A job (one g) is saved
  whole when it finishes and skipped when its result exists.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import rnn

__all__ = ["SWEEPS", "Job", "jobs", "smnist_init_p", "charrnn_init_p", "plan", "run_shard", "launch", "parse_shard"]

SMNIST_ARCHITECTURES = {  # name: (cell, p range, cell arguments); bias=False for torch's cells (the authors')
    "LSTM": (rnn.LSTM, (0.1, 3.0), {"bias": False}),
    "GRU": (rnn.GRU, (0.1, 3.0), {"bias": False}),
    "RNN": (rnn.RNN, (0.1, 3.0), {"bias": False}),
    "ASRNN": (rnn.ASRNN, (0.1, 50.0), {"eps": 0.01, "gamma": 0.01}),
    "CoRNN": (rnn.CoRNN, (0.1, 30.0), {"dt": 0.042, "gamma": 2.7, "epsilon": 4.7}),
    "LipschitzRNN": (rnn.LipschitzRNN, (0.1, 20.0), {}),
    "NoisyRNN": (rnn.NoisyRNN, (0.1, 5.0), {}),
    "LEM": (rnn.LEM, (0.1, 10.0), {}),
}
PROFILES = {  # full: the dissertation's scale; smoke: a few tiny networks on a slice of the data (CI)
    "full": {"networks": 200, "hidden": 64, "epochs": 10, "train_images": None, "test_images": None,
             "batch": 128, "valid_batch": 100, "spectrum_images": 15,
             "char_networks": 300, "char_sizes": [64, 128, 256, 512], "char_epochs": 15, "char_chars": None,
             "char_batch": 32, "char_spectrum_sequences": 15, "char_spectrum_epochs": [6, 15]},
    # reduced: a CPU rendering of the SMNIST chapter (25 networks per architecture, 5 epochs on 5,000 images)
    "reduced": {"networks": 25, "hidden": 64, "epochs": 5, "train_images": 5000, "test_images": 2000,
                "batch": 128, "valid_batch": 500, "spectrum_images": 15,
                "char_networks": 10, "char_sizes": [64, 128], "char_epochs": 3, "char_chars": 200000,
                "char_batch": 32, "char_spectrum_sequences": 15, "char_spectrum_epochs": [1, 3]},
    "smoke": {"networks": 3, "hidden": 6, "epochs": 1, "train_images": 256, "test_images": 64,
              "batch": 64, "valid_batch": 64, "spectrum_images": 2,
              "char_networks": 8, "char_sizes": [4, 8], "char_epochs": 1, "char_chars": 20000,
              "char_batch": 8, "char_spectrum_sequences": 2, "char_spectrum_epochs": [1]},
}
CHAR_P_RANGE, CHAR_KEEP, CHAR_SEQ = (0.04, 0.40), 0.2, 99


@dataclass
class Job:
    """One population of a sweep: ``build()`` returns (population, train batches, valid batches,
    train_population's keyword arguments); or, for a job trained otherwise (FORCE), ``run(out_dir,
    progress, epochs)`` trains and saves it whole (such a job is never split between shards)."""

    name: str
    n_networks: int
    build: callable = field(repr=False, default=None)
    run: callable = field(repr=False, default=None)
    folder: str | None = None  # its records' folder under the sweep's out_dir (default: its name)

    def out(self, out_dir) -> Path:
        return Path(out_dir) / (self.name if self.folder is None else self.folder)


def parse_shard(text: str):
    """"i/n" -> (i, n) with 0 <= i < n; "i/n:j/m" -> ((i, n), (j, m)), part j of m of shard i of n
    (`lyabook.population.shard_path`)."""
    levels = text.strip().split(":") if isinstance(text, str) else [None]
    path = []
    for level in levels:
        m = re.fullmatch(r"(\d+)/(\d+)", level, re.ASCII) if isinstance(level, str) else None
        if m is None:  # plain decimal digits only: int() would also take "+1", "1_0" and non-ASCII digits
            raise ValueError(f"shard must be i/n (e.g. 0/4) or i/n:j/m (part j of m of shard i), got {text!r}")
        i, n = int(m[1]), int(m[2])
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard must be i/n with 0 <= i < n at every level, got {text!r}")
        path.append((i, n))
    return path[0] if len(path) == 1 else tuple(path)


def _mnist(data_dir, profile: dict, allow_fallback: bool = False):
    """MNIST's (train, test) images and labels, cut to the profile's sizes; with
    ``allow_fallback``, scikit-learn's 8x8 digits when MNIST is missing (smoke runs; the data
    are part of a run's identity, so such a run never mixes with MNIST's)."""
    from . import data

    try:
        mnist = data.load_mnist(data_dir)
    except data.DataError:
        if not allow_fallback:
            raise
        mnist = data.fallback_digits()
    (xtr, ytr), (xte, yte) = mnist["train"], mnist["test"]
    if profile["train_images"]:
        xtr, ytr = xtr[: profile["train_images"]], ytr[: profile["train_images"]]
        xte, yte = xte[: profile["test_images"]], yte[: profile["test_images"]]
    return (xtr, ytr), (xte, yte)


def smnist_init_p(arch: str, n_networks: int) -> torch.Tensor:
    """(n_networks,) float64: the init half-widths p of the ``smnist`` sweeps' networks of ``arch``,
    uniform on its range (Table A1), rounded to 3 decimals, from a generator seeded by the
    architecture's place in `SMNIST_ARCHITECTURES` (network i's p is the same in any shard)."""
    from .lyapunov import _as_int

    if arch not in SMNIST_ARCHITECTURES:
        raise ValueError(f"arch must be one of {list(SMNIST_ARCHITECTURES)}, got {arch!r}")
    k = list(SMNIST_ARCHITECTURES).index(arch)
    lo, hi = SMNIST_ARCHITECTURES[arch][1]
    g = torch.Generator().manual_seed(1000 + k)
    return torch.empty(_as_int("n_networks", n_networks, 1), dtype=torch.float64).uniform_(lo, hi, generator=g).round(decimals=3)


def _smnist_jobs(profile_name: str, data_dir, device, order: str, seed: int = 0, allow_fallback: bool = False) -> list[Job]:
    from . import data
    from .population import Population

    prof = PROFILES[profile_name]
    loaded = {}

    def task():  # loaded once, by the first job a shard builds
        if not loaded:
            (xtr, ytr), (xte, yte) = _mnist(data_dir, prof, allow_fallback)
            xtr, xte = data.mnist_sequences(xtr, order), data.mnist_sequences(xte, order)
            loaded["train"] = data.batches(xtr, ytr, prof["batch"], shuffle_seed=seed)
            loaded["valid"] = data.batches(xte, yte, prof["valid_batch"])
            pick = torch.randperm(len(xte), generator=torch.Generator().manual_seed(seed))[: prof["spectrum_images"]]
            # warm-up over the sequence, then measured over the same sequence again (the authors' setting)
            loaded["spectrum"] = torch.cat([xte[pick], xte[pick]], 1)
            loaded["steps"] = xte.shape[1]
        return loaded

    out = []
    for k, (arch, (cls, (lo, hi), kw)) in enumerate(SMNIST_ARCHITECTURES.items()):
        def build(arch=arch, cls=cls, lo=lo, hi=hi, kw=kw, k=k):
            t = task()
            P = prof["networks"]
            pop = Population(cls, P, t["spectrum"].shape[-1], prof["hidden"], 10, init_p=smnist_init_p(arch, P),
                             dropout=0.1, seed=seed + k, **kw).to(device)
            kwargs = dict(epochs=prof["epochs"], lr=0.01, task="classification", lr_decay=1.0,
                          config={"sweep": f"smnist-{order}", "architecture": arch, "profile": profile_name},
                          spectrum_inputs=t["spectrum"], spectrum_warmup=t["steps"],
                          spectrum_conventions=("full", "h_block") if "h_block" in cls.conventions else ("full",))
            return pop, t["train"], t["valid"], kwargs

        out.append(Job(f"smnist-{order}-{arch}", prof["networks"], build))
    return out


ASRNN_GRID = {"sigma": [1, 2, 4, 8, 16], "eps": [0.01, 0.1, 1.0], "gamma": [0.001, 0.01, 0.1],
              "lr": [0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]}
ASRNN_PROFILES = {
    "full": {"grid": ASRNN_GRID, "hidden": 128, "epochs": 142, "train_images": None, "batch": 128, "le_sequences": 20,
             "le_images": 36, "le_warmup": 500, "le_steps": 500},
    "smoke": {"grid": {"sigma": [1, 8], "eps": [0.1, 1.0], "gamma": [0.01], "lr": [0.1, 0.5]}, "hidden": 6, "epochs": 1,
              "train_images": 512, "batch": 64, "le_sequences": 2, "le_images": 6, "le_warmup": 20, "le_steps": 20},
    # smoke le_images 6: even the 8x8 fallback digits (8 rows each) then give the 40 steps of warm-up and measurement
}


def asrnn_grid_init(name, shape, p, g):
    """The text's ASRNN initialization (Sec. 3.1): input weights N(0, 1), recurrent W N(0, p^2 / n)
    with p = sigma, biases 0, read-out as torch's default U(-1/sqrt(n), 1/sqrt(n))."""
    if name == "cell.weight_ih_l0":
        return torch.randn(shape, generator=g)
    if name == "cell.weight_hh_l0":
        return torch.randn(shape, generator=g) * p / math.sqrt(shape[0])
    if name == "readout.weight":
        return (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(shape[1])
    return torch.zeros(shape)


def asrnn_code_init(name, shape, p, g):
    """The authors' code's ASRNN initialization (`HO:AS_RNN.py`, spec section 3), which differs
    from the text's (`asrnn_grid_init`): recurrent W N(0, (p / n)^2), i.e. standard deviation
    p / n instead of p / sqrt(n), and input weights N(0, (1 / d)^2) instead of N(0, 1); biases 0
    and read-out as in `asrnn_grid_init`. The book follows the text; notebook 00 (section 7)
    computes what this init changes."""
    if name == "cell.weight_ih_l0":
        return torch.randn(shape, generator=g) / shape[1]
    if name == "cell.weight_hh_l0":
        return torch.randn(shape, generator=g) * p / shape[0]
    return asrnn_grid_init(name, shape, p, g)


def asrnn_eigenvalues(model):
    """(P, n, 2) numpy array: real and imaginary parts of each network's Jacobian eigenvalues (Eq. 3.4) at one
    random point: an input row of 28 pixels in [0, 1) and a hidden state in U(-1, 1), both drawn
    from the network's own id (the same in any shard)."""
    pts = []
    for nid in model.network_ids.tolist():
        g = torch.Generator().manual_seed(int(nid) + 99_991)
        pts.append((torch.rand(model.hidden_size, generator=g) * 2 - 1, torch.rand(model.input_size, generator=g)))
    ref = model.weight_out
    h = torch.stack([p[0] for p in pts]).to(ref).unsqueeze(1)
    u = torch.stack([p[1] for p in pts]).to(ref).unsqueeze(1)
    eig = torch.linalg.eigvals(model.jacobians(h, u)[:, 0].double()).cpu()
    return torch.stack([eig.real, eig.imag], -1).numpy()


def _asrnn_jobs(profile_name: str, data_dir, device, seed: int = 0, allow_fallback: bool = False) -> list[Job]:
    from . import data
    from .population import Population, PopulationAdagrad

    prof = ASRNN_PROFILES[profile_name]
    grid = prof["grid"]
    combos = [(s_, e, g, lr) for s_ in grid["sigma"] for e in grid["eps"] for g in grid["gamma"] for lr in grid["lr"]]

    def build():
        (x, y), _ = _mnist(data_dir, {"train_images": prof["train_images"], "test_images": None}, allow_fallback)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        n_train = int(0.75 * len(x))
        seqs = data.mnist_sequences(x, "row")
        tr, va = perm[:n_train], perm[n_train:]
        train = data.batches(seqs[tr], y[tr], prof["batch"], shuffle_seed=seed)
        valid = data.batches(seqs[va], y[va], prof["batch"])
        k, n = prof["le_images"], prof["le_sequences"]
        le = seqs[va[: k * n]].reshape(n, k * seqs.shape[1], seqs.shape[2])  # k images' rows back to back
        steps = prof["le_warmup"] + prof["le_steps"]
        pop = Population(rnn.ASRNN, len(combos), seqs.shape[2], prof["hidden"], 10, seed=seed, init=asrnn_grid_init,
                         init_p=[c[0] for c in combos], eps=[c[1] for c in combos], gamma=[c[2] for c in combos]).to(device)
        kwargs = dict(epochs=prof["epochs"], lr=[c[3] for c in combos], task="classification", lr_decay=1.0,
                      optimizer=PopulationAdagrad, spectrum_epochs=[prof["epochs"]],
                      config={"sweep": "asrnn", "profile": profile_name, "grid": grid, "train_fraction": 0.75},
                      spectrum_inputs=le[:, :steps], spectrum_warmup=prof["le_warmup"],
                      extras={"eigenvalues": asrnn_eigenvalues})
        return pop, train, valid, kwargs

    return [Job("asrnn-grid", len(combos), build)]


FORCE_VERSION = 1  # bumped when a change to lyabook.force or this job changes its numbers
FORCE_PROFILES = {
    "full": {"networks": 120, "g": [round(1.1 + 0.1 * k, 1) for k in range(10)], "units": 512, "epochs": 15,
             "epoch_steps": 1200, "test_steps": 12000, "spectrum_epochs": [5, 14], "warmup": 100, "steps": 200},
    "smoke": {"networks": 8, "g": [1.2, 1.5, 1.8], "units": 20, "epochs": 2, "epoch_steps": 200, "test_steps": 200,
              "spectrum_epochs": [0, 1], "warmup": 10, "steps": 20},
}


def _force_jobs(profile_name: str, data_dir, device, seed: int = 0) -> list[Job]:
    prof = FORCE_PROFILES[profile_name]

    def run(out_dir, progress, epochs, g, k):
        from . import force
        from .results import load_results, provenance, save_results
        from .train import config_hash

        E = prof["epochs"] if epochs is None else epochs
        spectrum_epochs = [e for e in prof["spectrum_epochs"] if e < E]
        settings = {"force": FORCE_VERSION, "g": g, "seed": seed + k, **{**prof, "g": g, "epochs": E}}
        path = Path(out_dir) / config_hash(settings) / "force.json"
        if path.is_file():
            return [load_results(path)["results"]]
        t0 = __import__("time").perf_counter()
        pop = force.ForcePopulation(prof["networks"], prof["units"], g=g, seed=seed + k, device=device)
        hist = force.fit(pop, E, epoch_steps=prof["epoch_steps"], test_steps=prof["test_steps"], progress=progress)
        arrays = {"val_mae": hist.val_mae.numpy(), "train_mae": hist.train_mae.numpy()}  # (epochs, networks)
        for e in spectrum_epochs:
            arrays[f"exponents_epoch_{e}"] = force.force_spectra(pop.closed_loop(hist.w_o[e].to(pop.w_o)),
                                                                 hist.states[e].to(pop.w_o), prof["steps"],
                                                                 warmup=prof["warmup"]).numpy()
        results = {"g": g, "finite": hist.finite.numpy().tolist(), "spectrum_epochs": spectrum_epochs}
        prov = provenance(profile_name, device, __import__("time").perf_counter() - t0, settings=settings)
        save_results(path, results, prov, arrays=arrays)
        return [load_results(path)["results"]]

    return [Job(f"force-g{g:.1f}", prof["networks"], run=lambda out_dir, progress, epochs, g=g, k=k: run(
        out_dir, progress, epochs, g, k)) for k, g in enumerate(prof["g"])]


def charrnn_init_p(hidden: int, profile: str = "full") -> torch.Tensor:
    """(networks,) float64: the init half-widths p of the ``charrnn`` sweep's LSTMs of ``hidden``
    units under ``profile``, U(0.04, 0.40) rounded to 3 decimals, from a generator seeded by the
    size's place in the profile's ``char_sizes`` (network i's p is the same in any shard)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    sizes = PROFILES[profile]["char_sizes"]
    if hidden not in sizes:
        raise ValueError(f"hidden must be one of the {profile} profile's sizes {sizes}, got {hidden!r}")
    g = torch.Generator().manual_seed(2000 + sizes.index(hidden))
    p = torch.empty(PROFILES[profile]["char_networks"], dtype=torch.float64).uniform_(*CHAR_P_RANGE, generator=g)
    return p.round(decimals=3)


def _charrnn_jobs(profile_name: str, data_dir, device, seed: int = 0, allow_fallback: bool = False) -> list[Job]:
    from . import data
    from .train import PopulationLSTM

    prof = PROFILES[profile_name]
    loaded = {}

    def task():
        if not loaded:
            try:
                corpus = data.load_war_and_peace(data_dir)
            except data.DataError:  # smoke runs only; the text is part of a run's identity
                if not allow_fallback:
                    raise
                corpus = data.fallback_text()
            train, valid = corpus.train, corpus.valid
            if prof["char_chars"]:
                train, valid = train[: prof["char_chars"]], valid[: prof["char_chars"] // 4]
            loaded["vocab"] = corpus.vocab_size
            loaded["train"] = data.char_batches(train, prof["char_batch"], CHAR_SEQ)
            loaded["valid"] = data.char_batches(valid, prof["char_batch"], CHAR_SEQ)
            n = prof["char_spectrum_sequences"]
            seqs = valid[: n * 100].reshape(n, 100)
            loaded["spectrum"] = torch.cat([seqs, seqs], 1)  # warm-up over the sequence, then measured over it again
        return loaded

    out = []
    for k, hidden in enumerate(prof["char_sizes"]):
        def build(hidden=hidden, k=k):
            t = task()
            P, V = prof["char_networks"], t["vocab"]
            pop = PopulationLSTM(P, V, hidden, V, init_p=charrnn_init_p(hidden, profile_name), dropout=0.1, bias=False,
                                 seed=seed + 100 + k).to(device)
            subsets = [data.NetworkBatches(*t[part], P, CHAR_KEEP, seed=seed + 10 * k + j) for j, part in enumerate(("train", "valid"))]
            kwargs = dict(epochs=prof["char_epochs"], lr=0.002, task="classification", lr_decay=1.0,
                          config={"sweep": "charrnn", "hidden": hidden, "profile": profile_name},
                          encode=lambda ids, V=V: torch.nn.functional.one_hot(ids, V).float(),
                          spectrum_inputs=t["spectrum"], spectrum_warmup=100, spectrum_conventions=("full", "h_block"),
                          spectrum_epochs=prof["char_spectrum_epochs"])
            return pop, subsets[0], subsets[1], kwargs

        out.append(Job(f"charrnn-{hidden}", prof["char_networks"], build))
    return out


EVOLUTION_PROFILES = ("full", "smoke")  # notebook 03's profiles (notebooks/profiles/<profile>/03_training_evolution.yaml)


def _evolution_jobs(profile_name: str, data_dir, device, allow_fallback: bool = False) -> list[Job]:
    """Notebook 03's two populations (`lyabook.evolution`) under that notebook's profile, records
    in the sweep's out_dir itself (as the notebook keeps them: give it
    ``<results>/03_training_evolution_runs``). Without the mocap recordings and with
    ``allow_fallback`` (smoke runs), only the CharRNN job."""
    from . import data, evolution
    from .cli import load_profile

    params = {k: v for k, v in load_profile("03_training_evolution", profile_name).items() if k in evolution.DEFAULTS}
    p = {**evolution.DEFAULTS, **params}

    def build(which):
        pops = evolution.populations(params, data_dir=data_dir, device=device, allow_fallback=allow_fallback,
                                     verbose=False)
        return {name: (model, tr, va, kw) for name, model, tr, va, kw in pops.runs()}[which]

    out = [Job("charrnn", len(p["fig26_p"]) + p["sweep_networks"], lambda: build("charrnn"), folder="")]
    if allow_fallback:
        try:
            data.load_cmu_mocap(data_dir)
        except data.DataError:
            return out
    return out + [Job("mocap", p["mocap_networks"], lambda: build("mocap"), folder="")]


SWEEPS = {
    "smnist": lambda profile, data_dir, device, **kw: _smnist_jobs(profile, data_dir, device, "row", **kw),
    "smnist-permuted": lambda profile, data_dir, device, **kw: _smnist_jobs(profile, data_dir, device, "permuted", **kw),
    "charrnn": _charrnn_jobs,
    "force": _force_jobs,
    "asrnn": _asrnn_jobs,
    "evolution": _evolution_jobs,
}


def jobs(name: str, profile: str = "full", data_dir=None, device="cpu", allow_fallback: bool = False,
         only=None) -> list[Job]:
    """The jobs (populations) of sweep ``name`` under ``profile`` ("full" or "smoke"; the
    smnist, smnist-permuted and charrnn sweeps also "reduced", a CPU-sized one); data are loaded
    only when a job is built. ``allow_fallback`` (smoke runs): scikit-learn's 8x8 digits when
    MNIST is missing (the MNIST sweeps), Python's bundled text when War and Peace is (charrnn).
    ``only``: job names to keep (e.g. ["charrnn-512"]), in the sweep's order; a job's records do
    not depend on which others run, so a sweep can be run a few jobs at a time (GPU sessions too
    short for all of it)."""
    if not isinstance(name, str) or name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; sweeps: {', '.join(SWEEPS)}")
    known = {"asrnn": ASRNN_PROFILES, "force": FORCE_PROFILES, "evolution": EVOLUTION_PROFILES}.get(name, PROFILES)
    if not isinstance(profile, str) or profile not in known:
        raise ValueError(f"profile must be one of {list(known)} for sweep {name!r}, got {profile!r}")
    if allow_fallback and name == "force":
        raise ValueError("allow_fallback is for the sweeps that read data (smnist, smnist-permuted, asrnn, charrnn, "
                         "evolution), not 'force'")
    out = SWEEPS[name](profile, data_dir, device, **({"allow_fallback": True} if allow_fallback else {}))
    if only is None:
        return out
    if isinstance(only, str) or not all(isinstance(j, str) for j in only) or not only:
        raise ValueError(f"only must be a non-empty list of job names, got {only!r}")
    keep = set(only)
    unknown = sorted(keep - {j.name for j in out})
    if unknown:
        raise ValueError(f"unknown job(s) {', '.join(unknown)} in sweep {name!r} ({profile}); its jobs: "
                         f"{', '.join(j.name for j in out)}")
    return [j for j in out if j.name in keep]


def plan(job_list: list[Job], shard: tuple[int, int]) -> list[tuple[Job, tuple[int, int] | None]]:
    """What shard (i, n) runs: [(job, None)] whole jobs when there are at least n jobs (or when a
    job cannot be split: then shards beyond the jobs run nothing), else [(job, (c, m))] part c of
    m of each job's networks (m = n // jobs); for a nested shard ((i, n), (j, m2)), part j of m2 of
    each of those parts."""
    from .population import shard_path

    (i, n), *below = shard_path(shard)
    if not job_list:
        raise ValueError("plan: the sweep has no jobs")
    if len(job_list) >= n or any(j.build is None for j in job_list):
        if below:
            raise ValueError(f"shard {shard!r}: parts of a shard split a job's networks, but with {len(job_list)} "
                             f"jobs for {n} shards each shard trains whole jobs; choose one job (--jobs) or more shards")
        return [(j, None) for k, j in enumerate(job_list) if k % n == i]
    m = n // len(job_list)
    units = [(j, (c, m) if not below else ((c, m), *below)) for j in job_list for c in range(m)]
    return units[i::n]


def _check_epochs(epochs) -> int | None:
    """None (the profile's) or an integer >= 0 (0: only epoch 0, the untrained networks)."""
    from .lyapunov import _as_int

    return None if epochs is None else _as_int("epochs", epochs, 0)


def _check_out_dir(out_dir) -> Path:
    """``out_dir`` as a Path, or a ValueError when it (or a folder above it) is a file."""
    out = Path(out_dir)
    for q in (out, *out.parents):
        if q.exists():
            if not q.is_dir():
                raise ValueError(f"out_dir {out} {'is' if q == out else f'lies under {q}, which is'} a file, "
                                 "not a folder: give a folder for the records")
            break
    return out


def run_shard(name: str, out_dir, shard=(0, 1), profile: str = "full", device: str = "auto", data_dir=None,
              progress: bool = True, epochs: int | None = None, allow_fallback: bool = False, only=None) -> dict:
    """Train shard ``(i, n)`` of sweep ``name`` into ``out_dir`` (each job in its own folder,
    `train_population`'s records); returns {job name: records of this shard}. ``epochs``: stop
    after this many (default: the profile's); the number of epochs is not part of a run's
    identity, so a shorter run's records are the first epochs of the full one and a later call
    with more epochs continues them. ``allow_fallback``, ``only``: as in `jobs`."""
    from .results import resolve_device
    from .train import check_run, train_population

    epochs, out_dir = _check_epochs(epochs), _check_out_dir(out_dir)
    dev = resolve_device(device)
    units = plan(jobs(name, profile, data_dir, dev, allow_fallback=allow_fallback, only=only), shard)
    for job, part in units:  # every job of the shard checked before any trains (a missing checkpoint, say)
        if job.build is None:
            continue
        pop, train, valid, kwargs = job.build()
        check_run(pop, train, valid, out_dir=job.out(out_dir), shard=part,
                  **{**kwargs, "epochs": epochs if epochs is not None else kwargs["epochs"]})
        del pop
    done = {}
    for job, part in units:
        if job.build is None:  # trained whole by its own runner
            done[job.name] = job.run(job.out(out_dir), progress, epochs)
            continue
        pop, train, valid, kwargs = job.build()
        if epochs is not None:
            kwargs["epochs"] = epochs
        done[job.name] = train_population(pop, train, valid, out_dir=job.out(out_dir), shard=part,
                                          progress=progress, **kwargs)
    return done


def launch(name: str, out_dir, profile: str = "full", gpus: int | None = None, data_dir=None,
           epochs: int | None = None, only=None) -> int:
    """Run sweep ``name`` as ``gpus`` processes ``lyabook sweep NAME --shard i/n`` (n = ``gpus``,
    default one per visible GPU; shard i sees only GPU i mod (visible GPUs) through
    CUDA_VISIBLE_DEVICES, so n = 4 x GPUs runs four shards on each); returns the worst exit
    status. Shards whose networks split a job merge their records when the last finishes.
    ``only``: as in `jobs`."""
    jobs(name, profile, data_dir, only=only)  # a bad name, profile or job: one error here, not one per process
    epochs, out_dir = _check_epochs(epochs), _check_out_dir(out_dir)
    if gpus is not None and (isinstance(gpus, bool) or not hasattr(gpus, "__index__") or gpus.__index__() < 1):
        raise ValueError(f"gpus must be a positive integer (one shard per GPU), got {gpus!r}")
    n = gpus if gpus is not None else torch.cuda.device_count()
    if n < 1:
        raise ValueError("launch needs at least one GPU (none is visible; on a CPU run `lyabook sweep` instead)")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # more shards than GPUs share them (not ids 0..n-1: GPUs past the last visible do not exist)
    ids = visible.split(",") if visible else [str(i) for i in range(max(torch.cuda.device_count(), 1))]
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "lyabook", "sweep", name, "--shard", f"{i}/{n}", "--out", str(out_dir),
               "--profile", profile, "--device", "cuda", "--quiet"]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        if epochs is not None:
            cmd += ["--epochs", str(epochs)]
        if only is not None:
            cmd += ["--jobs", ",".join(only)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ids[i % len(ids)]}
        # the shards share the machine's cores: torch's default (every core per process) would
        # oversubscribe them n times over in the CPU parts (data, initialization)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        procs.append(subprocess.Popen(cmd, env=env))
    return max(p.wait() for p in procs)
