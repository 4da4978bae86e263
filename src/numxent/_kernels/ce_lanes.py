"""Hard-label softmax cross-entropy on very narrow float32 rows, a row a lane.

A row of a few classes is too short for a loop along it: the tile kernel
(``ce_hard._ce_hard_tile``) vectorises the exp over the flattened tile, but
its per-row loops (max, sums, gradient) are a few elements long, mostly
scalar remainder and loop overhead. Here a block of ``LANE_ROWS`` rows is
copied transposed into scratch, class-major (``xt[k, r]`` = ``x[r, k]``),
and every pass runs down the rows: the max, the exp, the row sums, the logs
and the per-row loss and gradient scale are loops over rows, one row a
vector lane; the gradient is finished in the block and written back
transposed. Both copies go 8 x 8 blocks at a time through vector shuffles
(``transpose8``): a scalar loop cannot vectorise either way round (a
strided load or a strided store).

Arithmetic: the tile kernel's, element for element (the max, the float32
exp, the finish in float64, the float32 gradient), except the row sum: the
rows' exponentials are summed in float64, in class order (sequential within
a row, so one result on every thread). The tile kernel's int64 fixed point
needs a float-to-int64 conversion per element, a scalar instruction on CPUs
without AVX-512 (it made this kernel slower than the tile). Each float32
term is exact in float64, so the sum's rounding error is below (C - 1) *
2**-53 relative, against the fixed point's C * 2**-S.

Indices inside the row loops are those of block views (``xb[r, k]``, ``r``
from ``range``): an index computed as ``b0 + r`` may be negative as far as
Numba knows, so it is wrapped around at run time, and the loop with that
branch stays scalar.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import cached, cached_helper
from ._intrinsics import (
    HELPER,
    JIT,
    imax,
    imin,
    int_view,
    transpose8,
    unmanaged,
    wide_vectors,
)
from ._vecmath import exp_nonpos, log_f64
from .ce_hard import NARROW_TILE, _ce_hard_row_exact, _epilogue, _prologue, _z_row

# Rows a block (the vector loops' length): 64 rows of up to LANE_CLASSES
# float32 classes stay in L1; 32 and 128 measured no faster.
LANE_ROWS = 64
# float32 rows of at most this many classes take this kernel: the tile
# kernel is as fast from about 32 classes (one thread, cache-resident).
LANE_CLASSES = 24

# The float32 max as an int32 key (see ``_vecmath.row_max``)
_SHIFT = np.int32(31)
_ABS = np.int32(0x7FFFFFFF)
_INF_BITS = np.int32(0x7F800000)
_KEY_LO = np.int32(-(2**31))
_KEY_HI = np.int32(2**31 - 1)
_NEG_INF_KEY = np.int32(_KEY_LO ^ _ABS ^ _INF_BITS)
# flag[r]: the row's kind
_KEPT, _IGNORED, _EXACT = 0, 1, 2


@njit(inline="always")
def _transpose(src, n_rows, n_cols, dst, src_stride, dst_stride):
    """dst[k, r] = src[r, k] for r < n_rows, k < n_cols (both float32,
    C-contiguous rows of src_stride / dst_stride elements): 8 x 8 blocks by
    ``transpose8``, the ragged edges element by element."""
    r8 = n_rows - n_rows % 8
    k8 = n_cols - n_cols % 8
    for k0 in range(0, k8, 8):
        for r0 in range(0, r8, 8):
            transpose8(src, r0 * src_stride + k0, src_stride, dst, k0 * dst_stride + r0,
                       dst_stride)  # fmt: skip
    for k in range(k8, n_cols):
        for r in range(n_rows):
            dst[k, r] = src[r, k]
    for k in range(k8):
        for r in range(r8, n_rows):
            dst[k, r] = src[r, k]


@cached_helper
@njit(**HELPER)
def _ce_hard_lanes(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                   r0, r1, z, cap, zrows):  # fmt: skip
    # Rows r0..r1 (float32), LANE_ROWS at a time. ``cap`` is never given
    # (soft-capped rows take the tile kernel).
    wide_vectors()
    n_classes = x.shape[1]
    want_grad = grad.shape[0] > 0
    has_sw = sw.shape[0] > 0
    # scratch: the transposed block, the exact rows' gradients, per-row values
    f32 = np.empty((2 * n_classes + 2) * LANE_ROWS, np.float32)
    xt = f32[: n_classes * LANE_ROWS].reshape(n_classes, LANE_ROWS)
    exact = f32[n_classes * LANE_ROWS : 2 * n_classes * LANE_ROWS].reshape(
        LANE_ROWS, n_classes
    )
    ms = f32[2 * n_classes * LANE_ROWS : (2 * n_classes + 1) * LANE_ROWS]
    c_e = f32[(2 * n_classes + 1) * LANE_ROWS :]
    xti, msi = int_view(xt), int_view(ms)
    keys = np.empty((2, LANE_ROWS), np.int32)
    kmax, kmin = keys[0], keys[1]
    f64 = np.empty((6, LANE_ROWS), np.float64)
    d_ys, wds, ss, logs, cs, bs = f64[0], f64[1], f64[2], f64[3], f64[4], f64[5]
    flag = np.empty(LANE_ROWS, np.int8)
    for b0 in range(r0, r1, LANE_ROWS):
        n = imin(LANE_ROWS, r1 - b0)
        xb = unmanaged(x[b0 : b0 + n])
        yb = unmanaged(y[b0 : b0 + n])
        lb = unmanaged(loss_rows[b0 : b0 + n])
        swb = unmanaged(sw[b0 : b0 + n]) if has_sw else sw
        _transpose(xb, n, n_classes, xt, n_classes, LANE_ROWS)
        # the row max as the max of order-preserving int keys, and whether
        # the row is finite (see _vecmath.row_max)
        for r in range(n):
            kmax[r] = _KEY_LO
            kmin[r] = _KEY_HI
        for k in range(n_classes):
            for r in range(n):
                b = xti[k, r]
                key = np.int32(b ^ ((b >> _SHIFT) & _ABS))
                kmax[r] = key if key > kmax[r] else kmax[r]
                kmin[r] = key if key < kmin[r] else kmin[r]
        n_flagged = 0
        for r in range(n):
            km = kmax[r]
            msi[r] = np.int32(km ^ ((km >> _SHIFT) & _ABS))
            finite = km < _INF_BITS and kmin[r] >= _NEG_INF_KEY and km != _NEG_INF_KEY
            f = _IGNORED if yb[r] == ignore_index else (_KEPT if finite else _EXACT)
            flag[r] = f
            n_flagged += f != _KEPT
        n_exact = np.int64(0)  # (not Literal[int](0): one compile of the callee)
        if n_flagged > 0:
            # Rows holding NaN/inf take the exact scalar path now, while the
            # logits are unwritten (out=logits); ignored rows are neither
            # read nor propagated. Their lanes are zeroed for the passes
            # below, whose results they then ignore.
            for r in range(n):
                if flag[r] == _KEPT:
                    continue
                if flag[r] == _EXACT:
                    _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows,
                                       want_grad, exact, n_exact, b0 + r, z,
                                       zrows)  # fmt: skip
                    n_exact += 1
                else:
                    lb[r] = 0.0
                ms[r] = 0.0
                for k in range(n_classes):
                    xt[k, r] = 0.0
        for r in range(n):
            yi = yb[r] if flag[r] == _KEPT else 0
            d_ys[r] = np.float64(xt[yi, r]) - np.float64(ms[r])
        if eps > 0.0:
            # sum_k w_k (x_k - m), even and odd classes in two sums, as
            # _vecmath.shifted_dot adds them
            for r in range(n):
                wds[r] = 0.0
                bs[r] = 0.0
            for k in range(n_classes):
                wk = w[k]
                acc = wds if k % 2 == 0 else bs
                for r in range(n):
                    acc[r] += wk * (xt[k, r] - np.float64(ms[r])) if wk != 0.0 else 0.0
            for r in range(n):
                wds[r] = wds[r] + bs[r]
        for k in range(n_classes):
            for r in range(n):
                xt[k, r] = exp_nonpos(xt[k, r] - ms[r])
        for r in range(n):
            ss[r] = 0.0
        for k in range(n_classes):
            for r in range(n):
                ss[r] += np.float64(xt[k, r])
        for r in range(n):
            logs[r] = log_f64(ss[r] if flag[r] == _KEPT else 1.0)
        # each row's loss and gradient scale (ce_hard's finish, a lane a row)
        for r in range(n):
            yi = yb[r] if flag[r] == _KEPT else 0
            log_s = logs[r]
            s_w = swb[r] if has_sw else 1.0
            w_y = w[yi]
            c_y = (1.0 - eps) * w_y
            loss = c_y * (log_s - d_ys[r]) if c_y != 0.0 else c_y * log_s
            if eps > 0.0:
                loss += (eps / n_classes) * (w_total * log_s - wds[r])
            big_a = (1.0 - eps) * w_y + (eps / n_classes) * w_total
            if z is not None:  # (None: compiled without the z-loss)
                if z > 0.0:
                    lse = np.float64(ms[r]) + log_s
                    z_w = z * w_y
                    loss += z_w * lse * lse
                    big_a += 2.0 * z_w * lse
            if flag[r] == _KEPT:
                lb[r] = s_w * loss
            scale = s_w * gscale
            cs[r] = scale * big_a / ss[r]
            c_e[r] = np.float32(cs[r])
            bs[r] = scale * eps / n_classes
            d_ys[r] = scale * (1.0 - eps) * w_y  # (the target's term from here)
        if z is not None:
            if zrows.shape[0] > 0:
                for r in range(n):
                    if flag[r] == _KEPT:
                        _z_row(w, sw, z, zrows, b0 + r, yb[r],
                               np.float64(ms[r]) + logs[r])  # fmt: skip
        if not want_grad:
            continue
        # the gradient in place of the exponentials, then written back
        if eps > 0.0:
            for k in range(n_classes):
                wk = w[k]
                for r in range(n):
                    xt[k, r] = cs[r] * xt[k, r] - bs[r] * wk
        else:
            # (c in float32, as ce_hard's finish: one vector width)
            for k in range(n_classes):
                for r in range(n):
                    xt[k, r] = c_e[r] * xt[k, r]
        j = 0
        for r in range(n):
            if flag[r] == _KEPT:
                xt[yb[r], r] -= d_ys[r]
            elif flag[r] == _IGNORED:
                for k in range(n_classes):
                    xt[k, r] = 0.0
            else:
                for k in range(n_classes):
                    xt[k, r] = exact[j, k]
                j += 1
        gb = unmanaged(grad[b0 : b0 + n])
        _transpose(xt, n_classes, n, gb, LANE_ROWS, n_classes)


@njit(inline="always")
def rows_per_lane_task(n_classes):
    """Rows a parallel task: about NARROW_TILE elements, whole blocks."""
    return imax(NARROW_TILE // n_classes // LANE_ROWS, 1) * LANE_ROWS


# The drivers take and return what ce_hard's drivers do (see there).


@cached
@njit(parallel=True, **JIT)
def ce_lanes_par(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows,
                 grad, z, cap, zrows):  # fmt: skip
    """Very narrow float32 rows, rows_per_lane_task rows a task."""
    first_bad, denom, run, gscale = _prologue(x, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = x.shape[0]
    per_task = rows_per_lane_task(x.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _ce_hard_lanes(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                       grad, r0, imin(n_rows, r0 + per_task), z, cap,
                       zrows)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(**JIT)
def ce_lanes_ser(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows,
                 grad, z, cap, zrows):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(x, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    # (np.int64(0): a literal 0 would compile the helper apart from ce_lanes_par's)
    _ce_hard_lanes(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                   np.int64(0), x.shape[0], z, cap, zrows)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)
