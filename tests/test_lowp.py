"""float16 and bfloat16 logits (ml_dtypes.bfloat16 arrays; without ml_dtypes,
which comes with the torch extra, float16 only).

Hard labels are read in place and computed in float32: the results must be
the float32 computation on the upcast logits with the gradient rounded once
to the logits' format (bitwise: NumPy's / ml_dtypes' rounding of the float32
call's gradient), and within the format's rounding of a float64 reference
and of PyTorch's float32 on the upcast logits. Sizes sit on both sides of
the staging blocks and of the kernels' switches (from ``_paths``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import numxent as nx
from _paths import (
    LANE_ROWS,
    NARROW_TILE,
    ROWS_PER_TASK,
    SERIAL_BELOW,
    WIDE_SERIAL_BELOW,
    lane_classes,
    narrow_classes,
    record_kernels,
)
from naive import cross_entropy_ref

F16 = np.dtype(np.float16)
try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BF16 = None
FORMATS = [d for d in (BF16, F16) if d is not None]
# significand bits after the point, and the smallest normal's exponent
_FORMAT_BITS = {BF16: (7, -126), F16: (10, -14)}


def _ulp(v, dt):
    """The format's ulp at |v| (subnormal spacing below the normal range)."""
    mant, emin = _FORMAT_BITS[dt]
    a = np.abs(np.asarray(v, dtype=np.float64))
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return np.exp2(np.maximum(e, emin) - mant)


def _assert_within_ulp(actual, expected, dt, scale):
    """|actual - expected| <= 1 ulp of the format at expected, plus the
    float32 arithmetic's share (a few float32 ulps of the row's scale)."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
    fin = np.isfinite(e)
    np.testing.assert_array_equal(a[~fin & ~np.isnan(e)], e[~fin & ~np.isnan(e)])
    err = np.abs(a[fin] - e[fin])
    bound = _ulp(e[fin], dt) + 4 * 2.0**-24 * scale
    assert np.all(err <= bound), (err - bound).max()


PATHS = {
    "lanes-serial": "ce_lowp_lanes_ser",
    "lanes-parallel": "ce_lowp_lanes_par",
    "narrow-serial": "ce_lowp_narrow_ser",
    "narrow-parallel": "ce_lowp_narrow_par",
    "wide-serial": "ce_lowp_wide_ser",
    "wide-parallel": "ce_lowp_wide_par",
    "wide-long-rows": None,  # one row a staging block
}


def _geometry(path):
    nc, lc = narrow_classes(np.float32), lane_classes(np.float32)
    if path == "lanes-serial":  # two blocks and a part
        return 2 * LANE_ROWS + 5, lc
    if path == "lanes-parallel":
        return math.ceil(SERIAL_BELOW / 10) + 7, 10
    if path == "narrow-serial":  # a tile and a part
        c = nc // 5
        return NARROW_TILE // c + 3, c
    if path == "narrow-parallel":
        return math.ceil(SERIAL_BELOW / (lc + 1)) + 7, lc + 1
    if path == "wide-serial":  # one staging block, short of the parallel switch
        c = nc + 1
        return min(WIDE_SERIAL_BELOW // c - 1, 3 * (NARROW_TILE // c) + 1), c
    if path == "wide-long-rows":
        return 7, NARROW_TILE + 3
    # wide-parallel: tasks of ROWS_PER_TASK rows, several staging blocks each
    c = 2 * NARROW_TILE // ROWS_PER_TASK + 1
    return max(math.ceil(WIDE_SERIAL_BELOW / c), 3 * ROWS_PER_TASK) + 5, c


def _problem(path, dt, seed=0):
    n, c = _geometry(path)
    rng = np.random.default_rng(seed)
    x = (4 * rng.standard_normal((n, c))).astype(dt)
    y = rng.integers(0, c, n)
    y[1] = -100
    x[1] = np.nan  # ignored garbage
    x[2, c // 2] = np.nan
    x[3, 0] = np.inf
    x[4, 1] = -np.inf
    x[5] = -30.0
    w = rng.uniform(0.1, 3.0, c)
    w[::7] = 0.0
    sw = rng.uniform(0.0, 3.0, n)
    return x, y, w, sw


OPTIONS = [
    dict(reduction="mean"),
    dict(reduction="none", label_smoothing=0.1, weighted=True),
    dict(reduction="sum", label_smoothing=0.3),
    dict(reduction="mean", weighted=True),
]


def _kw(opts, w, sw):
    kw = dict(reduction=opts["reduction"])
    kw["label_smoothing"] = opts.get("label_smoothing", 0.0)
    if opts.get("weighted"):
        kw.update(weight=w, sample_weight=sw)
    return kw


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
@pytest.mark.parametrize("path", list(PATHS))
def test_float32_computation_rounded_once(path, dt):
    x, y, w, sw = _problem(path, dt)
    x32 = x.astype(np.float32)
    for opts in OPTIONS:
        kw = _kw(opts, w, sw)
        with record_kernels() as calls:
            loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
        names = {name for name, _ in calls}
        assert len(names) == 1 and next(iter(names)).startswith("ce_lowp_")
        if PATHS[path] is not None:
            assert names == {PATHS[path]}
        assert grad.dtype == dt and np.asarray(loss).dtype == dt
        loss32, grad32 = nx.cross_entropy(x32, y, return_grad=True, **kw)
        ref = grad32.astype(dt)
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref))
        ok = ~np.isnan(ref.astype(np.float32))
        np.testing.assert_array_equal(grad.view(np.uint16)[ok], ref.view(np.uint16)[ok])
        # the loss is rounded once from float64; the float32 call's twice
        lb = np.asarray(loss).astype(np.float64)
        l32 = np.asarray(loss32, dtype=np.float64)
        _assert_within_ulp(lb, l32, dt, 0.0)
        # forward-only: the same loss bits
        np.testing.assert_array_equal(nx.cross_entropy(x, y, **kw), loss)


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
@pytest.mark.parametrize("path", list(PATHS))
def test_matches_float64_reference(path, dt):
    x, y, w, sw = _problem(path, dt, seed=1)
    x[3, 0] = 0.0  # (+inf rows: PyTorch's NaN pattern, checked above)
    for opts in OPTIONS:
        kw = _kw(opts, w, sw)
        loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
        with np.errstate(all="ignore"):
            r_loss, r_grad = cross_entropy_ref(x.astype(np.float64), y, **kw)
        scale = float(np.nanmax(np.abs(r_grad)))
        _assert_within_ulp(grad, r_grad, dt, scale)
        r = np.asarray(r_loss, dtype=np.float64)
        _assert_within_ulp(loss, r, dt, 0.0)


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
@pytest.mark.parametrize("path", ["narrow-serial", "wide-parallel"])
def test_matches_torch_float32_on_upcast_logits(path, dt):
    torch = pytest.importorskip("torch")
    x, y, w, _ = _problem(path, dt, seed=2)
    x[1:6] = 0.0  # finite rows only (ignore_index stays on row 1)
    for smoothing in (0.0, 0.2):
        xt = torch.from_numpy(x.astype(np.float32)).requires_grad_()
        tl = torch.nn.functional.cross_entropy(
            xt, torch.from_numpy(y), weight=torch.from_numpy(w).float(),
            label_smoothing=smoothing,
        )  # fmt: skip
        tl.backward()
        loss, grad = nx.cross_entropy(
            x, y, weight=w, label_smoothing=smoothing, return_grad=True
        )
        tg = xt.grad.numpy().astype(np.float64)
        _assert_within_ulp(grad, tg, dt, float(np.abs(tg).max()))
        _assert_within_ulp(loss, float(tl.detach()), dt, 4 * float(tl.detach()))


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
def test_out_and_in_place(dt):
    """out= receives the gradient, and out=logits overwrites the logits with
    it: the same bits as a fresh gradient."""
    x, y, _, _ = _problem("narrow-serial", dt)
    ref_loss, ref_grad = nx.cross_entropy(x, y, return_grad=True)
    buf = np.full_like(x, 7)
    loss2, g2 = nx.cross_entropy(x, y, return_grad=True, out=buf)
    assert g2 is buf
    np.testing.assert_array_equal(buf.view(np.uint16), ref_grad.view(np.uint16))
    assert loss2 == ref_loss or (np.isnan(loss2) and np.isnan(ref_loss))
    xin = x.copy()
    loss3, g3 = nx.cross_entropy(xin, y, return_grad=True, out=xin)
    assert g3 is xin
    np.testing.assert_array_equal(xin.view(np.uint16), ref_grad.view(np.uint16))
    assert loss3 == ref_loss or (np.isnan(loss3) and np.isnan(ref_loss))


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
def test_no_copy_of_contiguous_logits(dt, monkeypatch):
    import numxent._dispatch as D

    seen = []
    real = D.ce_hard_16bit

    def spy(*args):
        seen.append(args)
        return real(*args)

    monkeypatch.setattr(D, "ce_hard_16bit", spy)
    x, y, _, _ = _problem("wide-serial", dt)
    out = np.empty_like(x)
    nx.cross_entropy(x, y, return_grad=True, out=out)
    (args,) = seen
    assert args[0].dtype == np.uint16 and np.shares_memory(args[0], x)
    assert np.shares_memory(args[-1], out)


LAYOUTS = {
    "fortran": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "reversed": lambda a: np.ascontiguousarray(a[::-1])[::-1],
    "byteswapped": lambda a: a.astype(a.dtype.newbyteorder()),
}


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_give_the_same_bits(layout, dt):
    x, y, w, sw = _problem("narrow-serial", dt)
    v = LAYOUTS[layout](x)
    np.testing.assert_array_equal(v.astype(np.float32), x.astype(np.float32))
    for opts in OPTIONS:
        kw = _kw(opts, w, sw)
        loss, grad = nx.cross_entropy(v, y, return_grad=True, **kw)
        rl, rg = nx.cross_entropy(x, y, return_grad=True, **kw)
        assert grad.dtype == dt and grad.flags.c_contiguous
        np.testing.assert_array_equal(grad.view(np.uint16), rg.view(np.uint16))
        np.testing.assert_array_equal(np.asarray(loss), np.asarray(rl))


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
def test_batched_3d_and_unbatched(dt):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7)).astype(dt)
    y = rng.integers(0, 7, (2, 3))
    loss, grad = nx.cross_entropy(x, y, reduction="none", return_grad=True)
    assert loss.shape == (2, 3) and grad.shape == (2, 3, 7) and loss.dtype == dt
    rl, rg = nx.cross_entropy(x.reshape(6, 7), y.reshape(6), reduction="none",
                              return_grad=True)  # fmt: skip
    np.testing.assert_array_equal(loss.reshape(6), rl)
    np.testing.assert_array_equal(grad.reshape(6, 7), rg)
    l1 = nx.cross_entropy(x[0, 0], y[0, 0])
    assert np.asarray(l1).dtype == dt and l1 == rl[0]


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
def test_bad_label_writes_nothing(dt):
    x, y, _, _ = _problem("narrow-parallel", dt)
    y[-1] = x.shape[1]
    out = np.full_like(x, 7)
    with pytest.raises(IndexError, match="target"):
        nx.cross_entropy(x, y, return_grad=True, out=out)
    assert np.all(out.astype(np.float32) == 7)


@pytest.mark.parametrize("dt", FORMATS, ids=lambda d: d.name)
def test_all_ignored_mean_is_nan_with_zero_gradient(dt):
    x = np.ones((4, 3), dt)
    y = np.full(4, -100)
    loss, grad = nx.cross_entropy(x, y, return_grad=True)
    assert np.isnan(loss) and np.asarray(loss).dtype == dt
    assert np.all(grad.astype(np.float32) == 0)


def test_gradient_rounding_ties_and_overflow_float16():
    """float16 sample weights large enough that gradients reach the
    subnormal range and overflow: both rounded as NumPy rounds them."""
    rng = np.random.default_rng(4)
    x = (8 * rng.standard_normal((64, 40))).astype(np.float16)
    y = rng.integers(0, 40, 64)
    sw = np.exp2(rng.uniform(-30, 20, 64))
    loss, grad = nx.cross_entropy(x, y, sample_weight=sw, reduction="sum",
                                  return_grad=True)  # fmt: skip
    _, g32 = nx.cross_entropy(x.astype(np.float32), y, sample_weight=sw,
                              reduction="sum", return_grad=True)  # fmt: skip
    with np.errstate(over="ignore"):
        ref = g32.astype(np.float16)
    assert np.any(np.isinf(ref)) and np.any((ref != 0) & (np.abs(ref) < 2.0**-14))
    np.testing.assert_array_equal(grad.view(np.uint16), ref.view(np.uint16))


@pytest.mark.skipif(BF16 is None, reason="bfloat16 arrays need ml_dtypes")
@pytest.mark.parametrize("fn", ["soft", "bce", "logsumexp", "log_softmax", "softmax"])
def test_bfloat16_elsewhere_computed_on_a_float32_copy(fn):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 5)).astype(BF16)
    x32 = x.astype(np.float32)
    if fn == "soft":
        t = nx.softmax(rng.standard_normal((6, 5)))
        got = nx.cross_entropy(x, t, return_grad=True)
        ref = nx.cross_entropy(x32, t, return_grad=True)
    elif fn == "bce":
        t = (rng.random((6, 5)) > 0.5).astype(np.float32)
        got = nx.binary_cross_entropy_with_logits(x, t, return_grad=True)
        ref = nx.binary_cross_entropy_with_logits(x32, t, return_grad=True)
    else:
        got = (getattr(nx, fn)(x),)
        ref = (getattr(nx, fn)(x32),)
    for g, r in zip(got, ref, strict=True):
        assert np.asarray(g).dtype == BF16
        _assert_within_ulp(g, np.asarray(r, dtype=np.float64), BF16, 0.0)


def test_other_two_byte_dtypes_rejected():
    with pytest.raises(TypeError, match="bfloat16"):
        nx.cross_entropy(np.ones((2, 3), np.int16), np.zeros(2, np.int64))


@pytest.mark.parametrize("dt", FORMATS)
@pytest.mark.parametrize(
    "extra", [{"lse_square_scale": 1e-4}, {"softcap": 30.0}, {"return_z_loss": True}]
)
def test_large_vocabulary_extras_are_refused_by_name(dt, extra):
    """z-loss and soft-capping are served for float32/float64 logits only: a
    16-bit call with them raises naming the arguments, and writes nothing."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 9)).astype(dt)
    before = x.copy()
    out = np.zeros_like(x)
    with pytest.raises(nx.InvalidValueError, match="lse_square_scale, softcap"):
        nx.cross_entropy(x, np.arange(6), return_grad=True, out=out, **extra)
    assert np.array_equal(x.view(np.uint16), before.view(np.uint16))
    assert not out.view(np.uint16).any()
