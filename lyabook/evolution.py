"""Notebook 03's two populations (Chapter 2, Sec. 2.3: spectra over training), built in one place
for the notebook and for ``lyabook launch evolution`` (its shards over GPUs).

* ``charrnn``: one population of CharRNN LSTMs (no biases) on War and Peace: Fig. 2.6's networks,
  one per p in ``fig26_p`` at learning rate ``fig26_lr`` without dropout, then ``sweep_networks``
  networks at p = ``sweep_p`` with (learning rate, dropout) drawn log-uniformly (Figs. 2.7a-b,
  2.8, B1, B2), trained for max(``fig26_epochs``, ``sweep_epochs``) epochs on every batch.
* ``mocap``: ``mocap_networks`` LSTMs (with biases) predicting the next CMU mocap frame from the
  25 before it, p drawn uniformly from ``mocap_p_range`` and sorted (Figs. 2.7c-d).

Spectra of every epoch on ``spectrum_sequences`` held-out sequences of ``spectrum_steps`` steps,
full state and (CharRNN) h block. A run's identity is its configuration and data
(`lyabook.train.run_hash`), so the notebook and the launcher find the same records.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import data

__all__ = ["DEFAULTS", "Populations", "populations", "spectrum_convergence"]

# The parameters that make the two populations, at the dissertation's scale: notebook 03's
# parameters cell repeats them (papermill reads them there) and a test keeps the two equal.
DEFAULTS = {
    "seed": 0,
    "char_hidden": 512, "char_batch": 100, "char_seq": 100, "char_max_chars": None, "char_train_batches": None,
    "fig26_p": [0.04, 0.08, 0.12, 0.16, 0.2, 0.5], "fig26_epochs": 15, "fig26_lr": 0.002,
    "sweep_networks": 60, "sweep_epochs": 40, "sweep_p": 0.08,
    "sweep_lr_range": [5e-4, 6e-3], "sweep_dropout_range": [1e-3, 0.15],
    "mocap_hidden": 256, "mocap_networks": 30, "mocap_p_range": [0.05, 0.5], "mocap_lr": 0.05,
    "mocap_batch": 250, "mocap_epochs": 80,
    "spectrum_sequences": 10, "spectrum_steps": 100,
}


@dataclass
class Populations:
    """What `populations` built. ``char`` / ``mocap_model``: the populations; ``*_train`` /
    ``*_valid``: lists of (inputs, targets) batches; ``*_kw``: `train_population`'s keyword
    arguments (without ``out_dir``); ``lrs``, ``drops`` (sweep_networks,): the sweep networks'
    learning rates and dropouts; ``ps`` (mocap_networks,): the mocap networks' p; ``mocap``: the
    loaded recordings, or None when they are missing and ``allow_fallback`` let the run go on."""

    corpus: object
    char: torch.nn.Module
    char_train: list
    char_valid: list
    char_kw: dict
    n26: int
    lrs: np.ndarray
    drops: np.ndarray
    mocap: dict | None
    mocap_model: torch.nn.Module | None
    mocap_train: list | None
    mocap_valid: list | None
    mocap_kw: dict | None
    ps: np.ndarray | None

    def runs(self) -> list[tuple[str, torch.nn.Module, list, list, dict]]:
        """[(name, population, train batches, valid batches, keyword arguments)], CharRNN first."""
        out = [("charrnn", self.char, self.char_train, self.char_valid, self.char_kw)]
        if self.mocap_model is not None:
            out.append(("mocap", self.mocap_model, self.mocap_train, self.mocap_valid, self.mocap_kw))
        return out


def populations(params: dict | None = None, *, data_dir=None, device="cpu", allow_fallback: bool = False,
                verbose: bool = True) -> Populations:
    """Build notebook 03's populations from ``params`` (any of `DEFAULTS`' keys; the others keep
    their defaults). Data: War and Peace and CMU mocap from ``data_dir`` (or $LYABOOK_DATA_DIR);
    with ``allow_fallback`` (smoke runs), Python's bundled text for the first and no mocap part
    for the second. ``verbose``: print what was loaded."""
    from .train import PopulationLSTM

    unknown = sorted(set(params or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **(params or {})}
    say = print if verbose else (lambda *a, **k: None)

    def load(loader, what: str, instead: str, fallback):
        try:
            return loader(data_dir)
        except data.DataError as e:
            if not allow_fallback:
                raise
            say(f"{what} unavailable ({e}); {instead}")
            return fallback()

    corpus = load(data.load_war_and_peace, "War and Peace", "using the smoke fallback text", data.fallback_text)
    cut = p["char_max_chars"]
    train_ids = corpus.train if cut is None else corpus.train[: int(cut)]
    valid_ids = corpus.valid if cut is None else corpus.valid[: max(int(cut) // 8, p["char_batch"] * p["char_seq"] + 1)]
    train_x, train_y = data.char_batches(train_ids, p["char_batch"], p["char_seq"])
    valid_x, valid_y = data.char_batches(valid_ids, p["char_batch"], p["char_seq"])
    n_train = len(train_x) if p["char_train_batches"] is None else min(len(train_x), int(p["char_train_batches"]))
    char_train = [(train_x[i], train_y[i]) for i in range(n_train)]
    char_valid = [(valid_x[i], valid_y[i]) for i in range(len(valid_x))]
    V = corpus.vocab_size
    S, T = p["spectrum_sequences"], p["spectrum_steps"]
    test_ids = corpus.test[: S * T].reshape(S, T)
    say(f"text: {corpus.source.split(' (')[0]}; vocabulary {V}; {len(char_train)} training batches of "
        f"{p['char_batch']} x {p['char_seq']}, {len(char_valid)} validation batches")

    mocap = load(data.load_cmu_mocap, "CMU mocap", "skipping the mocap part", lambda: None)

    rng = np.random.default_rng(p["seed"])  # the sweep networks' draws (the notebook's first use of its seed)
    n26, N = len(p["fig26_p"]), p["sweep_networks"]
    lrs = np.exp(rng.uniform(*np.log(p["sweep_lr_range"]), N))
    drops = np.exp(rng.uniform(*np.log(p["sweep_dropout_range"]), N))
    char_cfg = {"part": "charrnn", "p": list(p["fig26_p"]) + [p["sweep_p"]] * N,
                "lr": [p["fig26_lr"]] * n26 + lrs.tolist(), "dropout": [0.0] * n26 + drops.tolist(),
                "hidden": p["char_hidden"], "data": corpus.source.split(" (")[0], "batches": len(char_train),
                "seed": p["seed"]}
    char = PopulationLSTM(n26 + N, V, p["char_hidden"], V, init_p=char_cfg["p"], dropout=char_cfg["dropout"],
                          bias=False, seed=p["seed"]).to(device)
    char_kw = dict(epochs=max(p["fig26_epochs"], p["sweep_epochs"]), lr=char_cfg["lr"], task="classification",
                   config=char_cfg, encode=lambda ids: torch.nn.functional.one_hot(ids, V).float(),
                   spectrum_inputs=test_ids, spectrum_conventions=("full", "h_block"))

    mo = mocap_train = mocap_valid = mocap_kw = ps = None
    if mocap is not None:
        (mx, my), (vx, vy) = data.mocap_windows(mocap["train"] + mocap["test"], history=25, seed=p["seed"])
        B = p["mocap_batch"]
        mocap_train = [(mx[i : i + B], my[i : i + B]) for i in range(0, len(mx), B)]
        mocap_valid = [(vx[i : i + B], vy[i : i + B]) for i in range(0, len(vx), B)]
        rec = np.concatenate(mocap["test"])
        spectrum_inputs = torch.from_numpy(rec[: S * T].reshape(S, T, -1))
        say(f"mocap: {len(mx)} training and {len(vx)} validation windows of 25 frames x {mx.shape[-1]} features")
        # its own stream: independent of the sweep's size
        ps = np.sort(np.random.default_rng([p["seed"], 2]).uniform(*p["mocap_p_range"], p["mocap_networks"]))
        mo = PopulationLSTM(p["mocap_networks"], mx.shape[-1], p["mocap_hidden"], my.shape[-1], init_p=ps, dropout=0.0,
                            bias=True, seed=p["seed"] + 2).to(device)
        mocap_kw = dict(epochs=p["mocap_epochs"], lr=p["mocap_lr"], task="regression", spectrum_inputs=spectrum_inputs,
                        config={"part": "mocap", "p": ps.tolist(), "lr": p["mocap_lr"], "hidden": p["mocap_hidden"],
                                "seed": p["seed"]})
    return Populations(corpus, char, char_train, char_valid, char_kw, n26, lrs, drops, mocap, mo, mocap_train,
                       mocap_valid, mocap_kw, ps)


def spectrum_convergence(exponents) -> dict:
    """Fig. 2.6's two measures of how spectra settle over training, for each network.

    exponents: (epochs + 1, networks, k), per step, epoch 0 before training. Returns
    ``reduced_msd`` (epochs, networks): the mean over i of (λ_i(t) - λ_i(t-1))² over the mean of
    λ_i(t)², t = 1..epochs; ``slope``: of log(mean over networks of reduced_msd) against log t for
    t = 2..epochs (epoch 1, the jump away from the random initialization, left out; NaN below 3
    epochs), the dissertation's O(1/t) being slope -1; ``mean_diff`` (epochs + 1, networks): the
    mean exponent at each epoch less that at the last; ``from_below`` (networks,) bool: whether
    the mean exponent after epoch 1 lies below its last value (the dissertation: it does)."""
    ex = np.asarray(exponents, dtype=np.float64)
    if ex.ndim != 3 or ex.shape[0] < 2:
        raise ValueError(f"exponents: expected (epochs + 1, networks, k) with at least 2 epochs recorded, got shape {ex.shape}")
    if not np.isfinite(ex).all():
        raise ValueError("exponents: not all finite (a diverged network? leave it out first)")
    t = np.arange(1, ex.shape[0])
    reduced_msd = ((ex[1:] - ex[:-1]) ** 2).mean(-1) / (ex[1:] ** 2).mean(-1)
    slope = float(np.polyfit(np.log(t[1:]), np.log(reduced_msd[1:].mean(1)), 1)[0]) if len(t) > 2 else float("nan")
    mean_diff = ex.mean(-1) - ex[-1].mean(-1)
    return {"reduced_msd": reduced_msd, "slope": slope, "mean_diff": mean_diff, "from_below": mean_diff[1] < 0}
