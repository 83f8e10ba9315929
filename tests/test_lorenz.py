"""Claims of reference-values.md for the Lorenz system (sigma 10, beta 8/3).

The tests integrate with RK4 at dt = 0.01 to stay fast; RK4's error at that step changes
the exponents by far less than the tolerance (the book's Lorenz chapter runs dt = 0.001).
"""
import pytest
import torch

from lyabook import lyapunov_spectrum
from lyabook.systems import Flow, Lorenz

TRACE = -(10 + 1 + 8 / 3)


def _start(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64) + 5 * torch.randn(batch, 3, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def chaotic():
    sys = Lorenz(rho=28.0, dt=0.01)
    # 64 trajectories of 200 time units after a transient of 20: stderr ~ 0.002
    return lyapunov_spectrum(sys, _start(64), 20_000, warmup=2_000, t_on=10)


def test_rho_28_matches_sprott(chaotic):
    torch.testing.assert_close(chaotic.exponents, torch.tensor([0.9056, 0.0, -14.5723], dtype=torch.float64),
                               atol=0.01, rtol=0)


def test_rho_28_kaplan_yorke_dimension(chaotic):
    assert chaotic.kaplan_yorke_dimension() == pytest.approx(2.062, abs=0.002)


def test_exponents_sum_to_trace(chaotic):
    assert float(chaotic.exponents.sum()) == pytest.approx(TRACE, abs=1e-3)


@pytest.mark.parametrize(
    "rho, expected",
    [(16.0, (-0.3078, -0.3078, -13.0510)), (5.0, (-0.9287, -0.9287, -11.8092))],
)
def test_fixed_point_regimes_have_negative_exponents_after_long_transient(rho, expected):
    """For 1 < rho < 24.74 the attractor is C+/-; the exponents are the real parts of the
    Jacobian's eigenvalues there (the dissertation's positive values are transients)."""
    sys = Lorenz(rho=rho, dt=0.01)
    res = lyapunov_spectrum(sys, _start(2), 10_000, warmup=20_000, t_on=10)
    torch.testing.assert_close(res.exponents, torch.tensor(expected, dtype=torch.float64), atol=0.01, rtol=0)
    assert float(res.exponents.sum()) == pytest.approx(TRACE, abs=1e-3)


def test_fixed_point_exponents_equal_jacobian_eigenvalues():
    sys = Lorenz(rho=16.0)
    c = sys.fixed_points()[1:2]
    eig = torch.linalg.eigvals(sys.rhs_jacobian(c)[0]).real.sort(descending=True).values
    torch.testing.assert_close(eig, torch.tensor([-0.3078, -0.3078, -13.0510], dtype=torch.float64),
                               atol=1e-4, rtol=0)


def test_rk4_tangent_map_is_exact_derivative_of_the_step():
    sys = Lorenz(dt=0.01)
    x = _start(3)
    J = sys.jacobian(x)
    auto = torch.func.vmap(torch.func.jacrev(lambda v: sys.step(v.unsqueeze(0)).squeeze(0)))(x)
    torch.testing.assert_close(J, auto, atol=1e-12, rtol=0)
    # and a generic Flow with autograd for the vector field gives the same spectrum
    flow = Flow(sys.rhs, dt=0.01, state_dim=3)
    a = lyapunov_spectrum(flow, x, 300)
    b = lyapunov_spectrum(sys, x, 300)
    torch.testing.assert_close(a.per_sample, b.per_sample, atol=1e-10, rtol=0)
    assert a.time_per_step == 0.01  # exponents per unit time


def test_flow_rejects_non_positive_dt():
    with pytest.raises(ValueError, match="dt must be > 0"):
        Flow(lambda x, u: x, dt=0.0, state_dim=1)
