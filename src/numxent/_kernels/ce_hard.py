"""Softmax cross-entropy with hard (integer) labels: tiles of narrow rows, wide
rows a group at a time, and their cached drivers."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import cached, cached_helper
from ._intrinsics import HELPER, JIT, imax, imin, int_view, unmanaged, wide_vectors
from ._vecmath import (
    ROWS_PER_TASK,
    exp_nonpos,
    exp_shifted,
    exp_sum_exact,
    fixed_point_scale,
    fixed_sum,
    log_f64,
    ordered_total,
    prefetch_lines,
    row_max,
    row_max_exact,
    shifted_dot,
)

# Elements per tile of narrow rows (``_ce_hard_tile``), and per task of wide
# rows (at least ROWS_PER_TASK rows): 4,096- and 8,192-element tiles were
# slower than 16,384 at C = 64-200.
NARROW_TILE = 16384
# Wide rows up to this many bytes are prefetched two rows ahead; longer rows
# stream well on the hardware prefetcher alone (and were slower with it).
PREFETCH_ROW_BYTES = 16384
# Rows of wide hard-label tasks are finished a group at a time, so that the
# group's logs are one vector loop (a scalar libm log per 100-class row is a
# noticeable share of its time).
GROUP_ELEMENTS = 4096
GROUP_ROWS = 8
# The drivers' ``reduction`` argument: which total they return.
REDUCE_NONE, REDUCE_SUM, REDUCE_MEAN = 0, 1, 2


@cached
@njit(**JIT)
def scan_hard_labels(y, n_classes, ignore_index, w, sw):
    """(flat index of the first label outside [0, C) that is not ignored, or
    -1; the "mean" denominator sum_i sw_i w[y_i] over kept rows).

    One serial pass in index order, so the denominator's rounding is fixed.
    The caller raises on a bad label; nothing here reads w out of bounds.
    """
    denom = 0.0
    has_sw = sw.shape[0] > 0
    for i in range(y.shape[0]):
        yi = y[i]
        if yi == ignore_index:
            continue
        if yi < 0 or yi >= n_classes:
            return i, 0.0
        denom += w[yi] * sw[i] if has_sw else w[yi]
    return -1, denom


def _make_finish(in_place, capped):
    """Loss and gradient of row i from s = sum_k e_k and log_s = log(s), the
    e_k parked in src[si]: scaled in place (``in_place``: src[si] is the
    gradient row, or a scratch row of a forward-only call), or written to
    grad[i] (the exp values waited in scratch; ``grad`` may be the logits).

    One body for both: the flag is a compile-time constant, so each variant
    compiles to its own loops. (Sharing at run time -- the in-place variant
    as the other with src = grad -- made the tile kernel's forward-only loop
    much slower: the two arrays then may overlap, and LLVM's overlap check
    keeps the loop scalar.) ``capped``: the soft-capped variant, its gradient
    through the cap (``_finish_capped``), a separate variant too: a run-time
    branch to it in the one body made the plain path 2x slower.
    """

    def finish(w, w_total, sw, eps, gscale, loss_rows, want_grad, src, si, grad, i,
               s, log_s, d_y, wd, yi, m, z, cap, xc, xci, xshift):  # fmt: skip
        n_classes = w.shape[0]
        s_w = sw[i] if sw.shape[0] > 0 else 1.0
        w_y = w[yi]
        c_y = (1.0 - eps) * w_y
        # A zero coefficient never meets the target's -inf logit (0 * inf):
        # the term is then 0, or NaN where the row's log-sum-exp is (xlogy, as
        # for soft labels).
        loss = c_y * (log_s - d_y) if c_y != 0.0 else c_y * log_s
        if eps > 0.0:
            loss += (eps / n_classes) * (w_total * log_s - wd)
        big_a = (1.0 - eps) * w_y + (eps / n_classes) * w_total
        if z is not None:  # (None: compiled without the z-loss)
            if z > 0.0:
                # z-loss: z * lse^2, weighted by the row's weight as the CE term
                lse = np.float64(m) + log_s
                z_w = z * w_y
                loss += z_w * lse * lse
                big_a += 2.0 * z_w * lse
        loss_rows[i] = s_w * loss
        if want_grad:
            scale = s_w * gscale
            c = scale * big_a / s
            if capped:
                if in_place:
                    _finish_capped(w, eps, scale, c, src, si, src, si, yi, w_y, cap,
                                   xc, xci, xshift)  # fmt: skip
                else:
                    _finish_capped(w, eps, scale, c, src, si, grad, i, yi, w_y, cap,
                                   xc, xci, xshift)  # fmt: skip
            elif in_place:
                if eps > 0.0:
                    b = scale * eps / n_classes
                    for k in range(n_classes):
                        src[si, k] = c * src[si, k] - b * w[k]
                else:
                    # In e's dtype: a float32 multiply keeps the loop one
                    # vector width (a float64 c would widen every element and
                    # narrow it back). Costs float32 gradients one more
                    # rounding, of c.
                    c_e = src.dtype.type(c)
                    for k in range(n_classes):
                        src[si, k] = c_e * src[si, k]
                src[si, yi] -= scale * (1.0 - eps) * w_y
            else:
                if eps > 0.0:
                    b = scale * eps / n_classes
                    for k in range(n_classes):
                        grad[i, k] = c * src[si, k] - b * w[k]
                else:
                    c_e = grad.dtype.type(c)
                    for k in range(n_classes):
                        grad[i, k] = c_e * src[si, k]
                grad[i, yi] -= scale * (1.0 - eps) * w_y

    return njit(inline="always")(finish)


@njit(**HELPER)
def _finish_capped(w, eps, scale, c, src, si, dst, di, yi, w_y, cap, xc, xci,
                   xshift):  # fmt: skip
    # The gradient of a soft-capped row: the plain one times 1 - (x'/cap)^2,
    # x' = xc[xci, k] + xshift the capped logit (tanh' from tanh). dst may be
    # src, and xc may be dst (out=logits): each element is read before it is
    # written, the target's two values before the loop.
    n_classes = w.shape[0]
    b = scale * eps / n_classes
    inv = 1.0 / cap
    e_y = np.float64(src[si, yi])
    u_y = (np.float64(xc[xci, yi]) + xshift) * inv
    for k in range(n_classes):
        u = (np.float64(xc[xci, k]) + xshift) * inv
        dst[di, k] = (c * src[si, k] - b * w[k]) * (1.0 - u * u)
    g_y = c * e_y - b * w_y - scale * (1.0 - eps) * w_y
    dst[di, yi] = g_y * (1.0 - u_y * u_y)


# The z-loss terms for logging (``zrows``), written by loops of their own: a
# store to one more array in the finish made the tile kernel's plain path
# 2-3x slower, even when never run.


@njit(inline="always")
def _z_row(w, sw, z, zrows, i, yi, lse):
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    zrows[i] = s_w * (z * w[yi] * lse * lse)


@njit(**HELPER)
def _z_rows(w, sw, z, zrows, y, r0, n, ss, ms, logs):
    # rows r0 .. r0 + n whose ss[r] > 0 (kept, finished by the vector path)
    for r in range(n):
        if ss[r] > 0.0:
            _z_row(w, sw, z, zrows, r0 + r, y[r0 + r], np.float64(ms[r]) + logs[r])


_finish_in_place = _make_finish(True, False)
_finish_to_grad = _make_finish(False, False)
_finish_in_place_capped = _make_finish(True, True)
_finish_to_grad_capped = _make_finish(False, True)


@cached_helper
@njit(**HELPER)
def _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows, want_grad, e,
                       ei, i, z, zrows):  # fmt: skip
    # Scalar float64 path for rows holding NaN or +inf, or all -inf. The
    # logits are read before the exp values are stored: e may be x (out=x).
    yi = y[i]
    m = row_max_exact(x, i)
    d_y = x[i, yi] - m
    wd = 0.0
    if eps > 0.0:
        for k in range(x.shape[1]):
            if w[k] != 0.0:  # xlogy: a zero weight never meets -inf
                wd += w[k] * (x[i, k] - m)
    s = exp_sum_exact(x, i, m, e, ei, want_grad)
    # (soft-capped logits are finite: a row here holds NaN, its gradient is
    # NaN capped or not)
    _finish_in_place(w, w_total, sw, eps, gscale, loss_rows, want_grad, e, ei, e, i,
                     s, math.log(s), d_y, wd, yi, m, z, 0.0, x, i,
                     0.0)  # fmt: skip
    if z is not None:
        if zrows.shape[0] > 0:
            _z_row(w, sw, z, zrows, i, yi, np.float64(m) + math.log(s))


@njit(inline="always")
def _ce_hard_row_sum(
    x, xi, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, want_grad, grad,
    sc, r, fix, i, z, zrows,
):  # fmt: skip
    # First half of row i: sc[r] = exp(x_i - m), sc a scratch group or the
    # gradient itself (sc = grad, r = i). Returns (s, d_y, wd, m) for the
    # finish, or s = 0 when the row is already done (ignored, or non-finite:
    # the exact path, straight into grad[i]).
    yi = y[i]
    if yi == ignore_index:
        # Padding rows may hold garbage: neither read nor propagated.
        loss_rows[i] = 0.0
        if want_grad:
            for k in range(x.shape[1]):
                grad[i, k] = 0.0
        return 0.0, 0.0, 0.0, 0.0
    m, finite = row_max(xi, i)
    if not finite:
        _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows,
                           want_grad, grad, i, i, z, zrows)  # fmt: skip
        return 0.0, 0.0, 0.0, 0.0
    d_y = np.float64(x[i, yi]) - np.float64(m)
    wd = shifted_dot(w, x, i, np.float64(m)) if eps > 0.0 else 0.0
    return exp_shifted(x, i, m, sc, r, fix), d_y, wd, np.float64(m)


def _make_group_finish(capped):
    """The finish of a group of wide rows (the exp values in the scratch
    group ``sc`` or in place in ``grad``), plain or soft-capped."""
    to_grad = _finish_to_grad_capped if capped else _finish_to_grad
    in_place = _finish_in_place_capped if capped else _finish_in_place

    def group_finish(w, w_total, sw, eps, gscale, loss_rows, want_grad, sc, grad, x,
                     y, g0, n, ss, logs, d_ys, wds, ms, z, cap, scratch):  # fmt: skip
        for r in range(n):
            if ss[r] > 0.0:
                i = g0 + r
                if scratch:
                    to_grad(w, w_total, sw, eps, gscale, loss_rows, want_grad, sc, r,
                            grad, i, ss[r], logs[r], d_ys[r], wds[r], y[i], ms[r], z,
                            cap, x, i, 0.0)  # fmt: skip
                else:
                    in_place(w, w_total, sw, eps, gscale, loss_rows, want_grad, grad,
                             i, grad, i, ss[r], logs[r], d_ys[r], wds[r], y[i], ms[r],
                             z, cap, x, i, 0.0)  # fmt: skip

    return njit(inline="always")(group_finish)


_group_finish = _make_group_finish(False)
_group_finish_capped = _make_group_finish(True)


@cached_helper
@njit(**HELPER)
def _ce_hard_rows(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                  r0, r1, z, cap, zrows):  # fmt: skip
    # Wide rows, rows r0..r1: exp and sum row by row, then the group's logs
    # in one loop, then each row's loss and gradient.
    wide_vectors()
    x, y, w, sw = unmanaged(x), unmanaged(y), unmanaged(w), unmanaged(sw)
    loss_rows, grad = unmanaged(loss_rows), unmanaged(grad)
    n_classes = x.shape[1]
    fix = fixed_point_scale(n_classes)
    xi = int_view(x)
    want_grad = grad.shape[0] > 0
    group = imin(imax(GROUP_ELEMENTS // n_classes, 1), GROUP_ROWS)
    xf = xi.reshape(x.shape[0] * n_classes)
    step = 64 // x.itemsize  # elements a cache line
    prefetch = n_classes * x.itemsize <= PREFETCH_ROW_BYTES
    # The exp values go to the gradient rows (finished in place, in L1), or
    # to a scratch group when there is no gradient or it is the logits
    # themselves (out=logits: a loop reading and writing one memory through
    # two arrays stays scalar, LLVM's runtime overlap check fails). Scratch
    # for every call is slower: the finish then streams to a gradient row
    # not yet in cache.
    scratch = not want_grad or x.ctypes.data == grad.ctypes.data
    sc = np.empty((group if scratch else 0, n_classes), x.dtype)
    per_row = np.empty(5 * GROUP_ROWS, np.float64)
    ss, logs = per_row[:GROUP_ROWS], per_row[GROUP_ROWS : 2 * GROUP_ROWS]
    d_ys = per_row[2 * GROUP_ROWS : 3 * GROUP_ROWS]
    wds = per_row[3 * GROUP_ROWS : 4 * GROUP_ROWS]
    ms = per_row[4 * GROUP_ROWS :]
    for g0 in range(r0, r1, group):
        n = imin(r1 - g0, group)
        for r in range(n):
            if prefetch:
                lo = (g0 + r + 2) * n_classes  # two rows ahead
                prefetch_lines(xf, lo, lo + n_classes, step)
            if scratch:
                s, d_y, wd, m = _ce_hard_row_sum(x, xi, y, w, w_total, sw,
                                                 ignore_index, eps, gscale, loss_rows,
                                                 want_grad, grad, sc, r, fix, g0 + r,
                                                 z, zrows)  # fmt: skip
            else:
                s, d_y, wd, m = _ce_hard_row_sum(x, xi, y, w, w_total, sw,
                                                 ignore_index, eps, gscale, loss_rows,
                                                 want_grad, grad, grad, g0 + r, fix,
                                                 g0 + r, z, zrows)  # fmt: skip
            ss[r] = s
            d_ys[r] = d_y
            wds[r] = wd
            ms[r] = m
        for r in range(n):
            s = ss[r]
            logs[r] = log_f64(s if s > 0.0 else 1.0)
        if cap is not None:
            _group_finish_capped(w, w_total, sw, eps, gscale, loss_rows, want_grad,
                                 sc, grad, x, y, g0, n, ss, logs, d_ys, wds, ms, z,
                                 cap, scratch)  # fmt: skip
        else:
            _group_finish(w, w_total, sw, eps, gscale, loss_rows, want_grad, sc, grad,
                          x, y, g0, n, ss, logs, d_ys, wds, ms, z, cap,
                          scratch)  # fmt: skip
        if z is not None:
            if zrows.shape[0] > 0:
                _z_rows(w, sw, z, zrows, y, g0, n, ss, ms, logs)


def _make_tile_finish(capped):
    """The finish of a tile of narrow rows (exp values in ``e`` from row
    ``e0``, the exact rows' gradients in ``exact``), plain or soft-capped."""
    fin = _finish_in_place_capped if capped else _finish_in_place

    def tile_finish(w, w_total, sw, ignore_index, eps, gscale, loss_rows, want_grad,
                    e, e0, exact, is_exact, y, r0, n, ss, logs, d_ys, wds, ms, z, cap,
                    d2):  # fmt: skip
        n_classes = w.shape[0]
        for r in range(n):
            i = r0 + r
            ei = e0 + r
            if is_exact[r]:
                if want_grad:
                    for k in range(n_classes):
                        e[ei, k] = exact[r, k]
                continue
            if y[i] == ignore_index:
                loss_rows[i] = 0.0
                for k in range(n_classes):
                    e[ei, k] = 0.0
                continue
            # (the capped logits as d + m: e may be the logits themselves)
            fin(w, w_total, sw, eps, gscale, loss_rows, want_grad, e, ei, e, i, ss[r],
                logs[r], d_ys[r], wds[r], y[i], ms[r], z, cap, d2, r,
                np.float64(ms[r]))  # fmt: skip

    return njit(inline="always")(tile_finish)


_tile_finish = _make_tile_finish(False)
_tile_finish_capped = _make_tile_finish(True)


@cached_helper
@njit(**HELPER)
def _ce_hard_tile(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                  r0, r1, z, cap, zrows):  # fmt: skip
    # Narrow rows (few classes): a row-at-a-time exp loop is mostly scalar
    # remainder, so the tile's rows are shifted into one flat array and
    # exponentiated in a single vector loop.
    wide_vectors()
    n_classes = x.shape[1]
    n = r1 - r0
    want_grad = grad.shape[0] > 0
    ms = np.empty(n, x.dtype)
    xi = int_view(x)
    # Rows holding NaN/inf take the exact scalar path right here, while their
    # logits are unread by anything else; their gradient rows wait in
    # `exact` until the tile's vector loop (which writes every row) is done.
    n_exact = 0
    # The next tile (the next rows: this thread's next task, mostly) is asked
    # for while this one is computed, a row's cache lines per row: the
    # hardware prefetcher alone left each tile's first pass waiting on memory.
    xf = xi.reshape(x.shape[0] * n_classes)
    step = 64 // x.itemsize  # elements a cache line
    nxt_lo = r1 * n_classes & -step
    nxt_hi = imin(r1 + n, x.shape[0]) * n_classes
    per_row = (nxt_hi - nxt_lo + n * step - 1) // (n * step)  # lines a row
    # Rows under 4 cache lines go without: there the prefetches cost more
    # than they hide.
    prefetch = n_classes >= 4 * step
    for r in range(n):
        if prefetch:
            lo = nxt_lo + r * per_row * step
            prefetch_lines(xf, lo, imin(lo + per_row * step, nxt_hi), step)
        m, finite = row_max(xi, r0 + r)
        ms[r] = m
        if y[r0 + r] != ignore_index and not finite:
            n_exact += 1
    exact = np.empty((n if n_exact > 0 else 0, n_classes), x.dtype)
    is_exact = np.zeros(n, np.bool_)
    d = np.empty(n * n_classes, x.dtype)
    d2 = d.reshape(n, n_classes)
    # the tile's float64 per-row values, in one allocation
    per_row = np.empty(4 * n, np.float64)
    d_ys, wds, ss, logs = (
        per_row[:n],
        per_row[n : 2 * n],
        per_row[2 * n : 3 * n],
        per_row[3 * n :],
    )
    wds[:] = 0.0
    for r in range(n):
        i = r0 + r
        m = ms[r]
        if y[i] == ignore_index or n_exact > 0 and not row_max(xi, i)[1]:
            if y[i] != ignore_index:
                is_exact[r] = True
                _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows,
                                   want_grad, exact, r, i, z, zrows)  # fmt: skip
            for k in range(n_classes):
                d2[r, k] = 0.0
            continue
        d_ys[r] = np.float64(x[i, y[i]]) - np.float64(m)
        if eps > 0.0:
            wds[r] = shifted_dot(w, x, i, np.float64(m))
        # (d2[r, k], not d[r * C + k]: Numba wraps a computed index that may
        # be negative around at run time, and the loop then stays scalar)
        for k in range(n_classes):
            d2[r, k] = x[i, k] - m
    # e: the tile's gradient rows (row ei = i), or a scratch tile (ei = r).
    if want_grad:
        e = grad
        e0 = r0
    else:
        e = np.empty((n, n_classes), x.dtype)
        e0 = 0
    flat = e[e0 : e0 + n].reshape(n * n_classes)
    for j in range(n * n_classes):
        flat[j] = exp_nonpos(d[j])
    # Row sums (int64 fixed point as for wide rows: an in-order float64 sum
    # is a chain of dependent adds), then their logs in one vector loop, then
    # each row's loss and gradient.
    ss[:] = 1.0  # for rows skipped below: log(1) = 0
    fix = fixed_point_scale(n_classes)
    for r in range(n):
        if is_exact[r] or y[r0 + r] == ignore_index:
            continue
        ss[r] = fixed_sum(e, e0 + r, n_classes, fix)
    for r in range(n):
        logs[r] = log_f64(ss[r])
    if cap is not None:
        _tile_finish_capped(w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                            want_grad, e, e0, exact, is_exact, y, r0, n, ss, logs,
                            d_ys, wds, ms, z, cap, d2)  # fmt: skip
    else:
        _tile_finish(w, w_total, sw, ignore_index, eps, gscale, loss_rows, want_grad,
                     e, e0, exact, is_exact, y, r0, n, ss, logs, d_ys, wds, ms, z, cap,
                     d2)  # fmt: skip
    if z is not None:
        if zrows.shape[0] > 0:
            for r in range(n):  # (the exact rows wrote theirs)
                if is_exact[r] or y[r0 + r] == ignore_index:
                    ss[r] = 0.0
            _z_rows(w, sw, z, zrows, y, r0, n, ss, ms, logs)


@njit(inline="always")
def _rows_per_tile(n_classes):
    return imax(NARROW_TILE // n_classes, 1)


@njit(inline="always")
def _rows_per_task(n_classes):
    return imax(NARROW_TILE // n_classes, ROWS_PER_TASK)


@njit(inline="always")
def _prologue(x, y, w, sw, ignore_index, reduction):
    # (first bad label or -1, the mean's denominator, whether to run the rows,
    # the gradient scale)
    first_bad, denom = scan_hard_labels(y, x.shape[1], ignore_index, w, sw)
    mean = reduction == REDUCE_MEAN
    run = not (first_bad >= 0 or (mean and denom == 0.0))
    return first_bad, denom, run, 1.0 / denom if mean and run else 1.0


@njit(inline="always")
def _epilogue(first_bad, denom, loss_rows, reduction):
    total = ordered_total(loss_rows) if reduction != REDUCE_NONE else 0.0
    return first_bad, denom, total


# Every driver scans the labels, runs the rows and totals the loss in one
# compiled call: (index of the first bad label or -1, the mean's denominator,
# the total of loss_rows for "sum"/"mean"). Nothing is written when a label
# is bad or a "mean" has a zero denominator. The label scan and the total
# are serial in the parallel drivers too (code outside ``prange``), so both
# drivers of a pair return the same bits. Two pairs, chosen by the caller
# from C: a call compiles only the loop shape it uses. The options ``z``
# (z-loss scale) and ``cap`` (soft-capping) are None when off: Numba prunes
# their code from that variant, so a plain call compiles neither the
# soft-capped finish nor the z-loss. ``zrows`` (the z-loss terms' output,
# empty when not wanted) is read only when ``z`` is given.


@cached
@njit(parallel=True, **JIT)
def ce_hard_par(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows, grad, z,
               cap, zrows):  # fmt: skip
    """Rows wider than the tile kernel's, _rows_per_task rows a task."""
    first_bad, denom, run, gscale = _prologue(x, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = x.shape[0]
    per_task = _rows_per_task(x.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _ce_hard_rows(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, r0, imin(n_rows, r0 + per_task), z, cap,
                      zrows)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(**JIT)
def ce_hard_ser(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows, grad, z,
               cap, zrows):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(x, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    # (np.int64(0): a literal 0 would compile the helper apart from ce_hard_par's)
    _ce_hard_rows(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                  np.int64(0), x.shape[0], z, cap, zrows)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(parallel=True, **JIT)
def ce_narrow_par(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows,
                  grad, z, cap, zrows):  # fmt: skip
    """Narrow rows, a tile of rows a task."""
    first_bad, denom, run, gscale = _prologue(x, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = x.shape[0]
    per_task = _rows_per_tile(x.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _ce_hard_tile(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, r0, imin(n_rows, r0 + per_task), z, cap,
                      zrows)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(**JIT)
def ce_narrow_ser(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows,
                  grad, z, cap, zrows):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(x, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = x.shape[0]
    per_task = _rows_per_tile(x.shape[1])
    for r0 in range(0, n_rows, per_task):
        _ce_hard_tile(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, r0, imin(n_rows, r0 + per_task), z, cap,
                      zrows)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


# Soft-capping (``softcap``): the logits become cap * tanh(x / cap) before the
# hard-label kernels run on them in place (tanh in float64, rounded once).


@njit(inline="always")
def _softcap_row(x, cap, out, i):
    inv = 1.0 / cap
    for k in range(x.shape[1]):
        out[i, k] = cap * math.tanh(np.float64(x[i, k]) * inv)


@cached
@njit(parallel=True, **JIT)
def softcap_par(x, cap, out):
    """out = cap * tanh(x / cap), row by row (out may be x)."""
    for i in prange(x.shape[0]):
        _softcap_row(x, cap, out, i)


@cached
@njit(**JIT)
def softcap_ser(x, cap, out):
    for i in range(x.shape[0]):
        _softcap_row(x, cap, out, i)
