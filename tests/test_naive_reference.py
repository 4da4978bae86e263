"""numxent against the float64 references in naive.py: every option
combination, loss and gradient, sample weights, zero denominators and the
non-finite cases. NumPy only (the same matrix against PyTorch is in
test_torch_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest

import numxent as nx
from _checks import BCE_SHAPES, assert_close, bce_weight, check_result
from _checks import hard_target as _hard_target
from _checks import soft_target as _soft_target
from _paths import narrow_classes
from naive import (
    bce_with_logits_ref,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

REDUCTIONS = ["none", "mean", "sum"]
FLOATS = [np.float32, np.float64]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
              np.uint64]  # fmt: skip
INF = np.inf
NAN = np.nan


def ref_ce(x, t, **kw):
    """naive.py on the very values numxent got (float32 cast exactly)."""
    with np.errstate(all="ignore"):
        return cross_entropy_ref(np.asarray(x, np.float64), t, **kw)


def ref_bce(x, t, **kw):
    with np.errstate(all="ignore"):
        return bce_with_logits_ref(np.asarray(x, np.float64), t, **kw)


# --------------------------------------------------------------------------
# the README's examples
# --------------------------------------------------------------------------
def test_seed_example_cross_entropy():
    logits = np.array([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]])
    target = np.array([0, 1])
    loss = nx.cross_entropy(logits, target)
    assert loss.dtype == np.float64
    assert abs(float(loss) - 0.2598602) < 5e-8
    loss2, grad = nx.cross_entropy(logits, target, return_grad=True)
    assert loss2 == loss
    r_loss, r_grad = ref_ce(logits, target)
    assert_close(loss, r_loss, np.float64)
    assert_close(grad, r_grad, np.float64)


def test_seed_example_bce():
    logits = np.array([[2.0], [0.5], [-1.0]])
    target = np.array([[1.0], [1.0], [0.0]])
    loss = nx.binary_cross_entropy_with_logits(logits, target)
    assert abs(float(loss) - 0.3047556) < 5e-8
    _, grad = nx.binary_cross_entropy_with_logits(logits, target, return_grad=True)
    r_loss, r_grad = ref_bce(logits, target)
    assert_close(loss, r_loss, np.float64)
    assert_close(grad, r_grad, np.float64)


# --------------------------------------------------------------------------
# cross-entropy, hard labels
# --------------------------------------------------------------------------
C_HARD = 5
LEADS = [(7,), (2, 3), ()]  # () = unbatched logits (C,) with a 0-d target


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("ignore_index", [-100, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["w=None", "w=rand"])
@pytest.mark.parametrize("sample_weighted", [False, True], ids=["sw=None", "sw=rand"])
def test_cross_entropy_hard_matches_naive(
    dtype, lead, reduction, label_smoothing, ignore_index, weighted, sample_weighted
):
    rng = np.random.default_rng(100)
    x = rng.normal(scale=3.0, size=lead + (C_HARD,)).astype(dtype)
    y = _hard_target(rng, lead, C_HARD, ignore_index, ignored=(1, 4))
    if lead == ():
        y = np.array(1 if ignore_index == 3 else 3)  # a kept 0-d target
    kw = dict(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )
    if weighted:
        kw["weight"] = (rng.random(C_HARD) + 0.1).astype(dtype)
    if sample_weighted:
        kw["sample_weight"] = rng.random(lead) * 3
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    check_result(loss, grad, x, reduction, lead)
    r_loss, r_grad = ref_ce(x, y, **kw)
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)
    np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss)


LABEL_DTYPE_CASES = [
    (d, ii)
    for d in INT_DTYPES
    for ii in (-100, 3, -1)
    if not (ii == -1 and np.iinfo(d).min == 0)  # unsigned labels cannot hold -1
]


@pytest.mark.parametrize(
    ("int_dtype", "ignore_index"),
    LABEL_DTYPE_CASES,
    ids=[f"{d.__name__}-{ii}" for d, ii in LABEL_DTYPE_CASES],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_label_dtypes_match_naive(int_dtype, ignore_index, reduction):
    fits = np.iinfo(int_dtype).min <= ignore_index
    ignored = (0, 5) if fits else ()
    rng = np.random.default_rng(101)
    x = rng.normal(size=(8, C_HARD))
    y = _hard_target(rng, (8,), C_HARD, ignore_index, ignored).astype(int_dtype)
    kw = dict(weight=rng.random(C_HARD) + 0.1, reduction=reduction,
              label_smoothing=0.1, ignore_index=ignore_index)  # fmt: skip
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    r_loss, r_grad = ref_ce(x, y.astype(np.int64), **kw)
    assert_close(loss, r_loss, np.float64)
    assert_close(grad, r_grad, np.float64)


# Widths on both sides of the tile / row-at-a-time switch (NARROW_CLASSES by
# dtype), and of the wide rows' prefetch and group sizes.
def _widths(dtype):
    nc = narrow_classes(dtype)
    return sorted({1, 2, 10, 64, nc - 1, nc, nc + 1, 1000, 4097})


WIDTH_CASES = [(d, c) for d in FLOATS for c in _widths(d)]


@pytest.mark.parametrize(("dtype", "n_classes"), WIDTH_CASES,
                         ids=[f"{d.__name__}-{c}" for d, c in WIDTH_CASES])  # fmt: skip
@pytest.mark.parametrize("n_rows", [7, 300], ids=["serial", "parallel-ish"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_every_row_width_matches_naive(dtype, n_classes, n_rows, label_smoothing):
    """Both hard-label kernel shapes, weights, ignored and NaN rows,
    forward-only and in place, against the reference."""
    rng = np.random.default_rng(n_classes * 7 + n_rows)
    x = (rng.normal(size=(n_rows, n_classes)) * 4).astype(dtype)
    y = rng.integers(0, n_classes, n_rows)
    y[3] = -100
    x[5, n_classes // 2] = np.nan
    x[6, 0] = -np.inf if n_classes > 1 else x[6, 0]
    w = rng.random(n_classes) + 0.2
    kw = dict(weight=w, reduction="none", label_smoothing=label_smoothing)
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    r_loss, r_grad = ref_ce(x, y, **kw)
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)
    np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss)
    inplace = x.copy()
    nx.cross_entropy(inplace, y, return_grad=True, out=inplace, **kw)
    np.testing.assert_array_equal(inplace, grad)
    keep = np.isfinite(x).all(axis=1)
    kw["reduction"] = "mean"
    loss_m, grad_m = nx.cross_entropy(x[keep], y[keep], return_grad=True, **kw)
    ref_m, ref_gm = ref_ce(x[keep], y[keep], **kw)
    assert_close(loss_m, ref_m, dtype)
    assert_close(grad_m, ref_gm, dtype)


def _ce_nonfinite_logits():
    x = np.array(
        [
            [0.5, -1.0, 2.0, 0.1],  # finite
            [NAN, 0.0, 1.0, 2.0],  # NaN elsewhere than the target
            [0.0, 1.0, INF, 2.0],  # +inf elsewhere than the target
            [0.0, INF, 1.0, 2.0],  # +inf at the target
            [0.0, -INF, 1.0, 2.0],  # -inf at the target
            [-INF, 1.0, 0.5, 2.0],  # -inf elsewhere
            [-INF, -INF, -INF, -INF],  # all -inf
            [1.0, 2.0, NAN, NAN],  # NaN at the target
        ]
    )
    y = np.array([2, 2, 1, 1, 1, 2, 0, 3])
    return x, y


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n_classes", [4, "wide"])
def test_nonfinite_rows_match_naive(dtype, label_smoothing, n_classes):
    """NaN and -inf rows as the reference has them; a row holding +inf is
    all NaN (PyTorch's pattern, test_torch_parity.py; the reference's
    ``inf - inf`` leaves some entries finite)."""
    x, y = _ce_nonfinite_logits()
    if n_classes == "wide":  # the row-at-a-time kernels: pad with -inf classes
        width = narrow_classes(dtype) + 1
        x = np.concatenate([x, np.full((8, width - 4), -INF)], axis=1)
        x[[0, 1, 2, 3, 4, 5, 7], 4:] = -30.0
        x[6, 4:] = 0.0  # (all -inf wide rows: test_all_minus_inf_wide_row_is_nan)
    x = x.astype(dtype)
    kw = dict(reduction="none", label_smoothing=label_smoothing)
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    r_loss, r_grad = ref_ce(x, y, **kw)
    plus_inf = np.isposinf(x).any(axis=1)
    r_loss[plus_inf] = NAN
    r_grad[plus_inf] = NAN
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n_rows", [2, 5, 40])
def test_all_minus_inf_wide_row_is_nan(dtype, n_rows):
    """A kept hard-label row of only -inf logits wider than NARROW_CLASSES:
    0/0, NaN loss (as in narrow rows, the reference and PyTorch)."""
    c = narrow_classes(dtype) + 1
    x = np.random.default_rng(0).standard_normal((n_rows, c)).astype(dtype)
    x[0] = -INF
    y = np.zeros(n_rows, dtype=np.int64)
    loss = nx.cross_entropy(x, y, reduction="none")
    r_loss, _ = ref_ce(x, y, reduction="none")
    assert np.isnan(r_loss[0])
    assert_close(loss, r_loss, dtype)


@pytest.mark.parametrize("n_classes", [3, 300])
@pytest.mark.parametrize(
    "kw",
    [dict(label_smoothing=1.0), dict(weight=[1.0, 0.0] + [1.0] * 298)],
    ids=["eps=1", "w_y=0"],
)
def test_zero_coefficient_target_with_minus_inf_logit(n_classes, kw):
    """A -inf logit at the target whose coefficient (1 - eps) w_y is 0
    contributes nothing (the zero-coefficient convention numxent applies to
    soft labels and to the smoothing term): hard labels equal their one-hot
    soft labels."""
    kw = dict(kw)
    if "weight" in kw:
        kw["weight"] = np.array(kw["weight"][:n_classes])
    x = np.random.default_rng(1).normal(size=(2, n_classes))
    y = np.array([1, 0])
    x[0, 1] = -INF
    hard = nx.cross_entropy(x, y, reduction="none", **kw)
    soft = nx.cross_entropy(x, np.eye(n_classes)[y], reduction="none", **kw)
    r_loss, _ = ref_ce(x, y, reduction="none", **kw)
    assert_close(soft, r_loss, np.float64)
    assert_close(hard, r_loss, np.float64)


# --------------------------------------------------------------------------
# cross-entropy, soft labels
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["w=None", "w=rand"])
@pytest.mark.parametrize("sample_weighted", [False, True], ids=["sw=None", "sw=rand"])
def test_cross_entropy_soft_matches_naive(
    dtype, lead, reduction, label_smoothing, weighted, sample_weighted
):
    rng = np.random.default_rng(200)
    C = 4
    x = rng.normal(scale=3.0, size=lead + (C,)).astype(dtype)
    t = _soft_target(rng, lead + (C,)).astype(dtype)
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    if weighted:
        kw["weight"] = (rng.random(C) + 0.1).astype(dtype)
    if sample_weighted:
        kw["sample_weight"] = rng.random(lead) * 3
    loss, grad = nx.cross_entropy(x, t, return_grad=True, **kw)
    check_result(loss, grad, x, reduction, lead)
    r_loss, r_grad = ref_ce(x, t, **kw)
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)
    np.testing.assert_array_equal(nx.cross_entropy(x, t, **kw), loss)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["w=None", "w=rand"])
def test_soft_zero_probability_with_minus_inf_logit_contributes_nothing(
    reduction, weighted
):
    rng = np.random.default_rng(701)
    N, C = 5, 4
    x = rng.normal(size=(N, C))
    t = _soft_target(rng, (N, C))
    x[[0, 2, 3], 2] = -INF
    t[[0, 2, 3], 2] = 0.0
    t /= t.sum(axis=-1, keepdims=True)
    w = rng.random(C) + 0.1 if weighted else None
    loss, grad = nx.cross_entropy(x, t, weight=w, reduction=reduction, return_grad=True)
    assert np.all(np.isfinite(loss))
    assert np.all(grad[[0, 2, 3], 2] == 0.0)
    r_loss, r_grad = ref_ce(x, t, weight=w, reduction=reduction)
    assert_close(loss, r_loss, np.float64)
    assert_close(grad, r_grad, np.float64)


# --------------------------------------------------------------------------
# binary cross-entropy with logits
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", BCE_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "full", "last", "lead"])
@pytest.mark.parametrize("pos_weighted", [False, True], ids=["pw=None", "pw=rand"])
def test_bce_matches_naive(dtype, shape, reduction, weight, pos_weighted):
    rng = np.random.default_rng(300)
    x = rng.normal(scale=4.0, size=shape).astype(dtype)
    t = rng.random(shape)
    t.reshape(-1)[:3] = [0.0, 1.0, 1.0]  # exact labels too
    t = t.astype(dtype)
    w = bce_weight(rng, weight, shape, dtype)
    pw = (rng.random(shape[-1:]) * 3).astype(dtype) if pos_weighted else None
    kw = dict(weight=w, pos_weight=pw, reduction=reduction)
    loss, grad = nx.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)
    check_result(loss, grad, x, reduction, shape)
    r_loss, r_grad = ref_bce(x, t, **kw)
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)
    np.testing.assert_array_equal(nx.binary_cross_entropy_with_logits(x, t, **kw), loss)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("pos_weighted", [False, True], ids=["pw=None", "pw=rand"])
def test_bce_infinite_logits_give_the_limit(dtype, pos_weighted):
    x = np.array([INF, -INF, INF, -INF, INF, -INF], dtype=dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype=dtype)
    w = np.array([0.5, 2.0, 1.5, 1.0, 0.7, 3.0], dtype=dtype)
    pw = np.array([0.5, 2.0, 3.0, 1.5, 0.5, 2.5], dtype=dtype) if pos_weighted else None
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, weight=w, pos_weight=pw, reduction="none", return_grad=True
    )
    np.testing.assert_array_equal(loss, [0.0, 0.0, INF, INF, INF, INF])
    pw64 = np.ones(6) if pw is None else pw.astype(np.float64)
    w64, t64 = w.astype(np.float64), t.astype(np.float64)
    expected_grad = np.where(x > 0, w64 * (1 - t64), -w64 * pw64 * t64)
    assert_close(grad, expected_grad, dtype)
    r_loss, r_grad = ref_bce(x, t, weight=w, pos_weight=pw, reduction="none")
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------
FAMILY = {
    "logsumexp": (nx.logsumexp, logsumexp_ref),
    "log_softmax": (nx.log_softmax, log_softmax_ref),
    "softmax": (nx.softmax, softmax_ref),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", list(FAMILY))
def test_logsumexp_family_matches_naive(dtype, axis, name):
    fn, ref = FAMILY[name]
    rng = np.random.default_rng(900)
    x = rng.normal(scale=10.0, size=(3, 4, 5)).astype(dtype)
    x[0, 1, 2] = -INF
    x[2, 0, :] = -INF
    x[2, 0, 4] = 3.0
    out = fn(x, axis=axis)
    assert out.dtype == dtype
    with np.errstate(all="ignore"):
        expected = ref(x.astype(np.float64), axis=axis)
    assert_close(out, expected, dtype)


# --------------------------------------------------------------------------
# sample_weight (no PyTorch counterpart), zero denominators, float32 tails
# --------------------------------------------------------------------------
@pytest.mark.parametrize("x", [-20.0, -30.0, 20.0, 30.0])
def test_bce_float32_tail_accuracy(x):
    """PyTorch float32 returns 0.0 for x=-20, t=0; the true loss is ~2.06e-9."""
    t = 0.0 if x < 0 else 1.0
    expected = np.log1p(np.exp(-abs(x)))  # float64
    logits = np.array([x], dtype=np.float32)
    target = np.array([t], dtype=np.float32)
    loss, grad = nx.binary_cross_entropy_with_logits(logits, target, return_grad=True)
    assert loss.dtype == np.float32
    assert expected > 0
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    # d/dx = sigmoid(x) - t = +-sigmoid(-|x|)
    expected_grad = np.exp(-abs(x)) / (1.0 + np.exp(-abs(x)))
    np.testing.assert_allclose(abs(float(grad[0])), expected_grad, rtol=1e-6)
    assert np.sign(grad[0]) == (1.0 if x < 0 else -1.0)


def _ce_case(rng, kind, dtype):
    N, C = 8, 4
    x = rng.normal(scale=2.0, size=(N, C)).astype(dtype)
    kw = dict(weight=(rng.random(C) + 0.1).astype(dtype), label_smoothing=0.1)
    if kind == "hard":
        t = _hard_target(rng, (N,), C, ignore_index=2, ignored=(1, 6))
        kw["ignore_index"] = 2
    else:
        t = _soft_target(rng, (N, C)).astype(dtype)
    return x, t, kw


def _bce_case(rng, kind, dtype):
    shape = (6,) if kind == "bce1d" else (5, 3)
    x = rng.normal(scale=3.0, size=shape).astype(dtype)
    t = rng.random(shape).astype(dtype)
    kw = dict(
        weight=(rng.random(shape) + 0.1).astype(dtype),
        pos_weight=(rng.random(shape[-1:]) * 2).astype(dtype),
    )
    return x, t, kw


def _sw_shape(kind, x):
    return x.shape if kind == "bce1d" else x.shape[:-1]


def _make_case(rng, kind, dtype):
    if kind in ("hard", "soft"):
        x, t, kw = _ce_case(rng, kind, dtype)
        return x, t, kw, nx.cross_entropy, cross_entropy_ref
    x, t, kw = _bce_case(rng, kind, dtype)
    return x, t, kw, nx.binary_cross_entropy_with_logits, bce_with_logits_ref


SW_KINDS = ["hard", "soft", "bce1d", "bce2d"]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", SW_KINDS)
def test_sample_weight_matches_naive(dtype, reduction, kind):
    rng = np.random.default_rng(500)
    x, t, kw, fn, ref = _make_case(rng, kind, dtype)
    s = rng.random(_sw_shape(kind, x)) * 3
    loss, grad = fn(x, t, sample_weight=s, reduction=reduction, return_grad=True, **kw)
    check_result(loss, grad, x, reduction, s.shape if kind != "bce2d" else x.shape)
    r_loss, r_grad = ref(x, t, sample_weight=s, reduction=reduction, **kw)
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", SW_KINDS)
def test_sample_weight_ones_is_no_sample_weight(dtype, reduction, kind):
    rng = np.random.default_rng(501)
    x, t, kw, fn, _ = _make_case(rng, kind, dtype)
    ones = np.ones(_sw_shape(kind, x))
    a = fn(x, t, reduction=reduction, return_grad=True, **kw)
    b = fn(x, t, sample_weight=ones, reduction=reduction, return_grad=True, **kw)
    np.testing.assert_array_equal(b[0], a[0])
    np.testing.assert_array_equal(b[1], a[1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", SW_KINDS)
def test_integer_sample_weight_is_repeating_rows(reduction, kind):
    """Weight 3 == the row three times; weight 0 == the row dropped."""
    rng = np.random.default_rng(502)
    x, t, kw, fn, _ = _make_case(rng, kind, np.float64)
    n = x.shape[0]
    s = rng.integers(0, 4, size=n)
    s[0], s[1] = 0, 3
    idx = np.repeat(np.arange(n), s)
    kw_rep = dict(kw)
    if kind in ("bce1d", "bce2d"):
        kw_rep["weight"] = kw["weight"][idx]
    if kind == "bce1d":  # 1-D: pos_weight runs along the samples too
        kw_rep["pos_weight"] = kw["pos_weight"][idx]
    loss, grad = fn(x, t, sample_weight=s, reduction=reduction, return_grad=True, **kw)
    r_loss, r_grad = fn(x[idx], t[idx], reduction=reduction, return_grad=True, **kw_rep)
    # gradient w.r.t. a repeated row = sum of its copies' gradients
    acc_grad = np.zeros_like(grad)
    np.add.at(acc_grad, idx, r_grad)
    if reduction == "none":
        acc_loss = np.zeros(loss.shape)
        np.add.at(acc_loss, idx, r_loss)
        r_loss = acc_loss
    assert_close(loss, r_loss, np.float64)
    assert_close(grad, acc_grad, np.float64)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 3), (4, 3), (5,)], ids=str)
def test_bce_mean_with_zero_denominator(shape):
    x = np.ones(shape)
    t = np.zeros(shape)
    kw = {}
    if x.size:  # all-zero sample_weight (1-D logits: one weight per element)
        kw["sample_weight"] = np.zeros(shape if len(shape) == 1 else shape[:-1])
    loss, grad = nx.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)
    assert np.isnan(loss)
    assert grad.shape == shape
    assert np.all(grad == 0.0)


def test_logsumexp_1d_and_large_values():
    x = np.array([1000.0, 1000.0, -1000.0])
    np.testing.assert_allclose(nx.logsumexp(x), 1000.0 + np.log(2.0), rtol=1e-15)
    assert np.ndim(nx.logsumexp(x)) == 0
    np.testing.assert_allclose(nx.softmax(x), [0.5, 0.5, 0.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(
        nx.log_softmax(x),
        [-np.log(2.0), -np.log(2.0), -2000.0 - np.log(2.0)],
        rtol=1e-15,
    )


ZERO_DENOM_CASES = ["empty", "all_ignored", "zero_class_weight", "zero_sw", "soft"]


@pytest.mark.parametrize("case", ZERO_DENOM_CASES)
def test_mean_with_zero_denominator(case):
    rng = np.random.default_rng(600)
    x = rng.normal(size=(4, 3))
    y = np.array([0, 1, 1, 0])
    kw = {}
    if case == "empty":
        x, y = x[:0], y[:0]
    elif case == "all_ignored":
        y = np.full(4, -100)
    elif case == "zero_class_weight":
        kw["weight"] = np.array([0.0, 0.0, 1.0])
    elif case == "zero_sw":
        kw["sample_weight"] = np.zeros(4)
    else:  # soft labels, empty batch
        x, y = x[:0], np.zeros((0, 3))
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    assert np.isnan(loss)
    assert grad.shape == x.shape
    assert np.all(grad == 0.0)
    r_loss, r_grad = ref_ce(x, y, **kw)
    assert np.isnan(r_loss) and np.all(r_grad == 0.0)
