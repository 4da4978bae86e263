"""Numba kernels: where every loss, gradient and softmax is computed.

Layer 1 of the package: loops only. Outputs are passed in, nothing is
allocated or validated here (``functional.py`` does that), and options are
runtime arguments so each kernel compiles once per logits dtype.

Every kernel comes as a pair, ``*_par`` (``prange`` over samples) and
``*_ser`` (``range``), built from the same ``inline="always"`` row function:
a row's values never depend on which variant or how many threads ran it, and
no kernel sums across rows (the caller reduces the per-row values in a fixed
order), so results are bitwise identical for any thread count.

Arithmetic is float64 whatever the storage dtype: float32 logits are widened
on load, and the gradient is rounded once on store.

Row layout of the softmax cross-entropy kernels (a row stays in cache between
the passes, so memory is read once and written once):

1. ``m = max_k x_k``;
2. ``e_k = exp(x_k - m)``, ``s = sum_k e_k`` and the target terms, with
   ``e_k`` parked in the gradient row (no scratch buffer);
3. ``grad_k = scale * (A * e_k / s - a_k)`` in place over ``e_k``, where
   ``a_k`` is the target weight of class ``k`` and ``A = sum_k a_k``.

The loss is ``sum_k a_k (log s - (x_k - m))``: both factors are >= 0, so the
sum has no cancellation however large the logits are.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_JIT = {"fastmath": False, "cache": True, "nogil": True}


@njit(inline="always")
def _row_max(x, i):
    # NaNs are skipped here; they reach the result through exp(NaN) later.
    m = -np.inf
    for k in range(x.shape[1]):
        v = x[i, k]
        if v > m:
            m = v
    return m


# --------------------------------------------------------------------------
# softmax cross-entropy, hard (integer) labels
# --------------------------------------------------------------------------


@njit(inline="always")
def _ce_hard_row(
    x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad, want_grad, i
):
    n_classes = x.shape[1]
    yi = y[i]
    if yi == ignore_index:
        # Padding rows may hold garbage: neither read nor propagated.
        loss_rows[i] = 0.0
        if want_grad:
            for k in range(n_classes):
                grad[i, k] = 0.0
        return
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    m = _row_max(x, i)
    d_y = x[i, yi] - m  # read before the gradient row may overwrite it (out=x)
    smooth = eps > 0.0
    s = 0.0
    wd = 0.0
    for k in range(n_classes):
        d = x[i, k] - m
        e = math.exp(d)
        s += e
        if smooth and w[k] != 0.0:  # xlogy: a zero weight never meets -inf
            wd += w[k] * d
        if want_grad:
            grad[i, k] = e
    log_s = math.log(s)
    w_y = w[yi]
    loss = (1.0 - eps) * w_y * (log_s - d_y)
    if smooth:
        loss += (eps / n_classes) * (w_total * log_s - wd)
    loss_rows[i] = s_w * loss
    if want_grad:
        scale = s_w * gscale
        big_a = (1.0 - eps) * w_y + (eps / n_classes) * w_total
        c = scale * big_a / s
        b = scale * eps / n_classes
        for k in range(n_classes):
            grad[i, k] = c * grad[i, k] - b * w[k]
        grad[i, yi] -= scale * (1.0 - eps) * w_y


@njit(parallel=True, **_JIT)
def ce_hard_par(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad):
    want_grad = grad.shape[0] > 0
    for i in prange(x.shape[0]):
        _ce_hard_row(
            x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
            want_grad, i,
        )  # fmt: skip


@njit(**_JIT)
def ce_hard_ser(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad):
    want_grad = grad.shape[0] > 0
    for i in range(x.shape[0]):
        _ce_hard_row(
            x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
            want_grad, i,
        )  # fmt: skip


# --------------------------------------------------------------------------
# softmax cross-entropy, soft labels (class probabilities)
# --------------------------------------------------------------------------


@njit(inline="always")
def _ce_soft_row(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i):
    n_classes = x.shape[1]
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    m = _row_max(x, i)
    u = eps / n_classes
    s = 0.0
    big_a = 0.0
    ad = 0.0
    for k in range(n_classes):
        d = x[i, k] - m
        e = math.exp(d)
        s += e
        a = w[k] * ((1.0 - eps) * t[i, k] + u)
        if a != 0.0:  # xlogy: a zero probability never meets -inf
            big_a += a
            ad += a * d
        if want_grad:
            grad[i, k] = e
    loss_rows[i] = s_w * (big_a * math.log(s) - ad)
    if want_grad:
        scale = s_w * gscale
        c = scale * big_a / s
        for k in range(n_classes):
            a = w[k] * ((1.0 - eps) * t[i, k] + u)
            grad[i, k] = c * grad[i, k] - scale * a


@njit(parallel=True, **_JIT)
def ce_soft_par(x, t, w, sw, eps, gscale, loss_rows, grad):
    want_grad = grad.shape[0] > 0
    for i in prange(x.shape[0]):
        _ce_soft_row(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i)


@njit(**_JIT)
def ce_soft_ser(x, t, w, sw, eps, gscale, loss_rows, grad):
    want_grad = grad.shape[0] > 0
    for i in range(x.shape[0]):
        _ce_soft_row(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i)


# --------------------------------------------------------------------------
# binary cross-entropy with logits (elementwise)
# --------------------------------------------------------------------------

# Elements per parallel block. Fixed, so the per-block partial sums (and
# therefore the reduced loss) do not depend on the number of threads.
BCE_BLOCK = 8192


@njit(inline="always")
def _bce_block(x, t, w, pw, sw, gscale, block_sums, elem_loss, grad, b):
    # x, t, grad, elem_loss are flat; w, pw, sw are (rows, cols) broadcast views.
    n = x.shape[0]
    n_cols = w.shape[1]
    start = b * BCE_BLOCK
    stop = min(start + BCE_BLOCK, n)
    want_grad = grad.shape[0] > 0
    want_elems = elem_loss.shape[0] > 0
    r = start // n_cols
    c = start - r * n_cols
    acc = 0.0
    for j in range(start, stop):
        xv = x[j] * 1.0
        tv = t[j] * 1.0
        pwt = pw[r, c] * tv
        s_w = sw[r, c]
        # loss = (1-t) max(x,0) + pw t max(-x,0) + (1+(pw-1)t) log1p(exp(-|x|)):
        # the overflow-free softplus form. A zero coefficient times an infinite
        # logit counts as 0, so x = +-inf gives the limit, not NaN.
        if xv > 0.0:
            pos = xv
            neg = 0.0
        else:
            pos = 0.0
            neg = -xv  # NaN lands here and propagates through log1p below
        e = math.exp(-abs(xv))
        loss = (1.0 + (pw[r, c] - 1.0) * tv) * math.log1p(e)
        if tv != 1.0:
            loss += (1.0 - tv) * pos
        if pwt != 0.0:
            loss += pwt * neg
        loss *= w[r, c] * s_w
        acc += loss
        if want_elems:
            elem_loss[j] = loss
        if want_grad:
            # d/dx = (1-t) sigmoid(x) - pw t sigmoid(-x): no cancellation in
            # the tails, unlike (1-t) - (1+(pw-1)t) sigmoid(-x).
            if xv >= 0.0:
                sig_pos = 1.0 / (1.0 + e)
                sig_neg = e / (1.0 + e)
            else:
                sig_pos = e / (1.0 + e)
                sig_neg = 1.0 / (1.0 + e)
            grad[j] = (w[r, c] * s_w * gscale) * ((1.0 - tv) * sig_pos - pwt * sig_neg)
        c += 1
        if c == n_cols:
            c = 0
            r += 1
    block_sums[b] = acc


@njit(parallel=True, **_JIT)
def bce_par(x, t, w, pw, sw, gscale, block_sums, elem_loss, grad):
    for b in prange(block_sums.shape[0]):
        _bce_block(x, t, w, pw, sw, gscale, block_sums, elem_loss, grad, b)


@njit(**_JIT)
def bce_ser(x, t, w, pw, sw, gscale, block_sums, elem_loss, grad):
    for b in range(block_sums.shape[0]):
        _bce_block(x, t, w, pw, sw, gscale, block_sums, elem_loss, grad, b)


# --------------------------------------------------------------------------
# row-wise logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------

MODE_LOGSUMEXP = 0
MODE_LOG_SOFTMAX = 1
MODE_SOFTMAX = 2


@njit(inline="always")
def _softmax_row(x, mode, lse, out, i):
    n = x.shape[1]
    m = _row_max(x, i)
    if mode == MODE_LOGSUMEXP and (m == np.inf or m == -np.inf):
        # +inf dominates and an all -inf row sums to 0 (log 0 = -inf), unless
        # a NaN is present, which must win as it does in PyTorch.
        r = m
        for k in range(n):
            if x[i, k] != x[i, k]:
                r = np.nan
        lse[i] = r
        return
    s = 0.0
    for k in range(n):
        e = math.exp(x[i, k] - m)
        s += e
        if mode == MODE_SOFTMAX:
            out[i, k] = e
    log_s = math.log(s)
    if mode == MODE_LOGSUMEXP:
        lse[i] = m + log_s
    elif mode == MODE_LOG_SOFTMAX:
        for k in range(n):
            out[i, k] = (x[i, k] - m) - log_s
    else:
        for k in range(n):
            out[i, k] = out[i, k] / s


@njit(parallel=True, **_JIT)
def softmax_par(x, mode, lse, out):
    for i in prange(x.shape[0]):
        _softmax_row(x, mode, lse, out, i)


@njit(**_JIT)
def softmax_ser(x, mode, lse, out):
    for i in range(x.shape[0]):
        _softmax_row(x, mode, lse, out, i)
