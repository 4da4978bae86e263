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
from numba import njit, prange, types
from numba.extending import overload

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
# vectorisable row max and exp
# --------------------------------------------------------------------------
#
# With fastmath off LLVM keeps every floating-point operation in source order,
# so a float max or sum reduction and a call to libm's scalar exp never turn
# into SIMD code (and there is no SVML here). The helpers below are written
# so that each loop *is* vectorisable without reordering anything:
#
# * row_max: the max of an order-preserving integer key of the float bits
#   (flip the magnitude bits of negatives) -- an integer reduction, exact.
#   It also reports whether the row is "finite", i.e. holds no NaN and a
#   finite max; other rows take the exact scalar path (``*_exact``).
# * exp_shifted: e_k = exp(x_k - m) for x_k <= m by Cody-Waite reduction,
#   d = k ln2 + r with k = rint(d log2 e) (the 1.5*2**mantissa "magic number"
#   rounding), ln2 split in a high part with trailing zero bits (k*ln2hi is
#   exact) and a low part, |r| <= ln2/2, then a polynomial p(r) ~ exp(r) and
#   the power 2**k written as raw exponent bits into a scratch row of integers
#   that is read back as floats -- in its own loop, the only form that LLVM
#   vectorises. Arguments below the smallest normal power of two (d < -87.34
#   in float32, -708.4 in float64) give exactly 0 (the true value is below
#   1.2e-38 / 2.3e-308 of the row's largest term, which is 1).
#   Accuracy: float32 uses the degree-7 Taylor polynomial (truncation error
#   < 4e-9 relative on |r| <= ln2/2) in float32 Horner form; float64 the
#   degree-13 Taylor polynomial (truncation < 1e-17). Measured against
#   NumPy's exp (float32: float64 exp rounded once; float64: longdouble exp):
#   over all 1,118,738,843 float32 d in [-87.3, 0] at most 1 ulp (99.2 %
#   exact); on 10**7 random float64 d in [-708, 0] at most 1.15 ulp.
#   tests/test_exp_accuracy.py holds the bound at 2 ulp (the float32 sweep
#   is its `slow` test).
# * The sum of the e_k: float32 rows accumulate int64 fixed point
#   (e * 2**(62 - bitlen(C)), exact integer adds: vectorisable and order-free;
#   the truncation costs < C * 2**-47 relative at C < 32768), float64 rows four
#   interleaved float64 partial sums in a fixed order.
#
# Every result is a function of the row alone, so it is the same whichever
# thread computes it.

_F32_LO = np.float32(-87.33654)
_F32_LOG2E = np.float32(1.4426950408889634)
_F32_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23
_F32_LN2HI = np.float32(0.693359375)
_F32_LN2LO = np.float32(-2.12194440e-4)
_F32_P = tuple(np.float32(1.0 / math.factorial(j)) for j in range(8))
_F64_LO = -708.3964185322641
_F64_LOG2E = 1.4426950408889634
_F64_MAGIC = 6755399441055744.0  # 1.5 * 2**52
_F64_LN2HI = 6.93147180369123816490e-01
_F64_LN2LO = 1.90821492927058770002e-10
_F64_P = tuple(1.0 / math.factorial(j) for j in range(14))


def row_max(xr, scratch):
    """(max of xr, whether the row is finite); ``scratch`` >= 1 element."""
    raise NotImplementedError("numba-only")


def exp_shifted(xr, m, er, bits):
    """er[k] = exp(xr[k] - m); returns sum_k er[k] in float64."""
    raise NotImplementedError("numba-only")


def _make_row_max(itype, shift, abs_mask, inf_bits):
    def impl(xr, scratch):
        xi = xr.view(itype)
        key_max = itype(-1) << shift
        nan = itype(0)
        for k in range(xr.shape[0]):
            b = xi[k]
            key = b ^ ((b >> shift) & abs_mask)
            key_max = key if key > key_max else key_max
            nan |= itype((b & abs_mask) > inf_bits)
        si = scratch.view(itype)
        si[0] = key_max ^ ((key_max >> shift) & abs_mask)
        return scratch[0], nan == 0 and (si[0] & abs_mask) < inf_bits

    return impl


@overload(row_max, inline="always")
def _row_max_impl(xr, scratch):
    if xr.dtype == types.float32:
        return _make_row_max(
            np.int32, np.int32(31), np.int32(0x7FFFFFFF), np.int32(0x7F800000)
        )
    return _make_row_max(
        np.int64,
        np.int64(63),
        np.int64(0x7FFFFFFFFFFFFFFF),
        np.int64(0x7FF0000000000000),
    )


def _exp_shifted_f32(xr, m, er, bits):
    lo, log2e, magic, hi, lo2 = _F32_LO, _F32_LOG2E, _F32_MAGIC, _F32_LN2HI, _F32_LN2LO
    p0, p1, p2, p3, p4, p5, p6, p7 = _F32_P
    n = xr.shape[0]
    bi = bits.view(np.int32)
    for k in range(n):
        d0 = xr[k] - m
        d = d0 if d0 > lo else lo
        kf = (d * log2e + magic) - magic
        r = (d - kf * hi) - kf * lo2
        p = ((((((p7 * r + p6) * r + p5) * r + p4) * r + p3) * r + p2) * r + p1) * r
        er[k] = p + p0 if d0 >= lo else np.float32(0.0)
        bi[k] = (np.int32(kf) + np.int32(127)) << 23
    nbits = 0
    while (1 << nbits) <= n:
        nbits += 1
    fix = 2.0 ** (62 - nbits)
    acc = np.int64(0)
    for k in range(n):
        e = er[k] * bits[k]
        er[k] = e
        acc += np.int64(e * fix)
    return acc / fix


def _exp_shifted_f64(xr, m, er, bits):
    lo, log2e, magic, hi, lo2 = _F64_LO, _F64_LOG2E, _F64_MAGIC, _F64_LN2HI, _F64_LN2LO
    p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13 = _F64_P
    n = xr.shape[0]
    bi = bits.view(np.int64)
    for k in range(n):
        d0 = xr[k] - m
        d = d0 if d0 > lo else lo
        kf = (d * log2e + magic) - magic
        r = (d - kf * hi) - kf * lo2
        p = p13 * r + p12
        p = ((((p * r + p11) * r + p10) * r + p9) * r + p8) * r + p7
        p = (((((p * r + p6) * r + p5) * r + p4) * r + p3) * r + p2) * r + p1
        er[k] = p * r + p0 if d0 >= lo else 0.0
        bi[k] = (np.int64(kf) + np.int64(1023)) << 52
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    n4 = n - n % 4
    for k in range(0, n4, 4):
        e0 = er[k] * bits[k]
        e1 = er[k + 1] * bits[k + 1]
        e2 = er[k + 2] * bits[k + 2]
        e3 = er[k + 3] * bits[k + 3]
        er[k] = e0
        er[k + 1] = e1
        er[k + 2] = e2
        er[k + 3] = e3
        s0 += e0
        s1 += e1
        s2 += e2
        s3 += e3
    for k in range(n4, n):
        e0 = er[k] * bits[k]
        er[k] = e0
        s0 += e0
    return (s0 + s1) + (s2 + s3)


@overload(exp_shifted, inline="always")
def _exp_shifted_impl(xr, m, er, bits):
    if xr.dtype == types.float32:
        return _exp_shifted_f32
    return _exp_shifted_f64


@njit(inline="always")
def _shifted_dot(w, xr, m):
    """sum_k w_k (x_k - m) in float64, zero weights skipped (0 * -inf = 0)."""
    n = xr.shape[0]
    s0 = 0.0
    s1 = 0.0
    n2 = n - n % 2
    for k in range(0, n2, 2):
        s0 += w[k] * (xr[k] - m) if w[k] != 0.0 else 0.0
        s1 += w[k + 1] * (xr[k + 1] - m) if w[k + 1] != 0.0 else 0.0
    for k in range(n2, n):
        s0 += w[k] * (xr[k] - m) if w[k] != 0.0 else 0.0
    return s0 + s1


# Rows per parallel task: each task allocates its scratch rows once.
ROWS_PER_TASK = 16


# --------------------------------------------------------------------------
# softmax cross-entropy, hard (integer) labels
# --------------------------------------------------------------------------


@njit(inline="always")
def _ce_hard_row_exact(
    x, y, w, w_total, sw, eps, gscale, loss_rows, grad, want_grad, i
):
    # Scalar float64 path for rows holding NaN or +inf, or all -inf: PyTorch's
    # NaN/inf pattern falls out of plain libm arithmetic.
    n_classes = x.shape[1]
    yi = y[i]
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


@njit(inline="always")
def _ce_hard_row(
    x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad, scratch, bits, i
):
    n_classes = x.shape[1]
    want_grad = grad.shape[0] > 0
    yi = y[i]
    if yi == ignore_index:
        # Padding rows may hold garbage: neither read nor propagated.
        loss_rows[i] = 0.0
        if want_grad:
            for k in range(n_classes):
                grad[i, k] = 0.0
        return
    xr = x[i]
    m, finite = row_max(xr, bits)
    if not finite:
        _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows, grad,
                           want_grad, i)  # fmt: skip
        return
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    # Everything that reads the logits happens before exp_shifted, which may
    # write into them (out=logits).
    d_y = np.float64(xr[yi]) - np.float64(m)
    smooth = eps > 0.0
    wd = _shifted_dot(w, xr, np.float64(m)) if smooth else 0.0
    er = grad[i] if want_grad else scratch
    s = exp_shifted(xr, m, er, bits)
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
        if smooth:
            b = scale * eps / n_classes
            for k in range(n_classes):
                er[k] = c * er[k] - b * w[k]
        else:
            for k in range(n_classes):
                er[k] = c * er[k]
        er[yi] -= scale * (1.0 - eps) * w_y


@njit(inline="always")
def _ce_hard_task(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad, b):
    n_rows, n_classes = x.shape
    bits = np.empty(n_classes, x.dtype)
    scratch = np.empty(n_classes if grad.shape[0] == 0 else 0, x.dtype)
    for i in range(b * ROWS_PER_TASK, min(n_rows, (b + 1) * ROWS_PER_TASK)):
        _ce_hard_row(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                     grad, scratch, bits, i)  # fmt: skip


@njit(parallel=True, **_JIT)
def ce_hard_par(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad):
    for b in prange((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _ce_hard_task(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, b)  # fmt: skip


@njit(**_JIT)
def ce_hard_ser(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad):
    for b in range((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _ce_hard_task(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, b)  # fmt: skip


# --------------------------------------------------------------------------
# softmax cross-entropy, soft labels (class probabilities)
# --------------------------------------------------------------------------


@njit(inline="always")
def _ce_soft_row_exact(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i):
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


@njit(inline="always")
def _ce_soft_row(x, t, w, sw, eps, gscale, loss_rows, grad, scratch, bits, i):
    n_classes = x.shape[1]
    want_grad = grad.shape[0] > 0
    xr = x[i]
    tr = t[i]
    m, finite = row_max(xr, bits)
    if not finite:
        _ce_soft_row_exact(x, t, w, sw, eps, gscale, loss_rows, grad, want_grad, i)
        return
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    u = eps / n_classes
    mf = np.float64(m)
    # Target terms first: exp_shifted may overwrite the logits (out=logits).
    a0 = 0.0
    a1 = 0.0
    ad0 = 0.0
    ad1 = 0.0
    n2 = n_classes - n_classes % 2
    for k in range(0, n2, 2):
        a = w[k] * ((1.0 - eps) * tr[k] + u)
        a0 += a
        ad0 += a * (xr[k] - mf) if a != 0.0 else 0.0  # xlogy: 0 * -inf = 0
        a = w[k + 1] * ((1.0 - eps) * tr[k + 1] + u)
        a1 += a
        ad1 += a * (xr[k + 1] - mf) if a != 0.0 else 0.0
    for k in range(n2, n_classes):
        a = w[k] * ((1.0 - eps) * tr[k] + u)
        a0 += a
        ad0 += a * (xr[k] - mf) if a != 0.0 else 0.0
    big_a = a0 + a1
    ad = ad0 + ad1
    er = grad[i] if want_grad else scratch
    s = exp_shifted(xr, m, er, bits)
    loss_rows[i] = s_w * (big_a * math.log(s) - ad)
    if want_grad:
        scale = s_w * gscale
        c = scale * big_a / s
        for k in range(n_classes):
            er[k] = c * er[k] - scale * (w[k] * ((1.0 - eps) * tr[k] + u))


@njit(inline="always")
def _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, b):
    n_rows, n_classes = x.shape
    bits = np.empty(n_classes, x.dtype)
    scratch = np.empty(n_classes if grad.shape[0] == 0 else 0, x.dtype)
    for i in range(b * ROWS_PER_TASK, min(n_rows, (b + 1) * ROWS_PER_TASK)):
        _ce_soft_row(x, t, w, sw, eps, gscale, loss_rows, grad, scratch, bits, i)


@njit(parallel=True, **_JIT)
def ce_soft_par(x, t, w, sw, eps, gscale, loss_rows, grad):
    for b in prange((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, b)


@njit(**_JIT)
def ce_soft_ser(x, t, w, sw, eps, gscale, loss_rows, grad):
    for b in range((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, b)


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
