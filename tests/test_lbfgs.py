"""The estimator's L-BFGS against SciPy's L-BFGS-B (the reference it follows
step for step on unconstrained problems)."""

from __future__ import annotations

import numpy as np
import pytest

optimize = pytest.importorskip("scipy.optimize")

from numxent._lbfgs import minimize_lbfgs  # noqa: E402

EPS = np.finfo(np.float64).eps


def _scipy(fun, x0, **opts):
    options = {"maxiter": 15000, "gtol": 1e-5, "ftol": 64 * EPS, "maxls": 20}
    options.update(opts)
    return optimize.minimize(fun, x0, method="L-BFGS-B", jac=True, options=options)


def _quadratic(n, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.logspace(-1, 1, n)) @ q.T
    c = rng.standard_normal(n)

    def fun(x):
        r = x - c
        g = a @ r
        return 0.5 * float(r @ g), g

    return fun, c


def _rosenbrock(x):
    return optimize.rosen(x), optimize.rosen_der(x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_follows_scipy_to_the_minimiser(seed):
    fun, c = _quadratic(60, seed)
    x0 = np.zeros(60)
    ours = minimize_lbfgs(fun, x0, gtol=1e-9, maxls=50)
    ref = _scipy(fun, x0, gtol=1e-9, maxls=50)
    assert ours.status == ref.status == 0
    # (iterates agree to rounding, which grows over a long run)
    assert abs(ours.nit - ref.nit) <= 0.1 * ref.nit + 2, (ours.nit, ref.nit)
    np.testing.assert_allclose(ours.x, c, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.x, ref.x, rtol=0, atol=1e-6)


def test_first_iterations_are_scipys_iterates():
    """The same first step (1 / ||g|| along -g), the same line search, the same
    quasi-Newton steps: the iterates agree to rounding, iteration by iteration."""
    fun, _ = _quadratic(40, 7)
    x0 = np.ones(40)
    for k in (1, 2, 3, 5, 8):
        ours = minimize_lbfgs(fun, x0, maxiter=k, gtol=0.0)
        ref = _scipy(fun, x0, maxiter=k, gtol=0.0)
        assert ours.nit == ref.nit == k
        assert ours.nfev == ref.nfev
        np.testing.assert_allclose(ours.x, ref.x, rtol=1e-9, atol=1e-12)


def test_rosenbrock_converges_like_scipy():
    x0 = np.full(20, -1.2)
    x0[1::2] = 1.0
    ours = minimize_lbfgs(_rosenbrock, x0, gtol=1e-8, maxiter=2000)
    ref = _scipy(_rosenbrock, x0, gtol=1e-8, maxiter=2000)
    assert ours.status == ref.status == 0
    np.testing.assert_allclose(ours.x, np.ones(20), atol=1e-5)
    assert abs(ours.nit - ref.nit) <= 0.1 * ref.nit + 2, (ours.nit, ref.nit)


def test_iteration_limit_and_callback():
    seen = []

    def callback(r):
        seen.append((r.fun, r.x.copy()))

    ours = minimize_lbfgs(_rosenbrock, np.zeros(10), maxiter=7, callback=callback)
    assert ours.status == 1 and ours.nit == 7
    assert ours.message == "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"
    assert len(seen) == 7
    assert seen[-1][0] == ours.fun and np.array_equal(seen[-1][1], ours.x)
    assert all(b[0] <= a[0] for a, b in zip(seen[:-1], seen[1:], strict=True))


def test_a_converged_start_makes_no_iteration():
    calls = []

    def fun(x):
        calls.append(1)
        return float(x @ x), 2 * x

    ours = minimize_lbfgs(fun, np.zeros(5))
    assert (ours.nit, ours.nfev, ours.status, len(calls)) == (0, 1, 0, 1)


def test_a_gradient_that_is_no_descent_direction_stops_abnormally():
    # the gradient's sign is wrong: no step along -g decreases f
    ours = minimize_lbfgs(lambda x: (float(x @ x), -2 * x), np.ones(3))
    assert ours.status == 2 and ours.message == "ABNORMAL_TERMINATION_IN_LNSRCH"
    np.testing.assert_array_equal(ours.x, np.ones(3))  # the start, unchanged


def test_the_evaluation_limit_stops_the_search():
    ours = minimize_lbfgs(_rosenbrock, np.zeros(10), maxfun=12)
    assert ours.status == 1 and ours.nfev <= 12
    assert "EVALUATIONS" in ours.message


@pytest.mark.parametrize("seed", [0, 1])
def test_multinomial_logistic_regression_as_scipy(seed):
    """The estimator's kind of problem, float64: the same iterations and
    evaluations as SciPy's L-BFGS-B (here 80-90), the same minimum."""
    rng = np.random.default_rng(seed)
    n, p, k = 1000, 40, 5
    X = rng.standard_normal((n, p)) * rng.uniform(0.1, 3, p)
    y = np.argmax(X @ rng.standard_normal((k, p)).T + rng.gumbel(size=(n, k)), axis=1)
    onehot = np.eye(k)[y]

    def fun(theta):
        z = X @ theta.reshape(k, p).T
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        prob = np.exp(z - lse[:, None])
        value = np.mean(lse - (onehot * z).sum(axis=1)) + 5e-4 * theta @ theta
        return value, ((prob - onehot).T @ X / n).ravel() + 1e-3 * theta

    x0 = np.zeros(k * p)
    ours = minimize_lbfgs(fun, x0, gtol=1e-6, maxls=50)
    ref = _scipy(fun, x0, gtol=1e-6, maxls=50)
    assert ours.status == ref.status == 0
    assert abs(ours.nit - ref.nit) <= 2 and abs(ours.nfev - ref.nfev) <= 2
    assert ours.fun == pytest.approx(ref.fun, rel=1e-9)


def test_many_blocks_the_same_on_any_number_of_threads():
    """A problem of several of the pair products' column blocks: the same
    iterates on 1 and 2 threads (every sum in a fixed order), SciPy's
    minimum."""
    import numba

    from numxent._kernels.lbfgs import BLOCK

    rng = np.random.default_rng(3)
    n = 3 * BLOCK + 17
    diag = np.logspace(-1, 1, n)
    u = rng.standard_normal((n, 3)) / np.sqrt(n)
    c = rng.standard_normal(n)

    def fun(x):
        r = x - c
        g = diag * r + u @ (u.T @ r)
        return 0.5 * float(r @ g), g

    x0 = np.zeros(n)
    one = minimize_lbfgs(fun, x0, gtol=1e-8, n_threads=1)
    two = minimize_lbfgs(fun, x0, gtol=1e-8,
                         n_threads=min(2, numba.config.NUMBA_NUM_THREADS))  # fmt: skip
    assert one.status == two.status == 0
    assert (one.nit, one.nfev) == (two.nit, two.nfev)
    np.testing.assert_array_equal(one.x, two.x)
    ref = _scipy(fun, x0, gtol=1e-8)
    assert abs(one.nit - ref.nit) <= 0.1 * ref.nit + 2, (one.nit, ref.nit)
    np.testing.assert_allclose(one.x, ref.x, rtol=0, atol=1e-6)


def test_the_triangular_solve_is_scipys_and_refuses_a_singular_matrix():
    from scipy.linalg import LinAlgError, solve_triangular

    from numxent._lbfgs import _upper_solve

    rng = np.random.default_rng(4)
    r = np.triu(rng.standard_normal((6, 6))) + 4 * np.eye(6)
    b = rng.standard_normal(6)
    np.testing.assert_allclose(_upper_solve(r, b), solve_triangular(r, b), rtol=1e-13)
    ref_t = solve_triangular(r, b, trans="T")
    np.testing.assert_allclose(_upper_solve(r, b, trans=1), ref_t, rtol=1e-13)
    r[2, 2] = 0.0
    with pytest.raises(LinAlgError, match="singular"):
        _upper_solve(r, b)
