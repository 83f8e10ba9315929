"""Claims of the FORCE population (dissertation Ch. 3 signal reconstruction, spec §6): the
closed-loop map's Jacobian is exact, the step is the stated equations, network i is the same
in any population, targets are normalized four-sines, FORCE learns, a diverged network is
flagged without touching the others, and population spectra are each network's own."""
import math

import pytest
import torch

from lyabook.force import ForceMap, ForcePopulation, fit, force_spectra
from lyabook.lyapunov import lyapunov_spectrum

F64 = dict(dtype=torch.float64)


def _trained(P=3, N=12, steps=40, **kw):
    """A small population after a few training steps (so w_o and the RLS matrix are not trivial)."""
    pop = ForcePopulation(P, N, g=kw.pop("g", 1.5), seed=kw.pop("seed", 3), **kw)
    pop.train_epoch(steps)
    return pop


def test_closed_loop_jacobian_equals_autograd_for_every_network():
    pop = _trained()
    w_o = torch.randn(3, 12, **F64, generator=torch.Generator().manual_seed(0))
    fmap = pop.closed_loop(w_o)
    x = 2 * torch.randn(3 * 2, 12, **F64, generator=torch.Generator().manual_seed(1))
    x_next, J = fmap.step_and_jacobian(x)
    full = torch.func.jacrev(fmap.step)(x)  # (P*B, N, P*B, N); off-diagonal blocks are zero
    for b in range(6):
        torch.testing.assert_close(J[b], full[b, :, b, :], atol=1e-10, rtol=0)
    torch.testing.assert_close(x_next, fmap.step(x), atol=0, rtol=0)
    torch.testing.assert_close(fmap.jacobian(x), J, atol=0, rtol=0)
    # the written-out formula for one network: (1 - dt) I + dt (M + w_f w_o^T) diag(1 - tanh^2 x)
    W = pop.M[1] + torch.outer(pop.w_f[1], w_o[1])
    ref = (1 - pop.dt) * torch.eye(12, **F64) + pop.dt * W @ torch.diag(1 - torch.tanh(x[2]) ** 2)
    torch.testing.assert_close(J[2], ref, atol=1e-12, rtol=0)


def test_step_is_the_written_out_equations():
    pop = _trained(steps=5)  # next step t = 5 makes no update, t = 6 does (learn_every 2)
    i, dt = 1, pop.dt
    M, w_f = pop.M[i].clone(), pop.w_f[i].clone()
    x, z, w_o, P = pop.x[i].clone(), pop.z[i].clone(), pop.w_o[i].clone(), pop.rls[i].clone()
    for t in (5, 6):
        f = pop.target([t])[i, 0]
        x = (1 - dt) * x + dt * M @ torch.tanh(x) + dt * w_f * z
        r = torch.tanh(x)
        z = w_o @ r
        if t % 2 == 0:
            k = P @ r / (1 + r @ P @ r)
            P = P - torch.outer(P @ r, k)
            w_o = w_o - (z - f) * k
        e = pop.step()
        torch.testing.assert_close(e[i], z - f, atol=1e-12, rtol=0)
        for got, want in ((pop.x[i], x), (pop.z[i], z), (pop.w_o[i], w_o), (pop.rls[i], P)):
            torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_network_in_a_population_equals_the_network_built_alone():
    g = [1.2, 1.5, 1.8, 2.0]
    pop = ForcePopulation(4, 16, g=g, seed=7)
    shard = ForcePopulation(2, 16, g=g[2:], seed=7, first=2)  # networks 2 and 3
    alone = [ForcePopulation(1, 16, g=g[i], seed=7, first=i) for i in range(4)]
    for i, one in enumerate(alone):
        for name in ("M", "w_f", "x", "z", "amplitudes", "modes", "target_mid", "target_half"):
            assert torch.equal(getattr(pop, name)[i], getattr(one, name)[0]), name
    for j in range(2):
        assert torch.equal(pop.M[2 + j], shard.M[j])
        assert torch.equal(pop.target(range(50))[2 + j], shard.target(range(50))[j])
    hist = fit(pop, 2, epoch_steps=100, test_steps=150, keep=20, keep_every=5)
    for i, one in enumerate(alone):
        h1 = fit(one, 2, epoch_steps=100, test_steps=150, keep=20, keep_every=5)
        torch.testing.assert_close(hist.w_o[:, i], h1.w_o[:, 0], atol=1e-12, rtol=0)
        torch.testing.assert_close(hist.val_mae[:, i], h1.val_mae[:, 0], atol=1e-12, rtol=0)
        torch.testing.assert_close(hist.states[:, i], h1.states[:, 0], atol=1e-12, rtol=0)
    assert pop.g.tolist() == g  # float64, not rounded through float32
    # same network, other gain: M scales with g (the draws do not depend on g)
    torch.testing.assert_close(ForcePopulation(1, 16, g=1.0, seed=7).M[0] * 1.2, pop.M[0], atol=1e-15, rtol=0)


def test_targets_are_normalized_four_sines_and_differ_between_networks():
    pop = ForcePopulation(40, 4, seed=11)
    assert pop.amplitudes.min() >= 1 and pop.amplitudes.max() <= 10
    assert pop.modes.min() >= 1 and pop.modes.max() <= 5
    f = pop.target(range(1200))  # one period (120 time units)
    assert f.amax(1).sub(1).abs().max() < 1e-12 and f.amin(1).add(1).abs().max() < 1e-12
    # the formula, subtract the midpoint and then divide (the authors divided first)
    t = torch.arange(1200, **F64) * 0.1
    a, m = pop.amplitudes.double(), pop.modes.double()  # int64 * float would round through float32
    raw = sum(torch.sin(m[:, k, None] * math.pi * t / 60) / a[:, k, None] for k in range(4))
    mid, half = (raw.amax(1) + raw.amin(1)) / 2, (raw.amax(1) - raw.amin(1)) / 2
    torch.testing.assert_close(f, (raw - mid[:, None]) / half[:, None], atol=1e-12, rtol=0)
    # periodic: the test target restarted at t = 0 is in phase with training
    torch.testing.assert_close(pop.target(range(1200, 2400)), f, atol=1e-9, rtol=0)
    assert torch.cdist(f, f).add(torch.eye(40, **F64)).min() > 1e-3  # every pair of networks differs


def test_force_learns_its_target_at_g_1_5():
    # Network 3 of seed 0, made small for a test: N = 200 (not 512), 3 epochs (not 15) and a
    # test rollout of one period (1200 steps, not 10 x 1200). At N = 512 its MAE is ~0.001.
    pop = ForcePopulation(1, 200, g=1.5, seed=0, first=3)
    untrained = pop.test(1200, keep=0).mae
    hist = fit(pop, 3, test_steps=1200, keep=0)
    assert untrained[0] > 0.3
    assert hist.val_mae[-1, 0] < 0.05 and hist.val_mae[-1, 0] < untrained[0] / 10
    assert hist.finite.all()


def test_test_rollout_is_the_closed_loop_map():
    pop = _trained(steps=100)  # ends after an update-free step, so z = w_o . tanh(x)
    test = pop.test(30, keep=25)
    fmap, x = pop.closed_loop(), test.states[:, 0]
    for j in range(1, 25):
        x = fmap.step(x)
        torch.testing.assert_close(x, test.states[:, j], atol=1e-12, rtol=0)


def test_a_diverged_network_is_flagged_and_the_others_are_unaffected():
    kw = dict(P=3, N=16, steps=20)
    bad, ref = _trained(**kw), _trained(**kw)
    bad.w_o[1] = float("inf")
    h_bad = fit(bad, 1, epoch_steps=60, test_steps=80, keep=10, keep_every=3)
    h_ref = fit(ref, 1, epoch_steps=60, test_steps=80, keep=10, keep_every=3)
    assert h_bad.finite.tolist() == [[True, False, True]] and h_ref.finite.all()
    assert h_bad.val_mae[0, 1].isnan() and not bad.finite[1]
    for i in (0, 2):
        assert torch.equal(h_bad.w_o[:, i], h_ref.w_o[:, i]) and torch.equal(h_bad.val_mae[:, i], h_ref.val_mae[:, i])
    s_bad = force_spectra(bad.closed_loop(), h_bad.states[0], 30)
    s_ref = force_spectra(ref.closed_loop(), h_ref.states[0], 30)
    assert s_bad[1].isnan().all() and not s_bad[[0, 2]].isnan().any()
    torch.testing.assert_close(s_bad[[0, 2]], s_ref[[0, 2]], atol=1e-12, rtol=0)


def test_population_spectra_equal_each_networks_own():
    pop = _trained(P=3, N=12)
    gen = torch.Generator().manual_seed(5)
    w_o = torch.randn(3, 12, **F64, generator=gen) / 3
    x0 = torch.randn(3, 2, 12, **F64, generator=gen)
    spectra = force_spectra(pop.closed_loop(w_o), x0, 60, warmup=20)
    assert spectra.shape == (3, 12)
    torch.testing.assert_close(force_spectra(pop.closed_loop(w_o), x0, 60, warmup=20, networks_per_call=2), spectra,
                               atol=1e-12, rtol=0)
    for i in range(3):
        one = ForcePopulation(1, 12, g=1.5, seed=3, first=i).closed_loop(w_o[i : i + 1])
        result = lyapunov_spectrum(one, x0[i], 60, warmup=20)
        torch.testing.assert_close(spectra[i], result.exponents, atol=1e-10, rtol=0)
        assert result.time_per_step == pytest.approx(0.1)  # per unit time, not per step
    top = force_spectra(pop.closed_loop(w_o), x0, 60, warmup=20, k=3)
    torch.testing.assert_close(top, spectra[:, :3], atol=1e-10, rtol=0)


@pytest.mark.parametrize("kw, match", [
    (dict(n_networks=0), "n_networks"),
    (dict(n_units=0), "n_units"),
    (dict(density=0.0), "density"),
    (dict(density=1.5), "density"),
    (dict(dt=0.0), "dt"),
    (dict(dt=float("nan")), "dt"),
    (dict(g=[1.0, 1.5]), "g must be a scalar or have one value per network"),
    (dict(g=float("inf")), "g must be finite"),
    (dict(alpha=0.0), "alpha"),
    (dict(learn_every=0), "learn_every"),
])
def test_bad_settings_name_the_parameter(kw, match):
    args = dict(n_networks=3, n_units=4) | kw
    with pytest.raises(ValueError, match=match):
        ForcePopulation(args.pop("n_networks"), args.pop("n_units"), **args)


def test_bad_types_and_shapes_name_the_parameter():
    with pytest.raises(TypeError, match="dtype"):
        ForcePopulation(2, 4, dtype=torch.int64)
    with pytest.raises(TypeError, match="n_units"):
        ForcePopulation(2, 4.0)
    pop = ForcePopulation(2, 4)
    with pytest.raises(ValueError, match="w_o"):
        pop.closed_loop(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="keep"):
        pop.test(10, keep=11)
    with pytest.raises(ValueError, match="x0"):
        force_spectra(pop.closed_loop(), torch.zeros(3, 4), 5)
    with pytest.raises(ValueError, match="u must be None"):
        pop.closed_loop().step(torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(TypeError, match="ForceMap"):
        force_spectra(pop, torch.zeros(2, 4), 5)
    with pytest.raises(ValueError, match="W"):
        ForceMap(torch.zeros(2, 3, 4), 0.1)
