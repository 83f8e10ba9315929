"""One-off (run once, on commit after a8ae180; kept as the record of what changed in the committed records): give the committed run folders (made before run_settings joined the run identity)
their new names, adding run_settings and the new config_hash to every record's provenance.
Runs notebook 03's own code with the committed parameters, so the settings are exactly the ones
the records were computed under."""
import json, os, sys
from pathlib import Path
import lyabook.train as T
from lyabook import cli

real = T.train_population
moved = []

def patched(model, train_batches, valid_batches, *, epochs, lr, config, out_dir, task="classification", lr_decay=0.95,
            decay_after=10, spectrum_inputs=None, spectrum_warmup=0, spectrum_conventions=("full",), **kw):
    settings = T.run_settings(model, train_batches, valid_batches, spectrum_inputs, spectrum_warmup, spectrum_conventions, task)
    new = Path(out_dir) / T.run_hash(config, settings, lr_decay, decay_after)
    old = Path(out_dir) / T.config_hash({**config, "lr_decay": lr_decay, "decay_after": decay_after})
    if old.is_dir() and not new.exists():
        for f in sorted(old.glob("epoch_*.json")):
            doc = json.loads(f.read_text())
            assert doc["provenance"]["config_hash"] == old.name and "run_settings" not in doc["provenance"]
            doc["provenance"]["config_hash"] = new.name
            doc["provenance"]["run_settings"] = settings
            f.write_text(json.dumps(doc, indent=1))
        old.rename(new)
        moved.append((old.name, new.name))
    return real(model, train_batches, valid_batches, epochs=epochs, lr=lr, config=config, out_dir=out_dir, task=task,
                lr_decay=lr_decay, decay_after=decay_after, spectrum_inputs=spectrum_inputs, spectrum_warmup=spectrum_warmup,
                spectrum_conventions=spectrum_conventions, **kw)

T.train_population = patched
rc = cli.exec_notebook("notebooks/03_training_evolution.ipynb", "full", "cpu", "notebooks",
                       cli.parse_overrides(["sweep_networks=19", "fig26_epochs=13", "sweep_epochs=13", "mocap_epochs=60"]))
print("rc", rc, "moved", moved)
