"""Property tests (hypothesis): invariances every correct implementation has.

The first half draws small float64 problems; the second runs the same
properties on every kernel path (tile and row-at-a-time hard labels, soft
labels, the BCE weight layouts, softmax family; serial and parallel) with
sizes from the dispatch constants. Budgets: tests/conftest.py's profiles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import numxent as nx
from _cases import (
    BCE_LAYOUTS,
    BCE_PATHS,
    FLOATS,
    HARD_PATHS,
    ROWWISE_PATHS,
    SOFT_PATHS,
    assert_matches,
    bce_shapes,
    bce_weights,
    hard_path_cases,
    hard_sizes,
    rows_sizes,
)

# the budget of the loaded hypothesis profile (tests/conftest.py)
SETTINGS = settings(deadline=None)
REDUCTIONS = ["none", "mean", "sum"]


def _floats(lo, hi):
    return st.floats(
        lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False
    )


def _weights():
    """0 or in [1e-3, 5]: no tiny denominators whose 'mean' overflows."""
    return st.one_of(st.just(0.0), _floats(1e-3, 5))


def _mean_denominator(x, t, kw):
    """The 'mean' denominator from the inputs (hard: target weights; soft: rows)."""
    sw = kw.get("sample_weight", np.ones(x.shape[0]))
    if t.dtype.kind == "f":
        return float(np.sum(sw))
    w = kw.get("weight", np.ones(x.shape[-1]))
    return float(np.sum(sw * w[t]))


def _close(actual, expected, rtol=1e-10, atol_scale=1e-12):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_scale * scale)


@st.composite
def ce_problems(draw, soft=None, with_weight=None, max_smoothing=1.0):
    """(logits, target, kwargs) for nx.cross_entropy, float64, no ignored rows."""
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 6))
    x = draw(hnp.arrays(np.float64, (n, c), elements=_floats(-30, 30)))
    soft = draw(st.booleans()) if soft is None else soft
    if soft:
        t = draw(hnp.arrays(np.float64, (n, c), elements=_floats(0, 1)))
    else:
        t = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    kw = {}
    if draw(st.booleans()) if with_weight is None else with_weight:
        kw["weight"] = draw(hnp.arrays(np.float64, (c,), elements=_weights()))
    kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, max_smoothing]))
    return x, t, kw


@st.composite
def bce_problems(draw):
    shape = draw(st.sampled_from([(4,), (3, 2), (2, 2, 3)]))
    x = draw(hnp.arrays(np.float64, shape, elements=_floats(-40, 40)))
    t = draw(hnp.arrays(np.float64, shape, elements=_floats(0, 1)))
    kw = {}
    if draw(st.booleans()):
        kw["weight"] = draw(hnp.arrays(np.float64, shape, elements=_weights()))
    if draw(st.booleans()):
        kw["pos_weight"] = draw(hnp.arrays(np.float64, shape[-1:], elements=_weights()))
    return x, t, kw


# --------------------------------------------------------------------------
# shift invariance
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=ce_problems(), data=st.data())
def test_cross_entropy_shift_invariance(reduction, problem, data):
    x, t, kw = problem
    shift = data.draw(
        hnp.arrays(np.float64, (x.shape[0], 1), elements=_floats(-100, 100))
    )
    loss, grad = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    loss_s, grad_s = nx.cross_entropy(
        x + shift, t, reduction=reduction, return_grad=True, **kw
    )
    # x + shift is rounded: allow the induced change, not more
    _close(loss_s, loss, rtol=1e-9, atol_scale=1e-10)
    _close(grad_s, grad, rtol=1e-9, atol_scale=1e-10)


@SETTINGS
@given(
    x=hnp.arrays(np.float64, (3, 4), elements=_floats(-30, 30)),
    shift=hnp.arrays(np.float64, (3, 1), elements=_floats(-100, 100)),
)
def test_softmax_family_shift(x, shift):
    _close(nx.softmax(x + shift), nx.softmax(x), rtol=1e-9, atol_scale=1e-12)
    _close(nx.log_softmax(x + shift), nx.log_softmax(x), rtol=1e-9, atol_scale=1e-10)
    _close(
        nx.logsumexp(x + shift),
        nx.logsumexp(x) + shift[:, 0],
        rtol=1e-9,
        atol_scale=1e-10,
    )


# --------------------------------------------------------------------------
# loss >= 0
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=ce_problems())
def test_cross_entropy_loss_nonnegative(reduction, problem):
    x, t, kw = problem
    loss = nx.cross_entropy(x, t, reduction=reduction, **kw)
    if reduction == "mean" and _mean_denominator(x, t, kw) == 0.0:
        assert np.isnan(loss)  # 0/0
        return
    assert np.all(loss >= 0.0)
    assert np.all(np.isfinite(loss))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=bce_problems())
def test_bce_loss_nonnegative(reduction, problem):
    x, t, kw = problem
    loss = nx.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
    assert np.all(loss >= 0.0)
    assert np.all(np.isfinite(loss))


# --------------------------------------------------------------------------
# gradient rows sum to zero (softmax's gradient is orthogonal to ones)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@SETTINGS
@given(problem=ce_problems())
def test_grad_rows_sum_to_zero(reduction, problem):
    x, t, kw = problem
    loss, grad = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    denom = _mean_denominator(x, t, kw) if reduction == "mean" else 1.0
    if denom == 0.0:
        assert np.isnan(loss)
        assert np.all(grad == 0.0)
        return
    # grad_ik = s * (A_i p_ik - a_ik) with a_ik the row's target weights and
    # A_i = sum_k a_ik: each row sums to 0 up to rounding of terms ~ s * A_i.
    n_classes = x.shape[-1]
    w = kw.get("weight", np.ones(n_classes))
    eps = kw["label_smoothing"]
    q = t if t.dtype.kind == "f" else np.eye(n_classes)[t]
    a_row = np.sum(w * ((1 - eps) * q + eps / n_classes), axis=-1)
    bound = 16 * n_classes * np.finfo(np.float64).eps * a_row / denom
    assert np.all(np.abs(grad.sum(axis=-1)) <= bound + 1e-300)


# --------------------------------------------------------------------------
# hard labels == one-hot soft labels
# --------------------------------------------------------------------------
def _one_hot(t, c):
    return np.eye(c)[t]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=ce_problems(soft=False, with_weight=False))
def test_hard_equals_one_hot_unweighted(reduction, problem):
    x, t, kw = problem
    hard = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    soft = nx.cross_entropy(
        x, _one_hot(t, x.shape[-1]), reduction=reduction, return_grad=True, **kw
    )
    _close(soft[0], hard[0])
    _close(soft[1], hard[1])


@pytest.mark.parametrize("reduction", ["none", "sum"])
@SETTINGS
@given(problem=ce_problems(soft=False, with_weight=True))
def test_hard_equals_one_hot_weighted(reduction, problem):
    """With class weights only 'none'/'sum' agree: the 'mean' denominators of
    hard (sum of target weights) and soft (number of rows) labels differ."""
    x, t, kw = problem
    hard = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    soft = nx.cross_entropy(
        x, _one_hot(t, x.shape[-1]), reduction=reduction, return_grad=True, **kw
    )
    _close(soft[0], hard[0])
    _close(soft[1], hard[1])


# --------------------------------------------------------------------------
# reductions are consistent with each other
# --------------------------------------------------------------------------
@SETTINGS
@given(problem=ce_problems(), data=st.data())
def test_cross_entropy_reductions_consistent(problem, data):
    x, t, kw = problem
    sw = data.draw(hnp.arrays(np.float64, x.shape[:1], elements=_weights()))
    kw["sample_weight"] = sw
    none_loss, none_grad = nx.cross_entropy(
        x, t, reduction="none", return_grad=True, **kw
    )
    sum_loss, sum_grad = nx.cross_entropy(x, t, reduction="sum", return_grad=True, **kw)
    mean_loss, mean_grad = nx.cross_entropy(x, t, return_grad=True, **kw)
    _close(sum_loss, np.sum(none_loss))
    _close(sum_grad, none_grad)
    denom = _mean_denominator(x, t, kw)
    if denom == 0.0:
        assert np.isnan(mean_loss)
        assert np.all(mean_grad == 0.0)
    else:
        _close(mean_loss, sum_loss / denom)
        _close(mean_grad, sum_grad / denom)


# --------------------------------------------------------------------------
# float32 agrees with float64
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=ce_problems(max_smoothing=0.5))
def test_cross_entropy_float32_matches_float64(reduction, problem):
    x, t, kw = problem
    x32 = x.astype(np.float32)
    t32 = t.astype(np.float32) if t.dtype.kind == "f" else t
    kw32 = dict(kw)
    if "weight" in kw:
        kw32["weight"] = kw["weight"].astype(np.float32)
    loss32, grad32 = nx.cross_entropy(
        x32, t32, reduction=reduction, return_grad=True, **kw32
    )
    loss64, grad64 = nx.cross_entropy(
        x32.astype(np.float64),
        t32.astype(np.float64) if t.dtype.kind == "f" else t,
        reduction=reduction,
        return_grad=True,
        **{k: (v.astype(np.float64) if k == "weight" else v) for k, v in kw32.items()},
    )
    assert loss32.dtype == np.float32 and grad32.dtype == np.float32
    _close(loss32, loss64, rtol=1e-5, atol_scale=1e-6)
    _close(grad32, grad64, rtol=1e-5, atol_scale=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=bce_problems())
def test_bce_float32_matches_float64(reduction, problem):
    x, t, kw = problem
    x32, t32 = x.astype(np.float32), t.astype(np.float32)
    kw32 = {k: v.astype(np.float32) for k, v in kw.items()}
    kw64 = {k: v.astype(np.float64) for k, v in kw32.items()}
    loss32, grad32 = nx.binary_cross_entropy_with_logits(
        x32, t32, reduction=reduction, return_grad=True, **kw32
    )
    loss64, grad64 = nx.binary_cross_entropy_with_logits(
        x32.astype(np.float64),
        t32.astype(np.float64),
        reduction=reduction,
        return_grad=True,
        **kw64,
    )
    assert loss32.dtype == np.float32 and grad32.dtype == np.float32
    _close(loss32, loss64, rtol=1e-5, atol_scale=1e-6)
    _close(grad32, grad64, rtol=1e-5, atol_scale=1e-6)


# --------------------------------------------------------------------------
# binary cross-entropy symmetry: (x, t) and (-x, 1 - t) are the same problem
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(problem=bce_problems())
def test_bce_label_flip_symmetry(reduction, problem):
    x, t, kw = problem
    kw.pop("pos_weight", None)  # pos_weight breaks the symmetry
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, reduction=reduction, return_grad=True, **kw
    )
    loss_f, grad_f = nx.binary_cross_entropy_with_logits(
        -x, 1.0 - t, reduction=reduction, return_grad=True, **kw
    )
    _close(loss_f, loss)
    _close(grad_f, -grad)


# --------------------------------------------------------------------------
# softmax family
# --------------------------------------------------------------------------
@SETTINGS
@given(
    x=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
        elements=_floats(-50, 50),
    ),
    data=st.data(),
)
def test_softmax_family_identities(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    p = nx.softmax(x, axis=axis)
    logp = nx.log_softmax(x, axis=axis)
    lse = nx.logsumexp(x, axis=axis)
    assert p.shape == x.shape and logp.shape == x.shape
    assert np.all(p >= 0.0) and np.all(p <= 1.0)
    assert np.all(logp <= 0.0)
    _close(np.sum(p, axis=axis), np.ones(lse.shape), rtol=1e-13, atol_scale=1e-14)
    # logits span <= 100, so softmax never underflows and log is well defined
    _close(logp, np.log(p), rtol=1e-12, atol_scale=1e-12)
    _close(np.exp(logp), p, rtol=1e-12, atol_scale=1e-15)
    _close(logp, x - np.expand_dims(lse, axis), rtol=1e-12, atol_scale=1e-12)
    assert np.all(lse >= np.max(x, axis=axis))


# ==========================================================================
# the same properties on every kernel path (sizes from the dispatch
# constants, see _cases.py): tile and row-at-a-time hard-label kernels,
# soft labels, BCE weight layouts, softmax family; serial and parallel
# ==========================================================================
CE_PATH_CASES = hard_path_cases() + [(p, d) for p in SOFT_PATHS for d in FLOATS]
CE_PATH_IDS = [f"{p}-{np.dtype(d).name}" for p, d in CE_PATH_CASES]
HARD_PATH_CASES = hard_path_cases()
HARD_PATH_IDS = [f"{p}-{np.dtype(d).name}" for p, d in HARD_PATH_CASES]


@st.composite
def path_problems(draw, path, dtype, weighted=None):
    """(x, t, kw) on ``path``: finite logits on a 2**-10 grid (|x| < 2**8, so
    integer shifts up to 1000 are exact in float32), no ignored rows."""
    if path in HARD_PATHS:
        n, c = draw(hard_sizes(path, dtype))
    else:
        n, c = draw(rows_sizes(path))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 4.0, 30.0]))
    x = np.clip(rng.standard_normal((n, c)) * scale, -255, 255)
    x = (np.round(x * 1024) / 1024).astype(dtype)
    if path in HARD_PATHS:
        t = rng.integers(0, c, n)
    else:
        t = rng.random((n, c))
        t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    kw = {"label_smoothing": draw(st.sampled_from([0.0, 0.1, 1.0]))}
    if draw(st.booleans()) if weighted is None else weighted:
        kw["weight"] = rng.uniform(0.1, 3.0, c)
    if draw(st.booleans()):
        kw["sample_weight"] = rng.uniform(0.1, 3.0, n)
    return x, t, kw


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("path", "dtype"), CE_PATH_CASES, ids=CE_PATH_IDS)
@given(data=st.data())
def test_every_path_shift_invariance(reduction, path, dtype, data):
    x, t, kw = data.draw(path_problems(path, dtype))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shift = rng.integers(-1000, 1001, size=(x.shape[0], 1)).astype(dtype)
    assert np.all((x + shift) - shift == x)  # the shifted logits are exact
    loss, grad = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    loss_s, grad_s = nx.cross_entropy(
        x + shift, t, reduction=reduction, return_grad=True, **kw
    )
    assert_matches(loss_s, loss, dtype)
    assert_matches(grad_s, grad, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("path", "dtype"), CE_PATH_CASES, ids=CE_PATH_IDS)
@given(data=st.data())
def test_every_path_loss_nonnegative(reduction, path, dtype, data):
    x, t, kw = data.draw(path_problems(path, dtype))
    loss = nx.cross_entropy(x, t, reduction=reduction, **kw)
    if reduction == "mean" and x.shape[0] == 0:
        assert np.isnan(loss)  # 0/0
        return
    assert np.all(loss >= 0.0)
    assert np.all(np.isfinite(loss))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("path", "dtype"), HARD_PATH_CASES, ids=HARD_PATH_IDS)
@given(data=st.data())
def test_every_path_hard_grad_rows_sum_to_zero(reduction, path, dtype, data):
    x, t, kw = data.draw(path_problems(path, dtype))
    loss, grad = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    denom = _mean_denominator(x, t, kw) if reduction == "mean" else 1.0
    if denom == 0.0:
        assert np.isnan(loss) and np.all(grad == 0.0)
        return
    n_classes = x.shape[-1]
    w = kw.get("weight", np.ones(n_classes))
    sw = kw.get("sample_weight", np.ones(x.shape[0]))
    eps = kw["label_smoothing"]
    a_row = (1 - eps) * w[t] + eps / n_classes * np.sum(w)
    # each entry is rounded once or twice in the logits' dtype
    bound = 16 * n_classes * np.finfo(dtype).eps * sw * a_row / denom
    row_sums = grad.astype(np.float64).sum(axis=-1)
    assert np.all(np.abs(row_sums) <= bound + 1e-300)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("path", "dtype"), HARD_PATH_CASES, ids=HARD_PATH_IDS)
@given(data=st.data())
def test_every_path_hard_equals_one_hot(reduction, path, dtype, data):
    """Unweighted, every reduction; with class weights the 'mean'
    denominators of hard and soft labels differ, so 'none' and 'sum'."""
    weighted = reduction != "mean" and data.draw(st.booleans())
    x, t, kw = data.draw(path_problems(path, dtype, weighted=weighted))
    hard = nx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
    one_hot = np.eye(x.shape[-1], dtype=dtype)[t]
    soft = nx.cross_entropy(x, one_hot, reduction=reduction, return_grad=True, **kw)
    assert_matches(soft[0], hard[0], dtype)
    assert_matches(soft[1], hard[1], dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "path", [*HARD_PATHS, *SOFT_PATHS], ids=[*HARD_PATHS, *SOFT_PATHS]
)
@given(data=st.data())
def test_every_path_float32_matches_float64(reduction, path, data):
    """The float32 path (sizes drawn for float32's switches) against float64
    on the same values, which may take the other kernel shape."""
    x32, t, kw = data.draw(path_problems(path, np.float32))
    loss32, grad32 = nx.cross_entropy(
        x32, t, reduction=reduction, return_grad=True, **kw
    )
    t64 = t.astype(np.float64) if t.dtype.kind == "f" else t
    loss64, grad64 = nx.cross_entropy(
        x32.astype(np.float64), t64, reduction=reduction, return_grad=True, **kw
    )
    assert loss32.dtype == np.float32 and grad32.dtype == np.float32
    assert_matches(loss32, loss64, np.float32)
    assert_matches(grad32, grad64, np.float32)


BCE_PATH_CASES = [(p, lay) for p in BCE_PATHS for lay in BCE_LAYOUTS]
BCE_PATH_IDS = [f"{p}-{lay}" for p, lay in BCE_PATH_CASES]


@st.composite
def bce_path_problems(draw, path, layout):
    shape = draw(bce_shapes(path, layout))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 5.0, 40.0]))
    t = rng.random(shape)
    return x, t, bce_weights(rng, shape, layout, draw)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("path", "layout"), BCE_PATH_CASES, ids=BCE_PATH_IDS)
@given(data=st.data())
def test_every_bce_path_properties(reduction, path, layout, data):
    """loss >= 0, float32 agrees with float64, and (x, t) == (-x, 1 - t)
    without pos_weight."""
    x, t, kw = data.draw(bce_path_problems(path, layout))
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, reduction=reduction, return_grad=True, **kw
    )
    if not (reduction == "mean" and np.isnan(loss)):  # nan: a zero denominator
        assert np.all(loss >= 0.0) and np.all(np.isfinite(loss))
    x32, t32 = x.astype(np.float32), t.astype(np.float32)
    loss32, grad32 = nx.binary_cross_entropy_with_logits(
        x32, t32, reduction=reduction, return_grad=True, **kw
    )
    loss64, grad64 = nx.binary_cross_entropy_with_logits(
        x32.astype(np.float64), t32.astype(np.float64), reduction=reduction,
        return_grad=True, **kw,
    )  # fmt: skip
    assert_matches(loss32, loss64, np.float32)
    assert_matches(grad32, grad64, np.float32)
    kw.pop("pos_weight", None)
    a = nx.binary_cross_entropy_with_logits(
        x, t, reduction=reduction, return_grad=True, **kw
    )
    b = nx.binary_cross_entropy_with_logits(
        -x, 1.0 - t, reduction=reduction, return_grad=True, **kw
    )
    _close(b[0], a[0], rtol=1e-9, atol_scale=1e-12)
    _close(b[1], -a[1], rtol=1e-9, atol_scale=1e-12)


@pytest.mark.parametrize("path", list(ROWWISE_PATHS))
@given(data=st.data())
def test_every_rowwise_path_identities(path, data):
    n, c = data.draw(rows_sizes(path, max_classes=600))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-50, 50, (n, c))  # a span <= 100: softmax never underflows
    p, logp, lse = nx.softmax(x), nx.log_softmax(x), nx.logsumexp(x)
    assert np.all(p >= 0.0) and np.all(p <= 1.0) and np.all(logp <= 0.0)
    _close(np.sum(p, axis=-1), np.ones(n), rtol=1e-13, atol_scale=1e-14)
    _close(logp, np.log(p), rtol=1e-12, atol_scale=1e-12)
    _close(logp, x - lse[:, None], rtol=1e-12, atol_scale=1e-12)
    shift = rng.integers(-100, 101, size=(n, 1)).astype(np.float64)
    _close(nx.softmax(x + shift), p, rtol=1e-9, atol_scale=1e-12)
    _close(nx.logsumexp(x + shift), lse + shift[:, 0], rtol=1e-9, atol_scale=1e-10)
