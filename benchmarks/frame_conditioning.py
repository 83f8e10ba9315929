"""Diagnostic: can CholeskyQR3 orthonormalize the frames of a trained LSTM's full-state spectrum?

Trains one CMU-mocap LSTM (256 units, bias, Adam at lr 0.05, the chapter-3 setting) for a few
epochs per initialization half-width p, then follows the QR algorithm over 100 steps of a
held-out recording and reports, per step, the condition number of the frame ``J Q`` that must
be orthonormalized and whether shifted CholeskyQR3 (the engine's GPU method) passes its
orthogonality check, for the full (h, c) state and for the dissertation's h-block. Householder QR
carries the frame from step to step. An untrained CharRNN LSTM (512 units, p = 0.08) is the
comparison.

Shifted CholeskyQR3 applies while cond(J Q) stays below about 1/u (1e16). Where it does not,
the engine falls back to Householder QR, which is what costs time on a GPU.

Usage: LYABOOK_DATA_DIR=... python benchmarks/frame_conditioning.py [--epochs 6] [--p 0.5 0.1]
Writes benchmarks/results/frame_conditioning_cpu.json. Takes about two minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

import lyabook
from lyabook import data
from lyabook.lyapunov import _cholesky_qr3, _householder
from lyabook.train import PopulationLSTM, train_population


def scan(model, u: torch.Tensor, convention: str = "full") -> dict:
    """Follow the QR algorithm (float64 frame, Householder) along inputs u (B, T, I) of a
    one-network population; per step record cond(J Q) of batch entry 0 and CholeskyQR3's verdict.
    ``convention``: "full" (h, c) state or the dissertation's "h_block"."""
    from lyabook import rnn

    net = model.network(0).cell  # the population's one network as a standalone LSTM, in the convention asked for
    cell = rnn.LSTM(net.input_size, net.hidden_size, bias=net.bias, convention=convention)
    cell.load_state_dict(net.state_dict())
    cell.eval()
    B, T = u.shape[0], u.shape[1]
    d = cell.tangent_dim
    x = torch.zeros(B, 2 * model.hidden_size)
    Q = torch.eye(d, dtype=torch.float64).expand(B, d, d).contiguous()
    conds, ok = [], []
    with torch.no_grad():
        for t in range(T):
            x, J = cell.step_and_jacobian(x, u[:, t].float())
            X = J.double() @ Q
            s = torch.linalg.svdvals(X[0])
            conds.append(float(s[0] / s[-1]))
            ok.append(bool(_cholesky_qr3(X)[2]))
            Q = _householder(X)[0]
    return {"convention": convention, "cond_median": float(np.median(conds)), "cond_max": float(np.max(conds)),
            "cholesky_qr3_ok_steps": int(sum(ok)), "steps": T}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--p", type=float, nargs="+", default=[0.5, 0.1])
    a = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    V = 82
    char = PopulationLSTM(1, V, 512, V, init_p=0.08)
    u = torch.nn.functional.one_hot(torch.randint(0, V, (2, 40)), V).float()
    rows.append({"network": "CharRNN LSTM 512, p = 0.08, untrained", **scan(char, u)})
    mocap = data.load_cmu_mocap()
    (mx, my), (vx, vy) = data.mocap_windows(mocap["train"] + mocap["test"], history=25, seed=0)
    tr = [(mx[i:i + 250], my[i:i + 250]) for i in range(0, len(mx), 250)]
    va = [(vx[i:i + 250], vy[i:i + 250]) for i in range(0, len(vx), 250)]
    rec = np.concatenate(mocap["test"])
    u = torch.from_numpy(rec[:200].reshape(2, 100, -1)).float()
    with tempfile.TemporaryDirectory() as tmp:
        for p in a.p:
            m = PopulationLSTM(1, mx.shape[-1], 256, my.shape[-1], init_p=p, bias=True, seed=2)
            train_population(m, tr, va, epochs=a.epochs, lr=0.05, task="regression", config={"p": p}, out_dir=tmp, progress=False)
            for conv in ("full", "h_block"):
                rows.append({"network": f"mocap LSTM 256, p = {p}, {a.epochs} epochs", **scan(m, u, conv)})
    for r in rows:
        print(f"{r['network']} ({r['convention']}): cond(JQ) median {r['cond_median']:.1e}, max {r['cond_max']:.1e}; "
              f"CholeskyQR3 passes on {r['cholesky_qr3_ok_steps']} of {r['steps']} steps")
    out = Path(__file__).parent / "results" / "frame_conditioning_cpu.json"
    out.write_text(json.dumps({"rows": rows, "lyabook": lyabook.__version__, "torch": torch.__version__,
                               "machine": platform.processor() or platform.machine()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
