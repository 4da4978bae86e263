"""Every kernel path on small problems, against naive.py -- the module the
kernel-coverage run executes with the JIT off -- and the pure-Python path
(NUMBA_DISABLE_JIT=1) against the compiled kernels.

The coverage run (kernel bodies run as Python, so every branch is seen):

    NUMBA_DISABLE_JIT=1 python -m pytest tests/test_nojit.py -p no:cacheprovider \
        --cov=numxent --cov-config=tests/coverage-kernels.ini \
        --cov-report=term-missing --cov-fail-under=N

Sizes sit just past each switch (from the dispatch constants): with the JIT
off a 32,768-logit call takes a fraction of a second. The checks run with
the JIT on too (as a normal part of the suite).
"""

import math
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import numxent as nx
from _cases import assert_matches
from _paths import (
    BCE_BLOCK,
    GROUP_ROWS,
    LANE_ROWS,
    NARROW_TILE,
    NT_LINE,
    PREFETCH_ROW_BYTES,
    ROWS_PER_TASK,
    SERIAL_BELOW,
    WIDE_SERIAL_BELOW,
    lane_classes,
    narrow_classes,
    nt_fence,
    record_kernels,
    stream_copy,
)
from naive import (
    bce_with_logits_ref,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

SCRIPT = r"""
import numpy as np
import numxent as nx
rng = np.random.default_rng(0)
out = []
for dt, c in ((np.float64, 7), (np.float32, 100)):
    x = rng.standard_normal((40, c)).astype(dt)
    y = rng.integers(0, c, 40)
    y[3] = -100
    loss, grad = nx.cross_entropy(x, y, label_smoothing=0.1, return_grad=True)
    t = nx.softmax(x * 0.5)
    sl, sg = nx.cross_entropy(x, t, return_grad=True)
    tb = (x > 0).astype(dt)
    bl, bg = nx.binary_cross_entropy_with_logits(x, tb, return_grad=True)
    out += [loss, grad, sl, sg, bl, bg, nx.log_softmax(x), nx.logsumexp(x)]
np.savez(__import__("sys").argv[1], *out)
"""


def _run(tmp_path, name, disable_jit):
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    if disable_jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    path = tmp_path / f"{name}.npz"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], env=env, check=True, timeout=600
    )
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_disable_jit_matches_compiled(tmp_path):
    jit = _run(tmp_path, "jit", False)
    nojit = _run(tmp_path, "nojit", True)
    assert len(jit) == len(nojit) == 16
    for a, b in zip(jit, nojit, strict=True):
        assert a.dtype == b.dtype
        # fma is emulated with two roundings without the JIT: a few ulps apart
        rtol = 1e-5 if a.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.max(np.abs(a)))


# --------------------------------------------------------------------------
# every kernel path, in process (measured by the coverage run)
# --------------------------------------------------------------------------
FLOATS = [np.float32, np.float64]
# Rows of only -inf reach math.log(0.0): -inf compiled (error_model="numpy"),
# a ValueError in the pure-Python stand-ins, so the JIT-off run leaves them out.
ALL_MINUS_INF_ROWS = not numba.config.DISABLE_JIT


def _ids(cases):
    return [f"{c[0]}-{np.dtype(c[1]).name}" for c in cases]


def _hard_geometry(path, dtype):
    """(rows, classes) just past the switch of ``path``."""
    nc, lc = narrow_classes(dtype), lane_classes(np.float32)
    if path == "lanes-serial":  # two blocks and a part
        return 2 * LANE_ROWS + 3, lc
    if path == "lanes-parallel":
        return math.ceil(SERIAL_BELOW / (lc - 1)) + 1, lc - 1
    if path == "narrow-serial":  # two tiles
        return NARROW_TILE // nc + 3, nc
    if path == "narrow-parallel":
        return math.ceil(SERIAL_BELOW / (nc - 1)) + 1, nc - 1
    if path == "wide-serial":  # two groups and a remainder
        return 2 * GROUP_ROWS + 3, nc + 1
    if path == "wide-unprefetched":  # rows longer than the prefetch limit
        return 6, PREFETCH_ROW_BYTES // np.dtype(dtype).itemsize + 1
    c = nc + 1  # wide-parallel: two tasks or more
    return max(math.ceil(WIDE_SERIAL_BELOW / c), NARROW_TILE // c + 2), c


HARD_KERNEL = {
    "lanes-serial": "ce_lanes_ser",  # float32 only
    "lanes-parallel": "ce_lanes_par",
    "narrow-serial": "ce_narrow_ser",
    "narrow-parallel": "ce_narrow_par",
    "wide-serial": "ce_hard_ser",
    "wide-unprefetched": None,  # serial or parallel by dtype: see below
    "wide-parallel": "ce_hard_par",
}
HARD_CASES = [
    (p, d)
    for p in HARD_KERNEL
    for d in FLOATS
    if not (p.startswith("lanes") and d == np.float64)
]
# option sets: every branch of the row functions (smoothing or not, class
# and sample weights with zeros, ignored / NaN / +inf / -inf rows, gradient
# rows, scratch rows for forward-only and in-place calls)
OPTIONS = [
    dict(label_smoothing=0.1, weighted=True, reduction="none", out=None),
    dict(label_smoothing=0.0, weighted=False, reduction="mean", out="inplace"),
    dict(label_smoothing=0.3, weighted=True, reduction="sum", out="inplace"),
    dict(label_smoothing=0.0, weighted=True, reduction="sum", out="out"),
]


def _call(fn, x, args, kw, out):
    """(loss, grad) with the gradient new, in ``out=`` or in place, and the
    forward-only loss, which must be the same bits."""
    if out == "inplace":
        xin = x.copy()
        loss, grad = fn(xin, *args, return_grad=True, out=xin, **kw)
        assert grad is xin
    elif out == "out":
        buf = np.empty_like(x)
        loss, grad = fn(x, *args, return_grad=True, out=buf, **kw)
        assert grad is buf
    else:
        loss, grad = fn(x, *args, return_grad=True, **kw)
    np.testing.assert_array_equal(fn(x, *args, **kw), loss)
    return loss, grad


def _plus_inf_rows_nan(loss, grad, rows, reduction):
    """PyTorch's pattern for rows holding +inf (the reference's inf - inf
    leaves some entries finite): loss and gradient NaN."""
    grad[rows] = np.nan
    if reduction == "none":
        loss[rows] = np.nan
        return loss, grad
    return (np.nan if len(rows) else loss), grad


@pytest.mark.parametrize(("path", "dtype"), HARD_CASES, ids=_ids(HARD_CASES))
def test_hard_label_paths_match_naive(path, dtype):
    n, c = _hard_geometry(path, dtype)
    rng = np.random.default_rng(n * c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    y[1] = -100
    x[1] = np.nan  # an ignored row of garbage
    x[2, c // 2] = np.nan
    x[3, 0] = np.inf
    x[4, 1] = -np.inf
    x[5, :] = -30.0  # all equal
    w = rng.uniform(0.1, 3.0, c)
    w[::7] = 0.0
    sw = rng.uniform(0.0, 3.0, n)
    for opts in OPTIONS:
        kw = dict(reduction=opts["reduction"], label_smoothing=opts["label_smoothing"])
        if opts["weighted"]:
            kw.update(weight=w, sample_weight=sw)
        with record_kernels() as calls:
            loss, grad = _call(nx.cross_entropy, x, (y,), kw, opts["out"])
        kernel = HARD_KERNEL[path]
        if kernel is None:
            kernel = "ce_hard_ser" if n * c < WIDE_SERIAL_BELOW else "ce_hard_par"
        assert {name for name, _ in calls} == {kernel}
        with np.errstate(all="ignore"):
            r_loss, r_grad = cross_entropy_ref(x.astype(np.float64), y, **kw)
        r_loss, r_grad = _plus_inf_rows_nan(r_loss, r_grad, [3], kw["reduction"])
        assert_matches(loss, r_loss, dtype)
        assert_matches(grad, r_grad, dtype)
    # a bad label: found by the kernels' scan (serial) or the label scan
    bad = y.copy()
    bad[-1] = c
    with pytest.raises(IndexError):
        nx.cross_entropy(x, bad)


# float16 / bfloat16 logits: the staging kernels (ce_lowp_*), the float32
# lane, tile or wide rows inside, the conversions both ways (NaN, +-inf, zero
# weights), forward-only, out= and in place; the kernels skip the rows of a
# "mean" over nothing.
LOWP_KERNEL = {
    "lanes-serial": "ce_lowp_lanes_ser",
    "lanes-parallel": "ce_lowp_lanes_par",
    "narrow-serial": "ce_lowp_narrow_ser",
    "narrow-parallel": "ce_lowp_narrow_par",
    "wide-serial": "ce_lowp_wide_ser",
    "wide-parallel": "ce_lowp_wide_par",
}
try:  # bfloat16 NumPy arrays come with the torch extra (ml_dtypes)
    import ml_dtypes

    FORMATS_16 = (np.float16, ml_dtypes.bfloat16)
except ImportError:
    FORMATS_16 = (np.float16,)
LOWP_CASES = [(p, d) for p in LOWP_KERNEL for d in FORMATS_16]


@pytest.mark.parametrize(("path", "dtype"), LOWP_CASES, ids=_ids(LOWP_CASES))
def test_16bit_hard_label_paths_match_naive(path, dtype):
    n, c = _hard_geometry(path, np.float32)
    if path == "wide-parallel":  # tasks of staging blocks of 7, 7 and 2 rows
        c = 2 * NARROW_TILE // ROWS_PER_TASK + 1
        n = ROWS_PER_TASK + 3
    rng = np.random.default_rng(n * c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    y[1] = -100
    x[1] = np.nan
    x[2, c // 2] = np.nan
    x[3, 0] = np.inf
    x[4, 1] = -np.inf
    x[5, :] = -30.0
    w = rng.uniform(0.1, 3.0, c)
    w[::7] = 0.0
    sw = rng.uniform(0.0, 3.0, n)
    for opts in OPTIONS[:2]:
        kw = dict(reduction=opts["reduction"], label_smoothing=opts["label_smoothing"])
        if opts["weighted"]:
            kw.update(weight=w, sample_weight=sw)
        with record_kernels() as calls:
            loss, grad = _call(nx.cross_entropy, x, (y,), kw, opts["out"])
        assert {name for name, _ in calls} == {LOWP_KERNEL[path]}
        assert grad.dtype == np.dtype(dtype)
        with np.errstate(all="ignore"):
            r_loss, r_grad = cross_entropy_ref(x.astype(np.float64), y, **kw)
        r_loss, r_grad = _plus_inf_rows_nan(r_loss, r_grad, [3], kw["reduction"])
        assert_matches(loss, r_loss, dtype)
        assert_matches(grad, r_grad, dtype)
    # a "mean" over ignored rows only: NaN and a zero gradient, rows skipped
    loss, grad = nx.cross_entropy(x, np.full(n, -100), return_grad=True)
    assert np.isnan(loss) and not np.any(grad.astype(np.float32))
    bad = y.copy()
    bad[-1] = c
    with pytest.raises(IndexError):
        nx.cross_entropy(x, bad)


SOFT_CASES = [(p, d) for p in ("soft-serial", "soft-parallel") for d in FLOATS]


@pytest.mark.parametrize(("path", "dtype"), SOFT_CASES, ids=_ids(SOFT_CASES))
def test_soft_label_paths_match_naive(path, dtype):
    c = 101  # odd: the target terms' pairs and remainder
    n = 2 * ROWS_PER_TASK + 3
    if path == "soft-parallel":
        n = math.ceil(SERIAL_BELOW / c) + 1
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    t = rng.random((n, c))
    t[t < 0.2] = 0.0
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    x[2, 3] = np.nan
    x[3, 0] = np.inf
    x[4, 1] = -np.inf
    t[4, 1] = 0.0  # zero probability meets -inf: contributes nothing
    if ALL_MINUS_INF_ROWS:
        x[5, :] = -np.inf
    w = rng.uniform(0.1, 3.0, c)
    w[::7] = 0.0
    for opts in OPTIONS:
        kw = dict(reduction=opts["reduction"], label_smoothing=opts["label_smoothing"])
        if opts["weighted"]:
            kw.update(weight=w, sample_weight=rng.uniform(0.0, 3.0, n))
        with record_kernels() as calls:
            loss, grad = _call(nx.cross_entropy, x, (t,), kw, opts["out"])
        assert {name for name, _ in calls} == {"ce_soft_" + path[5:8]}
        with np.errstate(all="ignore"):
            r_loss, r_grad = cross_entropy_ref(x.astype(np.float64), t, **kw)
        r_loss, r_grad = _plus_inf_rows_nan(r_loss, r_grad, [3], kw["reduction"])
        assert_matches(loss, r_loss, dtype)
        assert_matches(grad, r_grad, dtype)


def _bce_case(layout, shape, rng):
    n_cols = shape[-1]
    if layout == "period-1":
        return {}
    if layout == "period-C":
        return dict(weight=rng.uniform(0, 2, n_cols),
                    pos_weight=rng.uniform(0, 3, n_cols))  # fmt: skip
    if layout == "row-scale":
        return dict(pos_weight=rng.uniform(0, 3, n_cols),
                    sample_weight=rng.uniform(0, 2, shape[:-1]))  # fmt: skip
    # gathered: a row-contiguous weight, a strided pos_weight (every other
    # element of a wider array), a per-row sample weight (constant along rows)
    return dict(weight=rng.uniform(0, 2, shape),
                pos_weight=rng.uniform(0, 3, (*shape[:-1], 2 * n_cols))[..., ::2],
                sample_weight=rng.uniform(0, 2, shape[:-1]))  # fmt: skip


BCE_CASES = [
    (f"{launch}-{layout}", d)
    for launch in ("serial", "parallel")
    for layout in ("period-1", "period-C", "row-scale", "gathered")
    for d in FLOATS
]


@pytest.mark.parametrize(("case", "dtype"), BCE_CASES, ids=_ids(BCE_CASES))
def test_bce_paths_match_naive(case, dtype):
    launch, layout = case.split("-", 1)
    # rows not a multiple of a block: blocks start mid-row
    n_cols = BCE_BLOCK // 4 + 3
    rows = 5 if launch == "serial" else math.ceil(SERIAL_BELOW / n_cols) + 1
    shape = (rows, n_cols)
    rng = np.random.default_rng(rows)
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    x[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    t = rng.random(shape)
    t[0, :8] = [0, 1, 0, 1, 1, 0, 0.5, 1]
    t = t.astype(dtype)
    kw = _bce_case(layout, shape, rng)
    for reduction, out in (("none", None), ("mean", "inplace"), ("sum", "out")):
        with record_kernels() as calls:
            loss, grad = _call(nx.binary_cross_entropy_with_logits, x, (t,),
                              dict(kw, reduction=reduction), out)  # fmt: skip
        assert {name for name, _ in calls} == {"bce_" + launch[:3]}
        assert {detail for _, detail in calls} == {layout}
        with np.errstate(all="ignore"):
            r_loss, r_grad = bce_with_logits_ref(x.astype(np.float64), t,
                                                 reduction=reduction, **kw)  # fmt: skip
        assert_matches(loss, r_loss, dtype)
        assert_matches(grad, r_grad, dtype)


ROWWISE = [
    (nx.logsumexp, logsumexp_ref),
    (nx.log_softmax, log_softmax_ref),
    (nx.softmax, softmax_ref),
]
ROW_CASES = [(p, d) for p in ("serial", "parallel") for d in FLOATS]


@pytest.mark.parametrize(("path", "dtype"), ROW_CASES, ids=_ids(ROW_CASES))
def test_softmax_family_paths_match_naive(path, dtype):
    c = 100
    n = 2 * ROWS_PER_TASK + 3 if path == "serial" else math.ceil(SERIAL_BELOW / c) + 1
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, c)) * 10).astype(dtype)
    x[1, 3] = np.nan
    x[2, 0] = np.inf
    x[2, 1] = np.nan  # with +inf: logsumexp is NaN
    if ALL_MINUS_INF_ROWS:
        x[3, :] = -np.inf
    x[4, 5] = -np.inf
    for fn, ref in ROWWISE:
        with record_kernels() as calls:
            res = fn(x)
        assert {name for name, _ in calls} == {"softmax_" + path[:3]}
        with np.errstate(all="ignore"):
            expected = ref(x.astype(np.float64))
        if fn is not nx.logsumexp:
            expected[2] = np.nan  # +inf row: PyTorch's all-NaN row
        assert_matches(res, expected, dtype)
        # the class axis elsewhere: the same rows, moved
        moved = fn(np.ascontiguousarray(x.T), axis=0)
        np.testing.assert_array_equal(moved, res.T)


@numba.njit
def _fenced_copy(dst, d0, src, s0, n):
    stream_copy(dst, d0, src, s0, n)
    nt_fence()


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float64"])
def test_stream_copy_is_a_slice_copy(dtype):
    """Non-temporal line copies with ordinary head and tail: every start
    alignment, lengths around whole lines, nothing outside the range written."""
    per = NT_LINE // np.dtype(dtype).itemsize
    src = np.arange(1, 4 * per + 8, dtype=dtype)
    for d0 in range(per + 1):
        for s0 in (0, 3):
            for n in (0, 1, per - 1, per, per + 1, 2 * per + 3, 3 * per):
                dst = np.zeros(4 * per + 8, dtype)
                _fenced_copy(dst, d0, src, s0, n)
                want = np.zeros_like(dst)
                want[d0 : d0 + n] = src[s0 : s0 + n]
                np.testing.assert_array_equal(dst, want)


def test_stream_copy_of_an_unaligned_destination():
    """A destination not aligned to its itemsize (a raw buffer): ordinary
    stores only, and the same copy."""
    raw = np.zeros(8 * 40 + 2, np.uint8)
    dst = raw[2:].view(np.float64)
    src = np.arange(40.0)
    _fenced_copy(dst, 1, src, 0, 39)
    np.testing.assert_array_equal(dst[1:], src[:39])
    assert dst[0] == 0.0


def _extras_ref(x, y, w, sw, eps, z, cap):
    """Per-row (loss, z term) and the gradient of their sum: z-loss and
    soft-capping by their formulas over the float64 reference."""
    xc = cap * np.tanh(x / cap) if cap else x
    ce, g = cross_entropy_ref(xc, y, weight=w, sample_weight=sw, reduction="none",
                              label_smoothing=eps)  # fmt: skip
    m = xc.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(xc - m).sum(axis=1, keepdims=True)))[:, 0]
    keep = y != -100
    zw = np.where(keep, z * w[np.where(keep, y, 0)] * sw, 0.0)
    zrow = np.where(keep, zw * lse**2, 0.0)
    g = g + (2 * zw * lse)[:, None] * np.exp(xc - lse[:, None])
    if cap:
        g = g * (1 - (xc / cap) ** 2)
    g[~keep] = 0.0  # ignored rows: 0 whatever their logits
    return ce + zrow, zrow, g


@pytest.mark.parametrize(("path", "dtype"), HARD_CASES, ids=_ids(HARD_CASES))
def test_hard_label_extras_paths_match_naive(path, dtype):
    n, c = _hard_geometry(path, dtype)
    rng = np.random.default_rng(n * c + 1)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    y[1] = -100
    x[1] = np.nan  # an ignored row of garbage
    x[2, c // 2] = np.nan  # the exact path
    w = rng.uniform(0.1, 3.0, c)
    sw = rng.uniform(0.0, 3.0, n)
    for z, cap, out in ((1e-2, None, "out"), (0.0, 3.0, "inplace"),
                        (1e-3, 5.0, None)):  # fmt: skip
        kw = dict(weight=w, sample_weight=sw, label_smoothing=0.1, reduction="none",
                  lse_square_scale=z, softcap=cap)  # fmt: skip
        fwd = nx.cross_entropy(x, y, return_z_loss=True, **kw)
        if out == "inplace":
            xin = x.copy()
            loss, zl, grad = nx.cross_entropy(
                xin, y, return_z_loss=True, return_grad=True, out=xin, **kw
            )
        else:
            buf = np.empty_like(x) if out else None
            loss, zl, grad = nx.cross_entropy(
                x, y, return_z_loss=True, return_grad=True, out=buf, **kw
            )
        np.testing.assert_array_equal(fwd[0], loss)
        np.testing.assert_array_equal(fwd[1], zl)
        with np.errstate(all="ignore"):
            r_loss, r_z, r_grad = _extras_ref(x.astype(np.float64), y, w, sw, 0.1,
                                              z, cap)  # fmt: skip
        assert np.isnan(loss[2]) and np.all(np.isnan(grad[2]))
        rows = np.r_[0:2, 3:n]
        assert_matches(loss[rows], r_loss[rows], dtype)
        assert_matches(zl[rows], r_z[rows], dtype)
        assert_matches(grad[rows], r_grad[rows], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_sparse_product_kernels(dtype, index):
    """The estimator's sparse products (numxent._kernels.sparse) on a row
    range and a column range of a small matrix, against dense NumPy."""
    from numxent._kernels.sparse import PREFETCH_AHEAD, csc_gather, csr_logits

    rng = np.random.default_rng(7)
    n, f, k = 40, 30, 5
    dense = rng.standard_normal((n, f)) * (rng.random((n, f)) < 0.3)
    dense[3] = 0.0  # a row without entries
    indptr = np.r_[0, np.cumsum((dense != 0).sum(1))].astype(index)
    indices = np.nonzero(dense)[1].astype(index)
    data = dense[dense != 0].astype(dtype)
    assert data.size > 3 * PREFETCH_AHEAD  # entries prefetched and not
    wt = rng.standard_normal((f, k)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    z = np.full((n, k), np.nan, dtype)
    csr_logits(indptr, indices, data, wt, b, 2, 35, z[2:35], np.empty(k, dtype))
    x = dense.astype(dtype).astype(np.float64)
    ref = x @ wt.astype(np.float64) + b
    assert np.isnan(z[:2]).all() and np.isnan(z[35:]).all()
    np.testing.assert_allclose(z[2:35], ref[2:35], rtol=1e-5 if dtype == np.float32
                               else 1e-13, atol=1e-5)  # fmt: skip
    cindptr = np.r_[0, np.cumsum((dense != 0).sum(0))].astype(index)
    cindices = np.nonzero(dense.T)[1].astype(index)
    cdata = dense.T[dense.T != 0].astype(dtype)
    g = rng.standard_normal((n, k)).astype(dtype)
    out = np.full((f, k), np.nan)
    csc_gather(cindptr, cindices, cdata, g, 4, 27, out, np.empty(k))
    assert np.isnan(out[:4]).all() and np.isnan(out[27:]).all()
    np.testing.assert_allclose(out[4:27], (x.T @ g.astype(np.float64))[4:27],
                               rtol=1e-13, atol=1e-12)  # fmt: skip


def _dot_in_order(p, v, lanes=32):
    """``p . v`` in the order ``_intrinsics.dot`` documents, restated with
    NumPy: ``lanes`` interleaved partial sums (rows added one after another),
    the vectors of eight as a pairwise tree, the lanes pairwise, the tail."""
    n_vec = p.size - p.size % lanes
    part = np.zeros(lanes)
    for row in (p[:n_vec] * v[:n_vec]).reshape(-1, lanes):
        part = part + row
    vec = list(part.reshape(-1, 8))
    while len(vec) > 1:
        vec = [vec[k] + vec[k + 1] for k in range(0, len(vec), 2)]
    lane = list(vec[0])
    while len(lane) > 1:
        lane = [lane[k] + lane[k + 1] for k in range(0, len(lane), 2)]
    total = lane[0]
    for a, b in zip(p[n_vec:], v[n_vec:], strict=True):
        total += a * b
    return total


@pytest.mark.parametrize("threads", [1, 2])
def test_lbfgs_memory_kernels(threads):
    """The solver's products over its pairs (numxent._kernels.lbfgs): the
    documented order of every sum, bit for bit (so the same bits on any
    number of threads), against a NumPy restatement; the combination skips
    rows whose coefficient is zero (an inf there changes nothing)."""
    from numxent._kernels._intrinsics import DOT_VECTORS
    from numxent._kernels.lbfgs import BLOCK, memory_combination, memory_products

    rng = np.random.default_rng(11)
    n = 2 * BLOCK + 8 * DOT_VECTORS + 5  # three blocks, a ragged tail
    P = rng.standard_normal((5, n))
    V = rng.standard_normal((3, n))
    n_blocks = -(-n // BLOCK)
    parts, out = np.empty((n_blocks, 5, 3)), np.empty((5, 3))
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        memory_products(P, V, parts, out)
        coef = np.array([0.5, -2.0, 0.0, 1.5, 0.25])
        P[2, 7] = np.inf  # its coefficient is 0: never read
        d = np.empty(n)
        memory_combination(P, coef, V[0], 0.75, d)
    finally:
        numba.set_num_threads(before)
    for i in range(5):
        for k in range(3):
            blocks = [
                _dot_in_order(P[i, lo : lo + BLOCK], V[k, lo : lo + BLOCK])
                for lo in range(0, n, BLOCK)
            ]
            total = 0.0
            for b in blocks:
                total += b
            if i != 2:
                assert out[i, k] == total, (i, k)
                np.testing.assert_allclose(out[i, k], P[i] @ V[k], rtol=1e-12)
    acc = np.zeros(n)
    for i in (0, 1, 3, 4):
        acc = acc + coef[i] * P[i]
    np.testing.assert_array_equal(d, -(acc + 0.75 * V[0]))
