"""Covariant Lyapunov vectors (Ginelli et al. 2007): a non-normal linear map's eigenvectors,
covariance along an RNN trajectory, and the flow direction of the Lorenz system."""
import pytest
import torch

from lyabook import covariant_lyapunov_vectors, rnn
from lyabook.systems import Lorenz, Map


def _parallel(a, b):  # |cos| between columns of a and b, (..., d, k) each
    return ((a * b).sum(-2) / (a.norm(dim=-2) * b.norm(dim=-2))).abs()


def test_a_constant_non_normal_map_has_its_eigenvectors_as_covariant_vectors():
    A = torch.tensor([[2.0, 1.0], [0.0, 0.5]], dtype=torch.float64)
    m = Map(lambda x, u: x @ A.T, lambda x, u: A.expand(x.shape[0], 2, 2), state_dim=2)
    res = covariant_lyapunov_vectors(m, torch.tensor([[0.3, -0.2]], dtype=torch.float64), 20, warmup=10)
    v2 = torch.tensor([1.0, -1.5], dtype=torch.float64) / torch.tensor(3.25, dtype=torch.float64).sqrt()
    e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(_parallel(res.vectors[:, 0, :, 0:1], e1[:, None]), torch.ones(20, 1, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(_parallel(res.vectors[:, 0, :, 1:2], v2[:, None]), torch.ones(20, 1, dtype=torch.float64), atol=1e-8)
    torch.testing.assert_close(res.exponents[0], torch.log(torch.tensor([2.0, 0.5], dtype=torch.float64)), atol=1e-12, rtol=0)


def test_the_vectors_are_covariant_along_an_rnn_trajectory():
    torch.manual_seed(0)
    cell = rnn.RNN(2, 8, bias=False).double().eval()
    with torch.no_grad():
        cell.module.weight_hh_l0.mul_(2.5)
    x = torch.randn(3, 260, 2, dtype=torch.float64)
    res = covariant_lyapunov_vectors(cell, None, 60, inputs=x, warmup=100, backward_transient=100)
    # replay the trajectory: step t's Jacobian maps the vectors after step t - 1 to those after step t
    h, jacobians = cell.init_state(3), []
    for t in range(160):
        h, J = cell.step_and_jacobian(h, x[:, t])
        jacobians.append(J)
    for w in range(1, 60):
        mapped = jacobians[100 + w] @ res.vectors[w - 1]
        assert _parallel(mapped, res.vectors[w]).min() > 1 - 1e-8
    assert not torch.allclose(res.vectors[10].mT @ res.vectors[10], torch.eye(8, dtype=torch.float64).expand(3, 8, 8), atol=1e-3)


def test_the_lorenz_zero_exponents_vector_is_along_the_flow():
    lorenz = Lorenz(dt=0.01)
    x0 = torch.tensor([[1.0, 1.0, 20.0]], dtype=torch.float64)
    res = covariant_lyapunov_vectors(lorenz, x0, 400, warmup=2000, backward_transient=1000)
    # the state after the warm-up and each measured step, and the vector field there
    x = x0
    for _ in range(2000):
        x = lorenz.step(x)
    cos = []
    for w in range(400):
        x = lorenz.step(x)
        flow = lorenz._lorenz_rhs(x)
        cos.append(float(_parallel(res.vectors[w, :, :, 1:2], flow.unsqueeze(-1)).min()))
    assert sum(c > 0.999 for c in cos) / len(cos) > 0.95
    assert abs(float(res.exponents[0, 1])) < 0.05 and float(res.exponents[0, 0]) > 0.5


def test_bad_arguments_are_named():
    m = Map(lambda x, u: x, lambda x, u: torch.eye(2, dtype=x.dtype).expand(x.shape[0], 2, 2), state_dim=2)
    with pytest.raises(ValueError, match="n_steps"):
        covariant_lyapunov_vectors(m, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="k must be"):
        covariant_lyapunov_vectors(m, torch.zeros(1, 2), 5, k=3)
