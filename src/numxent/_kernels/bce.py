"""Binary cross-entropy with logits (elementwise), and its cached drivers."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import as_strided

from .._config import cached, cached_helper
from ._intrinsics import HELPER, JIT, as_readonly, by_width, fma, imin, wide_vectors
from ._vecmath import _F32_LO, exp_f32, exp_f64, make_horner, ordered_sum

# Elements per parallel block. Fixed, so the per-block partial sums (and
# therefore the reduced loss) do not depend on the number of threads.
BCE_BLOCK = 8192

_LN2 = 0.6931471805599453
_SQRT2_M1 = 0.41421356237309503

# exp for float32 BCE tails down to the subnormal range: below the normal
# range the argument is shifted up by 22.1875 (few bits: the sum is exact)
# and the result scaled by exp(-22.1875) (one more rounding).
_F32_TAIL_SHIFT = np.float32(22.1875)
_F32_TAIL_SCALE = np.float32(math.exp(-22.1875))


@njit(inline="always")
def _exp_f32_wide(d0):
    """exp(d0) for d0 <= 0, float32, subnormal results included."""
    tail = d0 < _F32_LO
    e = exp_f32(d0 + _F32_TAIL_SHIFT if tail else d0)
    return e * _F32_TAIL_SCALE if tail else e


def _make_log1p_unit(ftype, n_terms):
    """log(1 + e) for e in [0, 1] in ``ftype`` arithmetic, vectorisable.

    log1p(e) = 2 atanh(v / (2 + v)) (+ ln 2) with v = e, or v = (e - 1) / 2
    when e > sqrt(2) - 1, so |s| = |v / (2 + v)| <= 0.1716 and the odd series
    in s converges: 12 terms for float64 (s**24/25 < 1e-19), 5 for float32
    (s**10/11 < 3e-9, below float32's 6e-8). No 1 + e is ever formed, so tiny
    e keep all their digits (log1p(e) ~ e).
    """
    series = make_horner(tuple(ftype(1.0 / (2 * j + 1)) for j in range(n_terms)))
    one, half, two, zero = ftype(1.0), ftype(0.5), ftype(2.0), ftype(0.0)
    ln2, sqrt2_m1 = ftype(_LN2), ftype(_SQRT2_M1)

    @njit(inline="always")
    def log1p_unit(e):
        # Both candidates are computed before the select: an expression inside
        # a conditional stays a branch, and a branch keeps the loop scalar.
        big = e > sqrt2_m1
        v_big = (e - one) * half
        v = v_big if big else e
        s = v / (two + v)
        z = s * s
        return fma(two * s, series(z), ln2 if big else zero)

    return log1p_unit


_log1p_unit_f32 = _make_log1p_unit(np.float32, 5)
_log1p_unit_f64 = _make_log1p_unit(np.float64, 12)


@by_width(0)
def bce_segment(bits):
    """One contiguous stretch of BCE: float32 or float64 arithmetic by x's
    dtype (fac, pwv, loss, grad have x's dtype).

    All arrays contiguous and aligned from 0: x, t and grad (the gradient or
    a scratch row) slices, fac (weight * sample weight), pwv (pos_weight).
    Only selects between values computed beforehand, so the loop vectorises.
    float32 rows stay float32 throughout: one vector width through the loop
    (twice float64's lanes) and float32-sized polynomials (exp degree
    7, log1p 5 terms); elementwise values are within a few float32 ulp, and
    block sums are float64.
    """
    ftype = np.float32 if bits == 32 else np.float64
    exp = _exp_f32_wide if bits == 32 else exp_f64
    log1p_unit = _log1p_unit_f32 if bits == 32 else _log1p_unit_f64
    one, zero = ftype(1.0), ftype(0.0)

    def bce_segment(x, t, fac, pwv, loss, grad, gscale):
        wide_vectors()
        gs = ftype(gscale)
        for c in range(x.shape[0]):
            xv = x[c]
            tv = t[c]
            pwt = pwv[c] * tv
            # loss = (1-t) max(x,0) + pw t max(-x,0) + (1+(pw-1)t) log1p(exp(-|x|)):
            # the overflow-free softplus form. A zero coefficient times an
            # infinite logit counts as 0, so x = +-inf gives the limit, not NaN.
            pos = xv if xv > zero else zero
            neg = -xv if xv < zero else zero
            e = exp(-abs(xv))
            pos_term = (one - tv) * pos
            neg_term = pwt * neg
            lv = (one + (pwv[c] - one) * tv) * log1p_unit(e)
            lv += pos_term if tv != one else zero
            lv += neg_term if pwt != zero else zero
            lv = fac[c] * lv
            loss[c] = lv if xv == xv else xv  # NaN logits propagate
            # d/dx = (1-t) sigmoid(x) - pw t sigmoid(-x): no cancellation in
            # the tails, unlike (1-t) - (1+(pw-1)t) sigmoid(-x).
            rcp = one / (one + e)
            e_rcp = e * rcp
            sig_pos = rcp if xv >= zero else e_rcp
            sig_neg = e_rcp if xv >= zero else rcp
            g = (fac[c] * gs) * ((one - tv) * sig_pos - pwt * sig_neg)
            grad[c] = g if xv == xv else xv

    return bce_segment


@njit(inline="always")
def _gather(out, a, start, step, n):
    # out[:n] = n elements of flat ``a`` from ``start``, ``step`` apart: one
    # vector loop for a row's contiguous or constant stretch. (Views indexed
    # from 0: Numba wraps a computed index such as start + c * step around at
    # run time, and the loop then stays scalar.)
    if step == 1:
        src = a[start : start + n]
        for c in range(n):
            out[c] = src[c]
    elif step == 0:
        v = a[start]
        for c in range(n):
            out[c] = v
    else:
        strided = as_strided(a[start:], shape=(n,), strides=(step * a.itemsize,))
        for c in range(n):
            out[c] = strided[c]


@cached_helper
@njit(**HELPER)
def _bce_block(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale,
               block_sums, elem_loss, grad, b):  # fmt: skip
    # x, t, grad, elem_loss are flat; steps[0] is the row length. When the
    # weights do not vary along rows (no weight, a (C,) pos_weight, ...), the
    # caller passes them periodically laid out (fac_pat, pw_pat, period =
    # len - BCE_BLOCK) and the block is one vector loop; with a per-row
    # sample weight (row_scale) a loop per row stretch; otherwise they are
    # gathered a row stretch at a time from w, pw, sw: flat read-only arrays
    # over the (rows, cols) weights' memory, element (r, c) of w at
    # r * steps[1] + c * steps[2] (pw: steps[3], steps[4]; sw: steps[5],
    # steps[6]), so any layout of the weights is one argument type.
    # (The weights go to bce_segment as read-only arrays, patterns and gathered
    # ones alike: one compilation of it, not one per array type. The losses
    # are copied out by loops: a slice assignment compiled Numba's shape
    # check and its error message's string formatting, 40 % of the kernel's
    # compile time.)
    wide_vectors()
    n_el = x.shape[0]
    n_cols = steps[0]
    start = b * BCE_BLOCK
    stop = imin(start + BCE_BLOCK, n_el)
    want_grad = grad.shape[0] > 0
    loss = np.empty(BCE_BLOCK, x.dtype)
    gscratch = np.empty(0 if want_grad else BCE_BLOCK, x.dtype)
    g = grad if want_grad else gscratch
    g0 = start if want_grad else 0
    total = 0.0
    if fac_pat.shape[0] > 0 and row_scale.shape[0] == 0:
        n = stop - start
        phase = start % (fac_pat.shape[0] - BCE_BLOCK)
        fac = fac_pat[phase : phase + n]
        pwv = pw_pat[phase : phase + n]
        bce_segment(x[start:stop], t[start:stop], as_readonly(fac), as_readonly(pwv),
                    loss, g[g0 : g0 + n], gscale)  # fmt: skip
        total = ordered_sum(loss, n)
        if elem_loss.shape[0] > 0:
            el = elem_loss[start:stop]
            for c in range(n):
                el[c] = loss[c]
    else:
        fac = np.empty(BCE_BLOCK, x.dtype)
        pwv = np.empty(BCE_BLOCK, x.dtype)
        wg = np.empty(BCE_BLOCK if row_scale.shape[0] == 0 else 0)  # (float64)
        swg = np.empty(BCE_BLOCK if row_scale.shape[0] == 0 else 0)
        j = start
        while j < stop:
            r = j // n_cols
            c0 = j - r * n_cols
            n = imin(stop - j, n_cols - c0)
            # (views indexed from 0: Numba wraps a computed index such as
            # c0 + c around at run time, and the loop then stays scalar)
            if row_scale.shape[0] > 0:
                scale_r = row_scale[r]
                fp, pp = fac_pat[c0 : c0 + n], pw_pat[c0 : c0 + n]
                for c in range(n):
                    fac[c] = fp[c] * scale_r
                    pwv[c] = pp[c]
            else:
                _gather(wg, w, r * steps[1] + c0 * steps[2], steps[2], n)
                _gather(swg, sw, r * steps[5] + c0 * steps[6], steps[6], n)
                _gather(pwv, pw, r * steps[3] + c0 * steps[4], steps[4], n)
                for c in range(n):
                    fac[c] = wg[c] * swg[c]
            gj = g0 + j - start
            bce_segment(x[j : j + n], t[j : j + n], as_readonly(fac), as_readonly(pwv),
                        loss, g[gj : gj + n], gscale)  # fmt: skip
            total += ordered_sum(loss, n)
            if elem_loss.shape[0] > 0:
                el = elem_loss[j : j + n]
                for c in range(n):
                    el[c] = loss[c]
            j += n
    block_sums[b] = total


@cached
@njit(parallel=True, **JIT)
def bce_par(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale, block_sums,
            elem_loss, grad):  # fmt: skip
    for b in prange(block_sums.shape[0]):
        _bce_block(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale,
                   block_sums, elem_loss, grad, np.int64(b))  # fmt: skip


@cached
@njit(**JIT)
def bce_ser(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale, block_sums,
            elem_loss, grad):  # fmt: skip
    for b in range(block_sums.shape[0]):
        _bce_block(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale,
                   block_sums, elem_loss, grad, b)  # fmt: skip
