"""Claims of the population trainer (`lyabook.train`): records, resuming, divergence, shards.
That a population computes what each network computes alone is tests/test_population.py's."""
import pytest
import torch

from lyabook.train import PopulationLSTM


def _tiny_task(P=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (3, 4, 6), generator=g)  # 3 batches of 4 sequences of 6 symbols
    batches = [(x[i], x[i]) for i in range(3)]  # copy task: learnable in a few steps
    onehot = lambda v: torch.nn.functional.one_hot(v, 5).to(torch.float64)
    model = PopulationLSTM(P, 5, 6, 5, init_p=[0.1, 0.3][:P]).double()
    return model, batches, onehot


def test_train_population_records_every_epoch_and_resumes(tmp_path):
    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    cfg = {"task": "tiny", "epochs": 3}
    spec_in = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(lr=[0.01, 0.05], config=cfg, out_dir=tmp_path, encode=onehot, spectrum_inputs=spec_in, progress=False)
    full = train_population(model, batches[:2], batches[2:], epochs=3, **kw)
    assert [r["epoch"] for r in full] == [0, 1, 2, 3]
    assert full[0]["train_loss"] is None and len(full[3]["exponents"]) == 2 and len(full[3]["exponents"][0]) == 12
    assert full[3]["valid_loss"][0] < full[0]["valid_loss"][0]  # it learns
    # interrupted after epoch 1: a rerun resumes and ends with the same numbers
    model2, _, _ = _tiny_task()
    part = train_population(model2, batches[:2], batches[2:], epochs=1, **{**kw, "out_dir": tmp_path / "b"})
    assert len(part) == 2
    resumed = train_population(model2, batches[:2], batches[2:], epochs=3, **{**kw, "out_dir": tmp_path / "b"})
    for a, b in zip(resumed, full):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], abs=1e-12)
    # a finished run is loaded, not recomputed
    again = train_population(model2, batches[:2], batches[2:], epochs=3, **{**kw, "out_dir": tmp_path / "b"})
    assert [r["train_time_s"] for r in again] == [r["train_time_s"] for r in resumed]


def test_time_limit_stops_after_an_epoch_and_a_rerun_resumes_to_the_same_numbers(tmp_path):
    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny"}, encode=onehot, progress=False)
    full = train_population(model, batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "a", **kw)
    model2, _, _ = _tiny_task()
    stopped = train_population(model2, batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "b", time_limit_s=0, **kw)
    assert [r["epoch"] for r in stopped] == [0]  # the limit is checked after each epoch
    model3, _, _ = _tiny_task()  # a fresh process: only the files carry over
    resumed = train_population(model3, batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "b", **kw)
    assert len(resumed) == 4
    for a, b in zip(resumed, full):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], abs=1e-12)


def test_once_choleskyqr3_breaks_down_later_epochs_go_straight_to_householder(tmp_path, monkeypatch):
    from lyabook import lyapunov
    from lyabook.train import train_population

    calls = []
    real = lyapunov._cholesky_qr3

    def breaking(q):  # as on trained LSTMs with singular Jacobians: the check fails
        calls.append(1)
        Q, log_r, ok = real(q)
        return Q, log_r, torch.zeros_like(ok)

    monkeypatch.setitem(lyapunov.ORTHONORMALIZERS, "cholesky", breaking)  # the engine reaches it through the table
    model, batches, onehot = _tiny_task()
    spec_in = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny"}, encode=onehot, spectrum_inputs=spec_in, progress=False,
              spectrum_method="cholesky", out_dir=tmp_path)
    recs = train_population(model, batches[:2], batches[2:], epochs=1, **kw)
    assert calls and recs[0]["spectrum_method"] == ["householder"]  # epoch 0 tried CholeskyQR3, fell back
    n = len(calls)
    recs = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=3, **kw)  # resumed: remembers
    assert len(calls) == n and [r["spectrum_method"] for r in recs[2:]] == [["householder"]] * 2
    # the fall-back gives Householder's numbers
    ref = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1,
                           **{**kw, "spectrum_method": "householder", "out_dir": tmp_path / "hh"})
    torch.testing.assert_close(torch.as_tensor(recs[1]["exponents"]), torch.as_tensor(ref[1]["exponents"]), atol=1e-6, rtol=0)


def test_epoch_records_are_written_by_the_one_result_writer_with_the_code_version(tmp_path):
    import json

    import numpy as np

    from lyabook.results import load_results
    from lyabook.train import run_hash, run_settings, train_population

    model, batches, onehot = _tiny_task()
    spec_in = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    cfg = {"task": "tiny"}
    settings = run_settings(model, batches[:2], batches[2:], spec_in, 0, ("full",), "classification", onehot)
    recs = train_population(model, batches[:2], batches[2:], epochs=1, lr=[0.01, 0.05], config=cfg, out_dir=tmp_path,
                            encode=onehot, spectrum_inputs=spec_in, progress=False)
    run = tmp_path / run_hash(cfg, settings, 0.95, 10)
    assert sorted(p.name for p in run.iterdir()) == ["epoch_000.json", "epoch_000.npz", "epoch_001.json", "epoch_001.npz", "state.pt"]
    doc = json.loads((run / "epoch_001.json").read_text())
    assert doc["arrays"]["file"] == "epoch_001.npz" and doc["arrays"]["keys"] == ["exponents"] and doc["arrays"]["sha256"]
    prov = doc["provenance"]
    assert prov["config"] == cfg and prov["config_hash"] == run.name and prov["device"] == "cpu"
    assert prov["run_settings"] == settings
    assert {"lyabook", "git_commit", "source_sha256", "torch", "host", "date"} <= set(prov)
    back = load_results(run / "epoch_001.json")["results"]
    assert back["exponents"].dtype == np.float32 and np.array_equal(back["exponents"], recs[1]["exponents"])
    assert back["valid_loss"] == recs[1]["valid_loss"]


def test_records_in_the_layout_before_the_one_writer_still_load_and_resume(tmp_path):
    """The committed GPU records (notebooks/results/*_runs) hold "arrays": "epoch_NNN.npz" inside
    their results and no sha256; a run folder of such records is loaded and continued."""
    import json

    import numpy as np

    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    spec_in = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny"}, encode=onehot, spectrum_inputs=spec_in, progress=False)
    full = train_population(model, batches[:2], batches[2:], epochs=2, out_dir=tmp_path / "a", **kw)
    part = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, out_dir=tmp_path / "b", **kw)
    for f in (tmp_path / "b").glob("*/epoch_*.json"):  # rewrite them as the old writer did
        doc = json.loads(f.read_text())
        meta = doc.pop("arrays")
        doc["results"]["arrays"] = meta["file"]
        doc["provenance"] = {k: doc["provenance"][k] for k in ("config", "config_hash", "device", "torch")}
        f.write_text(json.dumps(doc, indent=1))
    resumed = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=2, out_dir=tmp_path / "b", **kw)
    for a, b in zip(resumed, part):
        assert np.array_equal(a["exponents"], b["exponents"]) and a["valid_loss"] == b["valid_loss"]
        assert "arrays" not in a
    assert resumed[2]["valid_loss"] == pytest.approx(full[2]["valid_loss"], abs=1e-12)


def _dropout_task():
    model, batches, onehot = _tiny_task()
    model = PopulationLSTM(2, 5, 6, 5, init_p=[0.1, 0.3], dropout=[0.3, 0.5]).double()
    return model, batches, onehot


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_a_resumed_run_with_dropout_is_bit_identical_to_an_uninterrupted_one(tmp_path, device):
    """The checkpoint holds the RNG state: dropout masks after a resume are the ones an
    uninterrupted run draws (without it validation losses differed by up to 8e-4). On CUDA the
    checkpoint loads onto the GPU, RNG states included (a resume once failed there)."""
    from lyabook.train import train_population

    spec_in = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model, batches, onehot = _dropout_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-dropout"}, encode=onehot, spectrum_inputs=spec_in, progress=False)
    full = train_population(model.to(device), batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "a", **kw)
    torch.manual_seed(0)
    model2, _, _ = _dropout_task()
    train_population(model2.to(device), batches[:2], batches[2:], epochs=1, out_dir=tmp_path / "b", **kw)
    torch.manual_seed(123)  # a new process: its own random state, which the checkpoint must override
    model3, _, _ = _dropout_task()
    model3 = model3.to(device)
    resumed = train_population(model3, batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "b", **kw)
    for a, b in zip(resumed, full):
        assert a["valid_loss"] == b["valid_loss"]
        assert (a["exponents"] == b["exponents"]).all()


def test_a_kill_between_an_epochs_record_and_its_checkpoint_redoes_that_epoch(tmp_path):
    """The record is written before state.pt; a kill in between leaves the checkpoint one epoch
    behind, and a rerun recomputes that epoch instead of failing forever."""
    import shutil

    from lyabook.train import train_population

    torch.manual_seed(0)
    model, batches, onehot = _dropout_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-kill"}, encode=onehot, progress=False)
    full = train_population(model, batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "a", **kw)
    torch.manual_seed(0)
    model2, _, _ = _dropout_task()
    train_population(model2, batches[:2], batches[2:], epochs=1, out_dir=tmp_path / "b", **kw)
    run = next((tmp_path / "b").iterdir())
    shutil.copy(run / "state.pt", tmp_path / "epoch1.pt")
    train_population(model2, batches[:2], batches[2:], epochs=2, out_dir=tmp_path / "b", **kw)
    shutil.copy(tmp_path / "epoch1.pt", run / "state.pt")  # as if killed after epoch 2's record
    model3, _, _ = _dropout_task()
    resumed = train_population(model3, batches[:2], batches[2:], epochs=3, out_dir=tmp_path / "b", **kw)
    assert [r["epoch"] for r in resumed] == [0, 1, 2, 3]
    for a, b in zip(resumed, full):
        assert a["valid_loss"] == b["valid_loss"]


def test_a_missing_or_crafted_checkpoint_is_one_clear_error_and_runs_no_code(tmp_path):
    import pickle

    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-ckpt"}, encode=onehot, progress=False, out_dir=tmp_path)
    train_population(model, batches[:2], batches[2:], epochs=1, **kw)
    run = next(tmp_path.iterdir())
    (run / "state.pt").unlink()  # a fresh clone: records committed, checkpoint not
    assert len(train_population(model, batches[:2], batches[2:], epochs=1, **kw)) == 2  # the records suffice
    with pytest.raises(RuntimeError, match=r"state\.pt .* is missing.*at most 1 epochs"):
        train_population(model, batches[:2], batches[2:], epochs=2, **kw)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run / "state.pt").write_bytes(pickle.dumps({"epoch": 1, "model": Payload()}))
    with pytest.raises(RuntimeError, match="loads as data"):
        train_population(model, batches[:2], batches[2:], epochs=2, **kw)
    assert not marker.exists()


def test_a_diverged_network_is_marked_and_left_out_and_the_others_go_on(tmp_path):
    """One network with non-finite weights (a learning rate of 1 can do it) no longer stops the
    epoch with FloatingPointError: it is marked diverged, its spectrum is NaN, and the other
    networks' records equal those of a run without it."""
    import math

    from lyabook.train import train_population

    spec_in = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    model, batches, onehot = _tiny_task(P=2)
    with torch.no_grad():
        model.cell_params.module__weight_hh_l0[1, 0, 0] = float("nan")
    kw = dict(config={"task": "tiny-diverge"}, encode=onehot, spectrum_inputs=spec_in, progress=False)
    recs = train_population(model, batches[:2], batches[2:], epochs=2, lr=[0.01, 0.05], out_dir=tmp_path / "a", **kw)
    alone, _, _ = _tiny_task(P=1)
    solo = train_population(alone, batches[:2], batches[2:], epochs=2, lr=[0.01], out_dir=tmp_path / "b", **kw)
    for r, s in zip(recs, solo):
        assert r["diverged"] == [1] and s["diverged"] == []
        assert math.isnan(r["valid_loss"][1]) and r["valid_loss"][0] == pytest.approx(s["valid_loss"][0], abs=1e-12)
        assert all(math.isnan(v) for v in r["exponents"][1])
        assert r["exponents"][0] == pytest.approx(s["exponents"][0], abs=1e-6)  # float32 records


def test_runs_split_the_finite_networks_into_bounded_parts():
    from lyabook.population import _runs

    assert _runs([True, True, False, True, True, True], 2) == [(0, 2), (3, 5), (5, 6)]
    assert _runs([False, False], 3) == []


def test_a_changed_setting_never_reuses_records_made_under_another(tmp_path):
    """Spectrum inputs, data, batches, sizes and seed are part of the run's identity (they were
    not: notebook 03 with other spectrum_steps or char_max_chars returned the first run's numbers)."""
    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    spec = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-identity"}, encode=onehot, out_dir=tmp_path, progress=False)
    first = train_population(model, batches[:2], batches[2:], epochs=1, spectrum_inputs=spec, **kw)
    variants = [
        dict(train_batches=batches[:2], valid_batches=batches[2:], spectrum_inputs=spec[:, :6]),   # spectrum steps
        dict(train_batches=batches[:1], valid_batches=batches[2:], spectrum_inputs=spec),          # training data
        dict(train_batches=batches[:2], valid_batches=batches[1:2], spectrum_inputs=spec),         # validation data
    ]
    for i, v in enumerate(variants):
        m, _, _ = _tiny_task()
        recs = train_population(m, epochs=1, **v, **kw)
        assert len(list(tmp_path.iterdir())) == i + 2, "a new run folder for every changed setting"
        assert recs[1]["train_time_s"] != first[1]["train_time_s"]  # computed, not reloaded
    other_seed = PopulationLSTM(2, 5, 6, 5, init_p=[0.1, 0.3], seed=1).double()
    train_population(other_seed, batches[:2], batches[2:], epochs=1, spectrum_inputs=spec, **kw)
    assert len(list(tmp_path.iterdir())) == len(variants) + 2
    again = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, spectrum_inputs=spec, **kw)
    assert [r["train_time_s"] for r in again] == [r["train_time_s"] for r in first]  # the same settings: reloaded


@pytest.mark.parametrize("per_network", [False, True])
def test_shards_merge_into_exactly_the_unsharded_run(tmp_path, per_network):
    """Three shards of a population of five (dropout on, per-network data subsets or not) give
    records that merge into the unsharded run's: losses, accuracies and spectra equal."""
    from lyabook import data
    from lyabook.train import train_population

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (4, 3, 6), generator=g)
    onehot = lambda v: torch.nn.functional.one_hot(v, 5).to(torch.float64)
    train = data.NetworkBatches(x, x, 5, 0.5, seed=2) if per_network else [(x[i], x[i]) for i in range(3)]
    valid = [(x[3], x[3])]
    spec = torch.randint(0, 5, (2, 8), generator=g)

    def model():
        return PopulationLSTM(5, 5, 4, 5, init_p=[0.1, 0.2, 0.3, 0.4, 0.5], dropout=[0, 0.2, 0.1, 0, 0.3], seed=3).double()

    kw = dict(epochs=2, lr=[0.01, 0.02, 0.03, 0.04, 0.05], config={"task": "shards"}, encode=onehot,
              spectrum_inputs=spec, spectrum_conventions=("full", "h_block"), progress=False)
    whole = train_population(model(), train, valid, out_dir=tmp_path / "whole", **kw)
    for i in (2, 0, 1):  # any order: the merge waits for every shard
        part = train_population(model(), train, valid, out_dir=tmp_path / "sharded", shard=(i, 3), **kw)
        assert len(part[0]["valid_loss"]) == len(range(5)[[0, 2, 4, 5][i]:[0, 2, 4, 5][i + 1]])
    run = next(p for p in (tmp_path / "sharded").iterdir())
    assert run.name == next((tmp_path / "whole").iterdir()).name  # the shards share the population's identity
    from lyabook.results import load_results

    shards = load_results(run / "epoch_002.json", arrays=False)["provenance"]["shards"]  # each part's own code and device
    assert [(s["index"], s["of"]) for s in shards] == [(0, 3), (1, 3), (2, 3)]
    assert all(s["source_sha256"] and s["device"] == "cpu" and s["date"] for s in shards)
    merged = train_population(model(), train, valid, out_dir=tmp_path / "sharded", **kw)  # finds the merged records
    for a, b in zip(merged, whole):
        for key in ("train_loss", "valid_loss", "valid_accuracy", "diverged"):
            assert a[key] == b[key], key
        for key in ("exponents", "exponents_h_block"):
            assert (a[key] == b[key]).all(), key


def test_a_shard_trained_in_parts_merges_into_the_shard_and_the_run(tmp_path):
    """Shard 1 of 2 of a population of five trained as two parts (a shard too long for one GPU
    session): the parts merge into shard 1's records, those with shard 0's into the run's, equal
    to the unsharded run's; the merged provenance keeps each part's own code and place."""
    from lyabook.results import load_results
    from lyabook.train import device_seconds, train_population

    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (3, 3, 6), generator=g)
    onehot = lambda v: torch.nn.functional.one_hot(v, 5).to(torch.float64)
    train, valid, spec = [(x[i], x[i]) for i in range(2)], [(x[2], x[2])], torch.randint(0, 5, (2, 8), generator=g)

    def model():
        return PopulationLSTM(5, 5, 4, 5, init_p=[0.1, 0.2, 0.3, 0.4, 0.5], dropout=[0, 0.2, 0.1, 0, 0.3], seed=3).double()

    kw = dict(epochs=2, lr=[0.01, 0.02, 0.03, 0.04, 0.05], config={"task": "parts"}, encode=onehot,
              spectrum_inputs=spec, progress=False)
    whole = train_population(model(), train, valid, out_dir=tmp_path / "whole", **kw)
    for shard in (((1, 2), (1, 2)), (0, 2), ((1, 2), (0, 2))):  # shard 1 = networks 3-4, in parts 3 and 4
        part = train_population(model(), train, valid, out_dir=tmp_path / "parts", shard=shard, **kw)
        assert len(part[0]["valid_loss"]) == (3 if shard == (0, 2) else 1)
    run = next((tmp_path / "parts").iterdir())
    assert sorted(p.name for p in (run / "shard-1-of-2").iterdir() if p.is_dir()) == ["shard-0-of-2", "shard-1-of-2"]
    one = load_results(run / "shard-1-of-2" / "epoch_002.json", arrays=False)["provenance"]
    assert one["shard"] == {"index": 1, "of": 2, "networks": [3, 5]}
    shards = load_results(run / "epoch_002.json", arrays=False)["provenance"]["shards"]
    assert [(s["index"], s["of"], s["networks"]) for s in shards] == [(0, 2, [0, 3]), (1, 2, [3, 5])]
    assert [(p["index"], p["of"], p["networks"], p["within"]) for p in shards[1]["parts"]] == \
        [(0, 2, [3, 4], [[1, 2]]), (1, 2, [4, 5], [[1, 2]])]
    assert all(p["source_sha256"] and p["device"] == "cpu" for p in shards[1]["parts"])
    merged = train_population(model(), train, valid, out_dir=tmp_path / "parts", **kw)
    for a, b in zip(merged, whole):
        for key in ("train_loss", "valid_loss", "valid_accuracy", "diverged"):
            assert a[key] == b[key], key
        assert (a["exponents"] == b["exponents"]).all()
    # times: the slowest shard's, and summed over shard 0 and both parts of shard 1 (device-seconds)
    for e, rec in enumerate(merged):
        leaves = [load_results(d / f"epoch_{e:03d}.json", arrays=False)["results"]
                  for d in (run / "shard-0-of-2", run / "shard-1-of-2" / "shard-0-of-2", run / "shard-1-of-2" / "shard-1-of-2")]
        one = load_results(run / "shard-1-of-2" / f"epoch_{e:03d}.json", arrays=False)["results"]
        for key in ("train_time_s", "spectrum_time_s"):
            assert rec["summed_" + key] == pytest.approx(sum(r[key] for r in leaves)), (e, key)
            assert one["summed_" + key] == pytest.approx(leaves[1][key] + leaves[2][key]), (e, key)
            assert rec[key] == max(leaves[0][key], one[key]), (e, key)
            assert rec["summed_" + key] > rec[key] > 0 or e == 0 and key == "train_time_s", (e, key)
            assert device_seconds(rec, key) == rec["summed_" + key] and device_seconds(leaves[0], key) == leaves[0][key]


def test_shards_do_not_extend_records_that_another_run_made(tmp_path):
    """An unsharded run's records (epochs 0-1 of 3) and shards started after it: each shard
    refuses before training, naming the folder (the merge once kept the old run's epochs and
    appended the shards' after them); with those records deleted the shards train and merge;
    once the run is complete, shards are no-ops."""
    from lyabook.train import check_run, train_population

    model, batches, onehot = _tiny_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-extend"}, encode=onehot, out_dir=tmp_path, progress=False)
    train_population(model, batches[:2], batches[2:], epochs=1, **kw)
    run = next(tmp_path.iterdir())
    for call in (check_run, train_population):
        with pytest.raises(RuntimeError, match=r"epochs 0-1 were made unsharded, and 2 shards would append epochs 2-3"):
            call(_tiny_task()[0], batches[:2], batches[2:], epochs=3, shard=(0, 2), **kw)
    assert not (run / "shard-0-of-2").exists()  # refused before any work
    for f in run.glob("epoch_*"):
        f.unlink()
    for i in (0, 1):
        train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=3, shard=(i, 2), **kw)
    assert len(list(run.glob("epoch_*.json"))) == 4
    assert check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=3, shard=(0, 2), **kw) == 4
    assert check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=3, shard=(0, 3), **kw) == 0  # complete: no-op


def test_check_run_says_before_any_work_that_a_run_cannot_continue(tmp_path):
    """A caller with several populations checks them all first: records without their checkpoint
    (a fresh clone) are one clear error before the first population trains."""
    from lyabook.train import check_run, train_population

    model, batches, onehot = _tiny_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-check"}, encode=onehot, out_dir=tmp_path)
    assert check_run(model, batches[:2], batches[2:], epochs=2, **kw) == 0
    train_population(model, batches[:2], batches[2:], epochs=1, progress=False, **kw)
    assert check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=1, **kw) == 2
    next(tmp_path.iterdir()).joinpath("state.pt").unlink()
    with pytest.raises(RuntimeError, match=r"state\.pt .* is missing.*at most 1 epochs"):
        check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=3, **kw)


def test_the_population_dtype_and_the_encoding_are_part_of_a_runs_identity(tmp_path):
    """A float64 run and a float32 run of the same networks, or two encodings of the same data,
    live in different folders (the float32 run once loaded the float64 run's records)."""
    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    kw = dict(lr=[0.01, 0.05], config={"task": "tiny-dtype"}, out_dir=tmp_path, progress=False)
    train_population(model, batches[:2], batches[2:], epochs=0, encode=onehot, **kw)
    train_population(_tiny_task()[0].float(), batches[:2], batches[2:], epochs=0,
                     encode=lambda v: torch.nn.functional.one_hot(v, 5).float(), **kw)
    train_population(model, batches[:2], batches[2:], epochs=0, encode=lambda v: 2 * onehot(v), **kw)
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize("bad, match", [
    (dict(epochs=-1), "epochs"), (dict(epochs=True), "epochs"), (dict(lr_decay=float("nan")), "lr_decay"),
    (dict(config=None), "config"), (dict(task="ranking"), "task"), (dict(train=[]), "train_batches is empty"),
    (dict(labels=7), r"class indices must lie in \[0, 5\)"), (dict(lr=-0.1), "lr"),
])
def test_bad_training_arguments_are_named_before_any_work(tmp_path, bad, match):
    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    train = bad.pop("train", batches[:2])
    if "labels" in bad:
        label = bad.pop("labels")
        train = [(x, torch.full_like(y, label)) for x, y in train]
    kw = dict(epochs=1, lr=[0.01, 0.05], config={"task": "bad"}, out_dir=tmp_path, encode=onehot, progress=False)
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        train_population(model, train, batches[2:], **kw)
    assert not any(tmp_path.rglob("epoch_*.json"))


def test_adagrad_and_spectra_of_chosen_epochs_are_part_of_the_run(tmp_path):
    from lyabook.population import PopulationAdagrad
    from lyabook.train import train_population

    model, batches, onehot = _tiny_task()
    spec = torch.randint(0, 5, (2, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(lr=[0.1, 0.5], config={"task": "tiny-adagrad"}, encode=onehot, out_dir=tmp_path, progress=False,
              spectrum_inputs=spec)
    recs = train_population(model, batches[:2], batches[2:], epochs=3, optimizer=PopulationAdagrad, spectrum_epochs=[3], **kw)
    assert ["exponents" in r for r in recs] == [False, False, False, True]
    assert recs[3]["valid_loss"][0] < recs[0]["valid_loss"][0]  # Adagrad learns the copy task
    other = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, **kw)  # Adam, every epoch's spectra
    assert len(list(tmp_path.iterdir())) == 2 and "exponents" in other[0]
    with pytest.raises(TypeError, match="optimizer"):
        train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, optimizer=torch.optim.SGD, **kw)


def test_restore_loads_the_weights_a_finished_run_ended_with(tmp_path):
    from lyabook.population import PopulationSGD
    from lyabook.train import restore, train_population

    model, batches, onehot = _tiny_task()
    kw = dict(lr=[0.5, 0.5], config={"task": "tiny-restore"}, encode=onehot, out_dir=tmp_path, optimizer=PopulationSGD)
    train_population(model, batches[:2], batches[2:], epochs=2, progress=False, **kw)
    fresh = _tiny_task()[0]
    assert not torch.equal(fresh.weight_out, model.weight_out)
    again = train_population(fresh, batches[:2], batches[2:], epochs=2, progress=False, **kw)  # records only
    assert len(again) == 3 and not torch.equal(fresh.weight_out, model.weight_out)
    restore(fresh, batches[:2], batches[2:], epochs=2, **{k: v for k, v in kw.items() if k != "lr"})
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_pt_restores_a_finished_run_without_its_checkpoint(tmp_path):
    """A fresh clone has the records and weights.pt (committed) but no state.pt."""
    from lyabook.population import PopulationRMSprop
    from lyabook.train import restore, train_population

    model, batches, onehot = _tiny_task()
    kw = dict(config={"task": "tiny-weights"}, encode=onehot, out_dir=tmp_path, optimizer=PopulationRMSprop)
    train_population(model, batches[:2], batches[2:], epochs=2, lr=[0.01, 0.02], progress=False, save_weights=True, **kw)
    run = next(tmp_path.iterdir())
    (run / "state.pt").unlink()
    assert (run / "weights.pt").stat().st_size < 100_000
    fresh = _tiny_task()[0]
    restore(fresh, batches[:2], batches[2:], epochs=2, **kw)
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="weights.pt: weights of epoch 2, but the records end at epoch 1"):
        restore(fresh, batches[:2], batches[2:], epochs=1, **kw)
    (run / "weights.pt").write_bytes(b"not a pickle")
    with pytest.raises(RuntimeError, match="weights.pt: not a lyabook weights file"):
        restore(fresh, batches[:2], batches[2:], epochs=2, **kw)
    (run / "weights.pt").unlink()
    with pytest.raises(RuntimeError, match="neither state.pt nor weights.pt"):
        restore(fresh, batches[:2], batches[2:], epochs=2, **kw)


def test_records_made_where_floats_round_differently_are_found(tmp_path):
    """A run's folder is a hash of its settings' exact digits, and a log-uniform draw rounds its
    last bit differently on CPUs with and without AVX-512 (notebook 03's learning rates and
    dropouts): settings equal to 1e-12 relative find the records made elsewhere, with a warning,
    for a whole run and for the shards of one; a real difference (1e-9) starts a run of its own."""
    import math
    import warnings

    from lyabook.train import check_run, train_population

    model, batches, onehot = _tiny_task()
    lr = 0.1 / 3
    kw = dict(lr=[0.01, 0.05], encode=onehot, progress=False)
    made = train_population(model, batches[:2], batches[2:], epochs=1, config={"drawn": [lr, 0.2]}, out_dir=tmp_path / "a",
                            **kw)
    other_cpu = {"drawn": [math.nextafter(lr, 1.0), 0.2]}
    with pytest.warns(UserWarning, match=r"using the records in .*: made with these settings, their floats differing"):
        assert check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=1, config=other_cpu, out_dir=tmp_path / "a",
                         encode=onehot) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per folder
        again = train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, config=other_cpu,
                                 out_dir=tmp_path / "a", **kw)
    assert [r["valid_loss"] for r in again] == [r["valid_loss"] for r in made]
    assert len(list((tmp_path / "a").iterdir())) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no near match: silent, and a folder of its own
        assert check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=1, config={"drawn": [lr * (1 + 1e-9), 0.2]},
                         out_dir=tmp_path / "a", encode=onehot) == 0
        assert check_run(_tiny_task()[0], batches[:2], batches[2:], epochs=1, config={"drawn": [lr, 0.2, 1]},
                         out_dir=tmp_path / "a", encode=onehot) == 0
    # shard 0 made on one machine, shard 1 on the other: shard 1 joins shard 0's run, which merges
    train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, config={"drawn": [lr, 0.2]},
                     out_dir=tmp_path / "b", shard=(0, 2), **kw)
    with pytest.warns(UserWarning, match="using the records in"):
        train_population(_tiny_task()[0], batches[:2], batches[2:], epochs=1, config=other_cpu, out_dir=tmp_path / "b",
                         shard=(1, 2), **kw)
    (run,) = (tmp_path / "b").iterdir()
    assert len(list(run.glob("epoch_*.json"))) == 2


def test_close_compares_floats_to_the_last_digits_and_the_rest_exactly():
    from lyabook.train import _close

    assert _close({"a": [1.0, "x", 2]}, {"a": [1.0 + 2e-16, "x", 2]})
    assert not _close({"a": [1.0]}, {"a": [1.0 + 1e-9]})
    assert not _close({"a": 1}, {"b": 1}) and not _close([1.0], [1.0, 2.0])
    assert not _close(True, 1.0) and not _close("1.0", 1.0) and not _close(None, 0.0)
    assert _close(1, 1.0)  # a JSON number: 1 and 1.0 are the same setting
