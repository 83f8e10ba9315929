"""Pixel flipping by R values (Chapter 4, Algorithm 3, Table 4.1): `lyabook.pixelflip`."""
import math

import numpy as np
import pytest
import torch

from lyabook import data, pixelflip, rnn
from lyabook.lyapunov import lyapunov_spectrum
from lyabook.population import Population


def _cell(H=6, seed=0):
    torch.manual_seed(seed)
    cell = rnn.RNN(1, H).double()
    with torch.no_grad():
        cell.module.weight_hh_l0.mul_(3.0)  # strong enough recurrence for R values of both signs
    return cell


def _inputs(B=3, T=30, seed=1):
    return torch.rand(B, T, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_authors_permutation_is_numpys_randomstate_1234_and_orders_the_sequence():
    perm = pixelflip.authors_permutation()
    assert perm.tolist() == np.random.RandomState(1234).permutation(784).tolist()
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seq = data.mnist_sequences(images, "permuted", permutation=perm)  # (2, 784, 1)
    assert torch.equal(seq[:, :, 0], images.flatten(1)[:, perm].float() / 255)
    with pytest.raises(ValueError, match="permutation must hold each of the 784 pixel indices once"):
        data.mnist_sequences(images, "permuted", permutation=torch.zeros(784, dtype=torch.long))


def test_r_values_without_warmup_are_the_engines_log_r():
    cell, x = _cell(), _inputs()
    r = pixelflip.r_values(cell, x, warmup=0)
    torch.testing.assert_close(r, lyapunov_spectrum(cell, inputs=x, keep="r").log_r, atol=0, rtol=0)
    assert r.shape == (30, 3, 6)


def test_r_values_follow_the_networks_own_trajectory_from_zero():
    """Whatever the frame, the sum of all log R at step t is log |det J_t|: with the Jacobians
    of the real trajectory from h = 0 (after a warm-up that restarts the state)."""
    cell, x = _cell(), _inputs()
    r = pixelflip.r_values(cell, x, warmup=12)
    h = torch.zeros(3, 6, dtype=torch.float64)
    for t in range(x.shape[1]):
        h, J = cell.step_and_jacobian(h, x[:, t])
        torch.testing.assert_close(r[t].sum(-1), torch.linalg.slogdet(J).logabsdet, atol=1e-10, rtol=0)
    lead = pixelflip.r_values(cell, x, warmup=12, k=2)
    torch.testing.assert_close(lead, r[:, :, :2], atol=1e-10, rtol=0)  # leading R values need only a k-frame


def test_the_authors_trajectory_restarts_every_step_and_uses_sech():
    cell, x = _cell(), _inputs()
    r = pixelflip.r_values(cell, x, warmup=5, trajectory="authors")
    w_ih, w_hh = cell.module.weight_ih_l0, cell.module.weight_hh_l0
    b = cell.module.bias_ih_l0 + cell.module.bias_hh_l0
    h = torch.zeros(3, 6, dtype=torch.float64)
    for t in range(x.shape[1]):
        pre = x[:, t] @ w_ih.T + b + h @ w_hh.T
        J = (1 / torch.cosh(pre)).unsqueeze(-1) * w_hh  # sech, not sech^2
        torch.testing.assert_close(r[t].sum(-1), torch.linalg.slogdet(J).logabsdet, atol=1e-10, rtol=0)
        h = torch.tanh(x[:, t] @ w_ih.T + b)  # the state is not carried
    real = pixelflip.r_values(cell, x, warmup=5)
    assert (r - real).abs().max() > 0.1
    with pytest.raises(ValueError, match="trajectory must be 'real' or 'authors'"):
        pixelflip.r_values(cell, x, trajectory="code")
    with pytest.raises(ValueError, match="warmup must be shorter than the sequence"):
        pixelflip.r_values(cell, x, warmup=30)
    with pytest.raises(TypeError, match="one-layer tanh"):
        pixelflip.r_values(rnn.RNN(1, 4, nonlinearity="relu").double(), x, trajectory="authors")


def test_pixel_scores_put_each_steps_r_value_on_the_pixel_it_showed():
    log_r = torch.randn(5, 2, 3, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    s1 = pixelflip.pixel_scores(log_r, perm)
    for t in range(5):
        assert torch.equal(s1[:, perm[t]], log_r[t, :, 0])
    s2 = pixelflip.pixel_scores(log_r, perm, n=2)
    torch.testing.assert_close(s2[:, perm[1]], log_r[1, :, :2].mean(-1))
    assert pixelflip.top_pixels(s1, 2).shape == (2, 2)
    assert set(pixelflip.top_pixels(s1, 1)[0].tolist()) == {int(perm[log_r[:, 0, 0].argmax()])}
    with pytest.raises(ValueError, match="k >= n = 4"):
        pixelflip.pixel_scores(log_r, perm, n=4)


def test_flip_is_algorithm_3_dark_up_and_others_down():
    images = torch.tensor([[0.0, 0.5, 0.0005, 1.0, 0.25]])
    out = pixelflip.flip(images, torch.tensor([[0, 1, 2, 3]]))
    assert out.tolist() == [[1.0, 0.0, 1.0, 0.0, 0.25]]
    assert images[0, 0] == 0.0  # a copy
    batch = pixelflip.flip(images.expand(4, 2, 5), torch.zeros(4, 2, 1, dtype=torch.long))
    assert batch.shape == (4, 2, 5) and bool((batch[..., 0] == 1).all())


def test_random_pixels_differ_per_image_unless_the_authors_control_is_asked_for():
    g = torch.Generator().manual_seed(0)
    own = pixelflip.random_pixels(50, 15, 784, 100, g)
    assert own.shape == (50, 15, 100)
    assert all(len(set(s.tolist())) == 100 for s in own.flatten(0, 1))  # no repeats
    assert not torch.equal(own[0, 0].sort().values, own[0, 1].sort().values)
    same = pixelflip.random_pixels(50, 15, 784, 100, g, same_for_all=True)
    assert torch.equal(same[3, 0], same[3, 14]) and not torch.equal(same[3, 0], same[4, 0])
    with pytest.raises(ValueError, match="k must be at most n_pixels"):
        pixelflip.random_pixels(1, 1, 10, 11, g)


def test_losses_are_the_final_outputs_cross_entropy():
    pop = Population(rnn.RNN, 1, 1, 5, 3, init_p=0.5, seed=0).double()
    net = pop.network(0)
    images = torch.rand(7, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    loss, logits = pixelflip.losses(net, images, labels, perm, batch=3)
    expected = net(images[:, perm].unsqueeze(-1))[0][:, -1]
    torch.testing.assert_close(logits, expected.detach())
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(expected, labels, reduction="none").detach())


# Table 4.1 as printed: k, mu_R - mu_rand, "Variance", p-value
TABLE_4_1 = [(1, -0.028, 0.009, 0.998), (5, -0.008, 0.084, 0.540), (10, 0.025, 0.303, 0.468),
             (20, 0.313, 0.341, 0.179), (30, 0.260, 0.359, 0.234), (50, 0.794, 0.523, 0.065),
             (75, 0.814, 0.475, 0.043), (100, 1.050, 0.530, 0.024), (200, 1.363, 0.824, 0.049)]


def test_table_4_1s_p_values_are_a_one_sided_z_test_with_its_variance_column_as_the_standard_error():
    for k, delta, se, p in TABLE_4_1:
        assert pixelflip.z_test_p(delta, se) == pytest.approx(p, abs=0.0025), k
    # read as a variance, the column does not give the printed p-values
    assert pixelflip.z_test_p(1.050, math.sqrt(0.530)) == pytest.approx(0.075, abs=0.001)


def test_authors_z_test_and_paired_test_on_hand_computed_numbers():
    y_r = np.array([1.0, 2.0, 3.0])
    y_rand = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 3.0]])  # per-image means 0, 1, 2
    z = pixelflip.authors_z_test(y_r, y_rand)
    assert z["delta"] == pytest.approx(2.0 - 1.0)
    assert z["se"] == pytest.approx(math.sqrt(1.0 / 3 + np.var([0, 1, 1, 0, 1, 3], ddof=1) / 6))
    assert z["p"] == pytest.approx(0.5 * math.erfc(z["delta"] / z["se"] / math.sqrt(2)))
    d = np.array([1.0, 1.0, 1.0 + 1e-9])  # every image's R flip one above its random mean
    t = pixelflip.paired_test(y_r + np.array([0, 0, 1e-9]), y_rand)
    assert t["mean_difference"] == pytest.approx(d.mean()) and t["p_t"] < 1e-6
    flat = pixelflip.paired_test(np.array([1.0, 2.0, 1.5, 2.5]), np.array([[1.5, 1.5, 2.0, 2.0]]))
    from scipy.stats import t as student

    dd = np.array([-0.5, 0.5, -0.5, 0.5])
    assert flat["p_t"] == pytest.approx(student.sf(dd.mean() / (dd.std(ddof=1) / 2), 3))


def test_holm_adjusts_step_down():
    assert pixelflip.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert pixelflip.holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])


def test_flip_study_matches_flipping_each_case_by_hand():
    pop = Population(rnn.RNN, 1, 1, 5, 3, init_p=0.5, seed=0).double()
    net = pop.network(0)
    g = torch.Generator().manual_seed(3)
    images = (torch.rand(4, 9, generator=g, dtype=torch.float64) > 0.5).double() * 0.7
    labels = torch.tensor([0, 1, 2, 0])
    perm = torch.randperm(9, generator=g)
    scores = {"r": torch.rand(4, 9, generator=g, dtype=torch.float64)}
    out = pixelflip.flip_study(net, images, labels, perm, scores, [1, 3], n_random=2, seed=5, batch=7)
    assert out["r"]["loss"].shape == (2, 4) and out["random"]["loss"].shape == (2, 2, 4)
    assert out["random_same"]["logits"].shape == (2, 2, 4, 3)
    by_hand = pixelflip.losses(net, pixelflip.flip(images, pixelflip.top_pixels(scores["r"], 3)), labels, perm)[0]
    np.testing.assert_allclose(out["r"]["loss"][1], by_hand.numpy(), atol=1e-12)
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    for k in (1, 3):  # the generators advance k by k, as flip_study draws them
        own = pixelflip.random_pixels(2, 4, 9, k, gens[0])
        same = pixelflip.random_pixels(2, 4, 9, k, gens[1], same_for_all=True)
    np.testing.assert_allclose(out["random"]["loss"][1, 1], pixelflip.losses(
        net, pixelflip.flip(images, own[1]), labels, perm)[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(out["random_same"]["loss"][1, 0], pixelflip.losses(
        net, pixelflip.flip(images, same[0]), labels, perm)[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(out["base"]["loss"], pixelflip.losses(net, images, labels, perm)[0].numpy(), atol=1e-12)


def test_authors_init_is_xavier_normal_with_torchs_default_biases():
    pop = Population(rnn.RNN, 1, 1, 512, 10, init_p=1.0, seed=400, init=pixelflip.authors_init(1, 512))
    net = pop.network(0)
    m = {k: v.detach() for k, v in net.cell.module.named_parameters()}
    assert abs(float(m["weight_hh_l0"].std()) - math.sqrt(2 / 1024)) < 0.002
    assert abs(float(m["weight_ih_l0"].std()) - math.sqrt(2 / 513)) < 0.01
    assert float(m["bias_hh_l0"].abs().max()) == 0 and 0.9 < float(m["bias_ih_l0"].abs().max()) <= 1
    assert float(net.readout.weight.detach().abs().max()) <= 512 ** -0.5
    with pytest.raises(ValueError, match="authors_init is for a one-layer RNN"):
        Population(rnn.RNN, 1, 1, 4, 2, init=pixelflip.authors_init(1, 4), num_layers=2)


def test_bad_inputs_name_the_parameter():
    images = torch.rand(2, 5)
    with pytest.raises(TypeError, match="pixels must be an int64 tensor"):
        pixelflip.flip(images, torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 5\)"):
        pixelflip.flip(images, torch.full((2, 1), 5))
    with pytest.raises(TypeError, match="images must be a float tensor"):
        pixelflip.flip(torch.zeros(2, 5, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="log_r must be a torch.Tensor"):
        pixelflip.pixel_scores(np.zeros((5, 2, 1)), torch.arange(5))
    net = Population(rnn.RNN, 1, 1, 3, 2, seed=0).network(0)
    with pytest.raises(ValueError, match="permutation must hold each of the 5 pixel indices once"):
        pixelflip.losses(net, images, torch.zeros(2, dtype=torch.long), torch.zeros(5, dtype=torch.long))
