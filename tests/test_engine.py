"""Claims about the QR engine: it equals a brute-force float64 reference, its exponents sum
to the mean log|det J|, T_ON and k do not change the leading exponents, and bad input is a
clear error."""
import numpy as np
import pytest
import torch

import lyabook
from lyabook import lyapunov_spectrum, rnn
from lyabook.systems import Map, autograd_jacobian


def tanh_rnn(n=12, gain=3.0, seed=0, input_size=2):
    """h' = tanh(g W h + U u): chaotic for g > 1 (the errata's example network, smaller)."""
    g = torch.Generator().manual_seed(seed)
    W = gain * torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
    U = torch.randn(n, input_size, generator=g, dtype=torch.float64)

    def step(x, u):
        return torch.tanh(x @ W.T + (0 if u is None else u @ U.T))

    def jac(x, u):
        return (1 - step(x, u) ** 2).unsqueeze(-1) * W

    return Map(step, jac, state_dim=n)


def brute_force_spectrum(step, x0, inputs, warmup):
    """Independent reference: per trajectory, autograd Jacobians, Q <- J Q and NumPy QR
    every step, float64 (no code shared with the engine)."""
    B, T = inputs.shape[:2]
    d = x0.shape[1]
    out = np.zeros((B, d))
    for b in range(B):
        x = x0[b : b + 1]
        Q = np.eye(d)
        acc = np.zeros(d)
        for t in range(T):
            u = inputs[b : b + 1, t]
            J = torch.autograd.functional.jacobian(lambda v: step(v.unsqueeze(0), u).squeeze(0), x.squeeze(0))
            x = step(x, u)
            Q, R = np.linalg.qr(J.numpy() @ Q)
            s = np.sign(np.diag(R))
            Q = Q * s
            if t >= warmup:
                acc += np.log(np.abs(np.diag(R)))
        out[b] = acc / (T - warmup)
    return out


@pytest.fixture(scope="module")
def driven_rnn():
    sys = tanh_rnn()
    g = torch.Generator().manual_seed(1)
    inputs = 0.5 * torch.randn(3, 60, 2, generator=g, dtype=torch.float64)
    x0 = 0.1 * torch.randn(3, sys.state_dim, generator=g, dtype=torch.float64)
    return sys, x0, inputs


@pytest.mark.parametrize("method", ["householder", "cholesky"])
def test_spectrum_equals_brute_force_reference(driven_rnn, method):
    sys, x0, inputs = driven_rnn
    ref = brute_force_spectrum(sys.step, x0, inputs, warmup=10)
    res = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10, method=method)
    np.testing.assert_allclose(res.per_sample.numpy(), ref, atol=1e-8, rtol=0)
    assert res.method == method
    assert res.exponents[0] > 0  # this network is chaotic


def test_transposed_tangent_map_gives_a_different_spectrum(driven_rnn):
    """Errata 1: propagating J^T Q (the dissertation's code) changes the exponents."""
    sys, x0, inputs = driven_rnn
    right = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10)
    wrong_sys = Map(sys.step, lambda x, u: sys.jacobian(x, u).mT, state_dim=sys.state_dim)
    wrong = lyapunov_spectrum(wrong_sys, x0, inputs=inputs, warmup=10)
    assert abs(float(wrong.exponents[0] - right.exponents[0])) > 1e-3
    torch.testing.assert_close(wrong.exponents.sum(), right.exponents.sum())  # only the sum survives


@pytest.mark.parametrize("name", ["LSTM", "GRU", "CoRNN", "LEM"])
def test_cell_spectrum_equals_brute_force_reference(name):
    torch.manual_seed(0)
    cell = rnn.CELLS[name](2, 4, num_layers=2).double().eval()
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-1.5, 1.5)
    inputs = torch.randn(2, 30, 2, dtype=torch.float64)
    ref = brute_force_spectrum(cell.step, cell.init_state(2), inputs, warmup=5)
    res = rnn.rnn_spectrum(cell, inputs, warmup=5)
    np.testing.assert_allclose(res.per_sample.numpy(), ref, atol=1e-8, rtol=0)


def test_exponents_sum_to_mean_log_abs_det_jacobian(driven_rnn):
    sys, x0, inputs = driven_rnn
    res = lyapunov_spectrum(sys, x0, inputs=inputs)
    x, total = x0, torch.zeros(3, dtype=torch.float64)
    for t in range(inputs.shape[1]):
        total += torch.linalg.slogdet(sys.jacobian(x, inputs[:, t])).logabsdet
        x = sys.step(x, inputs[:, t])
    torch.testing.assert_close(res.per_sample.sum(1), total / inputs.shape[1], atol=1e-10, rtol=0)


def test_autograd_map_equals_analytic_map(driven_rnn):
    sys, x0, inputs = driven_rnn
    auto = Map(sys.step, state_dim=sys.state_dim)
    a = lyapunov_spectrum(auto, x0, inputs=inputs)
    b = lyapunov_spectrum(sys, x0, inputs=inputs)
    # the most negative exponent amplifies the last-bit differences of the two Jacobians
    torch.testing.assert_close(a.per_sample, b.per_sample, atol=1e-9, rtol=0)


def test_t_on_1_and_5_give_the_same_leading_exponents(driven_rnn):
    sys, x0, inputs = driven_rnn
    a = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10, t_on=1)
    # the trailing exponents (down to -40 per step) collapse within 5 steps: a warning says so
    with pytest.warns(RuntimeWarning, match="t_on = 5: .* trailing exponents are unreliable"):
        b = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10, t_on=5)
    torch.testing.assert_close(a.per_sample[:, :4], b.per_sample[:, :4], atol=1e-8, rtol=0)
    # 50 measured steps, t_on 5 -> 10 intervals; t_on 7 -> 7 full + one partial of 1 step
    with pytest.warns(RuntimeWarning, match="t_on = 7"):
        c = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10, t_on=7, keep="r")
    assert c.interval_steps.tolist() == [7] * 7 + [1]
    torch.testing.assert_close(a.per_sample[:, :4], c.per_sample[:, :4], atol=1e-8, rtol=0)


def test_k_leading_exponents_equal_first_k_of_full_spectrum(driven_rnn):
    sys, x0, inputs = driven_rnn
    full = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10)
    part = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10, k=3)
    assert part.per_sample.shape == (3, 3)
    torch.testing.assert_close(part.per_sample, full.per_sample[:, :3], atol=1e-12, rtol=0)


@pytest.mark.filterwarnings("ignore:t_on = 3")  # its trailing exponents collapse within 3 steps (tested above)
def test_rerun_on_cpu_is_bitwise_identical(driven_rnn):
    sys, x0, inputs = driven_rnn
    a = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=5, t_on=3)
    b = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=5, t_on=3)
    assert torch.equal(a.per_sample, b.per_sample)


def test_warmup_consumes_the_inputs_once(driven_rnn):
    """Warm-up of w steps then n measured == starting from the state after w steps (the
    frame is re-initialized only in the fixed direction, so compare the running R's sum)."""
    sys, x0, inputs = driven_rnn
    res = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=20, n_steps=30)
    x = x0
    for t in range(20):
        x = sys.step(x, inputs[:, t])
    # same trajectory from the warmed-up state: the sum of exponents depends only on it
    res2 = lyapunov_spectrum(sys, x, inputs=inputs[:, 20:50])
    torch.testing.assert_close(res.per_sample.sum(1), res2.per_sample.sum(1), atol=1e-10, rtol=0)
    assert res.n_steps == 30 and res.warmup == 20


def test_result_keeps_r_and_q_and_running_estimates(driven_rnn):
    sys, x0, inputs = driven_rnn
    res = lyapunov_spectrum(sys, x0, inputs=inputs, warmup=10, t_on=5, k=4, keep=("r", "q"))
    assert res.log_r.shape == (10, 3, 4) and res.q.shape == (10, 3, 12, 4)
    q = res.q[-1]
    torch.testing.assert_close(q.mT @ q, torch.eye(4, dtype=torch.float64).expand(3, 4, 4), atol=1e-12, rtol=0)
    run = res.running_exponents()
    torch.testing.assert_close(run[-1], res.per_sample)
    torch.testing.assert_close(res.ftle().mean(0), res.per_sample)  # equal-length intervals
    assert res.running_time()[-1] == 50
    s = res.summary()
    assert s["max"] == pytest.approx(float(res.exponents.max())) and s["n_positive"] >= 1
    assert res.stderr.shape == (4,) and torch.all(res.stderr > 0)
    with pytest.raises(ValueError, match="keep='r'"):
        lyapunov_spectrum(sys, x0, inputs=inputs).running_exponents()


def test_a_run_continued_from_q_last_equals_one_run_over_both_parts(driven_rnn):
    """keep="last" + q0: the frame carries over exactly (the pixel-flipping warm-up restarts the
    state at zero with a warmed-up frame this way)."""
    sys, x0, inputs = driven_rnn
    whole = lyapunov_spectrum(sys, x0, inputs=inputs[:, :40], k=4, keep="r")
    first = lyapunov_spectrum(sys, x0, inputs=inputs[:, :15], k=4, keep=("r", "last"))
    x = x0
    for t in range(15):
        x = sys.step(x, inputs[:, t])
    second = lyapunov_spectrum(sys, x, inputs=inputs[:, 15:40], k=4, keep="r", q0=first.q_last)
    assert first.q_last.shape == (3, 12, 4)
    torch.testing.assert_close(torch.cat([first.log_r, second.log_r]), whole.log_r, atol=1e-12, rtol=0)
    one = lyapunov_spectrum(sys, x, inputs=inputs[:, 15:40], k=4, keep="r", q0=first.q_last[0])  # (m, k): every entry
    torch.testing.assert_close(one.log_r[:, 0], second.log_r[:, 0], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="q0 must have orthonormal columns"):
        lyapunov_spectrum(sys, x, inputs=inputs, k=4, q0=2 * first.q_last)
    with pytest.raises(ValueError, match=r"q0 must have shape \(3, 12, 4\)"):
        lyapunov_spectrum(sys, x, inputs=inputs, k=4, q0=first.q_last[:, :, :3])


def test_stderr_is_standard_error_over_batch(driven_rnn):
    sys, x0, inputs = driven_rnn
    res = lyapunov_spectrum(sys, x0, inputs=inputs)
    expected = res.per_sample.std(0) / 3**0.5
    torch.testing.assert_close(res.stderr, expected)


def test_kaplan_yorke_dimension():
    assert lyabook.kaplan_yorke_dimension([0.9056, 0.0, -14.5723]) == pytest.approx(2 + 0.9056 / 14.5723)
    assert lyabook.kaplan_yorke_dimension([-0.1, -1.0]) == 0.0
    assert lyabook.kaplan_yorke_dimension([1.0, 0.5]) == 2.0
    assert lyabook.kaplan_yorke_dimension([1.0, -2.0, -3.0]) == pytest.approx(1.5)


def test_runs_on_system_dtype_float32_and_accumulates_float64():
    cell = rnn.LSTM(3, 8).eval()  # float32 weights
    inputs = torch.randn(2, 40, 3)
    res = rnn.rnn_spectrum(cell, inputs)
    ref = rnn.rnn_spectrum(rnn.LSTM(3, 8, module=cell.module).double(), inputs.double())
    assert res.per_sample.dtype == torch.float64
    torch.testing.assert_close(res.per_sample, ref.per_sample, atol=1e-3, rtol=0)  # float32 Jacobians


# ---------------------------------------------------------------- bad input
@pytest.fixture
def small():
    sys = tanh_rnn(n=4)
    return sys, torch.zeros(2, 4, dtype=torch.float64), torch.randn(2, 10, 2, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(t_on=0), ValueError, "t_on must be >= 1"),
        (dict(t_on=2.5), TypeError, "t_on must be an integer"),
        (dict(warmup=-1), ValueError, "warmup must be >= 0"),
        (dict(k=5), ValueError, "k must be <= the tangent dimension 4"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(warmup=10), ValueError, "fewer than warmup \\+ 1"),
        (dict(warmup=5, n_steps=6), ValueError, "fewer than warmup \\+ n_steps"),
        (dict(keep="x"), ValueError, "keep must contain only"),
        (dict(method="svd"), ValueError, "method must be one of"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(small, kwargs, exc, message):
    sys, x0, inputs = small
    with pytest.raises(exc, match=message):
        lyapunov_spectrum(sys, x0, inputs=inputs, **kwargs)


def test_bad_shapes_raise_naming_the_argument(small):
    sys, x0, inputs = small
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, T, input_size\)"):
        lyapunov_spectrum(sys, x0, inputs=inputs[0])
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 4\)"):
        lyapunov_spectrum(sys, torch.zeros(2, 5), inputs=inputs)
    with pytest.raises(ValueError, match="x0 has batch size 3 but inputs has batch size 2"):
        lyapunov_spectrum(sys, torch.zeros(3, 4), inputs=inputs)
    with pytest.raises(ValueError, match="n_steps is required"):
        lyapunov_spectrum(sys, x0)
    with pytest.raises(TypeError, match="has no 'state_dim'"):
        lyapunov_spectrum(object(), x0, 5)
    with pytest.raises(ValueError, match="x0 contains non-finite"):
        lyapunov_spectrum(sys, torch.full((2, 4), float("nan")), inputs=inputs)


def test_jacobian_of_wrong_shape_is_rejected(small):
    sys, x0, inputs = small
    bad = Map(sys.step, lambda x, u: sys.jacobian(x, u)[:, :3], state_dim=4)
    with pytest.raises(ValueError, match=r"system.jacobian returned shape \(2, 3, 4\), expected"):
        lyapunov_spectrum(bad, x0, inputs=inputs)


def _counter_map(jacobian_at, state_at=None):
    """2-d map whose first coordinate counts steps, so failures depend on the state (and
    repeat identically when the engine re-runs)."""

    def step(x, u):
        nxt = torch.stack((x[:, 0] + 1, x[:, 1]), -1)
        if state_at is not None:
            nxt = torch.where((x[:, :1] == state_at), float("inf"), nxt)
        return nxt

    def jac(x, u):
        return torch.stack([jacobian_at(int(t) if torch.isfinite(t) else -1) for t in x[:, 0]]).to(x)

    return Map(step, jac, state_dim=2)


def test_non_finite_state_names_the_step():
    eye = lambda t: torch.eye(2)
    sys = _counter_map(eye, state_at=7)
    with pytest.raises(FloatingPointError, match=r"non-finite state at step 7 \(warm-up step 7\)"):
        lyapunov_spectrum(sys, torch.zeros(1, 2, dtype=torch.float64), 20, warmup=10)


@pytest.mark.parametrize("method", ["householder", "cholesky"])
def test_singular_jacobian_names_the_step_of_the_bad_r_value(method):
    sing = lambda t: torch.tensor([[1.0, 0.0], [0.0, 0.0 if t == 4 else 1.0]])
    sys = _counter_map(sing)
    with pytest.raises(FloatingPointError, match=r"non-finite R value at step 4 \(measured step 4\)"):
        lyapunov_spectrum(sys, torch.zeros(1, 2, dtype=torch.float64), 10, method=method)


def test_cholesky_falls_back_to_householder_where_it_breaks_down():
    """J = [[1, 1], [0, 1e-30]] is already triangular: Householder QR is exact (log 1e-30),
    while the Gram matrix of CholeskyQR loses the second direction entirely."""
    J = torch.tensor([[1.0, 1.0], [0.0, 1e-30]], dtype=torch.float64)
    sys = Map(lambda x, u: x @ J.T, lambda x, u: J.expand(x.shape[0], 2, 2), state_dim=2)
    res = lyapunov_spectrum(sys, torch.ones(1, 2, dtype=torch.float64), 3, method="cholesky")
    # Whether the Cholesky factorizations break down here depends on the platform's rounding
    # (on torch 2.11's CPU build CholeskyQR3 passed its checks). Either it fell back and
    # Householder is exact, or it passed and is backward stable: the 1e-30 direction then
    # reads at the O(u) noise level, far below every resolvable exponent.
    if res.method == "householder":
        torch.testing.assert_close(res.exponents, torch.tensor([0.0, -30 * np.log(10)], dtype=torch.float64))
        with pytest.raises(FloatingPointError, match="CholeskyQR3 lost accuracy"):
            lyabook.orthonormalize(J.unsqueeze(0), method="cholesky")
    else:
        assert abs(float(res.exponents[0])) < 1e-12 and float(res.exponents[1]) < np.log(1e-12)


def test_cholesky_qr3_equals_householder_on_ill_conditioned_frames():
    """cond(X) = 1e12: far past plain CholeskyQR2's limit (1e8), within CholeskyQR3's."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(4, 40, 40, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(4, 40, 40, generator=g, dtype=torch.float64))
    X = U @ torch.diag(torch.logspace(0, -12, 40, dtype=torch.float64)) @ V.mT
    Qc, lc = lyabook.orthonormalize(X, "cholesky")
    Qh, lh = lyabook.orthonormalize(X, "householder")
    eye = torch.eye(40, dtype=torch.float64)
    assert (Qc.mT @ Qc - eye).abs().max() < 1e-14
    torch.testing.assert_close(lc, lh, atol=1e-3, rtol=0)  # small r_ii carry O(u ||X||) error in both


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_matches_cpu():
    torch.manual_seed(0)
    cell = rnn.LSTM(3, 32).double().eval()
    inputs = torch.randn(4, 50, 3, dtype=torch.float64)
    cpu = rnn.rnn_spectrum(cell, inputs, warmup=10)
    gpu = rnn.rnn_spectrum(cell.cuda(), inputs.cuda(), warmup=10)
    from lyabook import triton_qr

    # "auto": Householder from batched products with Triton panels (CholeskyQR3 without Triton)
    assert gpu.method == ("householder_blocked" if triton_qr.available("cuda") else "cholesky")
    torch.testing.assert_close(gpu.per_sample, cpu.per_sample, atol=1e-9, rtol=0)


def _exploding_map():
    """x' = 3x in float64 from x0 = 1: x overflows after step 646 (3^647 > 1.8e308)."""
    return Map(lambda x, u: 3.0 * x, lambda x, u: 3.0 * torch.eye(1, dtype=x.dtype, device=x.device).expand(x.shape[0], 1, 1),
               state_dim=1)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_overflow_names_the_step_on_every_device(device):
    x0 = torch.ones(2, 1, dtype=torch.float64, device=device)
    with pytest.raises(FloatingPointError, match=r"non-finite state at step 646 \(measured step 646\)"):
        lyapunov_spectrum(_exploding_map(), x0, 1000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_equals_eager_run():
    torch.manual_seed(0)
    cell = rnn.GRU(3, 16, num_layers=2).double().cuda().eval()
    inputs = torch.randn(4, 70, 3, dtype=torch.float64, device="cuda")
    for t_on in (1, 7):
        a = rnn.rnn_spectrum(cell, inputs, warmup=10, t_on=t_on, keep="r")
        b = lyapunov_spectrum(cell, inputs=inputs, warmup=10, t_on=t_on, keep="r", cuda_graph=False)
        assert a.cuda_graph and not b.cuda_graph
        torch.testing.assert_close(a.per_sample, b.per_sample, atol=1e-12, rtol=0)
        torch.testing.assert_close(a.log_r, b.log_r, atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_system_that_cannot_be_captured_runs_eagerly():
    sing = lambda t: torch.tensor([[1.0, 0.0], [0.0, 0.0 if t == 4 else 1.0]])
    sys = _counter_map(sing)  # converts device values to Python ints: not capturable
    x0 = torch.zeros(1, 2, dtype=torch.float64, device="cuda")
    with pytest.raises(FloatingPointError, match=r"non-finite R value at step 4"):
        lyapunov_spectrum(sys, x0, 10)
    torch.cuda.manual_seed(5)
    expect = torch.randn(3, device="cuda")
    torch.cuda.manual_seed(5)
    with pytest.raises(RuntimeError, match="could not be captured"):
        lyapunov_spectrum(sys, x0, 10, cuda_graph=True)
    # the failed capture once left torch's generator in capture mode: the next draw raised
    torch.testing.assert_close(torch.randn(3, device="cuda"), expect)
    ok = lyapunov_spectrum(_counter_map(lambda t: torch.eye(2)), x0, 10)
    assert not ok.cuda_graph
    torch.testing.assert_close(ok.exponents, torch.zeros(2, dtype=torch.float64))


def test_cholesky_qr3_accepts_large_ill_conditioned_frames_it_orthonormalizes():
    """k = 300, cond 1e11: CholeskyQR3 is orthonormal to ~1e-15, and its acceptance test must
    say so (a Gershgorin bound on the Gram matrix, whose row sums grow with k, rejected such
    frames and sent GPU runs to the slow Householder re-run)."""
    from lyabook.lyapunov import _cholesky_qr3

    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(2, 300, 300, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(2, 300, 300, generator=g, dtype=torch.float64))
    X = U @ torch.diag(torch.logspace(0, -11, 300, dtype=torch.float64)) @ V.mT
    Q, log_r, ok = _cholesky_qr3(X)
    assert bool(ok)
    assert (Q.mT @ Q - torch.eye(300, dtype=torch.float64)).abs().max() < 1e-13
    _, log_r_h = lyabook.orthonormalize(X, "householder")
    torch.testing.assert_close(log_r[:, :100], log_r_h[:, :100], atol=1e-8, rtol=0)


def _panels():
    """The blocked Householder's panel factorizations: torch's, and Triton's kernel where Triton
    can run (a GPU, or its interpreter on the CPU: tests/conftest.py)."""
    from lyabook import lyapunov, triton_qr

    out = [pytest.param(lyapunov._panel_torch, id="torch-panel")]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    ok = triton_qr.available(dev)
    out.append(pytest.param(triton_qr.panel if ok else None, id="triton-panel",
                            marks=pytest.mark.skipif(not ok, reason="needs Triton (pip install triton)")))
    return out


def _dev():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _one_wy_block(X, block, panel):
    from lyabook.lyapunov import _householder_blocked

    return _householder_blocked(X, base=block, q_block=X.shape[-1], panel=panel)  # one T for all columns


def _wy_blocks(X, block, panel):
    from lyabook.lyapunov import _householder_blocked

    return _householder_blocked(X, base=block, q_block=2 * block, panel=panel)  # wider ranges apply their halves


_FACTORIZATIONS = [pytest.param(_one_wy_block, id="one-T"), pytest.param(_wy_blocks, id="T-blocks")]


@pytest.mark.parametrize("factor", _FACTORIZATIONS)
@pytest.mark.parametrize("panel", _panels())
@pytest.mark.parametrize("shape, block", [((3, 40, 40), 16), ((2, 50, 21), 16), ((2, 33, 33), 8), ((1, 64, 64), 32),
                                          ((2, 100, 100), 8)])
def test_blocked_householder_equals_lapack_householder(shape, block, panel, factor):
    """The GPU's matrix-product Householder QR gives LAPACK's Q and log diag R (diag R > 0), for
    square and tall frames and panel widths that do not divide the width, with either panel,
    with one WY form for all columns and with WY blocks narrower than the frame."""
    from lyabook.lyapunov import _householder

    X = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Q1, l1, _ = _householder(X)
    Q2, l2, _ = factor(X.to(_dev()), block, panel)
    torch.testing.assert_close(Q2.cpu(), Q1, atol=1e-12, rtol=0)
    torch.testing.assert_close(l2.cpu(), l1, atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", _FACTORIZATIONS)
@pytest.mark.parametrize("panel", _panels())
def test_blocked_householder_stays_orthonormal_on_graded_and_singular_frames(panel, factor):
    """A graded frame (column scales 1 .. 1e-30), one with an exactly dependent column and one
    with a zero column: blocked Householder stays orthonormal and matches LAPACK (log diag R,
    -inf for the zero column; the dependent column's R value is rounding, as in LAPACK)."""
    from lyabook.lyapunov import _householder

    g = torch.Generator().manual_seed(2)
    X = torch.randn(2, 64, 64, generator=g, dtype=torch.float64) @ torch.diag(torch.logspace(0, -30, 64, dtype=torch.float64))
    Q, l, _ = factor(X.to(_dev()), 16, panel)
    Q, l = Q.cpu(), l.cpu()
    eye = torch.eye(64, dtype=torch.float64)
    assert (Q.mT @ Q - eye).abs().max() < 1e-13
    torch.testing.assert_close(l, _householder(X)[1], atol=1e-10, rtol=0)
    torch.testing.assert_close(Q, _householder(X)[0], atol=1e-10, rtol=0)
    X[:, :, 10] = X[:, :, 3]  # R_10,10 is 0 in exact arithmetic: rounding (LAPACK) or exactly 0 (-inf)
    Q, l, _ = factor(X.to(_dev()), 16, panel)
    l, l0 = l.cpu(), _householder(X)[1]
    assert (Q.cpu().mT @ Q.cpu() - eye).abs().max() < 1e-13 and not bool(torch.isnan(l).any())
    assert bool((l[:, 10] < l0[:, 9] - 20).all()) and bool((l0[:, 10] < l0[:, 9] - 20).all())  # at the rounding floor
    torch.testing.assert_close(l[:, :10], l0[:, :10], atol=1e-10, rtol=0)  # later columns depend on the null direction chosen
    X[:, :, 20] = 0.0
    Q, l, _ = factor(X.to(_dev()), 16, panel)
    Q0, l0, _ = _householder(X)
    assert (Q.cpu().mT @ Q.cpu() - eye).abs().max() < 1e-13
    assert bool(torch.isneginf(l[:, 20]).all()) and bool(torch.isneginf(l0[:, 20]).all())
    keep = torch.arange(64) != 20
    torch.testing.assert_close(l.cpu()[:, keep][:, :10], l0[:, keep][:, :10], atol=1e-10, rtol=0)


def test_triton_panel_forms_t_in_the_kernel_or_from_v_alike(monkeypatch):
    """Small panels form their WY factor T inside the kernel, large ones (more than
    `triton_qr.T_IN_KERNEL_MAX` entries) from V and tau afterwards: forced either way, the
    panel's T and the whole QR agree to rounding (and T is the one that reproduces the panel's
    reflections: H_1 ... H_b = I - V T V^T)."""
    from lyabook import lyapunov, triton_qr

    if triton_qr.triton is None or not triton_qr.available(_dev()):
        pytest.skip("needs Triton")
    X = torch.randn(3, 40, 40, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(_dev())
    out = {}
    for limit in (10**9, 0):
        monkeypatch.setattr(triton_qr, "T_IN_KERNEL_MAX", limit)
        A = X.clone()
        V, T, beta = triton_qr.panel(A, 0, 8)
        Q, log_r, _ = lyapunov._householder_blocked(X, base=8, q_block=16)
        out[limit] = V, T, beta, Q, log_r
    for a, b in zip(out[10**9], out[0]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    V, T = out[0][0].cpu(), out[0][1].cpu()
    H = torch.eye(40, dtype=torch.float64).expand(3, 40, 40).clone()
    for c in range(8):
        v = V[:, :, c : c + 1]
        tau = 2.0 / (v.mT @ v)
        H = H @ (torch.eye(40, dtype=torch.float64) - tau * (v @ v.mT))
    torch.testing.assert_close(H, torch.eye(40, dtype=torch.float64) - V @ T @ V.mT, atol=1e-12, rtol=0)


@pytest.mark.parametrize("panel", _panels())
def test_spectra_with_the_matrix_product_householder_equal_lapacks(panel, monkeypatch):
    """A whole LSTM spectrum (full state, 32 dimensions, t_on = 1) computed with
    `_householder_blocked` in the engine's place of LAPACK's QR equals LAPACK's to 1e-10, every
    exponent, with either panel (the CPU runs the Triton kernel in Triton's interpreter). (At
    t_on = 5 the engine warns that this network's trailing exponents are rounding, and there the
    two QRs' roundings differ, as two LAPACK builds' would.)"""
    from lyabook import lyapunov

    torch.manual_seed(0)
    cell = rnn.LSTM(3, 16).double().eval()
    inputs = torch.randn(3, 30, 3, dtype=torch.float64)
    ref = rnn.rnn_spectrum(cell, inputs, warmup=10)
    # Triton's compiled kernels take GPU tensors (its interpreter runs only where there is no GPU):
    # there the frames go to the GPU for the QR and back
    dev = _dev() if panel is not lyapunov._panel_torch else "cpu"

    def qr(q):
        return tuple(t if t is None else t.to(q.device)
                     for t in lyapunov._householder_blocked(q.to(dev), base=8, q_block=16, panel=panel))

    monkeypatch.setitem(lyapunov.ORTHONORMALIZERS, "householder", qr)
    res = rnn.rnn_spectrum(cell, inputs, warmup=10)
    torch.testing.assert_close(res.per_sample, ref.per_sample, atol=1e-10, rtol=0)
    assert float(ref.exponents[-1]) < -6  # the frame spans about 6 decades per step: the test is not easy


@pytest.mark.parametrize("panel", _panels())
def test_householder_blocked_leaves_nothing_for_the_cycle_collector(panel):
    """Its workspace (A, V, the T blocks: about 8 frames' worth) is freed when it returns, not when
    Python's cycle collector next runs: a recursive closure once held it, and on a GPU that memory
    piled up over a population's engine calls (about 16 GiB per 255 frames of 1024 dimensions
    until the 512-unit CharRNN population ran out of memory; tools/probe_spectrum_memory.py).
    On the CPU only: the reference structure is the algorithm's, whatever the device, and on an
    H100 this test failed for a reason not yet read (its output was cut; 2026-11-28), so
    `population_exponents` also collects between its parts."""
    import gc

    from lyabook.lyapunov import _householder_blocked, _panel_torch

    if panel is not _panel_torch and torch.cuda.is_available():
        pytest.skip("with a GPU the Triton panel runs on CUDA tensors only (the interpreter is off)")
    X = torch.randn(3, 40, 40, dtype=torch.float64)
    _householder_blocked(X, base=8, q_block=16, panel=panel)  # first call: imports, compilation
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to look at it
    try:
        _householder_blocked(X, base=8, q_block=16, panel=panel)
        gc.collect()
        held = [tuple(t.shape) for t in gc.garbage if torch.is_tensor(t)]  # (Triton's interpreter leaves
        assert held == []  # cycles of its own host copies, never the tensors of the factorization)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_triton_panel_can_be_switched_off_and_checks_its_output_buffer(monkeypatch):
    """LYABOOK_TRITON=0 keeps the torch panel (available() is False everywhere); a V buffer of the
    wrong shape is a ValueError naming it."""
    from lyabook import triton_qr

    monkeypatch.setenv("LYABOOK_TRITON", "0")
    assert not triton_qr.available("cpu") and not triton_qr.available("cuda")
    monkeypatch.delenv("LYABOOK_TRITON")
    if triton_qr.triton is None or not triton_qr.available(_dev()):
        pytest.skip("needs Triton")
    A = torch.randn(2, 20, 20, dtype=torch.float64, device=_dev())
    with pytest.raises(ValueError, match="out must be"):
        triton_qr.panel(A, 0, 8, out=(torch.empty(2, 20, 4, dtype=torch.float64, device=_dev()),) * 3)


# ---- issue 13: input the engine used to take silently
def test_an_empty_batch_is_an_error_not_nan_exponents():
    sys = tanh_rnn(n=3)
    with pytest.raises(ValueError, match="x0 must hold at least one initial state"):
        lyapunov_spectrum(sys, torch.zeros(0, 3, dtype=torch.float64), 10)
    with pytest.raises(ValueError, match="inputs must hold at least one sequence"):
        lyapunov_spectrum(sys, inputs=torch.zeros(0, 10, 2, dtype=torch.float64))


def test_kaplan_yorke_dimension_of_nan_is_an_error_and_minus_inf_is_allowed():
    for bad in ([float("nan"), -1.0], [float("inf"), -1.0]):
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            lyabook.kaplan_yorke_dimension(bad)
    assert lyabook.kaplan_yorke_dimension([0.5, -1.0, float("-inf")]) == pytest.approx(1.5)


class _Decay:
    """x' = a x, a map; ``time_per_step`` (or a stray ``dt``) set per test."""
    state_dim = 1

    def step(self, x, u=None):
        return 0.5 * x

    def jacobian(self, x, u=None):
        return torch.full((x.shape[0], 1, 1), 0.5, dtype=x.dtype)


@pytest.mark.parametrize("value, exc, message", [(0.0, ValueError, "> 0"), (-0.01, ValueError, "> 0"),
                                                 (float("nan"), ValueError, "finite"), ("0.1", TypeError, "number")])
def test_a_flow_declares_a_positive_time_per_step(value, exc, message):
    sys = _Decay()
    sys.time_per_step = value
    with pytest.raises(exc, match=f"time_per_step.*{message}"):
        lyapunov_spectrum(sys, torch.ones(1, 1, dtype=torch.float64), 5)


def test_time_per_step_scales_the_exponents_and_dt_is_never_read():
    x0 = torch.ones(1, 1, dtype=torch.float64)
    sys = _Decay()
    per_step = lyapunov_spectrum(sys, x0, 5)
    assert per_step.time_per_step == 1.0 and float(per_step.exponents[0]) == pytest.approx(np.log(0.5))
    sys.time_per_step = 0.1
    per_time = lyapunov_spectrum(sys, x0, 5)
    assert float(per_time.exponents[0]) == pytest.approx(np.log(0.5) / 0.1) and per_time.time_per_step == 0.1
    stray = _Decay()
    stray.dt = 0.0  # the old protocol: once read as 1 (dt = 0) or as a sign flip (dt < 0)
    with pytest.raises(TypeError, match="'dt' but no 'time_per_step'"):
        lyapunov_spectrum(stray, x0, 5)
    stray.time_per_step = None  # declared a map: dt is the system's own business
    assert float(lyapunov_spectrum(stray, x0, 5).exponents[0]) == pytest.approx(np.log(0.5))
    from lyabook.systems import Lorenz

    assert Lorenz(dt=0.01).time_per_step == 0.01


def test_a_nan_jacobian_is_reported_at_the_step_that_made_it():
    sys = tanh_rnn(n=4)

    def jac(x, u, calls=[0]):
        calls[0] += 1
        J = sys.jacobian(x, u)
        return J * float("nan") if calls[0] == 4 else J  # step 3 (the 4th call); the state stays finite

    bad = Map(sys.step, jac, state_dim=4)
    with pytest.raises(FloatingPointError, match="non-finite Jacobian at step 3"):
        lyapunov_spectrum(bad, 0.1 * torch.ones(2, 4, dtype=torch.float64), 10, t_on=5)


def test_a_t_on_long_enough_to_collapse_the_frame_warns():
    from lyabook.systems import Lorenz

    x0 = torch.tensor([[1.0, 1.0, 20.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="t_on = 1000000: .* use a smaller t_on"):
        res = lyapunov_spectrum(Lorenz(dt=0.01), x0, 2000, warmup=500, t_on=10**6)
    assert abs(float(res.exponents.sum()) + 13.667) > 1  # the sum is off the trace: what the warning is about
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = lyapunov_spectrum(Lorenz(dt=0.01), x0, 2000, warmup=500, t_on=5)  # 0.05 time units: fine
    assert abs(float(res.exponents.sum()) + 13.667) < 0.05


def test_orthonormalizers_are_one_table_and_agree():
    from lyabook.lyapunov import ORTHONORMALIZERS, orthonormalize

    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 20, 8, generator=g, dtype=torch.float64) * torch.logspace(0, -6, 8, dtype=torch.float64)
    ref_q, ref_r = orthonormalize(q, "householder")
    assert set(ORTHONORMALIZERS) == {"householder", "householder_blocked", "cholesky"}
    for name in ORTHONORMALIZERS:
        Q, log_r = orthonormalize(q, name)
        torch.testing.assert_close(Q, ref_q, atol=1e-10, rtol=0)
        torch.testing.assert_close(log_r, ref_r, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="method must be one of"):
        orthonormalize(q, "gram-schmidt")
    with pytest.raises(ValueError, match="d >= k"):
        orthonormalize(q.mT, "householder")
