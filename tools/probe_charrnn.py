"""Time the charrnn sweep's parts on one GPU before committing a 4-GPU hold to it (2026-11-27).

For the 256- and 512-unit jobs: one training epoch of an eighth of the networks (the sweep's
own code path), then the epoch's spectra on a fifth of the sequence length (15 sequences x 40
steps: 20 warm-up, 20 measured) with each orthonormalizer and convention, and the full-state
spectrum's first ``hidden`` exponents (k = hidden). Also where the blocked Householder's time goes
at 250 x 1024. Writes $OUT/probe_charrnn.json; prints one line per measurement.

    python tools/probe_charrnn.py charrnn-256 charrnn-512 [--householder-only]

``--householder-only``: only the engine's default (Householder QR) for all exponents, no QR profile.
"""
import json
import os
import sys
import time

import torch

from lyabook import sweeps
from lyabook.lyapunov import _householder_blocked, _cholesky_qr3
from lyabook.population import PopulationAdam, population_exponents, shard_range
from lyabook.train import train_epoch

dev = torch.device("cuda")
out = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "jobs": {}}


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return r, time.perf_counter() - t0


only_householder = "--householder-only" in sys.argv
for job in sweeps.jobs("charrnn", "full", os.environ.get("LYABOOK_DATA_DIR"), dev):
    if job.name not in sys.argv[1:]:
        continue
    pop, train, valid, kw = job.build()
    ids = shard_range(pop.n_networks, (0, 8 if pop.n_networks >= 8 else 1))
    sub, tr = pop.subset(ids), train.select(ids)
    opt = PopulationAdam(sub.parameters(), lr=[0.002] * sub.n_networks)
    _, t_train = timed(lambda: train_epoch(sub, opt, tr, "classification", kw["encode"]))
    rec = {"networks_timed": sub.n_networks, "of": pop.n_networks, "train_epoch_s": t_train}
    print(job.name, "train epoch", sub.n_networks, "networks", round(t_train, 1), "s", flush=True)
    x = kw["encode"](kw["spectrum_inputs"][:, :40].to(dev))
    h = pop.hidden_size if hasattr(pop, "hidden_size") else None
    for conv in ("h_block", "full"):
        for method in ("householder",) if only_householder else ("cholesky", "householder"):
            for k in ((None, h) if conv == "full" and h and not only_householder else (None,)):
                try:
                    spec, t = timed(lambda: population_exponents(sub, x, warmup=20, convention=conv, method=method, k=k))
                    key = f"{conv}_{method}_k{k or 'all'}"
                    rec[key] = {"s": t, "methods": sorted(set(spec.methods)),
                                "nan_rows": int(torch.isnan(spec.exponents).any(1).sum())}
                    print(job.name, key, round(t, 2), "s", rec[key], flush=True)
                except Exception as e:
                    print(job.name, conv, method, k, "failed:", repr(e)[:300], flush=True)
    out["jobs"][job.name] = rec
    del pop, sub, opt
    torch.cuda.empty_cache()

os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "probe_charrnn.json"), "w"), indent=1)
if only_householder:
    sys.exit(0)
# where the blocked Householder's time goes: 250 frames of 1024 x 1024
q = torch.randn(250, 1024, 1024, dtype=torch.float64, device=dev)
_, t_mm = timed(lambda: q @ q)
_householder_blocked(q)
_, t_hb = timed(lambda: _householder_blocked(q))
_cholesky_qr3(q)
_, t_cq = timed(lambda: _cholesky_qr3(q))
out["qr_250x1024"] = {"matmul_s": t_mm, "householder_blocked_eager_s": t_hb, "cholesky_qr3_eager_s": t_cq}
print("250x1024", out["qr_250x1024"], flush=True)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    _householder_blocked(q)
    torch.cuda.synchronize()
table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60)
print(table)
out["householder_blocked_profile"] = table
os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "probe_charrnn.json"), "w"), indent=1)
