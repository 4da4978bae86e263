"""Hard-label softmax cross-entropy on bfloat16 / float16 logits, staged
through float32.

Numba has no bfloat16 (and no float16 on CPUs), so the kernels read the
logits' 16-bit patterns (a ``uint16`` view, read in place) and, a block of
rows at a time, widen them into a float32 scratch block that stays in cache:

* bfloat16: the bits shifted into the high half of a float32 (exact);
* float16: exponent rebias by a multiplication by 2**112 (exact for normal
  and subnormal values), infinities and NaNs (payload kept) by their bits.

The block then runs the float32 row functions of ``ce_hard`` (the tile of
narrow rows or the row-at-a-time wide rows), so every row's loss is
bitwise the float32 kernel's on the widened logits, and its float32
gradient is rounded to the logits' format into the output's ``uint16``
view: round to nearest, ties to even, overflow to infinity, NaN kept NaN
(float16: subnormal results rounded correctly too). That is exactly
NumPy's (float16) and ml_dtypes' (bfloat16) conversion of the float32
gradient.

The label scan, the mean's denominator and the loss total are those of the
float32 drivers (``_prologue`` / ``_epilogue``, serial, fixed order), so a
pair's two variants return the same bits for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import cached
from ._intrinsics import (
    JIT,
    as_readonly,
    bits_to_float,
    float_to_bits,
    imax,
    imin,
    wide_vectors,
)
from .ce_hard import (
    NARROW_TILE,
    _ce_hard_rows,
    _ce_hard_tile,
    _epilogue,
    _prologue,
    _rows_per_task,
    _rows_per_tile,
)
from .ce_lanes import _ce_hard_lanes, rows_per_lane_task

# The ``fmt`` argument: the 16-bit format of the logits and the gradient.
FMT_BFLOAT16, FMT_FLOAT16 = 0, 1

_F16_TO_F32_SCALE = np.float32(2.0**112)
_F32_TO_F16_UP = np.float32(2.0**112)
_F32_TO_F16_DOWN = np.float32(2.0**-110)
_I32_ABS = np.int32(0x7FFFFFFF)
_I32_INF = np.int32(0x7F800000)
_I32_7FFF = np.int32(0x7FFF)
_I32_EXP_LO = np.int32(0x38800000)  # 2**-14
_I32_EXP_HI = np.int32(0x47800000)  # 2**16
_I32_EXP_ADD = np.int32(0x07800000)
_I32_F16_NAN = np.int32(0x7E00)


@njit(inline="always")
def _i32(v):
    """int64 v in [-2**31, 2**32) as the int32 of its low 32 bits (wraps the
    way a compiled truncation does, NUMBA_DISABLE_JIT included)."""
    return np.int32(v - 0x100000000 if v >= 0x80000000 else v)


@njit(inline="always")
def _bf16_to_f32(h):
    return bits_to_float(_i32(np.int64(h) << 16))


@njit(inline="always")
def _f16_to_f32(h):
    sign = _i32((np.int64(h) & 0x8000) << 16)
    em = np.int32(np.int64(h) & 0x7FFF)
    # em << 13 puts the half's exponent and mantissa where float32's go; as
    # a float32 it is the half's value times 2**-112 (subnormals included).
    mag = bits_to_float(np.int32(em << 13)) * _F16_TO_F32_SCALE
    special = bits_to_float(np.int32((em << 13) | 0x7F800000))  # inf / NaN
    v = special if em >= 0x7C00 else mag
    return bits_to_float(np.int32(float_to_bits(v) | sign))


@njit(inline="always")
def _f32_to_bf16(f):
    # int32 throughout (each step cast back: Numba widens int32 arithmetic to
    # int64, which halves the vector lanes); no step can overflow int32.
    b = float_to_bits(f)
    if (b & _I32_ABS) > _I32_INF:  # NaN: quieted, sign and top payload kept
        return np.uint16(np.int32(b >> 16) & 0xFFFF | 0x40)
    lsb = np.int32(np.int32(b >> 16) & 1)
    t = np.int32(np.int32(b + _I32_7FFF) + lsb)
    return np.uint16(np.int32(t >> 16) & 0xFFFF)


@njit(inline="always")
def _f32_to_f16(f):
    # Round to nearest even with subnormals, overflow to inf and NaN to a
    # quiet NaN, in float32 arithmetic: scaling by 2**112 and 2**-110
    # overflows exactly the values that round to inf, and adding a power of
    # two of the right exponent makes the float32 addition round the
    # mantissa to the half's 10 (or fewer, subnormal) bits. In int32, as
    # above; the exponent is clamped to [2**-14, 2**16] (below: the
    # subnormal rounding point; above: base is inf already) so that nothing
    # overflows.
    w = float_to_bits(f)
    a = np.int32(w & _I32_ABS)
    base = (abs(f) * _F32_TO_F16_UP) * _F32_TO_F16_DOWN
    e = np.int32(a & _I32_INF)
    e = e if e > _I32_EXP_LO else _I32_EXP_LO
    e = e if e < _I32_EXP_HI else _I32_EXP_HI
    base = bits_to_float(np.int32(e + _I32_EXP_ADD)) + base
    bits = float_to_bits(base)
    nonsign = np.int32(
        np.int32(np.int32(bits >> 13) & 0x7C00) + np.int32(bits & 0x0FFF)
    )
    h = _I32_F16_NAN if a > _I32_INF else nonsign
    sign = np.int32(np.int32(w >> 16) & 0x8000)
    return np.uint16(np.int32(sign | h))


@njit(inline="always")
def _stage(xb, fmt, b0, n, sx):
    """sx[r] = the float32 value of logits row b0 + r, r < n."""
    n_classes = xb.shape[1]
    if fmt == FMT_BFLOAT16:
        for r in range(n):
            for k in range(n_classes):
                sx[r, k] = _bf16_to_f32(xb[b0 + r, k])
    else:
        for r in range(n):
            for k in range(n_classes):
                sx[r, k] = _f16_to_f32(xb[b0 + r, k])


@njit(inline="always")
def _unstage(sg, fmt, b0, n, gb):
    """gb[b0 + r] = the float32 gradient row sg[r] rounded to ``fmt``."""
    n_classes = gb.shape[1]
    if fmt == FMT_BFLOAT16:
        for r in range(n):
            for k in range(n_classes):
                gb[b0 + r, k] = _f32_to_bf16(sg[r, k])
    else:
        for r in range(n):
            for k in range(n_classes):
                gb[b0 + r, k] = _f32_to_f16(sg[r, k])


def _make_task(rows_fn):
    """The task body over rows r0..r1: staged blocks of ``block`` rows, each
    run by ``rows_fn`` (``_ce_hard_tile``, ``_ce_hard_lanes`` or
    ``_ce_hard_rows``: the one
    place the float32 row functions are called from). The staged block goes
    to them typed read-only, as float32 logits from the NumPy API do, and
    its first row as an int64 (a constant 0 is typed as the literal 0), so
    both share one compilation of the row function."""

    def task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, gb,
             r0, r1, block):  # fmt: skip
        wide_vectors()
        n_classes = xb.shape[1]
        want_grad = gb.shape[0] > 0
        has_sw = sw.shape[0] > 0
        size = imin(block, r1 - r0)
        # float32 logits and gradient of one block, allocated once a task
        sx = np.empty((size, n_classes), np.float32)
        sg = np.empty((size if want_grad else 0, n_classes), np.float32)
        no_rows = np.empty(0, np.float64)  # (no z-loss: never read)
        for b0 in range(r0, r1, block):
            n = imin(block, r1 - b0)
            _stage(xb, fmt, b0, n, sx)
            swb = sw[b0 : b0 + n] if has_sw else sw
            rows_fn(as_readonly(sx), y[b0 : b0 + n], w, w_total, swb, ignore_index,
                    eps, gscale, loss_rows[b0 : b0 + n], sg, np.int64(0), n, None,
                    None, no_rows)  # fmt: skip
            if want_grad:
                _unstage(sg, fmt, b0, n, gb)

    return njit(inline="always")(task)


_narrow_task = _make_task(_ce_hard_tile)
_lanes_task = _make_task(_ce_hard_lanes)
_wide_task = _make_task(_ce_hard_rows)


@njit(inline="always")
def _wide_block(n_classes):
    # rows staged at a time: about a tile's elements, at least one row
    return imax(NARROW_TILE // n_classes, 1)


# The drivers take the float32 drivers' arguments with the logits and the
# gradient as uint16 views (the gradient (0, C) for forward-only calls) and
# ``fmt``; they return what the float32 drivers return. Narrow rows: one tile
# a task, staged whole. Wide rows: _rows_per_task rows a task, staged
# _wide_block rows at a time. out=logits is safe: a block's logits are staged
# before its gradient is written, and blocks are disjoint.


@cached
@njit(parallel=True, **JIT)
def ce_lowp_narrow_par(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                       loss_rows, gb):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(xb, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = xb.shape[0]
    per_task = _rows_per_tile(xb.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _narrow_task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                     gb, r0, imin(n_rows, r0 + per_task), per_task)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(**JIT)
def ce_lowp_narrow_ser(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                       loss_rows, gb):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(xb, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = xb.shape[0]
    per_task = _rows_per_tile(xb.shape[1])
    for r0 in range(0, n_rows, per_task):
        _narrow_task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                     gb, r0, imin(n_rows, r0 + per_task), per_task)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(parallel=True, **JIT)
def ce_lowp_lanes_par(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                      loss_rows, gb):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(xb, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = xb.shape[0]
    per_task = rows_per_lane_task(xb.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _lanes_task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                    gb, r0, imin(n_rows, r0 + per_task), per_task)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(**JIT)
def ce_lowp_lanes_ser(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                      loss_rows, gb):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(xb, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = xb.shape[0]
    per_task = rows_per_lane_task(xb.shape[1])
    for r0 in range(0, n_rows, per_task):
        _lanes_task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                    gb, r0, imin(n_rows, r0 + per_task), per_task)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(parallel=True, **JIT)
def ce_lowp_wide_par(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                     loss_rows, gb):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(xb, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = xb.shape[0]
    per_task = _rows_per_task(xb.shape[1])
    block = _wide_block(xb.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _wide_task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                   gb, r0, imin(n_rows, r0 + per_task), block)  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)


@cached
@njit(**JIT)
def ce_lowp_wide_ser(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                     loss_rows, gb):  # fmt: skip
    first_bad, denom, run, gscale = _prologue(xb, y, w, sw, ignore_index, reduction)
    if not run:
        return first_bad, denom, 0.0
    n_rows = xb.shape[0]
    _wide_task(xb, fmt, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, gb,
               0, n_rows, _wide_block(xb.shape[1]))  # fmt: skip
    return _epilogue(first_bad, denom, loss_rows, reduction)
