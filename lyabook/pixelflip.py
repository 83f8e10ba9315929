"""Pixel flipping by R values (dissertation Chapter 4: Algorithm 3, Table 4.1, Figs. 4.3-4.5, D3).

A tanh RNN reads a permuted MNIST image one pixel per step. The R values of the QR iteration
along its trajectory, ``J_t Q_{t-1} = Q_t R_t``, say how much the state space expands at step t;
the pixels shown at the steps of largest ``log r_t^1`` are flipped (Algorithm 3) and the loss
change is compared with flipping random pixels.

* `authors_permutation`: the authors' pixel order, ``numpy.random.RandomState(1234)``.
* `r_values`: ``log diag R`` per step, along the network's own trajectory (``"real"``) or along
  the authors' (``"authors"``: `ResetTrajectory`, spec section 12.2), after a warm-up of the
  frame over the first pixels.
* `pixel_scores`, `top_pixels`, `random_pixels`, `flip`: scores in image order, the pixels to
  flip, the random control (each image its own pixels, or the authors' one set for all) and
  Algorithm 3 itself.
* `losses`: per-image cross-entropy and logits of the final output; `flip_study`: all of it for
  several k and rankings in one batched pass.
* `authors_z_test`, `z_test_p`, `paired_test`, `holm`: Table 4.1's statistic as the authors
  computed it (a one-sided z-test on unpaired samples) and a paired test over images.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .data import check_permutation
from .lyapunov import _as_int, lyapunov_spectrum

__all__ = ["AUTHORS_PERMUTATION_SEED", "authors_permutation", "authors_init", "ResetTrajectory", "r_values", "pixel_scores",
           "top_pixels", "random_pixels", "flip", "losses", "flip_study", "authors_z_test", "z_test_p", "paired_test", "holm"]

AUTHORS_PERMUTATION_SEED = 1234  # FTG's rval_sens.py: RandomState(1234).permutation(784)
FLIP_THRESHOLD = 1e-3  # the authors' test for a dark pixel (Algorithm 3 says "= 0")


def authors_permutation(n_pixels: int = 784, seed: int = AUTHORS_PERMUTATION_SEED) -> torch.Tensor:
    """(n_pixels,) int64: step t shows pixel ``permutation[t]`` (row-major image index)."""
    n_pixels, seed = _as_int("n_pixels", n_pixels, 1), _as_int("seed", seed, 0)
    return torch.from_numpy(np.random.RandomState(seed).permutation(n_pixels)).long()


def authors_init(input_size: int, hidden_size: int):
    """The initialization of Chapter 4's networks in the authors' code, as a
    `lyabook.population.Population` ``init(name, shape, p, generator)`` for a one-layer
    `lyabook.rnn.RNN`: both weight matrices Xavier normal with gain p (pixel flipping, nnRNN's
    ``RNNCell``, spec section 12.1: 1; the gradient study, section 11.1: 0.005); with biases, the input layer's bias torch's ``nn.Linear``
    default U(-1/sqrt(I), 1/sqrt(I)) and the recurrent one 0 (their recurrent layer had none);
    the read-out torch's default, U(-1/sqrt(H), 1/sqrt(H)) for its weight and bias."""
    bounds = {"cell.module.bias_ih_l0": 1 / math.sqrt(input_size), "cell.module.bias_hh_l0": 0.0,
              "readout.weight": 1 / math.sqrt(hidden_size), "readout.bias": 1 / math.sqrt(hidden_size)}

    def init(name, shape, p, generator):
        if name in ("cell.module.weight_ih_l0", "cell.module.weight_hh_l0"):
            return torch.randn(shape, generator=generator) * p * math.sqrt(2.0 / (shape[0] + shape[1]))
        if name not in bounds:
            raise ValueError(f"authors_init is for a one-layer RNN with biases and a read-out, got parameter {name!r}")
        return (torch.rand(shape, generator=generator) * 2 - 1) * bounds[name]

    return init


def _rnn_weights(cell):
    """(W_ih, W_hh, b) of a one-layer tanh `lyabook.rnn.RNN` (b = 0 without biases)."""
    from .rnn import RNN

    if not isinstance(cell, RNN) or cell.num_layers != 1 or cell.nonlinearity != "tanh":
        raise TypeError(f"cell must be a one-layer tanh lyabook.rnn.RNN, got {cell!r}")
    w_ih, w_hh, b_ih, b_hh = cell._w(0)
    return w_ih, w_hh, (b_ih + b_hh) if cell.bias else torch.zeros_like(w_hh[:, 0])


class ResetTrajectory:
    """The map the authors' code took its R values from (spec section 12.2; `lyabook.pixelflip`'s
    ``trajectory="authors"``): the hidden state is not carried (each step restarts the cell from
    h = 0, so the state after step t is ``tanh(W_ih x_t + b)``), and the Jacobian at step t,
    evaluated at that state, uses sech where the derivative of tanh is sech^2:
    ``J_t = diag(sech(W_ih x_t + b + W_hh h)) W_hh``. ``transpose=True`` gives ``J_t^T`` (the
    code's warm-up iterated the transpose). ``cell``: a one-layer tanh `lyabook.rnn.RNN`."""

    def __init__(self, cell, transpose: bool = False):
        self.w_ih, self.w_hh, self.b = (t.detach() for t in _rnn_weights(cell))
        self.state_dim, self.transpose = cell.hidden_size, bool(transpose)

    def step(self, h, u):
        return torch.tanh(u @ self.w_ih.mT + self.b)

    def jacobian(self, h, u):
        sech = 1 / torch.cosh(u @ self.w_ih.mT + self.b + h @ self.w_hh.mT)
        J = sech.unsqueeze(-1) * self.w_hh
        return J.mT if self.transpose else J


def r_values(cell, inputs: torch.Tensor, *, warmup: int = 200, k: int | None = None,
             trajectory: str = "real") -> torch.Tensor:
    """``log diag R`` (T, B, k), natural log, of the QR iteration ``J_t Q_{t-1} = Q_t R_t`` along
    inputs (B, T, I) from h = 0: entry [t, b, i] is ``log r_t^{i+1}`` at the step that read
    ``inputs[b, t]``.

    The initial frame is warmed up over the first ``warmup`` steps (from h = 0, orthonormalized at
    every step); then the state restarts at h = 0 with that frame (the authors' protocol; the
    frame at t = 0 has no natural choice). ``k``: leading R values only (the first k equal those
    of the full frame). ``trajectory="real"``: the network's own trajectory and Jacobian;
    ``"authors"``: the code's (`ResetTrajectory`, warm-up with the transpose)."""
    if not torch.is_tensor(inputs) or inputs.ndim != 3:
        raise ValueError(f"inputs must be (B, T, I), got {getattr(inputs, 'shape', type(inputs).__name__)}")
    if trajectory == "real":
        system, warm = cell, cell
    elif trajectory == "authors":
        system, warm = ResetTrajectory(cell), ResetTrajectory(cell, transpose=True)
    else:
        raise ValueError(f"trajectory must be 'real' or 'authors', got {trajectory!r}")
    warmup = _as_int("warmup", warmup, 0)
    if warmup >= inputs.shape[1]:
        raise ValueError(f"warmup must be shorter than the sequence ({inputs.shape[1]} steps), got {warmup}")
    was = getattr(cell, "training", False)
    cell.eval()
    try:
        q0 = lyapunov_spectrum(warm, inputs=inputs[:, :warmup], k=k, keep="last").q_last if warmup else None
        return lyapunov_spectrum(system, inputs=inputs, k=k, keep="r", q0=q0).log_r
    finally:
        cell.train(was)


def pixel_scores(log_r: torch.Tensor, permutation: torch.Tensor, n: int = 1) -> torch.Tensor:
    """(B, P) score of every pixel in image order: the mean of the first ``n`` log R values at
    the step that showed it (``n = 1``: the dissertation's R_1). log_r (T, B, k) from
    `r_values`, permutation (T,) as in `authors_permutation`."""
    n = _as_int("n", n, 1)
    if not torch.is_tensor(log_r):
        raise TypeError(f"log_r must be a torch.Tensor (T, B, k) as r_values returns it, got {type(log_r).__name__}")
    if log_r.ndim != 3 or n > log_r.shape[2]:
        raise ValueError(f"log_r must be (T, B, k) with k >= n = {n}, got {tuple(log_r.shape)}")
    perm = torch.as_tensor(permutation)
    if perm.shape != (log_r.shape[0],):
        raise ValueError(f"permutation must have one entry per step ({log_r.shape[0]}), got {tuple(perm.shape)}")
    a = log_r[:, :, :n].mean(-1).T  # (B, T)
    scores = torch.empty_like(a)
    scores[:, perm] = a
    return scores


def top_pixels(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) the pixels of the k largest scores of each image."""
    k = _as_int("k", k, 1)
    return scores.topk(k, dim=1).indices


def random_pixels(n_samples: int, n_images: int, n_pixels: int, k: int, generator: torch.Generator, *,
                  same_for_all: bool = False) -> torch.Tensor:
    """(n_samples, n_images, k) random pixel sets without repeats: each image its own (the
    control the text describes), or with ``same_for_all`` one set per sample for every image
    (what the authors' code did, spec section 12.3)."""
    n_samples, n_images = _as_int("n_samples", n_samples, 1), _as_int("n_images", n_images, 1)
    n_pixels, k = _as_int("n_pixels", n_pixels, 1), _as_int("k", k, 1)
    if k > n_pixels:
        raise ValueError(f"k must be at most n_pixels = {n_pixels}, got {k}")
    rows = n_samples if same_for_all else n_samples * n_images
    idx = torch.rand(rows, n_pixels, generator=generator).argsort(1)[:, :k]
    if same_for_all:
        return idx.unsqueeze(1).expand(n_samples, n_images, k)
    return idx.view(n_samples, n_images, k)


def flip(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Algorithm 3: a copy of ``images`` (..., P) in [0, 1] with the given pixels (..., k)
    flipped: a dark pixel (below 0.001, the authors' test) to 1 ("up"), any other to 0 ("down")."""
    if not (torch.is_tensor(images) and images.is_floating_point()):
        raise TypeError(f"images must be a float tensor (..., P) in [0, 1], got {getattr(images, 'dtype', type(images).__name__)}")
    if not (torch.is_tensor(pixels) and pixels.dtype == torch.int64):
        raise TypeError(f"pixels must be an int64 tensor of pixel indices, got {getattr(pixels, 'dtype', type(pixels).__name__)}")
    if images.shape[:-1] != pixels.shape[:-1]:
        raise ValueError(f"pixels {tuple(pixels.shape)} must index images {tuple(images.shape)} (same leading shape)")
    if pixels.numel() and (int(pixels.min()) < 0 or int(pixels.max()) >= images.shape[-1]):
        raise ValueError(f"pixels must lie in [0, {images.shape[-1]}), got {int(pixels.min())}..{int(pixels.max())}")
    out = images.clone()
    chosen = out.gather(-1, pixels)
    return out.scatter(-1, pixels, (chosen < FLIP_THRESHOLD).to(out.dtype))


@torch.no_grad()
def losses(network, images: torch.Tensor, labels: torch.Tensor, permutation: torch.Tensor, *,
           batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-image cross-entropy (N,), logits (N, O)) of the final output of ``network`` (a
    `lyabook.population.Network`: cell and read-out) for images (N, P) in [0, 1] in image
    order, shown pixel by pixel in ``permutation``'s order; labels (N,)."""
    if images.ndim != 2 or labels.shape != images.shape[:1]:
        raise ValueError(f"images must be (N, P) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    perm = check_permutation(permutation, images.shape[1])
    batch = _as_int("batch", batch, 1)
    was = network.training
    network.eval()
    dev, dtype = network.readout.weight.device, network.readout.weight.dtype
    try:
        logits = torch.cat([network(images[i : i + batch][:, perm].unsqueeze(-1).to(dev, dtype))[0][:, -1]
                            for i in range(0, len(images), batch)])
    finally:
        network.train(was)
    loss = torch.nn.functional.cross_entropy(logits, labels.to(dev), reduction="none")
    return loss.cpu(), logits.cpu()


def flip_study(network, images: torch.Tensor, labels: torch.Tensor, permutation: torch.Tensor, scores: dict,
               ks, *, n_random: int = 50, seed: int = 0, batch: int = 1000) -> dict:
    """Algorithm 3 for every k in ``ks`` with each ranking in ``scores`` ({name: (B, P) pixel
    scores}), against two random controls of ``n_random`` samples: each image its own random
    pixels (``"random"``) and one set for all images (``"random_same"``, the authors' control),
    drawn from generators seeded by ``seed``. images (B, P) in [0, 1], image order.

    Returns {"base": {"loss": (B,), "logits": (B, O)}, name: {"loss": (K, B), "logits": (K, B, O)}
    for every ranking, "random" and "random_same": {"loss": (K, S, B), "logits": (K, S, B, O)}},
    numpy arrays; the loss change of a flip is its loss minus ``base``'s."""
    ks = [_as_int("ks", k, 1) for k in ks]
    n_random = _as_int("n_random", n_random, 1)
    B, P = images.shape
    gens = {name: torch.Generator().manual_seed(seed + i) for i, name in enumerate(("random", "random_same"))}
    pieces = {name: [] for name in (*scores, "random", "random_same")}
    for k in ks:
        for name, sc in scores.items():
            pieces[name].append(flip(images, top_pixels(sc, k)))
        for name, g in gens.items():
            pix = random_pixels(n_random, B, P, k, g, same_for_all=name == "random_same")
            pieces[name].append(flip(images.expand(n_random, B, P), pix))
    flat = torch.cat([images] + [t.reshape(-1, P) for name in pieces for t in pieces[name]])
    loss, logits = losses(network, flat, labels.repeat(len(flat) // B), permutation, batch=batch)
    out, at = {"base": {"loss": loss[:B].numpy(), "logits": logits[:B].numpy()}}, B
    for name in pieces:
        shape = (len(ks), B) if name in scores else (len(ks), n_random, B)
        n = math.prod(shape)
        out[name] = {"loss": loss[at : at + n].reshape(shape).numpy(),
                     "logits": logits[at : at + n].reshape(*shape, -1).numpy()}
        at += n
    return out


def authors_z_test(y_r, y_rand) -> dict:
    """Table 4.1 as the authors computed it (spec section 12.4): y_r (B,) loss changes of the
    R-value flips, y_rand (S, B) of the random flips; Delta = mean(y_r) - mean(y_rand), SE =
    sqrt(var(y_r) / B + var(y_rand) / (S B)) treating all S B random values as independent, p =
    Phi(-Delta / SE) (one-sided, normal approximation). The table's column "Variance" is this SE.
    Variances with ddof = 1 (the code's choice is not recoverable; it changes SE by < 4 % at B = 15)."""
    y_r, y_rand = np.asarray(y_r, dtype=float), np.asarray(y_rand, dtype=float).ravel()
    delta = y_r.mean() - y_rand.mean()
    se = math.sqrt(y_r.var(ddof=1) / y_r.size + y_rand.var(ddof=1) / y_rand.size)
    return {"delta": float(delta), "se": float(se), "p": z_test_p(delta, se)}


def z_test_p(delta: float, se: float) -> float:
    """One-sided p = Phi(-delta / se) (from a table's printed numbers, too)."""
    from scipy.stats import norm

    return float(norm.cdf(-delta / se))


def paired_test(y_r, y_rand) -> dict:
    """The test the design calls for: images are the units. d_i = y_r[i] - mean_s y_rand[s, i]
    (each image's R-value flip against its own random flips); one-sided paired t-test and
    Wilcoxon signed-rank test of d > 0 (`scipy.stats`). Returns the mean of d, its standard
    error and both p-values."""
    from scipy.stats import ttest_1samp, wilcoxon

    d = np.asarray(y_r, dtype=float) - np.asarray(y_rand, dtype=float).mean(0)
    return {"mean_difference": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(d.size)),
            "p_t": float(ttest_1samp(d, 0.0, alternative="greater").pvalue),
            "p_wilcoxon": float(wilcoxon(d, alternative="greater").pvalue)}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values for testing several k at once (family-wise error;
    hand-written: scipy offers only false-discovery-rate control)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (p.size - np.arange(p.size))))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out
