"""numxent's NumPy functions against PyTorch.

The full option grid runs once, against the float64 reference naive.py, in
test_naive_reference.py (and naive.py against PyTorch in test_reference.py).
Here numxent meets PyTorch directly: a few option combinations, and what
only PyTorch defines -- how NaN and inf propagate, label and target dtypes,
float32 and float16 accuracy against PyTorch float64, and the deliberate
differences (ignored rows holding garbage).

PyTorch puts the class axis at dim 1; numxent puts it last. Every comparison
moves the axis when building the torch input and moves it back on the
gradient. For reduction="none" torch's gradient comes from
``loss.backward(g)`` with a random upstream ``g``, and numxent's per-sample
gradient times ``g`` must equal it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import numxent as nx
from _checks import (
    assert_close,
    bce_weight,
    ce_nonfinite_logits,
    check_result,
    from_torch_layout,
    to_torch_layout,
)
from _checks import hard_target as _hard_target
from _checks import soft_target as _soft_target
from naive import (
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["none", "mean", "sum"]
FLOATS = [np.float32, np.float64]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
INF = np.inf
NAN = np.nan


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _tensor(a, dtype):
    return torch.tensor(np.asarray(a), dtype=TORCH_DTYPE[dtype])


def torch_ce(logits, target, *, dtype, upstream=None, weight=None, **kw):
    """torch.nn.functional.cross_entropy in ``dtype``; (loss, grad), class last."""
    x = _tensor(to_torch_layout(np.asarray(logits)), dtype).requires_grad_(True)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer):
        t = torch.tensor(target.astype(np.int64))
    else:
        t = _tensor(to_torch_layout(target), dtype)
    if weight is not None:
        weight = _tensor(weight, dtype)
    loss = F.cross_entropy(x, t, weight=weight, **kw)
    g = torch.ones_like(loss) if upstream is None else _tensor(upstream, dtype)
    loss.backward(g)
    return loss.detach().numpy(), from_torch_layout(x.grad.numpy())


def torch_bce(
    logits, target, *, dtype, upstream=None, weight=None, pos_weight=None, **kw
):
    x = _tensor(logits, dtype).requires_grad_(True)
    t = _tensor(target, dtype)
    if weight is not None:
        weight = _tensor(weight, dtype)
    if pos_weight is not None:
        pos_weight = _tensor(pos_weight, dtype)
    loss = F.binary_cross_entropy_with_logits(
        x, t, weight=weight, pos_weight=pos_weight, **kw
    )
    g = torch.ones_like(loss) if upstream is None else _tensor(upstream, dtype)
    loss.backward(g)
    return loss.detach().numpy(), x.grad.numpy()


def _scale_none_grad(grad, g, reduction, per_element=False):
    """numxent's per-sample 'none' gradient times torch's upstream gradient."""
    if reduction != "none":
        return grad
    g = np.asarray(g, dtype=np.float64)
    return grad * (g if per_element else g[..., None])


# --------------------------------------------------------------------------
# a few option combinations, loss and gradient
# --------------------------------------------------------------------------
CE_COMBOS = {  # (soft labels, leading shape, reduction, options)
    "hard-mean": (False, (7,), "mean", {}),
    "hard-none-weight-smooth-ignore": (
        False,
        (2, 3),
        "none",
        dict(weight=True, label_smoothing=0.1, ignore_index=3),
    ),
    "hard-sum-unbatched-weight-eps1": (
        False,
        (),
        "sum",
        dict(weight=True, label_smoothing=1.0),
    ),
    "soft-none-weight-smooth": (
        True,
        (2, 3),
        "none",
        dict(weight=True, label_smoothing=0.1),
    ),
    "soft-mean-eps1": (True, (7,), "mean", dict(label_smoothing=1.0)),
}


@pytest.mark.parametrize("combo", list(CE_COMBOS))
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_cross_entropy_matches_torch(dtype, combo):
    soft, lead, reduction, opts = CE_COMBOS[combo]
    rng = np.random.default_rng(100 + list(CE_COMBOS).index(combo))
    C = 5
    x = rng.normal(scale=3.0, size=lead + (C,)).astype(dtype)
    kw = dict(reduction=reduction, label_smoothing=opts.get("label_smoothing", 0.0))
    if soft:
        t = _soft_target(rng, lead + (C,)).astype(dtype)
    else:
        kw["ignore_index"] = opts.get("ignore_index", -100)
        t = _hard_target(rng, lead, C, kw["ignore_index"], ignored=(1, 4))
    w = (rng.random(C) + 0.1).astype(dtype) if opts.get("weight") else None
    g = rng.normal(size=lead) if reduction == "none" else None
    loss, grad = nx.cross_entropy(x, t, weight=w, return_grad=True, **kw)
    check_result(loss, grad, x, reduction, lead)
    t_loss, t_grad = torch_ce(x, t, dtype=dtype, upstream=g, weight=w, **kw)
    assert_close(loss, t_loss, dtype)
    assert_close(_scale_none_grad(grad, g, reduction), t_grad, dtype)


BCE_COMBOS = {  # (shape, reduction, weight, pos_weight)
    "none-full-pos": ((4, 3), "none", "full", True),
    "mean-1d-pos": ((6,), "mean", None, True),
    "sum-3d-lead": ((2, 3, 4), "sum", "lead", False),
}


@pytest.mark.parametrize("combo", list(BCE_COMBOS))
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_bce_matches_torch(dtype, combo):
    shape, reduction, weight, pos_weighted = BCE_COMBOS[combo]
    rng = np.random.default_rng(300 + list(BCE_COMBOS).index(combo))
    x = rng.normal(scale=4.0, size=shape).astype(dtype)
    t = rng.random(shape)
    t.reshape(-1)[:3] = [0.0, 1.0, 1.0]  # exact labels too
    t = t.astype(dtype)
    w = bce_weight(rng, weight, shape, dtype)
    pw = (rng.random(shape[-1:]) * 3).astype(dtype) if pos_weighted else None
    g = rng.normal(size=shape) if reduction == "none" else None
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, weight=w, pos_weight=pw, reduction=reduction, return_grad=True
    )
    check_result(loss, grad, x, reduction, shape)
    t_loss, t_grad = torch_bce(
        x, t, dtype=dtype, upstream=g, weight=w, pos_weight=pw, reduction=reduction
    )
    assert_close(loss, t_loss, dtype)
    assert_close(_scale_none_grad(grad, g, reduction, per_element=True), t_grad, dtype)


# --------------------------------------------------------------------------
# label and target dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("int_dtype", [np.uint8, np.int8, np.uint16, np.uint32])
def test_cross_entropy_ignore_index_at_dtype_edge(int_dtype):
    """ignore_index equal to the label dtype's max (e.g. 255 for uint8)."""
    rng = np.random.default_rng(102)
    big = int(np.iinfo(int_dtype).max)
    x = rng.normal(size=(6, 4))
    y = np.array([0, big, 3, big, 1, 2], dtype=int_dtype)
    loss, grad = nx.cross_entropy(x, y, ignore_index=big, return_grad=True)
    kept = y != big
    t_loss, t_grad = torch_ce(x[kept], y[kept].astype(np.int64), dtype=np.float64)
    assert_close(loss, t_loss, np.float64)
    assert_close(grad[kept], t_grad, np.float64)
    assert np.all(grad[~kept] == 0.0)


def test_cross_entropy_uint64_max_label_equal_to_ignore_index_is_ignored():
    """A uint64 label above int64's range is fine when it is the ignore_index."""
    big = 2**64 - 1
    x = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0], [0.2, 0.1, 0.3]])
    y = np.array([0, big, 2], dtype=np.uint64)
    loss, grad = nx.cross_entropy(x, y, ignore_index=big, return_grad=True)
    t_loss, t_grad = torch_ce(x[[0, 2]], np.array([0, 2]), dtype=np.float64)
    assert_close(loss, t_loss, np.float64)
    assert_close(grad[[0, 2]], t_grad, np.float64)
    assert np.all(grad[1] == 0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_soft_negative_ignore_index_is_ignored(reduction):
    rng = np.random.default_rng(201)
    x = rng.normal(size=(5, 3))
    t = _soft_target(rng, (5, 3))
    g = rng.normal(size=5) if reduction == "none" else None
    loss, grad = nx.cross_entropy(
        x, t, ignore_index=-1, reduction=reduction, return_grad=True
    )
    t_loss, t_grad = torch_ce(
        x, t, dtype=np.float64, upstream=g, ignore_index=-1, reduction=reduction
    )
    assert_close(loss, t_loss, np.float64)
    assert_close(_scale_none_grad(grad, g, reduction), t_grad, np.float64)


@pytest.mark.parametrize("target_dtype", [np.bool_, np.int8, np.int64, np.uint8])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_integer_and_bool_targets(target_dtype, reduction):
    rng = np.random.default_rng(301)
    x = rng.normal(size=(4, 3))
    t = rng.integers(0, 2, size=(4, 3))
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t.astype(target_dtype), reduction=reduction, return_grad=True
    )
    t_loss, t_grad = torch_bce(x, t, dtype=np.float64, reduction=reduction)
    assert_close(loss, t_loss, np.float64)
    assert_close(grad, t_grad, np.float64)


# --------------------------------------------------------------------------
# float32 accuracy: numxent float32 vs torch float64 on the same values
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_cross_entropy_float32_close_to_float64_truth(reduction, soft):
    rng = np.random.default_rng(400)
    N, C = 9, 6
    x = rng.normal(scale=5.0, size=(N, C)).astype(np.float32)
    t = _soft_target(rng, (N, C)) if soft else rng.integers(0, C, size=N)
    t = t.astype(np.float32) if soft else t
    w = (rng.random(C) + 0.1).astype(np.float32)
    g = rng.normal(size=N) if reduction == "none" else None
    kw = dict(reduction=reduction, label_smoothing=0.05)
    loss, grad = nx.cross_entropy(x, t, weight=w, return_grad=True, **kw)
    t_loss, t_grad = torch_ce(
        x.astype(np.float64),
        t.astype(np.float64) if soft else t,
        dtype=np.float64,
        upstream=g,
        weight=w.astype(np.float64),
        **kw,
    )
    assert_close(loss, t_loss, np.float32, rtol=1e-6, atol=1e-12)
    # The gradient's small entries come from cancellation (A p_k - a_k), so
    # float32 accuracy is measured against the gradient's scale, not per entry.
    g_scale = float(np.max(np.abs(t_grad)))
    assert_close(
        _scale_none_grad(grad, g, reduction),
        t_grad,
        np.float32,
        rtol=1e-6,
        atol=1e-6 * g_scale,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_float32_close_to_float64_truth(reduction):
    rng = np.random.default_rng(401)
    x = rng.normal(scale=8.0, size=(5, 4)).astype(np.float32)
    t = rng.random((5, 4)).astype(np.float32)
    pw = (rng.random(4) * 2).astype(np.float32)
    g = rng.normal(size=(5, 4)) if reduction == "none" else None
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, pos_weight=pw, reduction=reduction, return_grad=True
    )
    t_loss, t_grad = torch_bce(
        x, t, dtype=np.float64, upstream=g, pos_weight=pw, reduction=reduction
    )
    assert_close(loss, t_loss, np.float32, rtol=1e-6, atol=1e-12)
    grad = _scale_none_grad(grad, g, reduction, per_element=True)
    assert_close(grad, t_grad, np.float32, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_float16_computed_in_float32(reduction):
    rng = np.random.default_rng(402)
    x = rng.normal(size=(6, 5)).astype(np.float16)
    y = rng.integers(0, 5, size=6)
    loss, grad = nx.cross_entropy(x, y, reduction=reduction, return_grad=True)
    assert loss.dtype == np.float16
    assert grad.dtype == np.float16
    t_loss, t_grad = torch_ce(
        x.astype(np.float64), y, dtype=np.float64, reduction=reduction
    )
    # one float16 rounding of an accurate value: within half an ulp (~4.9e-4)
    assert_close(loss, t_loss, np.float32, rtol=1e-3, atol=1e-4)
    assert_close(grad, t_grad, np.float32, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------
# the three deliberate differences from PyTorch (SPEC section 2)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["w=None", "w=rand"])
def test_ignored_rows_with_garbage_give_exact_zeros(
    dtype, reduction, label_smoothing, weighted
):
    rng = np.random.default_rng(700)
    N, C = 6, 4
    clean = rng.normal(size=(N, C)).astype(dtype)
    y = rng.integers(0, C, size=N)
    ignored = np.array([1, 4])
    y[ignored] = -100
    x = clean.copy()
    x[1] = [NAN, INF, -INF, 0.0]
    x[4] = [INF, INF, NAN, -INF]
    w = (rng.random(C) + 0.1).astype(dtype) if weighted else None
    g = rng.normal(size=N) if reduction == "none" else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    loss, grad = nx.cross_entropy(x, y, weight=w, return_grad=True, **kw)
    # PyTorch on clean logits: ignored rows never count there either
    t_loss, t_grad = torch_ce(clean, y, dtype=dtype, upstream=g, weight=w, **kw)
    assert np.all(np.isfinite(loss))
    assert_close(loss, t_loss, dtype)
    assert_close(_scale_none_grad(grad, g, reduction), t_grad, dtype)
    assert np.all(grad[ignored] == 0.0)
    if reduction == "none":
        assert np.all(loss[ignored] == 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_bce_infinite_logits_with_zero_limit_in_reductions(reduction, dtype):
    rng = np.random.default_rng(702)
    x = rng.normal(size=(3, 4)).astype(dtype)
    t = rng.random((3, 4)).astype(dtype)
    x[0, 1], t[0, 1] = INF, 1.0
    x[2, 3], t[2, 3] = -INF, 0.0
    pw = (rng.random(4) + 0.5).astype(dtype)
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, pos_weight=pw, reduction=reduction, return_grad=True
    )
    # +-1000 gives exactly the same loss (0) and gradient (0) in float64
    x_big = np.where(np.isinf(x), np.sign(x) * 1000.0, x.astype(np.float64))
    t_loss, t_grad = torch_bce(
        x_big,
        t.astype(np.float64),
        dtype=np.float64,
        pos_weight=pw,
        reduction=reduction,
    )
    assert np.isfinite(loss)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert_close(loss, t_loss, dtype, rtol=rtol)
    assert_close(grad, t_grad, dtype, rtol=rtol)
    assert grad[0, 1] == 0.0 and grad[2, 3] == 0.0


# --------------------------------------------------------------------------
# otherwise, NaN/inf propagate exactly as in PyTorch
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("rows", ["each", "finite+5", "finite+2"])
def test_cross_entropy_hard_nonfinite_logits_match_torch(
    dtype, reduction, label_smoothing, rows
):
    x, y = ce_nonfinite_logits()
    if rows == "finite+5":  # a single non-finite row in a reduction
        x, y = x[[0, 5]], y[[0, 5]]
    elif rows == "finite+2":
        x, y = x[[0, 2]], y[[0, 2]]
    x = x.astype(dtype)
    rng = np.random.default_rng(800)
    g = rng.normal(size=len(y)) if reduction == "none" else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    if reduction != "none" and rows == "each":
        # one row at a time, so a NaN row does not hide another row's pattern
        for i in range(len(y)):
            loss, grad = nx.cross_entropy(x[[i]], y[[i]], return_grad=True, **kw)
            t_loss, t_grad = torch_ce(x[[i]], y[[i]], dtype=dtype, **kw)
            assert_close(loss, t_loss, dtype)
            assert_close(grad, t_grad, dtype)
        return
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    t_loss, t_grad = torch_ce(x, y, dtype=dtype, upstream=g, **kw)
    assert_close(loss, t_loss, dtype)
    assert_close(_scale_none_grad(grad, g, reduction), t_grad, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_soft_nonfinite_logits_match_torch(reduction, label_smoothing):
    x = np.array(
        [
            [0.5, -1.0, 2.0],
            [NAN, 0.0, 1.0],
            [0.0, INF, 1.0],
            [0.0, -INF, 1.0],  # -inf where q > 0: infinite loss, finite grad
        ]
    )
    t = np.array([[0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.3, 0.4, 0.3]])
    rng = np.random.default_rng(801)
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    for i in range(len(x)):  # one row at a time (see the hard-label test)
        g = rng.normal(size=1) if reduction == "none" else None
        loss, grad = nx.cross_entropy(x[[i]], t[[i]], return_grad=True, **kw)
        t_loss, t_grad = torch_ce(x[[i]], t[[i]], dtype=np.float64, upstream=g, **kw)
        assert_close(loss, t_loss, np.float64)
        assert_close(_scale_none_grad(grad, g, reduction), t_grad, np.float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_nan_logits_match_torch(reduction):
    x = np.array([[0.5, NAN, -2.0], [1.0, 2.0, 3.0]])
    t = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.3]])
    rng = np.random.default_rng(802)
    g = rng.normal(size=x.shape) if reduction == "none" else None
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, reduction=reduction, return_grad=True
    )
    t_loss, t_grad = torch_bce(x, t, dtype=np.float64, upstream=g, reduction=reduction)
    assert_close(loss, t_loss, np.float64)
    assert_close(_scale_none_grad(grad, g, reduction, True), t_grad, np.float64)


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------
FAMILY = {
    "logsumexp": (nx.logsumexp, torch.logsumexp, logsumexp_ref),
    "log_softmax": (nx.log_softmax, torch.log_softmax, log_softmax_ref),
    "softmax": (nx.softmax, torch.softmax, softmax_ref),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_logsumexp_family_matches_torch(dtype):
    rng = np.random.default_rng(900)
    x = rng.normal(scale=10.0, size=(3, 4, 5)).astype(dtype)
    x[0, 1, 2] = -INF  # rows with -inf along every axis
    x[2, 0, :] = -INF
    x[2, 0, 4] = 3.0
    for name, axis in itertools.product(FAMILY, [-1, 0, 1]):
        fn, torch_fn, _ = FAMILY[name]
        out = fn(x, axis=axis)
        assert out.dtype == dtype
        expected = torch_fn(torch.tensor(x), dim=axis).numpy()
        assert out.shape == expected.shape
        assert_close(out, expected, dtype, err_msg=f"{name} axis={axis}")


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", list(FAMILY))
def test_logsumexp_family_nonfinite_rows_match_torch(dtype, name):
    fn, torch_fn, _ = FAMILY[name]
    x = np.array(
        [
            [-INF, -INF, -INF],
            [INF, 1.0, 2.0],
            [INF, INF, 0.0],
            [NAN, 1.0, 2.0],
            [NAN, INF, 0.0],
            [NAN, -INF, -INF],
            [-INF, 0.0, 1.0],
        ],
        dtype=dtype,
    )
    out = fn(x, axis=-1)
    expected = torch_fn(torch.tensor(x), dim=-1).numpy()
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n", [60, 12_000], ids=["serial", "parallel"])
def test_nonfinite_rows_inside_a_tile_in_place_and_alone(dtype, label_smoothing, n):
    """Non-finite rows among finite ones in one tile of narrow rows: in place
    (out=logits), forward-only and row-by-row give the same bits."""
    x8, y8 = ce_nonfinite_logits()
    rng = np.random.default_rng(801)
    x = rng.normal(size=(n, 4)) * 3
    y = rng.integers(0, 4, n)
    x[5:61:7], y[5:61:7] = x8, y8  # rows 5, 12, ..., 54
    x = x.astype(dtype)
    y[3] = -100  # an ignored row too
    kw = dict(reduction="none", label_smoothing=label_smoothing)
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    inplace = x.copy()
    loss_ip, grad_ip = nx.cross_entropy(inplace, y, return_grad=True, out=inplace, **kw)
    assert grad_ip is inplace
    np.testing.assert_array_equal(loss_ip, loss)
    np.testing.assert_array_equal(grad_ip, grad)
    np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss)
    for i in list(range(60)) + list(range(60, n, 997)):
        li, gi = nx.cross_entropy(x[[i]], y[[i]], return_grad=True, **kw)
        np.testing.assert_array_equal(li, loss[[i]])
        np.testing.assert_array_equal(gi, grad[[i]])
    t_loss, t_grad = torch_ce(x, y, dtype=dtype, **kw)
    assert_close(loss, t_loss, dtype)
    assert_close(grad, t_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n_classes", [4, 300], ids=["narrow", "wide"])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+nan", "-nan"])
def test_nan_of_either_sign_is_found_by_the_row_max(dtype, n_classes, sign):
    """The row max's finiteness check reads NaNs by their bits; x86's default
    NaN (0 * inf, inf - inf) has the sign bit set. Either sign, anywhere in a
    row, must give PyTorch's NaN pattern, not a finite loss."""
    rng = np.random.default_rng(802)
    n = 6
    x = rng.normal(size=(n, n_classes)).astype(dtype)
    y = rng.integers(0, n_classes, n)
    nan = np.copysign(np.nan, sign).astype(dtype)
    assert np.signbit(nan) == (sign < 0)
    x[1, 0] = nan
    x[3, n_classes - 1] = nan
    x[4, y[4]] = nan
    x[5, :] = -np.inf
    x[5, n_classes // 2] = nan
    kw = dict(reduction="none")
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    t_loss, t_grad = torch_ce(x, y, dtype=dtype, **kw)
    assert np.isnan(loss[[1, 3, 4, 5]]).all() and np.isfinite(loss[[0, 2]]).all()
    assert_close(loss, t_loss, dtype)
    assert_close(grad, t_grad, dtype)
    np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss)  # forward only
    for fn in (nx.logsumexp, nx.softmax):
        assert_close(fn(x, axis=-1), FAMILY_TORCH[fn](torch.tensor(x), dim=-1).numpy(),
                     dtype)  # fmt: skip


FAMILY_TORCH = {nx.logsumexp: torch.logsumexp, nx.softmax: torch.softmax}


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n_classes", [3, 300, 4097])
def test_soft_labels_in_place_equal_out_and_torch(dtype, n_classes):
    """out=logits takes a scratch-row path for the exp values (a loop over two
    overlapping arrays would not vectorise): same bits as a separate out=."""
    rng = np.random.default_rng(n_classes)
    x = (rng.normal(size=(40, n_classes)) * 3).astype(dtype)
    t = rng.random((40, n_classes))
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    kw = dict(reduction="sum", label_smoothing=0.05)
    loss, grad = nx.cross_entropy(x, t, return_grad=True, **kw)
    inplace = x.copy()
    loss_ip, _ = nx.cross_entropy(inplace, t, return_grad=True, out=inplace, **kw)
    assert loss_ip == loss
    np.testing.assert_array_equal(inplace, grad)
    t_loss, t_grad = torch_ce(x, t, dtype=dtype, **kw)
    assert_close(loss, t_loss, dtype)
    assert_close(grad, t_grad, dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(), (6,), (4, 3), (2, 3, 4), (300, 70)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_unweighted_fast_path_equals_unit_weights(dtype, shape, reduction):
    """Calls without weights take cached unit weights and patterns: the same
    bits as explicit unit weights (the general path), in place too."""
    rng = np.random.default_rng(len(shape))
    x = np.asarray(rng.normal(size=shape) * 3, dtype=dtype)  # 0-d: an array too
    t = np.asarray(rng.random(shape), dtype=dtype)
    kw = dict(reduction=reduction, return_grad=True)
    loss, grad = nx.binary_cross_entropy_with_logits(x, t, **kw)
    ones = np.ones(shape[-1:] if shape else ())
    loss_w, grad_w = nx.binary_cross_entropy_with_logits(
        x, t, weight=ones, pos_weight=ones, **kw
    )
    np.testing.assert_array_equal(loss, loss_w)
    np.testing.assert_array_equal(grad, grad_w)
    inplace = x.copy()
    loss_ip, _ = nx.binary_cross_entropy_with_logits(inplace, t, out=inplace, **kw)
    np.testing.assert_array_equal(loss_ip, loss)
    np.testing.assert_array_equal(inplace, grad)
    t_loss, t_grad = torch_bce(x, t, dtype=dtype, reduction=reduction)
    assert_close(loss, t_loss, dtype)
    assert_close(grad, t_grad, dtype)
