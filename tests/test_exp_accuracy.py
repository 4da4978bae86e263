"""Accuracy of the vectorisable exp behind the softmax kernels.

``exp_shifted(x, i, m, e, ei, fix)`` writes ``e[ei, k] = exp(x[i, k] - m)``
and returns their sum. The reference is NumPy's float64 exp (for float32:
rounded once to float32; for float64: ``np.longdouble`` where it has more
precision). The full sweep over every float32 in [-87.3, 0] is opt-in
(``pytest -m slow``).
"""

import math

import numpy as np
import pytest
from numba import njit

from numxent._kernels import exp_shifted, fixed_point_scale, log_f64


@njit
def _exp(x):
    x2 = x.reshape(1, x.shape[0])
    e = np.empty_like(x2)
    s = exp_shifted(x2, 0, x.dtype.type(0.0), e, 0, fixed_point_scale(x.shape[0]))
    return e.reshape(x.shape[0]), s


def _ulps32(a, b):
    """Distance in float32 units in the last place (same-sign values)."""
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    return np.abs(ia - ib)


def _check_f32(d):
    e, _ = _exp(d)
    ref = np.exp(d.astype(np.float64)).astype(np.float32)
    normal = ref >= np.finfo(np.float32).tiny
    assert np.max(_ulps32(e[normal], ref[normal]), initial=0) <= 2
    # Below the smallest normal the kernel flushes to exactly 0.
    assert np.all((e[~normal] == 0) | (_ulps32(e[~normal], ref[~normal]) <= 2))


def test_exp_f32_random_and_edges():
    rng = np.random.default_rng(0)
    d = -rng.random(1_000_000).astype(np.float32) * np.float32(87.3)
    edges = np.array(
        [0.0, -0.0, -1e-30, -0.34657359, -0.34657360, -0.69314718, -1.0, -10.0,
         -87.33654, -87.33655, -87.4, -103.0, -200.0, -np.inf],
        dtype=np.float32,
    )  # fmt: skip
    _check_f32(np.concatenate([d, edges]))
    e, _ = _exp(edges)
    assert e[0] == 1.0 and e[1] == 1.0
    assert np.all(e[-4:] == 0.0)  # underflow and -inf give exactly 0


@pytest.mark.slow
def test_exp_f32_exhaustive():
    lo = np.float32(-87.3).view(np.int32)
    start = np.int64(np.float32(-0.0).view(np.int32)) & 0xFFFFFFFF
    stop = np.int64(lo) & 0xFFFFFFFF
    chunk = 1 << 24
    for a in range(int(start), int(stop) + 1, chunk):
        b = min(a + chunk, int(stop) + 1)
        bits = np.arange(a, b, dtype=np.uint32)
        _check_f32(bits.view(np.float32))


def test_exp_f64_random():
    rng = np.random.default_rng(1)
    d = np.concatenate(
        [-rng.random(1_000_000) * 708.0, -rng.random(100_000), [0.0, -1e-300]]
    )
    e, _ = _exp(d)
    ref = np.exp(d.astype(np.longdouble))
    ulp = np.spacing(np.exp(d))
    err = np.abs((e.astype(np.longdouble) - ref) / ulp.astype(np.longdouble))
    limit = 2.0 if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else 3.0
    assert float(np.max(err)) <= limit


def test_exp_f64_underflow_is_zero():
    d = np.array([-708.3, -708.4, -745.0, -1000.0, -np.inf])
    e, _ = _exp(d)
    assert e[0] == pytest.approx(math.exp(-708.3), rel=1e-15)
    assert np.all(e[1:] == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 1000, 40_000])
def test_exp_sum_matches_float64_sum(dtype, n):
    rng = np.random.default_rng(n)
    d = (-rng.random(n) * 30).astype(dtype)
    e, s = _exp(d)
    ref = math.fsum(np.exp(d.astype(np.float64)))
    assert s == pytest.approx(ref, rel=1e-6 if dtype == np.float32 else 1e-14)
    assert s == pytest.approx(math.fsum(e.astype(np.float64)), rel=1e-9)


@njit
def _logs(v, out):
    for i in range(v.shape[0]):
        out[i] = log_f64(v[i])


def test_row_sum_log_within_one_ulp():
    """The vectorised log of narrow-row sums (values in [1, C], tested up to
    1e6) against long-double log: < 1 ulp, and log(1) exactly 0."""
    rng = np.random.default_rng(12)
    v = np.exp(rng.uniform(0.0, math.log(1e6), 10**6))
    edges = [1.0, np.nextafter(1.0, 2.0), 2.0, math.sqrt(2.0), 64.0, 1e300]
    edges += [np.nextafter(math.sqrt(2.0), 0.0), np.nextafter(2.0, 0.0)]
    v = np.concatenate([v, edges])
    out = np.empty_like(v)
    _logs(v, out)
    assert out[-8] == 0.0  # log(1)
    ref = np.log(v.astype(np.longdouble))
    keep = v != 1.0
    spacing = np.spacing(np.abs(np.log(v[keep]))).astype(np.longdouble)
    ulps = np.abs(out[keep].astype(np.longdouble) - ref[keep]) / spacing
    limit = 1.0 if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else 1.5
    assert float(ulps.max()) < limit


@pytest.mark.parametrize("n", [0, 1, 7, 128, 129, 1000, 123_457])
def test_ordered_total_against_exact_sum(n):
    """The reductions' fixed-order sum: within (log2 n) * eps of math.fsum."""
    from numxent._kernels import ordered_total

    rng = np.random.default_rng(n)
    v = rng.random(n) * rng.choice([1.0, 1e8], n)
    ref = math.fsum(v)
    bound = 2.0**-52 * max(1.0, math.log2(max(n, 2))) * abs(ref)
    assert abs(ordered_total(v) - ref) <= bound
    assert ordered_total(v) == ordered_total(v.copy())
