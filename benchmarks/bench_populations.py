"""Population training and spectra per minute, every architecture (issue 10).

    python benchmarks/bench_populations.py [--device cuda] [--networks 200] [--steps 20]

SMNIST shape (the dissertation's Chapter 3): P networks, hidden 64, batch 128, 28 steps of 28
pixels, 10 classes; an epoch is 469 batches (60000 / 128) plus 79 evaluation batches of the
test set. CharRNN shape: hidden 512, batch 100 x 100 steps, 82 one-hot characters. Spectra:
15 sequences, 28 warm-up + 28 measured steps, full state (the SMNIST setting). Each time is
the median of ``--steps`` measured calls after warm-up calls, all measured in this one run;
the projection for 200 networks x 10 epochs with their 11 spectra (epochs 0-10) is
10 x (469 train + 79 eval batches) + 11 spectra. The peer reproduction
(NeuronalDynamics/Reproduced_Vogt_2024) trains one network at a time: about 87 s per 64-unit
GRU with its spectrum on an H100, i.e. 200 networks in 4.8 h. Saves JSON naming the device to
benchmarks/results/populations_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lyabook import rnn
from lyabook.population import Population, PopulationAdam, population_exponents
from lyabook.results import device_slug, provenance, resolve_device
from lyabook.train import _graphed, _loss, _use_graphs

PEER_S_PER_NETWORK = 87.0  # 64-unit GRU, 10 epochs and one spectrum, H100 (issue 10)
TRAIN_BATCHES, EVAL_BATCHES = 469, 79
ARCHITECTURES = {  # name: (cell class, keyword arguments): the dissertation's eight, RNN with both nonlinearities
    "RNN tanh": (rnn.RNN, {"bias": False}), "RNN relu": (rnn.RNN, {"bias": False, "nonlinearity": "relu"}),
    "LSTM": (rnn.LSTM, {"bias": False}), "GRU": (rnn.GRU, {"bias": False}), "ASRNN": (rnn.ASRNN, {}),
    "CoRNN": (rnn.CoRNN, {}), "LipschitzRNN": (rnn.LipschitzRNN, {}), "NoisyRNN": (rnn.NoisyRNN, {}), "LEM": (rnn.LEM, {}),
}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, dev, warm: int, steps: int) -> float:
    for _ in range(warm):
        fn()
    _sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name, P, hidden, inputs, targets, dev, steps, onehot=None):
    cls, kw = ARCHITECTURES[name]
    n_in = onehot or inputs.shape[-1]
    n_out = onehot or 10
    pop = Population(cls, P, n_in, hidden, n_out, init_p=torch.linspace(0.1, 1.0, P), dropout=0.1, seed=0, **kw).to(dev)
    opt = PopulationAdam(pop.parameters(), lr=1e-3)
    x = torch.nn.functional.one_hot(inputs, onehot).float() if onehot else inputs
    y = targets.unsqueeze(0).expand(P, *targets.shape)

    # the steps train_epoch and evaluate take: replayed CUDA graphs on a GPU, eager on a CPU
    use = _use_graphs(pop, None)
    graphed_train = _graphed(opt, pop, opt, "classification") if use else None
    graphed_eval = _graphed(pop, pop, None, "classification") if use else None

    def train_step():
        pop.train()
        if graphed_train is not None:
            return graphed_train(x, y)
        opt.zero_grad(set_to_none=True)
        out, _ = pop(x)
        _loss(out, y, "classification")[0].sum().backward()
        opt.step()

    def eval_step():
        with torch.no_grad():
            pop.eval()
            if graphed_eval is not None:
                graphed_eval(x, y)
            else:
                _loss(pop(x)[0], y, "classification")
            pop.train()

    t_train = _median_time(train_step, dev, 3, steps)
    t_eval = _median_time(eval_step, dev, 2, steps)
    return pop, t_train, t_eval


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--networks", type=int, default=200)
    ap.add_argument("--char-networks", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", nargs="*", default=None, help="architectures (default: all)")
    ap.add_argument("--skip-char", action="store_true")
    a = ap.parse_args(argv)
    dev = resolve_device(a.device)
    names = a.only or list(ARCHITECTURES)
    g = torch.Generator().manual_seed(0)
    smnist_x = torch.rand(128, 28, 28, generator=g).to(dev)
    smnist_y = torch.randint(0, 10, (128,), generator=g).to(dev)
    spec_in = torch.rand(15, 56, 28, generator=g).to(dev)
    rows = []
    for name in names:
        t_wall = time.perf_counter()
        pop, t_train, t_eval = measure(name, a.networks, 64, smnist_x, smnist_y, dev, a.steps)
        population_exponents(pop, spec_in[:2], warmup=28)  # warm-up (CUDA graph capture)
        _sync(dev)
        t0 = time.perf_counter()
        spec = population_exponents(pop, spec_in, warmup=28)
        _sync(dev)
        t_spec = time.perf_counter() - t0
        epoch = TRAIN_BATCHES * t_train + EVAL_BATCHES * t_eval
        projected = 10 * epoch + 11 * t_spec
        row = {"architecture": name, "networks": a.networks, "shape": "SMNIST (hidden 64, batch 128, 28 steps)",
               "train_step_s": t_train, "eval_step_s": t_eval, "epoch_s": epoch,
               "network_epochs_per_min": a.networks * 60 / epoch, "spectrum_s": t_spec,
               "spectra_per_min": a.networks * 60 / t_spec, "spectrum_method": spec.methods,
               "projected_10_epochs_11_spectra_s": projected,
               "speedup_vs_peer": PEER_S_PER_NETWORK * a.networks / projected,
               "measured_wall_s": time.perf_counter() - t_wall}
        rows.append(row)
        print(f"{name:13s} SMNIST: {row['network_epochs_per_min']:9.0f} network-epochs/min, {row['spectra_per_min']:8.0f} "
              f"spectra/min, {a.networks} nets x 10 epochs + 11 spectra: {projected:6.1f} s "
              f"({row['speedup_vs_peer']:.0f}x the peer)", flush=True)
        del pop
    if not a.skip_char:
        char_x = torch.randint(0, 82, (100, 100), generator=g).to(dev)
        char_y = torch.randint(0, 82, (100, 100), generator=g).to(dev)
        for name in names:
            _, t_train, t_eval = measure(name, a.char_networks, 512, char_x, char_y, dev, max(3, a.steps // 2), onehot=82)
            row = {"architecture": name, "networks": a.char_networks, "shape": "CharRNN (hidden 512, batch 100 x 100 steps)",
                   "train_step_s": t_train, "eval_step_s": t_eval,
                   "network_steps_per_s": a.char_networks / t_train}
            rows.append(row)
            print(f"{name:13s} CharRNN: {t_train * 1e3:7.1f} ms per step of {a.char_networks} networks "
                  f"({row['network_steps_per_s']:.0f} network-steps/s)", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    out = Path(__file__).parent / "results" / f"populations_{device_slug(dev)}.json"
    doc = {"provenance": {**provenance("bench", dev, None), "device": dev_name, "argv": a.__dict__},
           "peer_s_per_network": PEER_S_PER_NETWORK, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
