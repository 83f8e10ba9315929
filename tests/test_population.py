"""A population of any cell computes, network by network, exactly what the cell computes alone."""
import pytest
import torch

from lyabook import rnn
from lyabook.population import Population, PopulationAdam, population_exponents, shard_range
from lyabook.train import _loss

P, I, H, O = 3, 4, 5, 3


def _kwargs(name):
    """Per-network constants where the cell has them; no bias for torch's cells (the dissertation's)."""
    return {"RNN": {"bias": False}, "LSTM": {"bias": True}, "GRU": {"bias": False},
            "ASRNN": {"eps": [0.01, 0.1, 0.05], "gamma": [0.01, 0.5, 1.0]},
            "CoRNN": {"dt": [0.042, 0.1, 0.2], "gamma": 2.7, "epsilon": [4.7, 1.0, 2.0]},
            "LipschitzRNN": {"eps": [0.03, 0.1, 0.2], "beta": [0.75, 0.5, 0.9]},
            "NoisyRNN": {"eps": [0.1, 0.05, 0.2], "sigma_add": 0.0, "sigma_mult": 0.0},  # noise off: deterministic
            "LEM": {"dt": [1.0, 0.5, 0.21]}}[name]


def _population(name, seed=1):
    return Population(rnn.CELLS[name], P, I, H, O, init_p=[0.3, 0.6, 1.0], seed=seed, **_kwargs(name)).double()


def _data(T=6, B=5):
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, T, I, generator=g, dtype=torch.float64), torch.randint(0, O, (B,), generator=g)


@pytest.mark.parametrize("name", list(rnn.CELLS))
def test_forward_loss_step_and_jacobians_equal_each_networks_own(name):
    pop = _population(name)
    x, y = _data()
    nets = [pop.network(i) for i in range(P)]
    out, state = pop(x)
    loss, _ = _loss(out, y.expand(P, -1), "classification")
    for i, net in enumerate(nets):
        o, s = net(x)  # the cell's own forward: torch's fused kernels for RNN, LSTM, GRU
        torch.testing.assert_close(out[i], o, atol=1e-10, rtol=0)
        torch.testing.assert_close(state[i], s, atol=1e-10, rtol=0)
        torch.testing.assert_close(loss[i], torch.nn.functional.cross_entropy(o[:, -1], y), atol=1e-10, rtol=0)
    # one optimizer step, per-network learning rates
    lrs = [0.01, 0.03, 0.1]
    opt = PopulationAdam(pop.parameters(), lr=lrs)
    loss.sum().backward()
    opt.step()
    for i, net in enumerate(nets):
        o, _ = net(x)
        torch.nn.functional.cross_entropy(o[:, -1], y).backward()
        torch.optim.Adam(net.parameters(), lr=lrs[i]).step()
        after = pop.network(i)
        for (n, a), (_, b) in zip(after.state_dict().items(), net.state_dict().items()):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=f"{name} network {i}: {n} after one step")
    # Jacobians of the population system against each network's analytic (and autograd's) Jacobian
    from lyabook.population import _System

    pop.eval()
    xs = torch.randn(P, 2, pop.network(0).cell.state_dim, dtype=torch.float64) * 0.5
    us = torch.randn(P, 2, I, dtype=torch.float64)
    system = _System(pop, pop.cell_tensors(), "full")
    nxt, J = system.step_and_jacobian(xs.flatten(0, 1), us.flatten(0, 1))
    for i in range(P):
        cell = pop.network(i).cell.eval()
        n_i, J_i = cell.step_and_jacobian(xs[i], us[i])
        torch.testing.assert_close(nxt.reshape(P, 2, -1)[i], n_i, atol=1e-10, rtol=0)
        torch.testing.assert_close(J.reshape(P, 2, *J.shape[1:])[i], J_i, atol=1e-10, rtol=0)
        auto = torch.func.vmap(torch.func.jacrev(lambda v, u: cell.step(v[None], u[None])[0]))(xs[i], us[i])
        torch.testing.assert_close(J_i, auto, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "ASRNN", "CoRNN", "LipschitzRNN", "NoisyRNN", "LEM"])
def test_training_networks_together_equals_training_each_alone(name):
    x, y = _data(T=4, B=6)
    lrs = [0.02, 0.05, 0.1]
    _assert_training_together_equals_alone(_population(name), x, y, "PopulationAdam", lrs, steps=4, label=name)


def _assert_training_together_equals_alone(pop, x, y, optimizer, lrs, *, steps, label, **torch_kwargs):
    """``steps`` steps of the population optimizer ``optimizer`` (a lyabook.population name) on
    the joint loss leave every network's weights as torch's namesake optimizer on it alone (1e-10)."""
    from lyabook import population

    alone = [pop.network(i) for i in range(P)]
    opt = getattr(population, optimizer)(pop.parameters(), lr=lrs)
    for _ in range(steps):
        opt.zero_grad()
        _loss(pop(x)[0], y.expand(P, -1), "classification")[0].sum().backward()
        opt.step()
    for i, net in enumerate(alone):
        o = getattr(torch.optim, optimizer.removeprefix("Population"))(net.parameters(), lr=lrs[i], **torch_kwargs)
        for _ in range(steps):
            o.zero_grad()
            torch.nn.functional.cross_entropy(net(x)[0][:, -1], y).backward()
            o.step()
        for (n, a), (_, b) in zip(pop.network(i).state_dict().items(), net.state_dict().items()):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=f"{label} network {i}: {n}")


@pytest.mark.parametrize("name", ["LSTM", "CoRNN", "LEM", "GRU"])
def test_population_spectra_equal_each_networks_spectrum(name):
    pop = _population(name)
    x, _ = _data(T=12, B=3)
    for conv in rnn.CELLS[name].conventions:
        spec = population_exponents(pop, x, warmup=3, convention=conv)
        parts = population_exponents(pop, x, warmup=3, convention=conv, networks_per_call=2)
        torch.testing.assert_close(parts.exponents, spec.exponents, atol=1e-12, rtol=0)
        for i in range(P):
            kw = {} if conv == "full" else {"convention": conv}
            cell = rnn.CELLS[name](I, H, **{k: (v[i] if isinstance(v, list) else v) for k, v in _kwargs(name).items()}, **kw).double()
            cell.load_state_dict(pop.network(i).cell.state_dict())
            own = rnn.rnn_spectrum(cell, x, warmup=3).per_sample.mean(0)
            torch.testing.assert_close(spec.exponents[i], own, atol=1e-10, rtol=0)


def test_networks_left_out_of_the_spectra_get_nan_rows_and_the_others_are_unchanged():
    pop = _population("GRU")
    x, _ = _data(T=8, B=2)
    every = population_exponents(pop, x).exponents
    some = population_exponents(pop, x, networks=[True, False, True]).exponents
    assert torch.isnan(some[1]).all()
    # equal to rounding, not bit for bit: torch's CPU elementwise kernels (sigmoid, tanh) run a
    # tensor's last elements through scalar code and the rest through vector code, which can differ
    # in the last bit, and where a network's values fall depends on how many networks share the
    # tensor (1 ulp on an AMD EPYC, torch 2.13; a network mixed up with another would differ by O(1))
    torch.testing.assert_close(some[[0, 2]], every[[0, 2]], atol=0, rtol=1e-13)


def test_network_i_does_not_depend_on_the_population_or_the_shard():
    big = Population(rnn.GRU, 5, I, H, O, init_p=0.5, seed=7).double()
    small = Population(rnn.GRU, 2, I, H, O, init_p=0.5, seed=7).double()
    for (n, a), (_, b) in zip(big.network(1).state_dict().items(), small.network(1).state_dict().items()):
        assert torch.equal(a, b), n
    sub = big.subset(range(2, 5))
    assert sub.n_networks == 3 and torch.equal(sub.weight_out[0], big.weight_out[2])
    x, _ = _data()
    torch.testing.assert_close(sub.eval()(x)[0], big.eval()(x)[0][2:], atol=0, rtol=0)


def test_population_lstm_is_a_population_of_lstm_cells():
    from lyabook.train import PopulationLSTM

    pop = PopulationLSTM(2, 3, 4, 3, init_p=[0.1, 0.2], dropout=[0.0, 0.2], bias=False, seed=0)
    assert isinstance(pop, Population) and pop.cell_class is rnn.LSTM
    assert isinstance(pop.network(0).cell, rnn.LSTM)


def test_per_network_inputs_give_each_network_its_own_batch():
    pop = _population("RNN").eval()
    x = torch.randn(P, 4, 6, I, dtype=torch.float64)
    out, _ = pop(x)
    for i in range(P):
        torch.testing.assert_close(out[i], pop.network(i).eval()(x[i])[0], atol=1e-10, rtol=0)


def test_shards_cover_every_network_once_in_order():
    for n_networks in (5, 200, 201):
        for n in (1, 2, 3, 4):
            ranges = [shard_range(n_networks, (i, n)) for i in range(n)]
            assert [j for r in ranges for j in r] == list(range(n_networks))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    for bad in [(2, 2), (-1, 2), (0, 0), ("0", 2), (True, 2)]:
        with pytest.raises(ValueError, match="shard"):
            shard_range(10, bad)
    with pytest.raises(ValueError, match="empty"):
        shard_range(2, (0, 3))


@pytest.mark.parametrize("kw, match", [
    ({"n_networks": 0}, "n_networks"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"init_p": [0.1, 0.2]}, "init_p"),
    ({"dropout": 1.0}, "dropout"),
    ({"seed": -1}, "seed"),
    ({"eps": [0.1, 0.2]}, "eps"),
    ({"bias": [True, False, True]}, "bias"),
    ({"convention": "h_block"}, "convention"),
    ({"eps": float("nan")}, "eps"),
])
def test_bad_population_arguments_are_named(kw, match):
    args = {"n_networks": 3, "input_size": 2, "hidden_size": 4, "output_size": 2}
    args.update({k: v for k, v in kw.items() if k in args})
    extra = {k: v for k, v in kw.items() if k not in args}
    with pytest.raises(ValueError, match=match):
        Population(rnn.ASRNN, args.pop("n_networks"), args.pop("input_size"), args.pop("hidden_size"),
                   args.pop("output_size"), **extra)


def test_bad_inputs_and_conventions_are_named():
    pop = _population("GRU")
    with pytest.raises(ValueError, match="inputs"):
        pop(torch.zeros(2, 3, I + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="inputs"):
        pop(torch.zeros(P + 1, 2, 3, I, dtype=torch.float64))
    with pytest.raises(ValueError, match="convention"):
        population_exponents(pop, torch.zeros(2, 3, I, dtype=torch.float64), convention="h_block")
    with pytest.raises(TypeError, match="cell_class"):
        Population(torch.nn.GRU, 2, 2, 2, 2)


def test_a_network_whose_spectrum_fails_gets_a_nan_row_and_the_others_their_own():
    pop = _population("RNN")
    x, _ = _data(T=8, B=2)
    every = population_exponents(pop, x).exponents
    with torch.no_grad():
        pop.cell_params.module__weight_hh_l0[1, 0, 0] = float("inf")
    spec = population_exponents(pop, x)
    assert torch.isnan(spec.exponents[1]).all()
    torch.testing.assert_close(spec.exponents[[0, 2]], every[[0, 2]], atol=0, rtol=0)


def test_a_dead_relu_unit_gives_minus_infinity_where_it_kills_and_leaves_other_networks_alone():
    pop = Population(rnn.RNN, 2, I, H, O, init_p=0.5, seed=0, nonlinearity="relu", bias=False).double()
    x, _ = _data(T=8, B=2)
    with torch.no_grad():
        pop.cell_params.module__weight_ih_l0[0, 0, :] = 0.0  # row 0: no input
        pop.cell_params.module__weight_hh_l0[0, 0, :] = -1.0  # and only inhibition: relu states are >= 0, so unit 0 of network 0 never fires
    ex = population_exponents(pop, x.abs()).exponents
    assert torch.isneginf(ex[0, -1]) and torch.isfinite(ex[0, 0]) and not torch.isnan(ex).any()
    alone = population_exponents(pop.subset(range(1, 2)), x.abs()).exponents
    torch.testing.assert_close(ex[1:], alone, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["GRU", "NoisyRNN", "LSTM"])
def test_a_cuda_graph_epoch_equals_the_eager_epoch(name):
    """Training and evaluation replayed as CUDA graphs give the eager numbers (dropout and
    NoisyRNN's noise included), across batch shapes and epochs."""
    from lyabook.train import evaluate, train_epoch

    kw = dict(_kwargs(name), sigma_add=0.05) if name == "NoisyRNN" else _kwargs(name)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(b, 6, I, generator=g, dtype=torch.float64), torch.randint(0, O, (b,), generator=g))
               for b in (5, 5, 3)]
    runs = []
    for graph in (False, True):
        pop = Population(rnn.CELLS[name], P, I, H, O, init_p=[0.3, 0.6, 1.0], dropout=[0.0, 0.2, 0.4], seed=1,
                         **kw).double().cuda()
        opt = PopulationAdam(pop.parameters(), lr=[0.01, 0.02, 0.05])
        losses = []
        for epoch in range(2):
            losses.append(train_epoch(pop, opt, batches, "classification", cuda_graph=graph))
            opt.set_lr(opt.param_groups[0]["lr"] * 0.5)
        losses.append(evaluate(pop, batches, "classification", cuda_graph=graph)[0])
        runs.append((losses, [p.detach().cpu() for p in pop.parameters()]))
    for a, b in zip(*[r[0] for r in runs]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for a, b in zip(*[r[1] for r in runs]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_random_draws_have_the_asked_statistics_and_differ_between_networks_and_steps():
    pop = Population(rnn.NoisyRNN, 3, I, 16, O, dropout=[0.0, 0.25, 0.5], seed=2)
    x = torch.zeros(64, 20, I)
    first = pop.random_draws(x)
    second = pop.random_draws(x)
    assert int(pop.draw_count) == 2
    masks, noise = first["dropout"], first["noise"]
    assert masks.shape == (3, 64, 20, 16) and noise.shape == (3, 40, 64, 16)
    for i, rate in enumerate([0.0, 0.25, 0.5]):
        assert abs(float((masks[i] == 0).float().mean()) - rate) < 0.01
        assert torch.allclose(masks[i][masks[i] > 0], torch.tensor(1 / (1 - rate)))
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 1) < 0.01
    assert abs(float(torch.corrcoef(torch.stack([noise[0].flatten(), noise[1].flatten()]))[0, 1])) < 0.01
    assert not torch.equal(first["noise"], second["noise"]) and not torch.equal(first["dropout"], second["dropout"])
    # network 1's draws do not depend on the population it is in
    alone = pop.subset(range(1, 2))
    alone.draw_count.zero_()
    torch.testing.assert_close(alone.random_draws(x)["noise"][0], first["noise"][1], atol=0, rtol=0)


@pytest.mark.parametrize("name, arch, lrs, torch_kwargs", [
    ("PopulationAdagrad", "ASRNN", [0.1, 0.3, 1.0], {"eps": 1e-10}),
    ("PopulationRMSprop", "RNN", [1e-3, 2e-4, 0.01], {"alpha": 0.99, "eps": 1e-8}),
])
def test_population_optimizer_equals_torchs_for_each_network(name, arch, lrs, torch_kwargs):
    """Adagrad (the ASRNN grid) and RMSprop (Chapter 4's pixel-flipping network), one learning
    rate per network, step for step equal to torch's optimizer on each network alone."""
    x, y = _data()
    _assert_training_together_equals_alone(_population(arch), x, y, name, lrs, steps=3, label=name, **torch_kwargs)


def test_population_rmsprop_checks_alpha():
    from lyabook.population import PopulationRMSprop

    with pytest.raises(ValueError, match="alpha must be a number in"):
        PopulationRMSprop(_population("RNN").parameters(), lr=0.1, alpha=1.0)


def test_a_custom_initialization_sets_each_network_from_its_own_generator_and_scale():
    def init(name, shape, p, g):  # the ASRNN grid's: N(0, 1) inputs, N(0, p^2 / n) recurrent, zero elsewhere
        if name.endswith("weight_ih_l0"):
            return torch.randn(shape, generator=g)
        if name.endswith("weight_hh_l0"):
            return torch.randn(shape, generator=g) * p / math.sqrt(shape[0])
        return torch.zeros(shape)

    import math

    pop = Population(rnn.ASRNN, 2, 3, 200, 2, init_p=[1.0, 8.0], seed=4, init=init)
    W = pop.cell_params.weight_hh_l0
    assert abs(float(W[1].std() / W[0].std()) - 8) < 0.3 and abs(float(pop.cell_params.weight_ih_l0.std()) - 1) < 0.05
    assert float(pop.weight_out.abs().max()) == 0
    again = Population(rnn.ASRNN, 2, 3, 200, 2, init_p=[1.0, 8.0], seed=4, init=init)
    assert torch.equal(again.cell_params.weight_hh_l0, W)
    with pytest.raises(ValueError, match="init"):
        Population(rnn.ASRNN, 2, 3, 4, 2, init=lambda name, shape, p, g: torch.zeros(1))
    with pytest.raises(TypeError, match="init"):
        Population(rnn.ASRNN, 2, 3, 4, 2, init="normal")


def test_jacobians_at_given_points_are_each_networks_and_give_asrnn_eigenvalues():
    pop = _population("ASRNN")
    states = torch.randn(P, 2, H, dtype=torch.float64)
    inputs = torch.randn(P, 2, I, dtype=torch.float64)
    J = pop.jacobians(states, inputs)
    for i in range(P):
        torch.testing.assert_close(J[i], pop.network(i).cell.eval().jacobian(states[i], inputs[i]), atol=1e-12, rtol=0)
    eig = torch.linalg.eigvals(J)
    assert eig.shape == (P, 2, H)
    with pytest.raises(ValueError, match="states"):
        pop.jacobians(states[:, :, :2], inputs)


@pytest.mark.parametrize("name", ["ASRNN", "LipschitzRNN", "NoisyRNN"])
def test_unroll_computes_per_sequence_matrices_once_and_equals_stepping(name):
    """The structured recurrent matrices are built once per unroll; outputs and gradients equal
    a plain loop over `step` (which builds them every step)."""
    torch.manual_seed(0)
    cell = rnn.CELLS[name](I, H).double().eval()
    x = torch.randn(3, 7, I, dtype=torch.float64)
    out, _ = cell.unroll(x)
    g1 = torch.autograd.grad(out.square().sum(), list(cell.parameters()))
    h, outs = cell.init_state(3), []
    for t in range(7):
        h = cell.step(h, x[:, t])
        outs.append(h[:, :H])
    ref = torch.stack(outs, 1)
    g2 = torch.autograd.grad(ref.square().sum(), list(cell.parameters()))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert cell._per_sequence is None  # nothing cached outside an unroll
