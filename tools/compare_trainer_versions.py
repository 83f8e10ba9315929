"""Evidence for notebook 03 (issue 10): does the population trainer (version 2) compute what
the committed version-1 records of notebook 03's CharRNN population say, for the networks whose
numbers do not depend on random draws (Fig. 2.6's six networks: no dropout, no biases, so the
same parameters, initialization and optimizer in both versions)?

Trains those six networks (networks 0-5 of the committed population: initialization depends only
on (seed, i)) for EPOCHS epochs with notebook 03's full-profile CharRNN settings and compares
every epoch's validation loss and spectra (full state and h-block) with the committed records.
Writes the comparison as JSON to the path given (default: stdout only).

    LYABOOK_DATA_DIR=... python tools/compare_trainer_versions.py [EPOCHS] [OUT.json]
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lyabook import data
from lyabook.results import load_results
from lyabook.train import PopulationLSTM, train_population

RUN = Path(__file__).resolve().parents[1] / "notebooks/results/03_training_evolution_runs/8b5cb414ccdb"
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
corpus = data.load_war_and_peace()
tx, ty = data.char_batches(corpus.train, 100, 100)
vx, vy = data.char_batches(corpus.valid, 100, 100)
spec_in = corpus.test[:1000].reshape(10, 100)
V = corpus.vocab_size
p = [0.04, 0.08, 0.12, 0.16, 0.2, 0.5]
model = PopulationLSTM(6, V, 512, V, init_p=p, dropout=0.0, bias=False, seed=0).to(dev)
t0 = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    recs = train_population(model, [(tx[i], ty[i]) for i in range(len(tx))], [(vx[i], vy[i]) for i in range(len(vx))],
                            epochs=epochs, lr=0.002, config={"check": "v2-vs-v1"}, out_dir=tmp,
                            encode=lambda ids: torch.nn.functional.one_hot(ids, V).float(), spectrum_inputs=spec_in,
                            spectrum_conventions=("full", "h_block"), progress=False)
rows = []
for e, rec in enumerate(recs):
    old = load_results(RUN / f"epoch_{e:03d}.json")["results"]
    row = {"epoch": e, "valid_loss_v2": rec["valid_loss"], "valid_loss_v1": old["valid_loss"][:6],
           "max_abs_valid_loss_diff": float(np.max(np.abs(np.array(rec["valid_loss"]) - np.array(old["valid_loss"][:6]))))}
    for key in ("exponents", "exponents_h_block"):
        a, b = np.asarray(rec[key], dtype=np.float64), np.asarray(old[key][:6], dtype=np.float64)
        row[f"max_abs_{key}_diff"] = float(np.max(np.abs(a - b)))
        row[f"max_abs_{key}_diff_top10"] = float(np.max(np.abs(a[:, :10] - b[:, :10])))
        row["lambda_max_v2"], row["lambda_max_v1"] = a.max(1).tolist(), b.max(1).tolist()
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k.startswith("max")}), flush=True)
doc = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
       "wall_s": time.perf_counter() - t0, "records_v1": str(RUN.name), "rows": rows}
if len(sys.argv) > 2:
    Path(sys.argv[2]).write_text(json.dumps(doc, indent=1))
