"""Chapter 4's gradients and Q vectors: per-step gradients against per-sample autograd, the
gradient rebuilt from Q and R against autograd (1e-10), and the dissertation's ordering."""
import pytest
import torch

from lyabook import gradients, rnn


def _net(H=6, I=3, O=4, seed=0):
    torch.manual_seed(seed)
    cell = rnn.RNN(I, H, bias=False).double()
    with torch.no_grad():
        cell.module.weight_hh_l0.mul_(3.0)  # a mixing network, not a contracting one
    return cell, torch.nn.Linear(H, O).double()


def test_step_gradients_are_each_samples_gradient_of_the_loss_ending_at_each_step():
    cell, readout = _net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    dv = gradients.step_gradients(cell, readout, x, y)
    assert dv.shape == (3, 5, 6, 6)
    W = cell.module.weight_hh_l0
    for b in range(3):
        for t in range(5):
            h = cell.init_state(1)
            for k in range(t + 1):
                h = cell.step(h, x[b : b + 1, k])
            loss = torch.nn.functional.cross_entropy(readout(h), y[b : b + 1])
            (ref,) = torch.autograd.grad(loss, W)
            torch.testing.assert_close(dv[b, t], ref, atol=1e-12, rtol=0)


def test_the_gradient_rebuilt_from_q_and_r_is_autograds_and_the_dissertations_order_is_not():
    cell, readout = _net(H=8)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    states, Q, R = gradients.qr_trajectory(cell, x)
    t, s = 2, 8
    # d h_s / d h_t by autograd from the state at t
    h_t = states[t].clone().requires_grad_(True)
    h = h_t
    for k in range(t, s):
        h = cell.step(h, x[:, k])
    v = torch.randn(2, 8, generator=g, dtype=torch.float64)  # dL/dh_s for some loss
    (grad_t,) = torch.autograd.grad((h * v).sum(), h_t)
    P = gradients.jacobian_product(Q, R, t, s)  # (B, d, d) = d h_s / d h_t
    torch.testing.assert_close((P.mT @ v.unsqueeze(-1)).squeeze(-1), grad_t, atol=1e-10, rtol=0)
    # the authors' iteration (J^T Q) gives J_s^T ... J_{t+1}^T: not the transposed product
    _, Qc, Rc = gradients.qr_trajectory(cell, x, transpose=True)
    Pc = gradients.jacobian_product(Qc, Rc, t, s)
    wrong = (Pc @ v.unsqueeze(-1)).squeeze(-1)
    assert (wrong - grad_t).abs().max() > 1e-3 * grad_t.abs().max()
    with pytest.raises(ValueError, match="t <"):
        gradients.jacobian_product(Q, R, 5, 5)


def test_alignment_of_unrelated_directions_has_the_random_baseline_and_identical_ones_are_one():
    g = torch.Generator().manual_seed(3)
    N = 128
    Q = torch.linalg.qr(torch.randn(200, N, N, generator=g, dtype=torch.float64))[0]
    dv = torch.randn(200, N, N, generator=g, dtype=torch.float64)
    a = gradients.alignment(Q, dv, range(10), range(5))
    assert a.shape == (200, 10, 5)
    assert abs(float(a.std()) - N ** -0.5) < 0.005  # the dissertation's untrained 0.088-0.089
    _, _, vh = torch.linalg.svd(dv[:1])
    same = gradients.alignment(vh.mT, dv[:1], range(3), range(3))
    torch.testing.assert_close(same[0].abs(), torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_participation_ratio_spans_one_over_n_to_one():
    pr = gradients.participation_ratio(torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 1, 1], [2.0, 1, 1, 1]]))
    torch.testing.assert_close(pr[:2], torch.tensor([0.25, 1.0]))
    assert 0.25 < float(pr[2]) < 1


def test_bad_arguments_are_named():
    cell, readout = _net()
    with pytest.raises(ValueError, match="weight"):
        gradients.step_gradients(cell, readout, torch.zeros(2, 3, 3, dtype=torch.float64), torch.tensor([0, 1]), weight="w")
    with pytest.raises(ValueError, match="targets"):
        gradients.step_gradients(cell, readout, torch.zeros(2, 3, 3, dtype=torch.float64), torch.tensor([0]))


def test_alignment_study_statistics_follow_their_definitions():
    g = torch.Generator().manual_seed(4)
    T, B, N = 3, 4, 16
    Q = torch.linalg.qr(torch.randn(T + 1, B, N, N, generator=g, dtype=torch.float64))[0]
    dv = torch.randn(B, T, N, N, generator=g, dtype=torch.float64)
    out = gradients.alignment_study(Q, dv, {"first": range(3)}, {"top": range(2)})
    v = out[("first", "top")]["values"]
    assert v.shape == (T, B, 3, 2)
    assert out[("first", "top")]["pooled_std"] == pytest.approx(float(v.std()))
    per = [float(v[t, :, :, j].std()) for t in range(T) for j in range(2)]
    assert out[("first", "top")]["code_std"] == pytest.approx(sum(per) / len(per))
    assert out[("all", "top")]["std_by_step_and_q"].shape == (T, N)
    torch.testing.assert_close(v[1, 2], gradients.alignment(Q[2], dv[:, 1], range(3), range(2))[2])
