"""Hostile inputs to populations, their data, shards and sweeps: every one is a clear error
naming the parameter (never a deep traceback from torch, a silent NaN or a silently wrong
value). Tiny populations on the CPU."""
import numpy as np
import pytest
import torch

from lyabook import cli, data, rnn, sweeps
from lyabook.population import Population, PopulationAdam, population_exponents, shard_range

P, I, H, O = 3, 2, 4, 3


def _pop(cls=rnn.GRU, **kw):
    return Population(cls, kw.pop("n", P), I, H, O, seed=0, **kw)


# ------------------------------------------------------------------ Population
@pytest.mark.parametrize("kw, err, match", [
    ({"cls": rnn.RecurrentCell}, TypeError, "cell_class"),  # a base class built a population with no parameters
    ({"init_p": -0.1}, ValueError, "init_p must be >= 0"),
    ({"init_p": True}, TypeError, "init_p"),
    ({"init_p": "a"}, TypeError, "init_p"),
    ({"init_p": None}, TypeError, "init_p"),
    ({"dropout": [True, False, True]}, TypeError, "dropout"),
    ({"cls": rnn.ASRNN, "eps": {0: 0.1, 1: 0.2, 2: 0.3}}, TypeError, "eps"),
    ({"cls": rnn.ASRNN, "eps": torch.full((3, 2), 0.1)}, ValueError, "eps"),
])
def test_bad_population_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        _pop(**kw)


def test_numpy_integers_are_sizes_and_seeds():
    pop = Population(rnn.GRU, np.int64(2), np.int64(I), np.int64(H), np.int64(O), seed=np.int64(1))
    assert (pop.hidden_size, pop.seed) == (H, 1) and type(pop.hidden_size) is int
    eps = _pop(rnn.ASRNN, eps=np.array(0.05)).cell_constants.eps  # a 0-d array is a scalar
    assert torch.allclose(eps, torch.full((P,), 0.05))


def test_forward_names_wrong_dtype_shape_and_state():
    pop, x = _pop(), torch.randn(5, 7, I)
    with pytest.raises(TypeError, match="inputs are torch.float64 but the population's parameters are torch.float32"):
        pop(x.double())
    with pytest.raises(TypeError, match="inputs are torch.float32 but .* torch.float64"):
        _pop().double()(x)
    with pytest.raises(TypeError, match="inputs must be floating point"):
        pop(torch.ones(5, 7, I, dtype=torch.long))
    for bad in (x[:0], x[:, :0]):
        with pytest.raises(ValueError, match="at least one sequence of at least one step"):
            pop(bad)
    for bad in (x.numpy(), x.tolist()):
        with pytest.raises(TypeError, match="inputs must be a tensor"):
            pop(bad)
    with pytest.raises(ValueError, match="population's 3 networks in dim 0"):
        pop(torch.randn(P + 1, 5, 7, I))
    with pytest.raises(ValueError, match=r"state must be a tensor \(3, B=5, 4\)"):
        pop(x, torch.zeros(5, H))
    with pytest.raises(TypeError, match="state are torch.float64"):
        pop(x, torch.zeros(P, 5, H, dtype=torch.float64))
    assert pop(x, torch.zeros(P, 5, H))[0].shape == (P, 5, 7, O)


def test_population_adam_rejects_what_would_break_or_reverse_training():
    pop = _pop()
    with pytest.raises(ValueError, match="params must be one or more"):
        PopulationAdam([], lr=0.1)
    with pytest.raises(ValueError, match="population in dim 0"):
        PopulationAdam([torch.nn.Parameter(torch.zeros(()))], lr=0.1)
    with pytest.raises(ValueError, match="population in dim 0"):
        PopulationAdam([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(2, 2))], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        PopulationAdam(pop.parameters(), lr=0.1, betas=(1.0, 0.999))  # 1 - b1**t = 0: NaN weights
    with pytest.raises(ValueError, match="eps"):
        PopulationAdam(pop.parameters(), lr=0.1, eps=-1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        PopulationAdam(pop.parameters(), lr=[0.1, -0.1, 0.1])
    with pytest.raises(TypeError, match="lr"):
        PopulationAdam(pop.parameters(), lr=True)
    opt = PopulationAdam(pop.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.set_lr(-1.0)
    assert opt.param_groups[0]["lr"].tolist() == [0.1] * P  # lists of Python floats are float64, not via float32


def test_population_exponents_names_bad_arguments():
    pop, x = _pop(), torch.randn(2, 6, I)
    with pytest.raises(TypeError, match="pop must be"):
        population_exponents(rnn.GRU(I, H), x)
    with pytest.raises(ValueError, match="at least one sequence"):
        population_exponents(pop, x[:0])
    with pytest.raises(ValueError, match="inputs must be finite"):
        population_exponents(pop, torch.full((2, 6, I), float("nan")))
    for dtype in (torch.int64, "float64"):
        with pytest.raises(TypeError, match="dtype"):
            population_exponents(pop, x, dtype=dtype)
    for networks in ([0, 1, 2], torch.tensor([0, 2, 5])):  # indices, not a mask: were read as truthiness
        with pytest.raises(TypeError, match="mask of booleans"):
            population_exponents(pop, x, networks=networks)
    some = population_exponents(pop, x, networks=torch.tensor([True, False, True])).exponents
    assert torch.isnan(some[1]).all() and torch.isfinite(some[[0, 2]]).all()


# ------------------------------------------------------------------ shards
def test_shard_tuples_and_strings():
    for bad in ("0/1", (0,), (0, 1, 2), None, (0.0, 1)):
        with pytest.raises(ValueError, match="shard"):
            shard_range(3, bad)
    assert shard_range(3, (np.int64(1), np.int64(3))) == range(1, 2)
    for n in (0, True, 2.0):
        with pytest.raises((TypeError, ValueError), match="n_networks"):
            shard_range(n, (0, 1))
    for bad in ("+1/2", "1_0/20", "\u0660/\u0661", " 0 / 2 ", None, (0, 1)):
        with pytest.raises(ValueError, match="shard must be i/n"):
            sweeps.parse_shard(bad)
    assert sweeps.parse_shard(" 1/2\n") == (1, 2)
    assert sweeps.parse_shard("4/6:1/2") == ((4, 6), (1, 2))
    assert shard_range(66, sweeps.parse_shard("4/6:0/2")) == range(44, 50)
    assert shard_range(66, ((4, 6), (1, 2))) == range(50, 55)  # parts of shard 4 of 6 tile its networks 44-54
    for bad in ("4/6:", "4/6:2/2", ":0/2", "4/6;0/2"):
        with pytest.raises(ValueError, match="shard must be i/n"):
            sweeps.parse_shard(bad)
    for bad in (((4, 6), (0, 0)), ((4, 6), 1), ()):
        with pytest.raises(ValueError, match="shard"):
            shard_range(66, bad)
    with pytest.raises(ValueError, match="leaves some shards empty"):
        shard_range(6, ((0, 6), (0, 2)))
    jobs = [sweeps.Job(f"j{k}", 4, None) for k in range(2)]
    for bad in ((5, 2), (0, 0), "0/2"):
        with pytest.raises(ValueError, match="shard"):
            sweeps.plan(jobs, bad)
    with pytest.raises(ValueError, match="parts of a shard split a job's networks"):
        sweeps.plan(jobs, ((0, 2), (0, 2)))  # two jobs for two shards: each shard trains whole jobs
    split = [sweeps.Job(f"j{k}", 4, lambda: None) for k in range(2)]  # two parts of each job for four shards
    assert [(j.name, part) for j, part in sweeps.plan(split, ((1, 4), (0, 2)))] == [("j0", ((1, 2), (0, 2)))]


# ------------------------------------------------------------------ data
def test_mnist_sequences_needs_uint8_images_and_an_integer_seed():
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8"):
        data.mnist_sequences(images.float() / 255)  # already in [0, 1]: was divided by 255 again
    with pytest.raises(ValueError, match="at least one image"):
        data.mnist_sequences(images[:0])
    for seed, err in ((1.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(err, match="permutation_seed"):
            data.mnist_sequences(images, "permuted", permutation_seed=seed)


def test_batches_names_bad_arguments():
    x, y = torch.randn(10, 7, 2), torch.randint(0, 3, (10,))
    for bs, err in ((True, TypeError), (2.5, TypeError), ("4", TypeError), (None, TypeError), (0, ValueError)):
        with pytest.raises(err, match="batch_size"):
            data.batches(x, y, bs)
    for seed, err in ((1.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(err, match="shuffle_seed"):
            data.batches(x, y, 2, shuffle_seed=seed)
    for bad in ([1, 2, 3], x.numpy(), torch.tensor(1.0)):
        with pytest.raises(TypeError, match="x must be a tensor"):
            data.batches(bad, y, 2)
    with pytest.raises(TypeError, match="drop_last"):
        data.batches(x, y, 2, drop_last="no")
    with pytest.raises(ValueError, match="x holds NaN"):
        data.batches(torch.where(x > 1, float("nan"), x), y, 2)
    assert len(data.batches(x, y, np.int64(4))) == 3


def test_network_batches_names_bad_arguments():
    xb, yb = torch.randn(5, 4, 7, 2), torch.randint(0, 3, (5, 4))
    for kw, err, match in [({"n_networks": True}, TypeError, "n_networks"), ({"n_networks": 2.5}, TypeError, "n_networks"),
                           ({"fraction": True}, TypeError, "fraction"), ({"fraction": "a"}, TypeError, "fraction"),
                           ({"seed": -1}, ValueError, "seed"), ({"seed": 1.5}, TypeError, "seed"),
                           ({"first_network": 1.5}, TypeError, "first_network")]:
        with pytest.raises(err, match=match):
            data.NetworkBatches(xb, yb, **{"n_networks": 3, "fraction": 0.5, **kw})
    with pytest.raises(TypeError, match="x must be a tensor of stacked batches"):
        data.NetworkBatches(data.batches(torch.randn(8, 7, 2), torch.zeros(8, dtype=torch.long), 4), None, 3, 0.5)
    with pytest.raises(TypeError, match="x must be a tensor of stacked batches"):
        data.NetworkBatches(torch.randn(5), torch.randn(5), 3, 0.5)
    with pytest.raises(ValueError, match="same batch size"):
        data.NetworkBatches(xb, yb[:, :3], 3, 0.5)
    nb = data.NetworkBatches(xb, yb, 3, 0.5)
    for k in (True, 1.0, "0"):
        with pytest.raises(TypeError, match="batch index"):
            nb[k]
    with pytest.raises(IndexError, match="batch 99 of 2"):
        nb[99]
    for bad in (range(0, 0), range(2, 9), range(-1, 2), range(0, 3, 2), slice(0, 2), [0, 1]):
        with pytest.raises(ValueError, match="networks must be a range"):
            nb.select(bad)
    assert torch.equal(nb.select(range(1, 3)).index, nb.index[1:])


# ------------------------------------------------------------------ training (through the checks above)
def test_train_population_rejects_wrong_dtype_and_negative_lr_before_writing(tmp_path):
    from lyabook.train import train_epoch, train_population

    x, y = torch.rand(8, 5, I, dtype=torch.float64), torch.randint(0, O, (8,))
    pop = _pop()
    with pytest.raises(TypeError, match="inputs are torch.float64"):
        train_epoch(pop, PopulationAdam(pop.parameters(), lr=0.01), data.batches(x, y, 4), "classification")
    tb = data.batches(x.float(), y, 4)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        train_population(_pop(), tb, tb, epochs=1, lr=-0.01, config={}, out_dir=tmp_path, progress=False)
    assert not any(tmp_path.rglob("epoch_*"))


# ------------------------------------------------------------------ sweeps and the CLI
def test_sweep_and_launch_arguments_are_one_line_errors(tmp_path, fake_mnist, monkeypatch, capsys):
    def no_process(*a, **k):
        raise AssertionError("launch started a process for bad arguments")

    monkeypatch.setattr(sweeps.subprocess, "Popen", no_process)
    args = ["--profile", "smoke", "--device", "cpu", "--quiet"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, match in [
        (["sweep", "smnist", "--out", str(tmp_path / "o"), "--epochs", "-1", *args], "epochs must be >= 0"),
        (["sweep", "smnist", "--out", str(afile), "--epochs", "0", *args], "is a file"),
        (["sweep", "smnist", "--out", str(afile / "sub"), "--epochs", "0", *args], "lies under"),
        (["sweep", "smnist", "--shard", "+0/1", "--out", str(tmp_path / "o"), *args], "shard must be i/n"),
        (["launch", "smnist", "--gpus", "-1", "--profile", "smoke"], "gpus must be a positive integer"),
        (["launch", "nosuch", "--gpus", "1", "--profile", "smoke"], "unknown sweep 'nosuch'"),
        (["launch", "smnist", "--gpus", "1", "--profile", "smoke", "--epochs", "-1"], "epochs must be >= 0"),
    ]:
        assert cli.main(argv) == 2, argv
        assert match in capsys.readouterr().err, argv
    assert not (tmp_path / "o").exists()
    for epochs, err in ((True, TypeError), (1.5, TypeError), (-1, ValueError)):
        with pytest.raises(err, match="epochs"):
            sweeps.run_shard("smnist", tmp_path / "o", profile="smoke", device="cpu", epochs=epochs)
    with pytest.raises(ValueError, match="shard"):
        sweeps.run_shard("smnist", tmp_path / "o", shard=(5, 2), profile="smoke", device="cpu", epochs=0)
    with pytest.raises(ValueError, match="unknown sweep"):
        sweeps.jobs(["smnist"])
