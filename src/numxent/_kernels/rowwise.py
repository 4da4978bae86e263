"""Row-wise logsumexp / log_softmax / softmax, and their cached drivers."""

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

MODE_LOGSUMEXP = 0
MODE_LOG_SOFTMAX = 1
MODE_SOFTMAX = 2


@njit(**HELPER)
def _softmax_row_exact(x, mode, lse, out, i):
    n = x.shape[1]
    m = row_max_exact(x, i)
    if mode == MODE_LOGSUMEXP and (m == np.inf or m == -np.inf):
        # +inf dominates and an all -inf row sums to 0 (log 0 = -inf), unless
        # a NaN is present, which must win as it does in PyTorch.
        r = m
        for k in range(n):
            if x[i, k] != x[i, k]:
                r = np.nan
        lse[i] = r
        return
    s = exp_sum_exact(x, i, m, out, i, mode == MODE_SOFTMAX)
    log_s = math.log(s)
    if mode == MODE_LOGSUMEXP:
        lse[i] = m + log_s
    elif mode == MODE_LOG_SOFTMAX:
        for k in range(n):
            out[i, k] = (x[i, k] - m) - log_s
    else:
        for k in range(n):
            out[i, k] = out[i, k] / s


@njit(inline="always")
def _softmax_row(x, xi, mode, lse, out, e, ei, fix, i):
    m, finite = row_max(xi, i)
    if not finite:
        _softmax_row_exact(x, mode, lse, out, i)
        return
    s = exp_shifted(x, i, m, e, ei, fix)
    log_s = math.log(s)
    if mode == MODE_LOGSUMEXP:
        lse[i] = np.float64(m) + log_s
    elif mode == MODE_LOG_SOFTMAX:
        for k in range(x.shape[1]):
            out[i, k] = (np.float64(x[i, k]) - m) - log_s
    else:
        c = 1.0 / s
        for k in range(x.shape[1]):
            e[ei, k] = e[ei, k] * c


@cached_helper
@njit(**HELPER)
def _softmax_task(x, mode, lse, out, b):
    wide_vectors()
    x, lse, out = unmanaged(x), unmanaged(lse), unmanaged(out)
    n_rows, n = x.shape
    rows = range(b * ROWS_PER_TASK, imin(n_rows, (b + 1) * ROWS_PER_TASK))
    fix = fixed_point_scale(x.shape[1])
    xi = int_view(x)
    if mode == MODE_SOFTMAX:
        for i in rows:
            _softmax_row(x, xi, mode, lse, out, out, i, fix, i)
    else:
        scratch = np.empty((1, n), x.dtype)
        for i in rows:
            _softmax_row(x, xi, mode, lse, out, scratch, 0, fix, i)


@cached
@njit(parallel=True, **JIT)
def softmax_par(x, mode, lse, out):
    for b in prange((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _softmax_task(x, mode, lse, out, np.int64(b))  # (int64: see ce_soft_par)


@cached
@njit(**JIT)
def softmax_ser(x, mode, lse, out):
    for b in range((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _softmax_task(x, mode, lse, out, b)
