"""Softmax cross-entropy with soft labels (class probabilities), and its
cached drivers."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import cached, cached_helper
from ._intrinsics import HELPER, JIT, imin, int_view, unmanaged, wide_vectors
from ._vecmath import (
    ROWS_PER_TASK,
    exp_shifted,
    exp_sum_exact,
    fixed_point_scale,
    row_max,
    row_max_exact,
)


@njit(**HELPER)
def _ce_soft_row_exact(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i):
    # The target terms are read before the exp values are stored: grad may
    # be x (out=x).
    n_classes = x.shape[1]
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    m = row_max_exact(x, i)
    u = eps / n_classes
    big_a = 0.0
    ad = 0.0
    for k in range(n_classes):
        a = w[k] * ((1.0 - eps) * t[i, k] + u)
        if a != 0.0:  # xlogy: a zero probability never meets -inf
            big_a += a
            ad += a * (x[i, k] - m)
    s = exp_sum_exact(x, i, m, grad, i, want_grad)
    loss_rows[i] = s_w * (big_a * math.log(s) - ad)
    if want_grad:
        scale = s_w * gscale
        c = scale * big_a / s
        for k in range(n_classes):
            a = w[k] * ((1.0 - eps) * t[i, k] + u)
            grad[i, k] = c * grad[i, k] - scale * a


@njit(inline="always")
def _ce_soft_row(x, xi, t, w, sw, eps, gscale, loss_rows, grad, e, ei, fix, i):
    n_classes = x.shape[1]
    want_grad = grad.shape[0] > 0
    m, finite = row_max(xi, i)
    if not finite:
        _ce_soft_row_exact(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i)
        return
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    u = eps / n_classes
    mf = np.float64(m)
    # Target terms first (the gradient row may be the logits: out=logits).
    a0 = 0.0
    a1 = 0.0
    ad0 = 0.0
    ad1 = 0.0
    n2 = n_classes - n_classes % 2
    for k in range(0, n2, 2):
        a = w[k] * ((1.0 - eps) * t[i, k] + u)
        a0 += a
        ad0 += a * (x[i, k] - mf) if a != 0.0 else 0.0  # xlogy: 0 * -inf = 0
        a = w[k + 1] * ((1.0 - eps) * t[i, k + 1] + u)
        a1 += a
        ad1 += a * (x[i, k + 1] - mf) if a != 0.0 else 0.0
    for k in range(n2, n_classes):
        a = w[k] * ((1.0 - eps) * t[i, k] + u)
        a0 += a
        ad0 += a * (x[i, k] - mf) if a != 0.0 else 0.0
    big_a = a0 + a1
    ad = ad0 + ad1
    s = exp_shifted(x, i, m, e, ei, fix)
    loss_rows[i] = s_w * (big_a * math.log(s) - ad)
    if want_grad:
        scale = s_w * gscale
        c = scale * big_a / s
        for k in range(n_classes):
            grad[i, k] = c * e[ei, k] - scale * (w[k] * ((1.0 - eps) * t[i, k] + u))


@cached_helper
@njit(**HELPER)
def _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, b):
    wide_vectors()
    x, t, w, sw = unmanaged(x), unmanaged(t), unmanaged(w), unmanaged(sw)
    loss_rows, grad = unmanaged(loss_rows), unmanaged(grad)
    n_rows, n_classes = x.shape
    rows = range(b * ROWS_PER_TASK, imin(n_rows, (b + 1) * ROWS_PER_TASK))
    fix = fixed_point_scale(x.shape[1])
    xi = int_view(x)
    # exp values in a scratch row when there is no gradient or it is the
    # logits (out=logits; see the wide hard-label rows), else in the gradient
    # row itself
    if grad.shape[0] > 0 and x.ctypes.data != grad.ctypes.data:
        for i in rows:
            _ce_soft_row(x, xi, t, w, sw, eps, gscale, loss_rows, grad, grad, i, fix, i)
    else:
        scratch = np.empty((1, n_classes), x.dtype)
        for i in rows:
            _ce_soft_row(x, xi, t, w, sw, eps, gscale, loss_rows, grad, scratch, 0, fix,
                         i)  # fmt: skip


@cached
@njit(parallel=True, **JIT)
def ce_soft_par(x, t, w, sw, eps, gscale, loss_rows, grad):
    for b in prange((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        # (the index as int64: Numba types a prange index as uint64 in the
        # gufunc it builds, and int64 in the kernel: two compilations)
        _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, np.int64(b))


@cached
@njit(**JIT)
def ce_soft_ser(x, t, w, sw, eps, gscale, loss_rows, grad):
    for b in range((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, b)
