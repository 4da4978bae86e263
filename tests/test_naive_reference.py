"""numxent against the float64 references in naive.py: the suite's one full
option grid. Every option combination of ``cross_entropy`` (hard and soft
labels, class and sample weights, ignore_index, label smoothing, the three
reductions, z-loss and soft-capping) and of
``binary_cross_entropy_with_logits``, loss and gradient, on both dtypes and
batched, multi-axis and unbatched shapes; the extras on every hard-label
kernel path; sample weights, zero denominators and the non-finite cases.
NumPy only.

naive.py itself is checked against PyTorch in test_reference.py and against
finite differences in test_gradcheck.py; test_torch_parity.py compares
numxent with PyTorch directly on a few combinations and where the two
references differ (non-finite logits).

The grids loop over the option combinations inside each test (``err_msg``
names the combination that failed): one pytest item per dtype, shape and
reduction keeps the run short.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import numxent as nx
from _cases import HARD_PATHS, hard_path_cases
from _checks import (
    BCE_SHAPES,
    assert_close,
    bce_weight,
    ce_nonfinite_logits,
    check_result,
)
from _checks import hard_target as _hard_target
from _checks import soft_target as _soft_target
from _paths import (
    SERIAL_BELOW,
    WIDE_SERIAL_BELOW,
    lane_classes,
    narrow_classes,
    record_kernels,
)
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


# The large-vocabulary extras (hard labels): z-loss, soft-capping, both.
EXTRAS = {
    "plain": {},
    "z-loss": dict(lse_square_scale=1e-2),
    "softcap": dict(softcap=3.0),
    "z-loss+softcap": dict(lse_square_scale=1e-3, softcap=5.0),
}
# label_smoothing x ignore_index x class weights x sample weights
HARD_OPTIONS = list(itertools.product([0.0, 0.1, 1.0], [-100, 3], [False, True],
                                      [False, True]))  # fmt: skip


@pytest.mark.parametrize("extras", list(EXTRAS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_cross_entropy_hard_matches_naive(dtype, lead, reduction, extras):
    """Every combination of HARD_OPTIONS with ``extras``: loss, z-loss and
    gradient against the reference; the result types; forward-only gives
    the same loss."""
    rng = np.random.default_rng(100)
    x = rng.normal(scale=3.0, size=lead + (C_HARD,)).astype(dtype)
    w = (rng.random(C_HARD) + 0.1).astype(dtype)
    sw = rng.random(lead) * 3
    for eps, ignore_index, weighted, sample_weighted in HARD_OPTIONS:
        y = _hard_target(rng, lead, C_HARD, ignore_index, ignored=(1, 4))
        if lead == ():
            y = np.array(1 if ignore_index == 3 else 3)  # a kept 0-d target
        kw = dict(ignore_index=ignore_index, reduction=reduction,
                  label_smoothing=eps, **EXTRAS[extras])  # fmt: skip
        if weighted:
            kw["weight"] = w
        if sample_weighted:
            kw["sample_weight"] = sw
        what = f"{extras} eps={eps} ignore_index={ignore_index} " + ",".join(
            k for k in ("weight", "sample_weight") if k in kw
        )
        loss, z_loss, grad = nx.cross_entropy(
            x, y, return_z_loss=True, return_grad=True, **kw
        )
        check_result(loss, grad, x, reduction, lead)
        assert np.shape(z_loss) == np.shape(loss) and z_loss.dtype == dtype, what
        r_loss, r_z, r_grad = ref_ce(x, y, return_z_loss=True, **kw)
        assert_close(loss, r_loss, dtype, err_msg=what)
        assert_close(z_loss, r_z, dtype, err_msg=what)
        assert_close(grad, r_grad, dtype, err_msg=what)
        np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss, what)


def _path_shapes(dtype):
    """(rows, classes) that land on each hard-label kernel path (from the
    dispatch constants): tile or row-at-a-time, serial or parallel."""
    nc, lc = narrow_classes(dtype), lane_classes(dtype)
    wide = nc + 44
    return {
        "lanes-serial": (50, 7),
        "lanes-parallel": (math.ceil(SERIAL_BELOW / max(lc, 1)) + 5, lc),
        "narrow-serial": (50, lc + 7),
        "narrow-parallel": (math.ceil(SERIAL_BELOW / nc) + 5, nc),
        "wide-serial": (min(50, (WIDE_SERIAL_BELOW - 1) // wide), wide),
        "wide-parallel": (math.ceil(WIDE_SERIAL_BELOW / 1000) + 23, 1000),
    }


HARD_CASES = hard_path_cases()


@pytest.mark.parametrize(("path", "dtype"), HARD_CASES,
                         ids=[f"{p}-{d.__name__}" for p, d in HARD_CASES])  # fmt: skip
def test_extras_every_kernel_path_match_naive(dtype, path):
    """z-loss and soft-capping on each hard-label kernel (the kernel that
    ran is recorded), with and without weights, smoothing and an ignored
    row; the gradient into a separate array and in place (``out=logits``:
    the capped logits are written there first) give the same bits.
    (Soft-capped rows of the lane paths' widths take the tile kernels.)"""
    n, c = _path_shapes(dtype)[path]
    rng = np.random.default_rng(c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    y[3] = -100
    w, sw = rng.random(c), rng.random(n)
    for extras, reduction, weighted in itertools.product(
        ["z-loss", "softcap", "z-loss+softcap"], REDUCTIONS, [False, True]
    ):
        kw = dict(reduction=reduction, **EXTRAS[extras])
        if weighted:
            kw.update(weight=w, sample_weight=sw, label_smoothing=0.1)
        what = f"{extras} {reduction} weighted={weighted}"
        with record_kernels() as calls:
            loss, z_loss, grad = nx.cross_entropy(
                x, y, return_z_loss=True, return_grad=True, **kw
            )
        expected = HARD_PATHS[path]
        if "softcap" in extras and path.startswith("lanes"):
            expected = HARD_PATHS[path.replace("lanes", "narrow")]
        assert {name for name, _ in calls} == {expected}, what
        r_loss, r_z, r_grad = ref_ce(x, y, return_z_loss=True, **kw)
        assert_close(loss, r_loss, dtype, err_msg=what)
        assert_close(z_loss, r_z, dtype, err_msg=what)
        assert_close(grad, r_grad, dtype, err_msg=what)
        inplace = x.copy()
        loss_ip, grad_ip = nx.cross_entropy(
            inplace, y, return_grad=True, out=inplace, **kw
        )
        assert grad_ip is inplace
        np.testing.assert_array_equal(grad_ip, grad, what)
        np.testing.assert_array_equal(loss_ip, loss, what)
        np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss, what)


@pytest.mark.parametrize("int_dtype", INT_DTYPES, ids=lambda d: d.__name__)
def test_cross_entropy_label_dtypes_match_naive(int_dtype):
    """Every integer label dtype, with an ignore_index that the dtype holds
    (some rows ignored) or cannot hold (-100 or -1 in unsigned labels: no
    row is ignored)."""
    rng = np.random.default_rng(101)
    x = rng.normal(size=(8, C_HARD))
    for ignore_index, reduction in itertools.product((-100, 3, -1), REDUCTIONS):
        fits = np.iinfo(int_dtype).min <= ignore_index
        ignored = (0, 5) if fits else ()
        y = _hard_target(rng, (8,), C_HARD, ignore_index, ignored).astype(int_dtype)
        kw = dict(weight=rng.random(C_HARD) + 0.1, reduction=reduction,
                  label_smoothing=0.1, ignore_index=ignore_index)  # fmt: skip
        what = f"ignore_index={ignore_index} {reduction}"
        loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
        r_loss, r_grad = ref_ce(x, y.astype(np.int64), **kw)
        assert_close(loss, r_loss, np.float64, err_msg=what)
        assert_close(grad, r_grad, np.float64, err_msg=what)


# Widths on both sides of the lane / tile / row-at-a-time switches
# (LANE_CLASSES, NARROW_CLASSES by dtype), and of the wide rows' prefetch and
# group sizes.
def _widths(dtype):
    nc, lc = narrow_classes(dtype), lane_classes(dtype)
    lanes = {lc, lc + 1} if lc else set()
    return sorted({1, 2, 10, 64, nc - 1, nc, nc + 1, 1000, 4097} | lanes)


WIDTH_CASES = [(d, c) for d in FLOATS for c in _widths(d)]


@pytest.mark.parametrize(("dtype", "n_classes"), WIDTH_CASES,
                         ids=[f"{d.__name__}-{c}" for d, c in WIDTH_CASES])  # fmt: skip
@pytest.mark.parametrize("n_rows", [7, 300], ids=["serial", "parallel-ish"])
def test_every_row_width_matches_naive(dtype, n_classes, n_rows):
    """Both hard-label kernel shapes, weights, smoothing, ignored and
    non-finite rows, forward-only and in place, against the reference. A
    kept row holding +inf is all NaN, PyTorch's pattern (the reference's
    ``inf - inf`` leaves some entries finite; test_torch_parity.py)."""
    rng = np.random.default_rng(n_classes * 7 + n_rows)
    x = (rng.normal(size=(n_rows, n_classes)) * 4).astype(dtype)
    y = rng.integers(0, n_classes, n_rows)
    y[3] = -100
    x[5, n_classes // 2] = np.nan
    x[6, 0] = -np.inf if n_classes > 1 else x[6, 0]
    x[4, n_classes - 1] = np.inf
    w = rng.random(n_classes) + 0.2
    keep = np.isfinite(x).all(axis=1)
    for eps in (0.0, 0.1):
        kw = dict(weight=w, reduction="none", label_smoothing=eps)
        loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
        r_loss, r_grad = ref_ce(x, y, **kw)
        r_loss[4], r_grad[4] = NAN, NAN  # +inf: PyTorch's all-NaN row
        assert_close(loss, r_loss, dtype, err_msg=f"eps={eps}")
        assert_close(grad, r_grad, dtype, err_msg=f"eps={eps}")
        np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss)
        inplace = x.copy()
        nx.cross_entropy(inplace, y, return_grad=True, out=inplace, **kw)
        np.testing.assert_array_equal(inplace, grad)
        kw["reduction"] = "mean"
        loss_m, grad_m = nx.cross_entropy(x[keep], y[keep], return_grad=True, **kw)
        ref_m, ref_gm = ref_ce(x[keep], y[keep], **kw)
        assert_close(loss_m, ref_m, dtype, err_msg=f"eps={eps}")
        assert_close(grad_m, ref_gm, dtype, err_msg=f"eps={eps}")


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n_classes", [4, "wide"])
def test_nonfinite_rows_match_naive(dtype, label_smoothing, n_classes):
    """NaN and -inf rows as the reference has them; a row holding +inf is
    all NaN (PyTorch's pattern, test_torch_parity.py; the reference's
    ``inf - inf`` leaves some entries finite)."""
    x, y = ce_nonfinite_logits()
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
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_cross_entropy_soft_matches_naive(dtype, lead, reduction):
    """Every combination of label smoothing, class weights and sample
    weights (and a negative ignore_index, unused with soft labels)."""
    rng = np.random.default_rng(200)
    C = 4
    x = rng.normal(scale=3.0, size=lead + (C,)).astype(dtype)
    t = _soft_target(rng, lead + (C,)).astype(dtype)
    w = (rng.random(C) + 0.1).astype(dtype)
    sw = rng.random(lead) * 3
    for eps, weighted, sample_weighted, ignore_index in itertools.product(
        [0.0, 0.1, 1.0], [False, True], [False, True], [-100, -1]
    ):
        kw = dict(reduction=reduction, label_smoothing=eps, ignore_index=ignore_index)
        if weighted:
            kw["weight"] = w
        if sample_weighted:
            kw["sample_weight"] = sw
        what = f"eps={eps} weight={weighted} sample_weight={sample_weighted}"
        loss, grad = nx.cross_entropy(x, t, return_grad=True, **kw)
        check_result(loss, grad, x, reduction, lead)
        r_loss, r_grad = ref_ce(x, t, **kw)
        assert_close(loss, r_loss, dtype, err_msg=what)
        assert_close(grad, r_grad, dtype, err_msg=what)
        np.testing.assert_array_equal(nx.cross_entropy(x, t, **kw), loss, what)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["w=None", "w=rand"])
def test_soft_zero_probability_with_minus_inf_logit_contributes_nothing(
    reduction, weighted
):
    """A class with q=0 and logit -inf is as if the class were not there
    (PyTorch gives NaN: one of the deliberate differences)."""
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
    assert np.all(np.isfinite(grad))
    assert np.all(grad[[0, 2, 3], 2] == 0.0)
    r_loss, r_grad = ref_ce(x, t, weight=w, reduction=reduction)
    assert_close(loss, r_loss, np.float64)
    assert_close(grad, r_grad, np.float64)
    # those rows equal the reference on the rows with class 2 removed
    rows, keep = [0, 2, 3], [0, 1, 3]
    row_loss, row_grad = nx.cross_entropy(
        x, t, weight=w, reduction="none", return_grad=True
    )
    r_loss, r_grad = ref_ce(x[rows][:, keep], t[rows][:, keep], reduction="none",
                            weight=None if w is None else w[keep])  # fmt: skip
    assert_close(row_loss[rows], r_loss, np.float64)
    assert_close(row_grad[rows][:, keep], r_grad, np.float64)


# --------------------------------------------------------------------------
# binary cross-entropy with logits
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", BCE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_bce_matches_naive(dtype, shape, reduction):
    """Every combination of a weight (none, of the logits' shape, of the last
    axis, of the leading axes), pos_weight and sample_weight (one per row;
    1-D logits: one per element)."""
    rng = np.random.default_rng(300)
    x = rng.normal(scale=4.0, size=shape).astype(dtype)
    t = rng.random(shape)
    t.reshape(-1)[:3] = [0.0, 1.0, 1.0]  # exact labels too
    t = t.astype(dtype)
    pw = (rng.random(shape[-1:]) * 3).astype(dtype)
    sw = rng.random(shape[:-1] if len(shape) >= 2 else shape) * 3
    lead = shape  # reduction="none": one loss per element
    for weight, pos_weighted, sample_weighted in itertools.product(
        [None, "full", "last", "lead"], [False, True], [False, True]
    ):
        kw = dict(weight=bce_weight(rng, weight, shape, dtype), reduction=reduction,
                  pos_weight=pw if pos_weighted else None,
                  sample_weight=sw if sample_weighted else None)  # fmt: skip
        what = f"weight={weight} pos_weight={pos_weighted} sw={sample_weighted}"
        loss, grad = nx.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)
        check_result(loss, grad, x, reduction, lead)
        r_loss, r_grad = ref_bce(x, t, **kw)
        assert_close(loss, r_loss, dtype, err_msg=what)
        assert_close(grad, r_grad, dtype, err_msg=what)
        only = nx.binary_cross_entropy_with_logits(x, t, **kw)
        np.testing.assert_array_equal(only, loss, what)


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
