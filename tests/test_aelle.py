"""AeLLE: the grid, the alpha schedule, the classifiers' metrics on hand-computed cases, and a
synthetic population where the spectrum's shape, not its mean, sets the loss."""
import numpy as np
import pytest
import torch

from lyabook import aelle


def test_doubling_extrapolates_the_tail_and_interp_holds_it():
    # the spec's check (section 4.3): [0, -1, -2, -4] to 16 entries, tail -4.5, -5, -5.5
    x = np.array([[0.0, -1.0, -2.0, -4.0]])
    d = aelle.to_grid(x, 16)
    assert d.shape == (1, 16)
    np.testing.assert_allclose(d[0, ::4], x[0])  # exponent k at position 4 k
    np.testing.assert_allclose(d[0, 13:], [-4.5, -5.0, -5.5])
    np.testing.assert_allclose(d[0, 1:4], [-0.25, -0.5, -0.75])  # linear between neighbours
    i = aelle.to_grid(x, 16, method="interp")
    np.testing.assert_allclose(i[0, :13], d[0, :13])  # the two differ only in the tail
    np.testing.assert_allclose(i[0, 13:], [-4.0, -4.0, -4.0])
    assert aelle.to_grid(x, 4).tolist() == x.tolist()


@pytest.mark.parametrize("args, match", [
    ((np.zeros((2, 3)), 16), "multiple"), ((np.zeros((2, 4)), 24), "power of 2"),
    ((np.array([[0.0, np.nan]]), 4), "finite"), ((np.zeros((2, 4)), 16, "cubic"), "method"),
    ((np.zeros((2, 1)), 16), "N >= 2"),
])
def test_bad_grids_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        aelle.to_grid(*args)


def test_alpha_schedule_holds_each_stage_for_its_epochs():
    assert aelle.alpha_schedule([5, 5, 10, 20], 2) == [5, 5, 5, 5, 10, 10, 20, 20]
    assert len(aelle.alpha_schedule([5, 5, 10, 20], 1000)) == 4000  # the authors' ae_prednet_4000
    for bad in ([], [1, -1], [float("nan")]):
        with pytest.raises(ValueError, match="alphas"):
            aelle.alpha_schedule(bad, 2)
    with pytest.raises(ValueError, match="epochs_per_stage"):
        aelle.alpha_schedule([1], 0)


def test_median_split_scores_against_hand_counts():
    loss = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])      # truth (loss < 3.5): networks 0, 1, 2
    stat = np.array([9.0, 8.0, 1.0, 7.0, 2.0, 3.0])      # predicted (stat > 5): 0, 1, 3
    s = aelle.median_split(stat, loss, n_boot=50)
    # TP = {0, 1}: precision 2/3, recall 2/3, F1 2/3
    assert (s.precision, s.recall) == pytest.approx((2 / 3, 2 / 3)) and s.f1 == pytest.approx(2 / 3)
    assert s.positives == 3 and s.predicted_positives == 3 and s.n == 6
    lo, hi = s.f1_interval
    assert 0 <= lo <= hi <= 1
    low = aelle.median_split(-stat, loss, higher_is_better=False, n_boot=50)
    assert low.f1 == pytest.approx(s.f1)


def test_best_threshold_is_chosen_on_training_networks_only():
    loss_tr = np.arange(10.0)
    stat_tr = -loss_tr  # perfectly separating on the training networks
    c, s = aelle.best_threshold(stat_tr, loss_tr, np.array([-1.0, -2.0, -8.0, -9.0]), np.array([1.0, 2.0, 8.0, 9.0]),
                                n_boot=20)
    assert -5.0 < c < -4.0 and s.f1 == 1.0


def test_orthant_classifier_rules_empty_orthants_and_ties():
    pcs = np.array([[1, 1], [1, 1], [-1, -1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    loss = np.array([0.0, 0.1, 5.0, 6.0, 0.2, 7.0])  # the (+, -) orthant holds one good network
    rules, s = aelle.orthant_classifier(pcs, loss, pcs, loss, n_boot=20)
    assert rules == {(True, True): True, (False, False): False, (True, False): True, (False, True): False}
    assert s.f1 == 1.0
    _, empty = aelle.orthant_classifier(pcs[:4], loss[:4], np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([0.0, 1.0]),
                                        n_boot=20)
    assert empty.predicted_positives == 1  # the empty (+, -) orthant predicts "not high accuracy"


def test_embed_orients_every_component_to_fall_with_loss():
    rng = np.random.default_rng(0)
    loss = rng.uniform(0, 1, 200)
    z = np.stack([loss * 3 + rng.normal(0, 0.1, 200), rng.normal(0, 0.3, 200), -loss], 1)
    pcs = aelle.embed(z, loss, n_components=2)
    import scipy.stats

    assert np.corrcoef(pcs[:, 0], loss)[0, 1] < -0.9 and scipy.stats.spearmanr(pcs[:, 1], loss)[0] <= 0  # by ranks
    # fitted on the first 100 rows only: those rows' PCA, applied to every row
    from sklearn.decomposition import PCA

    part = aelle.embed(z, loss, n_components=2, fit_rows=np.arange(200) < 100)
    ref = PCA(n_components=2).fit(z[:100]).transform(z)
    np.testing.assert_allclose(np.abs(part), np.abs(ref), atol=1e-12)
    assert np.corrcoef(part[100:, 0], loss[100:])[0, 1] < -0.9
    project = aelle.embedding(z, loss, n_components=2, fit_rows=np.arange(200) < 100)  # the same plane, for new points
    np.testing.assert_array_equal(project(z), part)
    np.testing.assert_array_equal(project(z[150:]), part[150:])


def test_aelle_separates_what_the_mean_exponent_cannot():
    """Every spectrum has the same mean; the loss depends non-linearly on its shape (how spread
    out the exponents are). The mean exponent classifies at chance; AeLLE's PC1 separates high
    from low loss."""
    rng = np.random.default_rng(1)
    n, N = 240, 16
    spread = rng.uniform(0.2, 2.0, n)
    base = np.linspace(1, -1, N)
    spectra = -1 + spread[:, None] * base[None] + rng.normal(0, 0.02, (n, N))
    spectra -= spectra.mean(1, keepdims=True) + 1  # every mean exactly -1
    loss = np.exp(-2 * spread) + rng.normal(0, 0.005, n)  # non-linear in the shape, blind to the mean
    tr, va = slice(0, 180), slice(180, None)
    model = aelle.AeLLE(N, hidden=(16,), latent_size=4, seed=0)
    hist = aelle.fit(model, spectra[tr], loss[tr], spectra[va], loss[va], alphas=(1, 5), epochs_per_stage=150,
                     lr=3e-3, batch_size=32)
    assert len(hist.alpha) == 300 and hist.alpha[0] == 1 and hist.alpha[-1] == 5
    assert hist.valid_prediction[hist.best_epoch] == min(hist.valid_prediction)
    pcs = aelle.embed(model.encode(spectra), loss, n_components=1)
    with_aelle = aelle.median_split(pcs[va, 0], loss[va], n_boot=100)
    with_mean = aelle.median_split(spectra[va].mean(1) + rng.normal(0, 1e-9, 60), loss[va], n_boot=100)
    assert with_aelle.f1 > 0.8 and with_aelle.f1_interval[0] > with_mean.f1_interval[1]  # the intervals do not overlap
    assert with_mean.f1 < 0.7


def test_fit_names_bad_data():
    model = aelle.AeLLE(8, hidden=(4,), latent_size=2)
    x = np.zeros((4, 8))
    with pytest.raises(ValueError, match="x_train"):
        aelle.fit(model, np.zeros((4, 7)), np.zeros(4), x, np.zeros(4), epochs_per_stage=1)
    with pytest.raises(ValueError, match="finite"):
        aelle.fit(model, x, np.array([0, 1, np.nan, 0]), x, np.zeros(4), epochs_per_stage=1)
    with pytest.raises(ValueError, match="prediction_loss"):
        aelle.fit(model, x, np.zeros(4), x, np.zeros(4), epochs_per_stage=1, prediction_loss="bce")


def test_prednet_is_the_authors_architecture_and_learns_a_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (120, 8))
    y = x @ rng.normal(0, 1, 8) * 0.3 + 2.0
    model = aelle.PredNet(8, 10, seed=0)
    assert [type(m).__name__ for m in model.net] == ["Linear", "LeakyReLU", "Linear"] and model.net[0].bias is None
    out = aelle.fit_prednet(model, x[:90], y[:90], x[90:], y[90:], iterations=1500, lr=1e-2)
    assert out["valid_mse"][-1] < 0.05 * np.var(y) and out["valid_prediction"].shape == (30,)
    with pytest.raises(ValueError, match="x_train"):
        aelle.fit_prednet(model, x[:, :7], y, x, y, iterations=1)


def test_a_network_split_keeps_each_network_in_one_split_and_a_row_split_does_not():
    ids = np.repeat(np.arange(50), 6)  # 50 networks x 6 epochs
    masks = aelle.split_by_network(ids, (0.2, 0.2, 0.6), seed=1)
    assert sum(m.sum() for m in masks) == len(ids) and not (masks[0] & masks[1]).any()
    for m in masks:
        assert all(m[ids == n].all() or not m[ids == n].any() for n in range(50))
    assert [len(np.unique(ids[m])) for m in masks] == [10, 10, 30]
    rows = aelle.split_by_row(len(ids), (0.2, 0.2, 0.6), seed=1)
    shared = set(ids[rows[0]]) & set(ids[rows[2]])
    assert len(shared) > 10  # the leak: the same networks in training and test
    with pytest.raises(ValueError, match="fractions"):
        aelle.split_by_network(ids, (0.5, 0.6))


def test_region_composition_has_both_readings_of_table_d5():
    arch = np.array(["LSTM"] * 4 + ["GRU"] * 6)
    region = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    out = aelle.region_composition(arch, region)
    assert out["composition"] == pytest.approx({"GRU": 1 / 3, "LSTM": 2 / 3})  # sums to 1 over the region
    assert out["fraction_in_region"] == pytest.approx({"GRU": 1 / 6, "LSTM": 0.5})


@pytest.mark.parametrize("squash", [False, True])
def test_moving_latents_along_the_predictor_and_the_level_set_it_maps_to_one_loss(squash):
    model = aelle.AeLLE(8, hidden=(6,), latent_size=4, squash=squash, seed=3)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    raw = lambda v: model.predictor(v).squeeze(-1).detach()
    torch.testing.assert_close(raw(aelle.shift_prediction(model, z, 0.7)) - raw(z), torch.full((5,), 0.7), atol=1e-5, rtol=0)
    target = 0.3
    on = aelle.to_level_set(model, z, target)
    torch.testing.assert_close(aelle.predict(model, on), torch.full((5,), target), atol=1e-5, rtol=0)
    ns = aelle.null_space(model)
    assert ns.shape == (3, 4)
    torch.testing.assert_close(raw(on + 2.0 * ns[0]), raw(on), atol=1e-5, rtol=0)
    # the null space of theta predicts the bias (or its sigmoid), not a zero loss
    b = float(model.predictor.bias.detach()[0])
    expect = torch.sigmoid(torch.tensor(b)) if squash else torch.tensor(b)
    torch.testing.assert_close(aelle.predict(model, ns), expect.expand(3), atol=1e-5, rtol=0)
    assert aelle.decode(model, on).shape == (5, 8)


def test_the_high_accuracy_side_is_set_by_ranks_not_by_one_blown_up_network():
    rng = np.random.default_rng(0)
    stat = rng.normal(size=200)
    loss = np.exp(-stat) + 0.01 * rng.random(200)    # falls with the statistic, rank for rank
    loss[np.argmax(stat)] = 1e13                     # one network that blew up, at the top of the statistic
    assert np.corrcoef(stat, loss)[0, 1] > 0         # Pearson's r is set by that one network
    assert aelle.higher_is_better(stat, loss)
    assert not aelle.higher_is_better(-stat, loss)
    z = np.stack([3 * stat, 0.3 * rng.normal(size=200)], 1) @ np.linalg.qr(rng.normal(size=(6, 6)))[0][:2]
    pc1 = aelle.embed(z, loss, n_components=1)[:, 0]
    assert np.corrcoef(pc1, stat)[0, 1] > 0.99       # PC1 oriented by ranks: high PC1 = low loss
    assert aelle.higher_is_better(np.ones(5), np.arange(5.0))  # no rank correlation: the default side
    with pytest.raises(ValueError, match="finite"):
        aelle.higher_is_better([1.0, np.nan], [1.0, 2.0])
