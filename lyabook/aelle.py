"""AeLLE: an autoencoder of Lyapunov spectra with a loss predictor on its latent (dissertation
Chapter 3, Eqs. 3.5-3.6), the embedding of its latents and the classifiers of Tables 3.1-3.3, B2-B4.
For example::

    grid = to_grid(spectra, 1024)                          # (n, N) -> (n, 1024)
    model = AeLLE(1024, seed=0)                            # encoder 1024-512-256-32, mirrored decoder
    history = fit(model, grid[train], loss[train], grid[val], loss[val])
    pcs = embed(model.encode(grid), loss, n_components=2)  # PC1 oriented to fall with loss
    scores = median_split(pcs[:, 0], loss)                 # precision, recall, F1 with bootstrap CIs

What the authors' code did where the text is silent or differs (reproduction spec, sections 4-5),
and what lyabook does:

* loss = reconstruction + alpha * prediction, alpha a list of stages held for ``epochs_per_stage``
  epochs each, one Adam optimizer through all stages: as the code. Reconstruction is L1 (the code;
  the text says mean-squared); the prediction term is L1 or L2 (``prediction_loss``).
* the code's dropout on the decoder's *output* (10 % of the compared reconstruction zeroed) is
  not reproduced: dropout 0.1 follows every hidden tanh layer only.
* the code's "best" model was always the final one (a reference, not a copy, was kept): `fit`
  keeps a copy of the weights with the lowest validation prediction loss and returns it.
* spectra are not normalized (as the code); `to_grid` brings sizes to a common grid.
* PCA is scikit-learn's, exact and centred, fitted on the rows given (the code: a randomized,
  unseeded ``torch.pca_lowrank`` with at most 6 components, applied to uncentred latents).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .lyapunov import _as_int

__all__ = ["to_grid", "AeLLE", "fit", "AeLLEHistory", "alpha_schedule", "PredNet", "fit_prednet", "embedding", "embed", "higher_is_better", "median_split", "best_threshold", "orthant_classifier",
           "Scores", "scores", "bootstrap_interval", "split_by_network", "split_by_row", "region_composition",
           "shift_prediction", "to_level_set", "null_space", "decode", "predict"]


# ------------------------------------------------------------------ spectra on a grid
def to_grid(spectra, size: int = 1024, method: str = "doubling") -> np.ndarray:
    """Spectra (n, N) -> (n, size) on a common grid.

    ``method="doubling"`` (the authors' ``interpolate_LEs``): double log2(size / N) times, each
    time inserting the midpoint between neighbours and, after the last exponent, the last value
    minus half the previous gap. Exponent k lands at position f k (f = size / N) and the last
    f - 1 entries extrapolate linearly *below* the smallest exponent; N must be size / 2^j.
    ``method="interp"``: ``np.interp`` at positions f k, which holds the smallest exponent
    constant over the tail instead. The two differ only in the last f - 1 entries.
    """
    x = np.asarray(spectra, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"spectra must be (n, N) with N >= 2 exponents, got shape {np.shape(spectra)}")
    if not np.isfinite(x).all():
        raise ValueError("spectra must be finite (a diverged network's NaN row: leave it out before to_grid)")
    size = _as_int("size", size, 2)
    n, N = x.shape
    if size % N:
        raise ValueError(f"size {size} must be a multiple of the spectrum length {N}")
    f = size // N
    if method == "interp":
        pos = np.arange(size)
        return np.stack([np.interp(pos, f * np.arange(N), row) for row in x])
    if method != "doubling":
        raise ValueError(f"method must be 'doubling' or 'interp', got {method!r}")
    if f & (f - 1):
        raise ValueError(f"doubling needs size / N to be a power of 2, got {size} / {N} = {f}")
    while x.shape[1] < size:
        mid = (x[:, :-1] + x[:, 1:]) / 2
        tail = x[:, -1:] - (x[:, -2:-1] - x[:, -1:]) / 2  # the last value minus half the previous gap
        out = np.empty((n, 2 * x.shape[1]))
        out[:, 0::2] = x
        out[:, 1:-1:2] = mid
        out[:, -1:] = tail
        x = out
    return x


# ------------------------------------------------------------------ model
def _floats(values) -> torch.Tensor:
    """A float32 tensor of spectra or latents given as a tensor, an array or nested lists."""
    return values.float() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, dtype=np.float32))


def _eval_apply(model: nn.Module, part: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``part(x)`` with ``model`` in eval mode (no dropout) and no gradients; the mode is restored."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return part(x)
    finally:
        model.train(was)


class AeLLE(nn.Module):
    """Autoencoder (tanh layers, dropout 0.1 after each hidden layer) with a linear loss
    predictor on the latent.

    Args:
        input_size: spectrum length (1024 after `to_grid`).
        hidden: encoder widths between input and latent (decoder mirrored); default (512, 256),
            the authors' CharRNN and SMNIST models.
        latent_size: 32, the dissertation's (Sec. 3.2).
        dropout: after every hidden tanh layer (0.1, the authors').
        squash: a sigmoid on the prediction (the authors' 2022 SMNIST model; targets must then
            lie in (0, 1)).
        seed: initialization seed.
    """

    def __init__(self, input_size: int = 1024, hidden=(512, 256), latent_size: int = 32, *, squash: bool = False,
                 dropout: float = 0.1, seed: int = 0):
        super().__init__()
        sizes = [_as_int("input_size", input_size, 1), *(_as_int("hidden", h, 1) for h in hidden),
                 _as_int("latent_size", latent_size, 1)]
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        g = torch.Generator().manual_seed(_as_int("seed", seed, 0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))  # nn.Linear's init draws from the global stream
            self.encoder = self._stack(sizes, dropout, last_activation=False)
            self.decoder = self._stack(sizes[::-1], dropout, last_activation=False)
            self.predictor = nn.Linear(sizes[-1], 1)
        self.squash = squash
        self.input_size, self.latent_size = sizes[0], sizes[-1]

    @staticmethod
    def _stack(sizes, dropout, last_activation):
        layers = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if k < len(sizes) - 2:
                layers += [nn.Tanh(), nn.Dropout(dropout)]
        return nn.Sequential(*layers)

    def encode(self, x) -> torch.Tensor:
        """Latents (n, latent_size) of spectra (n, input_size), in eval mode, without gradients."""
        return _eval_apply(self, self.encoder, _floats(x))

    def forward(self, x):
        """x (n, input_size) -> (reconstruction (n, input_size), predicted loss (n,), latent (n, latent_size))."""
        z = self.encoder(x)
        pred = self.predictor(z).squeeze(-1)
        return self.decoder(z), (torch.sigmoid(pred) if self.squash else pred), z


@dataclass
class AeLLEHistory:
    """Per epoch: training reconstruction and prediction losses, validation prediction loss,
    alpha; ``best_epoch`` (lowest validation prediction loss), whose weights `fit` restored."""

    alpha: list = field(default_factory=list)
    train_reconstruction: list = field(default_factory=list)
    train_prediction: list = field(default_factory=list)
    valid_prediction: list = field(default_factory=list)
    best_epoch: int = -1


_LOSSES = {"l1": nn.functional.l1_loss, "l2": nn.functional.mse_loss}


def alpha_schedule(alphas, epochs_per_stage: int) -> list:
    """The alpha of every epoch: each stage's value held for ``epochs_per_stage`` epochs."""
    alphas = [float(a) for a in alphas]
    if not alphas or any(not math.isfinite(a) or a < 0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of finite numbers >= 0, got {alphas!r}")
    return [a for a in alphas for _ in range(_as_int("epochs_per_stage", epochs_per_stage, 1))]


def fit(model: AeLLE, x_train, y_train, x_valid, y_valid, *, alphas=(5, 5, 10, 20), epochs_per_stage: int = 1000,
        lr: float = 1e-5, batch_size: int = 128, reconstruction_loss: str = "l1", prediction_loss: str = "l1",
        seed: int = 0) -> AeLLEHistory:
    """Train ``model`` on spectra ``x`` (n, input_size) and losses ``y`` (n,): loss =
    reconstruction + alpha * prediction, alpha following ``alphas`` (stages of
    ``epochs_per_stage`` epochs; defaults: the authors' CharRNN model, alpha 5, 5, 10 and 20,
    each for 1000 epochs, Adam 1e-5, L1 for both terms), mini-batches of ``batch_size`` in an order drawn from
    ``seed`` each epoch. Restores the weights of the epoch with the lowest validation
    prediction loss and returns the history."""
    schedule = alpha_schedule(alphas, epochs_per_stage)
    for name, v in (("reconstruction_loss", reconstruction_loss), ("prediction_loss", prediction_loss)):
        if v not in _LOSSES:
            raise ValueError(f"{name} must be one of {sorted(_LOSSES)}, got {v!r}")
    data = [_tensors(model.input_size, name, x, y) for name, x, y in
            (("train", x_train, y_train), ("valid", x_valid, y_valid))]
    (xt, yt), (xv, yv) = data
    rec_f, pred_f = _LOSSES[reconstruction_loss], _LOSSES[prediction_loss]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(_as_int("seed", seed, 0))
    batch_size = _as_int("batch_size", batch_size, 1)
    hist, best, best_loss = AeLLEHistory(), None, float("inf")
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global stream: seeded, and left as found
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        for epoch, alpha in enumerate(schedule):
            model.train()
            order = torch.randperm(len(xt), generator=g)
            rec_sum = pred_sum = 0.0
            for i in range(0, len(xt), batch_size):
                idx = order[i : i + batch_size]
                recon, pred, _ = model(xt[idx])
                rec, prd = rec_f(recon, xt[idx]), pred_f(pred, yt[idx])
                opt.zero_grad()
                (rec + alpha * prd).backward()
                opt.step()
                rec_sum += float(rec.detach()) * len(idx)
                pred_sum += float(prd.detach()) * len(idx)
            model.eval()
            with torch.no_grad():
                valid = float(pred_f(model(xv)[1], yv))
            hist.alpha.append(alpha)
            hist.train_reconstruction.append(rec_sum / len(xt))
            hist.train_prediction.append(pred_sum / len(xt))
            hist.valid_prediction.append(valid)
            if valid < best_loss:  # a copy: the code kept a reference, so its "best" was the last
                best_loss, best, hist.best_epoch = valid, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best)
    model.eval()
    return hist


# ------------------------------------------------------------------ PredNet (Fig. 3.1)
class PredNet(nn.Module):
    """The dissertation's first predictor (Sec. 3.1, Fig. 3.1): spectrum -> final loss through one
    hidden layer, ``Linear(input, hidden, bias=False) -> LeakyReLU -> Linear(hidden, 1)``
    (the authors' notebook: 512 -> 50; Figs. 3.3-3.4 use 10 neurons)."""

    def __init__(self, input_size: int = 512, hidden: int = 50, *, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_as_int("seed", seed, 0))
            self.net = nn.Sequential(nn.Linear(_as_int("input_size", input_size, 1), _as_int("hidden", hidden, 1), bias=False),
                                     nn.LeakyReLU(), nn.Linear(hidden, 1))
        self.input_size = input_size

    def forward(self, x):
        """x (n, input_size) -> predicted loss (n,)."""
        return self.net(x).squeeze(-1)


def fit_prednet(model: PredNet, x_train, y_train, x_valid, y_valid, *, iterations: int = 25_000,
                lr: float = 1e-4) -> dict:
    """Full-batch Adam on the mean squared error (the authors' 25,000 iterations at 1e-4); returns
    {"train_mse", "valid_mse"} per iteration's end (lists) and the final validation predictions."""
    (xt, yt), (xv, yv) = (_tensors(model.input_size, name, x, y) for name, x, y in
                          (("train", x_train, y_train), ("valid", x_valid, y_valid)))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    train, valid = [], []
    for _ in range(_as_int("iterations", iterations, 1)):
        model.train()
        loss = nn.functional.mse_loss(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            pv = model(xv)
        valid.append(float(nn.functional.mse_loss(pv, yv)))
    return {"train_mse": train, "valid_mse": valid, "valid_prediction": pv.numpy()}


def _tensors(input_size, name, x, y):
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.float32)).flatten()
    if x.ndim != 2 or x.shape[1] != input_size or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x_{name} must be (n >= 1, {input_size}) with one loss per row in y_{name}, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"x_{name} and y_{name} must be finite")
    return x, y


# ------------------------------------------------------------------ splits (spec section 9)
def split_by_network(network_ids, fractions=(0.2, 0.2, 0.6), seed: int = 0) -> list[np.ndarray]:
    """Boolean row masks (train, validation, test, ...) that keep every row of a network (its
    spectra at several epochs) in one split: networks, not rows, are drawn in ``fractions``.
    (The authors split rows; the same network at other epochs then sits in the training set with
    the same target, which flatters early-epoch prediction: `split_by_row` does that, to explain
    their numbers.)"""
    ids = np.asarray(network_ids).ravel()
    uniq = np.unique(ids)
    order = np.random.default_rng(_as_int("seed", seed, 0)).permutation(uniq)
    bounds = _bounds(len(uniq), fractions)
    return [np.isin(ids, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def split_by_row(n_rows: int, fractions=(0.2, 0.2, 0.6), seed: int = 0) -> list[np.ndarray]:
    """Boolean masks of a split over rows, as the authors' code split (network, epoch) rows."""
    order = np.random.default_rng(_as_int("seed", seed, 0)).permutation(_as_int("n_rows", n_rows, 1))
    bounds = _bounds(n_rows, fractions)
    masks = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        m = np.zeros(n_rows, dtype=bool)
        m[order[a:b]] = True
        masks.append(m)
    return masks


def _bounds(n: int, fractions) -> list[int]:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 2 or (f <= 0).any() or abs(f.sum() - 1) > 1e-9:
        raise ValueError(f"fractions must be two or more positive numbers summing to 1, got {fractions!r}")
    b = np.round(np.cumsum(f) * n).astype(int)
    return [0, *b[:-1].tolist(), n]


def region_composition(labels, in_region) -> dict:
    """Table D5's two readings for a region (a boolean mask over networks): "composition", the
    share of the region's networks that carry each label (columns sum to 1: what Table D5's
    numbers are), and "fraction_in_region", the share of each label's networks in the region."""
    lab, reg = np.asarray(labels).ravel(), np.asarray(in_region, dtype=bool).ravel()
    if lab.shape != reg.shape:
        raise ValueError(f"labels and in_region must have one entry per network, got {lab.shape} and {reg.shape}")
    out = {"composition": {}, "fraction_in_region": {}}
    for v in np.unique(lab):
        out["composition"][str(v)] = float((lab[reg] == v).mean()) if reg.any() else float("nan")
        out["fraction_in_region"][str(v)] = float(reg[lab == v].mean())
    return out


# ------------------------------------------------------------------ moving latents (spec section 10)
def shift_prediction(model: AeLLE, latents, delta: float) -> torch.Tensor:
    """Latents moved by the smallest step that changes the predictor's linear output by ``delta``:
    ``z + delta theta / |theta|^2`` (theta the predictor's weights; with ``squash`` the change is
    in the logit, as the authors' code moved it)."""
    z = _floats(latents)
    theta = model.predictor.weight.detach()[0]
    return z + float(delta) * theta / theta.dot(theta)


def to_level_set(model: AeLLE, latents, loss: float) -> torch.Tensor:
    """Each latent projected (orthogonally, the nearest point) onto the set the predictor maps to
    ``loss``: the affine hyperplane theta z + b = loss (logit(loss) with ``squash``). That set, not
    the null space of theta (which predicts b), is "the latents that predict this loss"."""
    z = _floats(latents)
    target = float(loss)
    if model.squash:
        if not 0 < target < 1:
            raise ValueError(f"with a sigmoid head the predicted loss lies in (0, 1), got {target!r}")
        target = math.log(target / (1 - target))
    theta, b = model.predictor.weight.detach()[0], float(model.predictor.bias.detach()[0])
    return z + ((target - b - z @ theta) / theta.dot(theta)).unsqueeze(-1) * theta


def null_space(model: AeLLE) -> torch.Tensor:
    """(latent_size - 1, latent_size) orthonormal directions along which the prediction does not
    change (the null space of theta)."""
    theta = model.predictor.weight.detach().double()
    _, _, vh = torch.linalg.svd(theta)
    return vh[1:].float()


def decode(model: AeLLE, latents) -> torch.Tensor:
    """Spectra (n, input_size) decoded from latents (n, latent_size), in eval mode."""
    return _eval_apply(model, model.decoder, _floats(latents))


def predict(model: AeLLE, latents) -> torch.Tensor:
    """The predictor's loss (n,) for latents (n, latent_size)."""
    z = _floats(latents)
    with torch.no_grad():
        out = model.predictor(z).squeeze(-1)
    return torch.sigmoid(out) if model.squash else out


# ------------------------------------------------------------------ embedding and classifiers
def embedding(latents, loss, n_components: int = 2, fit_rows=None):
    """The projection `embed` applies, as a function of latents (m, d) -> scores (m, n_components):
    scikit-learn's PCA fitted on ``latents`` (n, d) (the rows ``fit_rows`` only, a boolean mask or
    indices, when given), each component's sign fixed so that it falls with ``loss`` on those rows.
    Use it to place new latents (moved ones, say) in the same plane as the networks'."""
    from sklearn.decomposition import PCA

    z = np.asarray(latents.detach().cpu() if torch.is_tensor(latents) else latents, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if z.ndim != 2 or len(z) != len(loss) or len(z) < 2:
        raise ValueError(f"latents must be (n >= 2, d) with one loss per row, got {z.shape} and {loss.shape}")
    rows = np.arange(len(z)) if fit_rows is None else np.arange(len(z))[np.asarray(fit_rows)]
    k = _as_int("n_components", n_components, 1)
    if k > min(len(rows), z.shape[1]):
        raise ValueError(f"n_components must be <= min(fitted rows, d) = {min(len(rows), z.shape[1])}, got {k}")
    pca = PCA(n_components=k).fit(z[rows])
    fitted = pca.transform(z[rows])
    signs = np.array([1.0 if higher_is_better(fitted[:, j], loss[rows]) else -1.0 for j in range(k)])

    def project(new_latents) -> np.ndarray:
        x = np.asarray(new_latents.detach().cpu() if torch.is_tensor(new_latents) else new_latents, dtype=np.float64)
        return pca.transform(x) * signs

    return project


def higher_is_better(statistic, loss) -> bool:
    """Whether high values of ``statistic`` (n,) go with low ``loss`` (n,): Spearman's rank
    correlation below 0. Ranks, not Pearson's r: losses span decades (a network that blows up
    reaches 1e13), and Pearson's r of one such network would set the side for all. A statistic
    without rank correlation (0 or undefined) counts as higher-is-better."""
    import scipy.stats

    s, loss = _pair(statistic, loss)
    if np.ptp(s) == 0 or np.ptp(loss) == 0:
        return True
    return bool(scipy.stats.spearmanr(s, loss)[0] <= 0)


def embed(latents, loss, n_components: int = 2, fit_rows=None) -> np.ndarray:
    """Scores (n, n_components) of scikit-learn's PCA of ``latents`` (n, d), each component's sign
    fixed so that it falls with ``loss`` (PC signs are arbitrary; the dissertation puts the
    high-accuracy side left in one place and right in another): larger PC = lower loss.
    ``fit_rows``: a boolean mask (or indices) of the rows the PCA and the signs are fitted on
    (e.g. the training networks); every row is projected. Default: all rows. `embedding` returns
    the projection itself."""
    return embedding(latents, loss, n_components, fit_rows)(latents)


@dataclass
class Scores:
    """Precision, recall and F1 of "high accuracy" (loss below the threshold) with 95 % bootstrap
    intervals over networks, and the counts they come from."""

    precision: float
    recall: float
    f1: float
    f1_interval: tuple
    n: int
    positives: int
    predicted_positives: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def scores(truth, predicted, *, n_boot: int = 1000, seed: int = 0) -> Scores:
    """`Scores` of boolean predictions against boolean truths (``sklearn.metrics``); the F1's
    interval is the 2.5-97.5 % percentile of its bootstrap over networks."""
    from sklearn.metrics import precision_recall_fscore_support

    t, p = np.asarray(truth, dtype=bool).ravel(), np.asarray(predicted, dtype=bool).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"truth and predicted must be non-empty and of one shape, got {t.shape} and {p.shape}")
    pr, rc, f1, _ = precision_recall_fscore_support(t, p, average="binary", zero_division=0)
    return Scores(float(pr), float(rc), float(f1), bootstrap_interval(t, p, n_boot=n_boot, seed=seed),
                  int(t.size), int(t.sum()), int(p.sum()))


def bootstrap_interval(truth, predicted, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple:
    """Percentile bootstrap interval of the F1 score, resampling networks with replacement."""
    from sklearn.metrics import f1_score

    t, p = np.asarray(truth, dtype=bool).ravel(), np.asarray(predicted, dtype=bool).ravel()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, t.size, size=(_as_int("n_boot", n_boot, 1), t.size))
    f1s = np.array([f1_score(t[i], p[i], zero_division=0) for i in idx])
    a = (1 - level) / 2
    return float(np.quantile(f1s, a)), float(np.quantile(f1s, 1 - a))


def median_split(statistic, loss, *, higher_is_better: bool = True, **kw) -> Scores:
    """The dissertation's median classifier: truth = loss below its median (high accuracy),
    prediction = statistic on the high-accuracy side of its own median (above it when
    ``higher_is_better``, e.g. an `embed` PC; below it for, say, a mean exponent that rises with
    loss). Ties with the median count as not high accuracy (the code dropped them)."""
    s, loss = _pair(statistic, loss)
    pred = s > np.median(s) if higher_is_better else s < np.median(s)
    return scores(loss < np.median(loss), pred, **kw)


def best_threshold(statistic_train, loss_train, statistic_test, loss_test, *, higher_is_better: bool = True,
                   **kw) -> tuple[float, Scores]:
    """The F1-optimal threshold of ``statistic`` chosen on the training networks (truth: loss below
    the training median), applied to the test networks (truth: loss below the test median).
    Returns (threshold, test `Scores`). Every midpoint between sorted training values is tried
    (the code's search ``arange(-2, 0)`` tried only -2 and -1)."""
    from sklearn.metrics import f1_score

    s, lt = _pair(statistic_train, loss_train)
    st, lte = _pair(statistic_test, loss_test)
    sign = 1.0 if higher_is_better else -1.0
    truth = lt < np.median(lt)
    cand = np.unique(s)
    cand = np.concatenate([[cand[0] - 1], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1]])
    f1s = [f1_score(truth, sign * s > sign * c, zero_division=0) for c in cand]
    c = float(cand[int(np.argmax(f1s))])
    return c, scores(lte < np.median(lte), sign * st > sign * c, **kw)


def orthant_classifier(pcs_train, loss_train, pcs_test, loss_test, **kw) -> tuple[dict, Scores]:
    """Table 3.3's multi-PC classifier: each network falls in the orthant given by the signs of
    its d PCs relative to the training medians; an orthant predicts "high accuracy" when more
    than half of the training networks in it have loss below the training median. Empty
    orthants and ties (exactly half) predict "not high accuracy". Returns ({orthant: rule},
    test `Scores`)."""
    a, lt = _pair2(pcs_train, loss_train)
    b, lte = _pair2(pcs_test, loss_test)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"pcs_train and pcs_test must have the same number of PCs, got {a.shape[1]} and {b.shape[1]}")
    med = np.median(a, axis=0)
    truth = lt < np.median(lt)
    key = lambda rows: [tuple(bool(v) for v in r) for r in rows > med]
    rules = {}
    for k, t in zip(key(a), truth):
        rules.setdefault(k, []).append(t)
    rules = {k: bool(np.mean(v) > 0.5) for k, v in rules.items()}
    pred = np.array([rules.get(k, False) for k in key(b)])
    return rules, scores(lte < np.median(lte), pred, **kw)


def _pair(statistic, loss):
    s, loss = np.asarray(statistic, dtype=np.float64).ravel(), np.asarray(loss, dtype=np.float64).ravel()
    if s.shape != loss.shape or s.size < 2:
        raise ValueError(f"statistic and loss must have one value per network (n >= 2), got {s.shape} and {loss.shape}")
    if not (np.isfinite(s).all() and np.isfinite(loss).all()):
        raise ValueError("statistic and loss must be finite (leave diverged networks out first)")
    return s, loss


def _pair2(pcs, loss):
    p, loss = np.asarray(pcs, dtype=np.float64), np.asarray(loss, dtype=np.float64).ravel()
    if p.ndim != 2 or len(p) != len(loss) or len(p) < 2:
        raise ValueError(f"pcs must be (n >= 2, d) with one loss per row, got {p.shape} and {loss.shape}")
    return p, loss
