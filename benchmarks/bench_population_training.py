"""Benchmark: one training batch of a population of CharRNN LSTMs (512 units, batch 100 x 100
characters, one-hot inputs, Adam), for populations of 6, 22 and 66 networks, on one device.

Prints milliseconds per batch (forward + backward + Adam), the implied time of one War and
Peace epoch (255 batches) and network-epochs per minute. Speed is measured here, never
asserted in tests.

Usage: python benchmarks/bench_population_training.py [--device cuda|cpu] [--populations 6 22 66] [--hidden 512]
"""
import argparse

import torch

from lyabook.reference import timed
from lyabook.train import PopulationAdam, PopulationLSTM, _loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--populations", type=int, nargs="+", default=[6, 22, 66])
    ap.add_argument("--hidden", type=int, default=512)
    a = ap.parse_args()
    dev = a.device
    for P in a.populations:
        m = PopulationLSTM(P, 82, a.hidden, 82, init_p=0.08, dropout=0.05).to(dev)
        opt = PopulationAdam(m.parameters(), lr=1e-3)
        x = torch.nn.functional.one_hot(torch.randint(0, 82, (100, 100), device=dev), 82).float().unsqueeze(0).expand(P, -1, -1, -1)
        y = torch.randint(0, 82, (100, 100), device=dev).unsqueeze(0).expand(P, -1, -1)

        def batches(n):
            for _ in range(n):
                opt.zero_grad(); out, _ = m(x); l, _ = _loss(out, y, "classification"); l.sum().backward(); opt.step()

        batches(1)  # warm-up
        dt = timed(lambda: batches(3), dev)[0] / 3
        with torch.no_grad():
            f = timed(lambda: m(x), dev)[0]
        print(f"P={P}: train batch {dt * 1e3:.0f} ms (epoch of 255 batches: {dt * 255:.0f} s, "
              f"{P / (dt * 255) * 60:.0f} network-epochs/min), forward alone {f * 1e3:.0f} ms", flush=True)
        del m, opt
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
