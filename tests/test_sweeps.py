"""Sweeps split into shards whose records merge into the unsharded run's (CPU, tiny profile)."""
import json

import numpy as np
import pytest
import torch

from lyabook import cli, sweeps


def _records(root):
    out = {}
    for f in sorted(root.glob("*/*/epoch_*.json")):
        doc = json.loads(f.read_text())
        out[(f.parent.parent.name, f.name)] = {k: doc["results"][k] for k in ("valid_loss", "train_loss", "valid_accuracy")}
    return out


def test_plan_gives_whole_jobs_or_equal_parts_and_covers_everything_once():
    jobs = [sweeps.Job(f"j{k}", 10, build=lambda: None) for k in range(8)]
    for n in (1, 3, 4, 8, 16):
        units = [(j.name, part) for i in range(n) for j, part in sweeps.plan(jobs, (i, n))]
        assert len(units) == len(set(units))
        if n <= 8:
            assert sorted(u[0] for u in units) == sorted(j.name for j in jobs) and all(p is None for _, p in units)
        else:
            assert len(units) == 8 * (n // 8)
    assert sweeps.parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            sweeps.parse_shard(bad)


def test_sharded_sweep_merges_into_the_unsharded_records(tmp_path, fake_mnist, capsys):
    args = ["--profile", "smoke", "--device", "cpu", "--quiet"]
    assert cli.main(["sweep", "smnist", "--out", str(tmp_path / "whole"), *args]) == 0
    for i in (3, 0, 15, 7, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14):  # 16 shards: every job in 2 parts
        assert cli.main(["sweep", "smnist", "--shard", f"{i}/16", "--out", str(tmp_path / "sharded"), *args]) == 0
    whole, sharded = _records(tmp_path / "whole"), _records(tmp_path / "sharded")
    assert len(whole) == 8 * 2 and whole.keys() == sharded.keys()  # 8 architectures x epochs 0-1
    # equal to float32 rounding, not bit for bit: a network trains in a batch of 3 networks here and
    # of 2 there, and torch's CPU elementwise kernels treat a tensor's tail elements in scalar code
    # (1 ulp apart from the vector code: LEM's validation loss, AMD EPYC, torch 2.13); networks
    # merged in the wrong order or from the wrong epoch would differ by far more
    for key in whole:
        for name, values in whole[key].items():
            got = sharded[key][name]
            assert (values is None) == (got is None), (key, name)
            if values is not None:
                torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), torch.tensor(values, dtype=torch.float64),
                                           atol=0, rtol=1e-6, equal_nan=True, msg=f"{key} {name}")


def test_smnist_init_p_is_what_each_architectures_population_starts_from(fake_mnist):
    for job in sweeps.jobs("smnist", "smoke", device="cpu")[:3]:
        arch = job.name.removeprefix("smnist-row-")
        pop = job.build()[0]
        lo, hi = sweeps.SMNIST_ARCHITECTURES[arch][1]
        p = sweeps.smnist_init_p(arch, pop.n_networks)
        torch.testing.assert_close(pop.init_p.double(), p, atol=0, rtol=0)
        assert bool(((p >= lo) & (p <= hi)).all())
    with pytest.raises(ValueError, match="arch must be one of"):
        sweeps.smnist_init_p("Transformer", 3)


@pytest.mark.parametrize("name", ["smnist", "asrnn"])
def test_mnist_sweeps_fall_back_to_the_8x8_digits_only_when_asked(tmp_path, monkeypatch, name):
    from lyabook import data

    def missing(data_dir=None):
        raise data.DataError("mnist/train-images-idx3-ubyte.gz is not here")

    monkeypatch.setattr(data, "load_mnist", missing)
    with pytest.raises(data.DataError, match="not here"):
        sweeps.run_shard(name, tmp_path, profile="smoke", device="cpu", progress=False, epochs=0)
    done = sweeps.run_shard(name, tmp_path, profile="smoke", device="cpu", progress=False, epochs=0, allow_fallback=True)
    assert len(done) == len(sweeps.jobs(name, "smoke")) and all(len(r) == 1 for r in done.values())
    pop = sweeps.jobs(name, "smoke", allow_fallback=True)[0].build()[0]
    assert pop.input_size == 8  # a row of the 8x8 digits per step
    if name == "asrnn":  # the spectrum after the last epoch fits in the fallback's shorter sequences
        done = sweeps.run_shard(name, tmp_path / "full", profile="smoke", device="cpu", progress=False, allow_fallback=True)
        assert done["asrnn-grid"][-1]["exponents"].shape == (8, 6)
    with pytest.raises(ValueError, match="allow_fallback is for the sweeps that read data"):
        sweeps.jobs("force", "smoke", allow_fallback=True)


def test_charrnn_falls_back_to_the_bundled_text_only_when_asked(tmp_path, monkeypatch):
    from lyabook import data

    def missing(root=None, download=True):
        raise data.DataError("war_and_peace/warpeace_input.txt is not here")

    monkeypatch.setattr(data, "load_war_and_peace", missing)
    with pytest.raises(data.DataError, match="not here"):
        sweeps.run_shard("charrnn", tmp_path, profile="smoke", device="cpu", progress=False, epochs=0)
    done = sweeps.run_shard("charrnn", tmp_path, profile="smoke", device="cpu", progress=False, allow_fallback=True)
    assert set(done) == {"charrnn-4", "charrnn-8"} and done["charrnn-8"][-1]["exponents"].shape == (8, 16)
    assert sweeps.jobs("charrnn", "smoke", allow_fallback=True)[0].build()[0].input_size == data.fallback_text().vocab_size


def test_bad_sweep_arguments_are_one_line_errors(capsys):
    assert cli.main(["sweep", "nosuch", "--profile", "smoke", "--device", "cpu"]) == 2
    assert "unknown sweep 'nosuch'" in capsys.readouterr().err
    assert cli.main(["sweep", "smnist", "--shard", "3/2", "--profile", "smoke", "--device", "cpu"]) == 2
    assert "shard must be i/n" in capsys.readouterr().err


def test_sharded_charrnn_sweep_with_per_network_subsets_merges_into_the_unsharded_records(tmp_path, monkeypatch):
    """Task B: every network its own 20 % of the batches; 4 shards of 2 populations (each split
    in two) give the unsharded records."""
    from lyabook import data

    monkeypatch.setattr(data, "load_war_and_peace", lambda root=None, download=True: data.fallback_text())
    args = ["--profile", "smoke", "--device", "cpu", "--quiet"]
    assert cli.main(["sweep", "charrnn", "--out", str(tmp_path / "whole"), *args]) == 0
    for i in (2, 0, 3, 1):
        assert cli.main(["sweep", "charrnn", "--shard", f"{i}/4", "--out", str(tmp_path / "sharded"), *args]) == 0
    whole, sharded = _records(tmp_path / "whole"), _records(tmp_path / "sharded")
    assert len(whole) == 2 * 2 and whole == sharded
    doc = json.loads(next((tmp_path / "whole").glob("charrnn-4/*/epoch_000.json")).read_text())
    assert doc["provenance"]["run_settings"]["train"]["per_network"] is True
    # one job at a time (a GPU session too short for the sweep): the same records as in the whole run
    for i in (1, 0):
        assert cli.main(["sweep", "charrnn", "--jobs", "charrnn-8", "--shard", f"{i}/2",
                         "--out", str(tmp_path / "one"), *args]) == 0
    one = _records(tmp_path / "one")
    assert list(one) == [k for k in whole if "charrnn-8" in str(k)] and all(one[k] == whole[k] for k in one)
    # shard 1 of 2 itself in two parts (`--shard 1/2:j/2`, one GPU call each): the same records again
    for shard in ("1/2:1/2", "0/2", "1/2:0/2"):
        assert cli.main(["sweep", "charrnn", "--jobs", "charrnn-8", "--shard", shard,
                         "--out", str(tmp_path / "parts"), *args]) == 0
    assert _records(tmp_path / "parts") == one


def test_charrnn_init_p_is_what_each_population_starts_from():
    from lyabook import data

    for job, hidden in zip(sweeps.jobs("charrnn", "smoke"), (4, 8)):
        orig = data.load_war_and_peace
        data.load_war_and_peace = lambda root=None, download=True: data.fallback_text()
        try:
            pop = job.build()[0]
        finally:
            data.load_war_and_peace = orig
        p = sweeps.charrnn_init_p(hidden, "smoke")
        assert len(p) == pop.n_networks and bool((p >= 0.04).all() and (p <= 0.40).all())
        w = pop.cell_tensors()["w_hh"] if "w_hh" in pop.cell_tensors() else next(iter(pop.cell_tensors().values()))
        assert torch.all(w.flatten(1).abs().amax(1) <= p.to(w.dtype) + 1e-6)
    assert sweeps.charrnn_init_p(512)[:3].tolist() == sweeps.charrnn_init_p(512)[:3].tolist()
    with pytest.raises(ValueError, match="hidden"):
        sweeps.charrnn_init_p(1024)


def test_a_job_filter_names_unknown_jobs(capsys):
    assert [j.name for j in sweeps.jobs("charrnn", "smoke", only=["charrnn-8"])] == ["charrnn-8"]
    for bad in (["charrnn-1024"], [], "charrnn-8"):
        with pytest.raises(ValueError, match="job"):
            sweeps.jobs("charrnn", "smoke", only=bad)
    assert cli.main(["sweep", "charrnn", "--profile", "smoke", "--jobs", "charrnn-64"]) == 2
    assert "unknown job(s) charrnn-64" in capsys.readouterr().err


def test_launch_starts_one_shard_per_gpu_each_seeing_only_its_own(monkeypatch):
    started, threads = [], []

    class FakeProcess:
        def __init__(self, cmd, env):
            started.append((cmd, env["CUDA_VISIBLE_DEVICES"]))
            threads.append(env["OMP_NUM_THREADS"])

        def wait(self):
            return 0

    monkeypatch.setattr(sweeps.subprocess, "Popen", FakeProcess)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    assert sweeps.launch("smnist", "runs", gpus=3, epochs=2) == 0
    assert [gpu for _, gpu in started] == ["2", "5", "7"]
    for i, (cmd, _) in enumerate(started):
        assert cmd[cmd.index("--shard") + 1] == f"{i}/3" and cmd[cmd.index("--device") + 1] == "cuda"
        assert cmd[cmd.index("--epochs") + 1] == "2" and cmd[cmd.index("--out") + 1] == "runs"
    with pytest.raises(ValueError, match="GPU"):
        sweeps.launch("smnist", "runs", gpus=0)
    # more shards than GPUs: shard i on GPU i mod 2, never on a GPU that does not exist
    started.clear()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(sweeps.torch.cuda, "device_count", lambda: 2)
    assert sweeps.launch("charrnn", "runs", gpus=6, only=["charrnn-64", "charrnn-128"]) == 0
    assert [gpu for _, gpu in started] == ["0", "1"] * 3
    assert all(cmd[cmd.index("--jobs") + 1] == "charrnn-64,charrnn-128" for cmd, _ in started)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweeps.os, "cpu_count", lambda: 64)
    threads.clear()
    assert sweeps.launch("charrnn", "runs", gpus=12, only=["charrnn-64"]) == 0
    assert threads == ["5"] * 12  # 64 cores shared by 12 shards, not 64 threads each


def test_force_sweep_saves_each_g_whole_and_skips_finished_jobs(tmp_path, capsys):
    from lyabook.results import load_results

    args = ["--profile", "smoke", "--device", "cpu", "--quiet", "--out", str(tmp_path)]
    assert cli.main(["sweep", "force", "--shard", "1/4", *args]) == 0  # 3 jobs, 4 shards: shard 1 runs g = 1.5 only
    files = list(tmp_path.glob("*/*/force.json"))
    assert [f.parent.parent.name for f in files] == ["force-g1.5"]
    res = load_results(files[0])["results"]
    assert res["val_mae"].shape == (2, 8) and res["exponents_epoch_1"].shape == (8, 20)  # (epochs, networks), (networks, units)
    assert cli.main(["sweep", "force", "--shard", "3/4", *args]) == 0  # an empty shard: nothing to do
    before = files[0].stat().st_mtime_ns
    assert cli.main(["sweep", "force", *args]) == 0
    assert files[0].stat().st_mtime_ns == before and len(list(tmp_path.glob("*/*/force.json"))) == 3


def test_asrnn_code_init_scales_the_recurrent_weights_by_p_over_n_and_the_inputs_by_1_over_d():
    """The authors' code's ASRNN init (erratum, notebook 00 section 7): recurrent standard deviation
    p / n against the text's p / sqrt(n), input weights 1 / d against 1; the rest as the text's."""
    import math

    from lyabook.sweeps import asrnn_code_init, asrnn_grid_init

    n, d, p = 128, 28, 8.0
    code_w = asrnn_code_init("cell.weight_hh_l0", (n, n), p, torch.Generator().manual_seed(0))
    text_w = asrnn_grid_init("cell.weight_hh_l0", (n, n), p, torch.Generator().manual_seed(0))
    assert float(code_w.std()) == pytest.approx(p / n, rel=0.02)
    assert float(text_w.std()) == pytest.approx(p / math.sqrt(n), rel=0.02)
    torch.testing.assert_close(code_w * math.sqrt(n), text_w)  # same draws, scaled
    code_v = asrnn_code_init("cell.weight_ih_l0", (n, d), p, torch.Generator().manual_seed(1))
    assert float(code_v.std()) == pytest.approx(1 / d, rel=0.05)
    for name, shape in (("cell.bias_l0", (n,)), ("readout.weight", (10, n))):
        torch.testing.assert_close(asrnn_code_init(name, shape, p, torch.Generator().manual_seed(2)),
                                   asrnn_grid_init(name, shape, p, torch.Generator().manual_seed(2)))


def test_asrnn_grid_records_eigenvalues_and_its_shards_merge_into_the_unsharded_run(tmp_path, monkeypatch):
    """Figs. 3.2-3.4's grid: per-network eps, gamma, sigma and Adagrad learning rate; the
    eigenvalues recorded as an extra merge across shards like the spectra."""
    import numpy as np

    from lyabook import data
    from lyabook.results import load_results

    g = torch.Generator().manual_seed(0)
    fake = {part: (torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g))
            for part, n in (("train", 512), ("test", 64))}
    monkeypatch.setattr(data, "load_mnist", lambda root=None, download=True: fake)
    args = ["--profile", "smoke", "--device", "cpu", "--quiet"]
    assert cli.main(["sweep", "asrnn", "--out", str(tmp_path / "whole"), *args]) == 0
    for i in (1, 0):
        assert cli.main(["sweep", "asrnn", "--shard", f"{i}/2", "--out", str(tmp_path / "sharded"), *args]) == 0
    whole = load_results(next((tmp_path / "whole").glob("asrnn-grid/*/epoch_001.json")))["results"]
    merged = load_results(next((tmp_path / "sharded").glob("asrnn-grid/*/epoch_001.json")))["results"]
    assert whole["eigenvalues"].shape == (8, 6, 2) and "exponents" in whole
    assert np.array_equal(whole["eigenvalues"], merged["eigenvalues"]) and whole["valid_loss"] == merged["valid_loss"]
    assert np.array_equal(whole["exponents"], merged["exponents"])
    epoch0 = load_results(next((tmp_path / "whole").glob("asrnn-grid/*/epoch_000.json")))["results"]
    assert "exponents" not in epoch0 and "eigenvalues" not in epoch0  # only the last epoch's


def _fake_chapter2_data(monkeypatch):
    """Python's bundled text for War and Peace and four random 6-feature recordings for CMU mocap."""
    import numpy as np

    from lyabook import data

    g = np.random.default_rng(0)
    mocap = {s: [g.standard_normal((120, 6)).astype(np.float32) for _ in range(2)] for s in ("train", "test")}
    monkeypatch.setattr(data, "load_war_and_peace", lambda root=None, download=True: data.fallback_text())
    monkeypatch.setattr(data, "load_cmu_mocap", lambda root=None, download=True: mocap)


def test_evolution_sweep_trains_notebook_03s_populations_where_the_notebook_finds_them(tmp_path, monkeypatch):
    """`lyabook sweep evolution` in 4 shards (each population split in two) leaves, after the merge,
    the records notebook 03 reads: `lyabook.evolution.populations` built as the notebook builds
    them finds every epoch in the same folder (`check_run`), and the records equal one unsharded
    run's."""
    from lyabook import evolution
    from lyabook.train import check_run

    _fake_chapter2_data(monkeypatch)
    args = ["--profile", "smoke", "--device", "cpu", "--quiet"]
    for i in (1, 3, 0, 2):
        assert cli.main(["sweep", "evolution", "--shard", f"{i}/4", "--out", str(tmp_path / "sharded"), *args]) == 0
    assert cli.main(["sweep", "evolution", "--out", str(tmp_path / "whole"), *args]) == 0
    params = {k: v for k, v in cli.load_profile("03_training_evolution", "smoke").items() if k in evolution.DEFAULTS}
    pops = evolution.populations(params, verbose=False)
    assert [name for name, *_ in pops.runs()] == ["charrnn", "mocap"]
    for name, model, tr, va, kw in pops.runs():  # every epoch found: nothing left to train
        for out in ("sharded", "whole"):
            assert check_run(model, tr, va, out_dir=tmp_path / out, **kw) == kw["epochs"] + 1, (name, out)

    def records(root):
        return {(f.parent.name, f.name): json.loads(f.read_text())["results"]["valid_loss"]
                for f in sorted(root.glob("*/epoch_*.json"))}

    whole, sharded = records(tmp_path / "whole"), records(tmp_path / "sharded")
    assert len(whole) == max(params["fig26_epochs"], params["sweep_epochs"]) + 1 + params["mocap_epochs"] + 1
    assert whole == sharded


def test_notebook_03_parameters_default_to_lyabook_evolution_defaults():
    """The populations' defaults live in `lyabook.evolution.DEFAULTS`; notebook 03's parameters
    cell (what papermill reads) must say the same."""
    import ast

    from lyabook import evolution

    nb = json.loads((cli.NOTEBOOKS / "03_training_evolution.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {t.targets[0].id: ast.literal_eval(t.value) for t in ast.parse("".join(cell["source"])).body
              if isinstance(t, ast.Assign)}
    assert {k: values[k] for k in evolution.DEFAULTS} == evolution.DEFAULTS


def test_evolution_populations_name_unknown_parameters():
    from lyabook import evolution

    with pytest.raises(ValueError, match="unknown parameter.*sweep_nets"):
        evolution.populations({"sweep_nets": 3})


def test_spectrum_convergence_measures_a_known_rate_and_direction():
    """Spectra that move by d_t = t^(-1/2) along a fixed direction from a far-off spectrum (so the
    denominator barely changes) have a reduced MSD of d_t² ∝ 1/t: slope -1, and a mean that rises
    to its last value, i.e. from below; reversed, from above. Too few epochs: no slope."""
    from lyabook.evolution import spectrum_convergence

    epochs, far = 15, -1e3 * np.ones(8)
    v = np.linspace(0.5, 1.5, 8) * 1e-2
    steps = np.concatenate([[0], np.cumsum(np.arange(1, epochs + 1) ** -0.5)])
    ex = (far + steps[:, None] * v)[:, None, :].repeat(2, 1)          # (epochs + 1, 2 networks, 8)
    out = spectrum_convergence(ex)
    assert out["reduced_msd"].shape == (epochs, 2) and out["mean_diff"].shape == (epochs + 1, 2)
    assert out["slope"] == pytest.approx(-1, abs=1e-2)
    assert out["from_below"].all() and out["mean_diff"][-1] == pytest.approx(0)
    assert not spectrum_convergence(2 * far - ex)["from_below"].any()
    assert np.isnan(spectrum_convergence(ex[:3])["slope"])
    with pytest.raises(ValueError, match="exponents: not all finite"):
        spectrum_convergence(np.where(ex == ex[2, 0, 0], np.nan, ex))
    with pytest.raises(ValueError, match=r"exponents: expected \(epochs \+ 1, networks, k\)"):
        spectrum_convergence(ex[0])
