"""Claim: every analytic Jacobian equals torch.func.jacrev of the cell's own step (float64, 1e-10)."""
import pytest
import torch
from torch import nn

from lyabook import rnn
from lyabook.systems import autograd_jacobian

TOL = 1e-10


def _random_point(cell, batch=4, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(batch, cell.state_dim, generator=g, dtype=torch.float64)
    u = torch.randn(batch, cell.input_size, generator=g, dtype=torch.float64)
    return x, u


def _larger_weights(cell, p=0.6, seed=1):
    """Weights larger than the default init so that gates and tanh are far from linear."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in cell.parameters():
            prm.copy_((torch.rand(prm.shape, generator=g, dtype=prm.dtype) * 2 - 1) * p)
    return cell


@pytest.mark.parametrize("name", sorted(rnn.CELLS))
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_analytic_jacobian_equals_autograd(name, num_layers, bias):
    cell = _larger_weights(rnn.CELLS[name](3, 6, num_layers=num_layers, bias=bias).double().eval())
    x, u = _random_point(cell)
    J = cell.jacobian(x, u)
    assert J.shape == (4, cell.state_dim, cell.state_dim)
    torch.testing.assert_close(J, autograd_jacobian(cell.step, x, u), atol=TOL, rtol=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_relu_rnn_jacobian_uses_relu_derivative(num_layers):
    cell = _larger_weights(rnn.RNN(3, 6, num_layers=num_layers, nonlinearity="relu").double())
    x, u = _random_point(cell)
    J = cell.jacobian(x, u)
    torch.testing.assert_close(J, autograd_jacobian(cell.step, x, u), atol=TOL, rtol=0)
    # some units are off: their rows vanish (the dissertation's code ignored relu here)
    assert (J[:, :6].abs().sum(-1) == 0).any()


@pytest.mark.parametrize("name", ["LSTM", "CoRNN", "LEM"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_h_block_convention_is_output_block_jacobian_with_second_block_fixed(name, num_layers):
    cls = rnn.CELLS[name]
    full = _larger_weights(cls(3, 5, num_layers=num_layers).double())
    hb = cls(3, 5, num_layers=num_layers, convention="h_block").double()
    hb.load_state_dict(full.state_dict())
    x, u = _random_point(full)
    H, n = full.hidden_size, full.layer_dim
    idx = torch.cat([torch.arange(l * n, l * n + H) for l in range(num_layers)])

    def h_map(h, ui):  # state with the second blocks (c or z) fixed at x's
        xs = x[:1].clone().squeeze(0).index_put((idx,), h)
        return full.step(xs.unsqueeze(0), ui.unsqueeze(0)).squeeze(0)[idx]

    ref = torch.func.jacrev(h_map)(x[0, idx], u[0])
    J = hb.jacobian(x, u)
    assert hb.tangent_dim == num_layers * H and J.shape == (4, num_layers * H, num_layers * H)
    torch.testing.assert_close(J[0], ref, atol=TOL, rtol=0)
    # the state still evolves in full
    torch.testing.assert_close(hb.step(x, u), full.step(x, u))


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_adapter_jacobian_and_forward_match_torch(torch_cls, num_layers, bias, batch_first):
    torch.manual_seed(0)
    module = torch_cls(3, 5, num_layers=num_layers, bias=bias, batch_first=batch_first).double()
    cell = rnn.from_torch(module)
    x, u = _random_point(cell)
    torch.testing.assert_close(cell.jacobian(x, u), autograd_jacobian(cell.step, x, u), atol=TOL, rtol=0)
    # the flat-state step reproduces torch's own recurrence over a sequence
    seq = torch.randn(2, 7, 3, dtype=torch.float64)
    out_t, _ = module(seq if batch_first else seq.transpose(0, 1))
    out_t = out_t if batch_first else out_t.transpose(0, 1)
    xs = cell.init_state(2)
    top = (num_layers - 1) * cell.layer_dim
    for t in range(7):
        xs = cell.step(xs, seq[:, t])
        torch.testing.assert_close(xs[:, top : top + 5], out_t[:, t], atol=1e-12, rtol=0)
    out, state = cell(seq)
    torch.testing.assert_close(out, out_t)
    torch.testing.assert_close(state, xs, atol=1e-12, rtol=0)
    # parameters are shared, not copied
    assert next(cell.parameters()) is next(module.parameters())


@pytest.mark.parametrize("name", sorted(rnn.CELLS))
def test_forward_equals_repeated_step(name):
    cell = rnn.CELLS[name](3, 4, num_layers=2).double().eval()
    seq = torch.randn(2, 5, 3, dtype=torch.float64)
    out, state = cell(seq)
    x = cell.init_state(2)
    for t in range(5):
        x = cell.step(x, seq[:, t])
    torch.testing.assert_close(state, x, atol=1e-12, rtol=0)
    assert out.shape == (2, 5, 4)


def test_noisy_rnn_is_deterministic_in_eval_and_noisy_in_training():
    cell = rnn.NoisyRNN(3, 4).double()
    x, u = _random_point(cell)
    cell.eval()
    torch.testing.assert_close(cell.step(x, u), cell.step(x, u), atol=0, rtol=0)
    cell.train()
    assert not torch.equal(cell.step(x, u), cell.step(x, u))


def test_asrnn_recurrent_matrix_is_antisymmetric_minus_diffusion():
    cell = rnn.ASRNN(2, 5, gamma=0.1).double()
    M = cell.recurrent_matrix()
    torch.testing.assert_close(M + M.T, -0.2 * torch.eye(5, dtype=torch.float64))


def test_cells_reject_bad_construction_and_inputs():
    with pytest.raises(ValueError, match="hidden_size"):
        rnn.LSTM(3, 0)
    with pytest.raises(ValueError, match="convention"):
        rnn.GRU(3, 4, convention="h_block")
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn.RNN(3, 4, nonlinearity="sigmoid")
    cell = rnn.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"input must be \(B, 3\)"):
        cell.step(torch.zeros(2, 8), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"state must be \(B, 8\)"):
        cell.step(torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="inputs must be"):
        cell(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="from_torch"):
        rnn.from_torch(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="bidirectional"):
        rnn.from_torch(nn.LSTM(3, 4, bidirectional=True))
