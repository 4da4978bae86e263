"""Vectorisable row max, exp, log and fixed-point sums, and ``ordered_total``.

With fastmath off LLVM keeps every floating-point operation in source order,
so a float max or sum reduction and a call to libm's scalar exp never turn
into SIMD code (and there is no SVML here). The helpers below are written
so that each loop *is* vectorisable without reordering anything:

* row_max: the max of an order-preserving integer key of the float bits
  (flip the magnitude bits of negatives) -- an integer reduction, exact.
  It also reports whether the row is "finite", i.e. holds no NaN and a
  finite max; other rows take the exact scalar path (``*_exact``).
* exp_shifted: e_k = exp(x_k - m) for x_k <= m by Cody-Waite reduction,
  d = k ln2 + r with k = rint(d log2 e) (the 1.5*2**mantissa "magic number"
  rounding), ln2 split in a high part with trailing zero bits (k*ln2hi is
  exact) and a low part, |r| <= ln2/2, then a polynomial p(r) ~ exp(r)
  times 2**k, made by bit-casting the integer (k + bias) << mantissa_bits.
  Reduction and polynomial use fused multiply-adds (llvm.fma: one rounding
  each, the same on every thread; fastmath stays off). Arguments below the
  smallest normal power of two (d < -87.34 in float32, -708.4 in float64)
  give exactly 0 (the true value is below 1.2e-38 / 2.3e-308 of the row's
  largest term, which is 1).
  Accuracy: float32 uses the degree-7 Taylor polynomial (truncation error
  < 4e-9 relative on |r| <= ln2/2), float64 the degree-13 one (< 1e-17).
  Measured against NumPy's exp (float32: float64 exp rounded once; float64:
  longdouble exp): over all 1,118,738,843 float32 d in [-87.3, 0] at most
  1 ulp (99.55 % exact); on 10**7 random float64 d in [-708, 0] at most
  0.88 ulp. tests/test_exp_accuracy.py holds the bound at 2 ulp (the float32
  sweep is its `slow` test).
* The sum of the e_k is accumulated in int64 fixed point, e * 2**S with
  S = 62 - bitlen(C) so that it cannot overflow: integer adds vectorise and
  give the same sum in any order. Truncation costs < C * 2**-S relative for
  float32 (< 2.3e-10 at C = 32000); float64 keeps a second int64 sum of the
  truncated remainders scaled by 2**40, for < C * 2**-(S+40).

Every result is a function of the row alone, so it is the same whichever
thread computes it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._config import cached
from ._intrinsics import (
    HELPER,
    JIT,
    NT_LINE,
    address,
    bits_to_float,
    by_width,
    float_to_bits,
    fma,
    imin,
    store_nt_line,
    wide_vectors,
)
from ._intrinsics import prefetch as _prefetch

# Rows per parallel task of the row-at-a-time kernels: each task allocates
# its scratch rows once.
ROWS_PER_TASK = 16

_F32_LO = np.float32(-87.33654)
_F32_LOG2E = np.float32(1.4426950408889634)
_F32_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23
_F32_NLN2HI = np.float32(-0.693359375)
_F32_NLN2LO = np.float32(2.12194440e-4)
_F32_P = tuple(np.float32(1.0 / math.factorial(j)) for j in range(8))
# 127 - bits(1.5 * 2**23): turns bits(magic + k) into the biased exponent k+127
_F32_BIAS_FROM_MAGIC = np.int32(127 - 0x4B400000)
_F64_LO = -708.3964185322641
_F64_LOG2E = 1.4426950408889634
_F64_MAGIC = 6755399441055744.0  # 1.5 * 2**52
_F64_NLN2HI = -6.93147180369123816490e-01
_F64_NLN2LO = -1.90821492927058770002e-10
_F64_P = tuple(1.0 / math.factorial(j) for j in range(14))
_REMAINDER_SCALE = 2.0**40


def make_horner(coeffs):
    """An inline function z -> sum_j coeffs[j] z**j by Horner's rule in fused
    multiply-adds, innermost first: fma(...fma(fma(c_n, z, c_n-1), z, ...),
    z, c_0). Each coefficient is a compile-time constant.

    One function holding the whole chain, written out: a function per
    coefficient, each calling the next, made Numba inline 8-14 nested
    functions into every caller on every compilation.
    """
    n = len(coeffs)
    expr = f"c{n - 1}"
    for j in range(n - 2, -1, -1):
        expr = f"fma({expr}, z, c{j})"
    namespace = {"fma": fma, **{f"c{j}": c for j, c in enumerate(coeffs)}}
    exec(f"def horner(z):\n    return {expr}\n", namespace)
    return njit(inline="always")(namespace["horner"])


@njit(**HELPER)
def row_max_exact(x, i):
    # NaNs are skipped here; they reach the result through exp(NaN) later.
    m = -np.inf
    for k in range(x.shape[1]):
        v = x[i, k]
        if v > m:
            m = v
    return m


@njit(**HELPER)
def exp_sum_exact(x, i, m, e, ei, store):
    """sum_k exp(x[i, k] - m) by libm's exp in x's dtype, summed in float64;
    e[ei, k] = the terms when ``store``. The scalar path of rows holding NaN
    or +inf (or all -inf): PyTorch's NaN/inf pattern falls out of it."""
    s = 0.0
    for k in range(x.shape[1]):
        ek = math.exp(x[i, k] - m)
        s += ek
        if store:
            e[ei, k] = ek
    return s


@by_width(0)
def row_max(bits):
    """(max of row i, whether the row is finite); xi = int_view(logits)."""
    itype = np.int32 if bits == 32 else np.int64
    shift = itype(bits - 1)
    abs_mask = itype(0x7FFFFFFF) if bits == 32 else itype(0x7FFFFFFFFFFFFFFF)
    inf_bits = itype(0x7F800000) if bits == 32 else itype(0x7FF0000000000000)
    # key(-inf): keys below it are negative NaNs; keys from inf_bits = key(+inf)
    # up are +inf or positive NaNs. So the row is "finite" iff its key range
    # lies in [key(-inf), inf_bits) -- a min and a max, no per-element NaN test
    # -- and its max is above key(-inf) (a row of -inf has no finite max).
    neg_inf_key = itype(itype(-1) << shift) ^ abs_mask ^ inf_bits
    # The accumulators start from constants of the key's own width: an
    # expression such as ``itype(-1) << shift`` is int64 in Numba, and an
    # int64 accumulator widened every int32 key (4 float32 lanes a vector
    # instead of 8 or 16).
    key_lo = itype(np.iinfo(itype).min)
    key_hi = itype(np.iinfo(itype).max)

    def row_max(xi, i):
        wide_vectors()
        key_max = key_lo
        key_min = key_hi
        for k in range(xi.shape[1]):
            b = xi[i, k]
            # (numba widens int32 arithmetic to int64: cast back)
            key = itype(b ^ ((b >> shift) & abs_mask))
            key_max = key if key > key_max else key_max
            key_min = key if key < key_min else key_min
        m_bits = itype(key_max ^ ((key_max >> shift) & abs_mask))
        finite = key_max < inf_bits and key_min >= neg_inf_key
        return bits_to_float(m_bits), finite and key_max != neg_inf_key

    return row_max


@njit(inline="always")
def fixed_point_scale(n):
    """2**S for the int64 fixed-point row sums of rows of length n."""
    nbits = 0
    while (1 << nbits) <= n:
        nbits += 1
    # 2.0 ** (62 - nbits) from its bits: ``**`` would be a libm pow call per row
    return bits_to_float(np.int64(1023 + 62 - nbits) << 52)


_exp_poly_f32 = make_horner(_F32_P)
_exp_poly_f64 = make_horner(_F64_P)


@njit(inline="always")
def exp_f32(d0):
    """exp(d0) for d0 <= 0 (or -inf), float32; 0 below the normal range."""
    lo, log2e, magic = _F32_LO, _F32_LOG2E, _F32_MAGIC
    d = d0 if d0 > lo else lo
    # t = magic + rint(d log2e) exactly (its ulp is 1); its low bits are k.
    t = fma(d, log2e, magic)
    kf = t - magic
    r = fma(kf, _F32_NLN2LO, fma(kf, _F32_NLN2HI, d))
    p = _exp_poly_f32(r)
    # 2**k: (bits(t) - bits(magic) + 127) << 23, no float->int conversion
    e = p * bits_to_float(np.int32((float_to_bits(t) + _F32_BIAS_FROM_MAGIC) << 23))
    return e if d0 >= lo else np.float32(0.0)


@njit(inline="always")
def exp_f64(d0):
    """exp(d0) for d0 <= 0 (or -inf), float64; 0 below the normal range."""
    lo, log2e, magic = _F64_LO, _F64_LOG2E, _F64_MAGIC
    d = d0 if d0 > lo else lo
    kf = (d * log2e + magic) - magic
    r = fma(kf, _F64_NLN2LO, fma(kf, _F64_NLN2HI, d))
    p = _exp_poly_f64(r)
    e = p * bits_to_float((np.int64(kf) + np.int64(1023)) << 52)
    return e if d0 >= lo else 0.0


@by_width(0)
def exp_nonpos(bits):
    """exp(d) for d <= 0, in d's float type (the exp_shifted element)."""
    exp = exp_f32 if bits == 32 else exp_f64

    def exp_nonpos(d):
        return exp(d)

    return exp_nonpos


# fdlibm's e_log.c coefficients (minimax for the atanh remainder on
# |s| <= 0.1716) and ln 2 split so that k * _LOG_LN2HI is exact.
_LOG_LN2HI = 6.93147180369123816490e-01
_LOG_LN2LO = 1.90821492927058770002e-10
_LOG_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)


@njit(inline="always")
def log_f64(v):
    """log(v) for a normal v >= 1 (a row's sum of exp), vectorisable.

    fdlibm's e_log.c without its branches: v = 2**k m with m in
    [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f) and
    log m = f - (f**2/2 - s (f**2/2 + R(s**2))). Checked against long-double
    log on 10**7 sums in [1, 1e6] (tests/test_exp_accuracy.py): < 1 ulp.
    """
    b = float_to_bits(v)
    k = (b >> 52) - 1023
    mbits = (b & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000)
    m = bits_to_float(mbits)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    kf = np.float64(k + 1 if big else k)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = _LOG_LG
    t1 = w * (lg2 + w * (lg4 + w * lg6))
    t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)))
    hfsq = 0.5 * f * f
    return kf * _LOG_LN2HI - ((hfsq - (s * (hfsq + t1 + t2) + kf * _LOG_LN2LO)) - f)


@by_width(0)
def fixed_sum(bits):
    """sum_{k < n} e[ei, k] for 0 <= e <= 1, in int64 fixed point (exact for
    any summation order; ``fix`` is ``fixed_point_scale(n)``). float64 rows
    also sum the truncated remainders, scaled by 2**40."""
    # fix is a power of two <= 2**61: ek * fix is exact in float32 too, and
    # converting float32 -> int64 directly saves a widening per element.
    ftype = np.float32 if bits == 32 else np.float64
    remainder = bits == 64

    def fixed_sum(e, ei, n, fix):
        wide_vectors()
        fix_e = ftype(fix)
        acc = np.int64(0)
        acc2 = np.int64(0)
        for k in range(n):
            v = e[ei, k] * fix_e
            h = np.int64(v)
            acc += h
            if remainder:
                acc2 += np.int64((v - h) * _REMAINDER_SCALE)
        if remainder:
            return (acc + acc2 / _REMAINDER_SCALE) / fix
        return acc / fix

    return fixed_sum


# The exp loop and the sum loop are separate loops over the row (the row is
# in L1 for the second): fused, the int64 accumulator made LLVM pick a narrow
# vector width for the float32 exp too.


@by_width(0)
def exp_shifted(bits):
    """e[ei, k] = exp(x[i, k] - m) for row i's finite max m; returns their sum.

    Rows are addressed by index, not by views (a row view costs two atomic
    refcount updates a row). ``fix`` is ``fixed_point_scale(C)``.
    """
    exp = exp_f32 if bits == 32 else exp_f64

    def exp_shifted(x, i, m, e, ei, fix):
        wide_vectors()
        for k in range(x.shape[1]):
            e[ei, k] = exp(x[i, k] - m)
        return fixed_sum(e, ei, x.shape[1], fix)

    return exp_shifted


@njit(**HELPER)
def shifted_dot(w, x, i, m):
    """sum_k w_k (x[i, k] - m) in float64, zero weights skipped (0 * -inf = 0)."""
    wide_vectors()
    n = x.shape[1]
    s0 = 0.0
    s1 = 0.0
    n2 = n - n % 2
    for k in range(0, n2, 2):
        s0 += w[k] * (x[i, k] - m) if w[k] != 0.0 else 0.0
        s1 += w[k + 1] * (x[i, k + 1] - m) if w[k + 1] != 0.0 else 0.0
    for k in range(n2, n):
        s0 += w[k] * (x[i, k] - m) if w[k] != 0.0 else 0.0
    return s0 + s1


@njit(inline="always")
def prefetch_lines(af, lo, hi, step):
    """Prefetch the cache lines that start in flat elements [lo, hi) of the
    flat array af, ``step`` (a power of two) elements a line: lines, not
    elements, so a row of a few classes issues one every few rows."""
    for j in range((lo + step - 1) & -step, imin(hi, af.shape[0]), step):
        _prefetch(af, j)


@njit(inline="always")
def stream_copy(dst, d0, src, s0, n):
    """dst[d0:d0+n] = src[s0:s0+n] (1-D, contiguous, one float dtype), the
    64-byte lines lying wholly inside the destination range written with
    non-temporal stores (:func:`store_nt_line`), the partial lines at either
    end with ordinary ones -- so a line shared with a neighbouring range
    (another thread's) is only ever written by ordinary, coherent stores.

    For results that leave the cache anyway (a gradient far larger than the
    caches): the stores skip the read-for-ownership of each destination line,
    one memory stream fewer. ``src`` should be a cache-resident scratch buffer
    the caller has just written. The caller calls ``nt_fence()`` before its
    thread's results are used elsewhere (once per parallel task suffices).
    """
    size = dst.itemsize
    per = NT_LINE // size
    a = address(dst, d0)
    # an array not aligned to its itemsize (possible from a raw buffer) never
    # reaches a line boundary: all ordinary stores
    head = n if a % size != 0 else imin(n, ((NT_LINE - a % NT_LINE) % NT_LINE) // size)
    for k in range(head):
        dst[d0 + k] = src[s0 + k]
    k = head
    while k + per <= n:
        store_nt_line(dst, d0 + k, src, s0 + k)
        k += per
    for r in range(k, n):
        dst[d0 + r] = src[s0 + r]


@njit(**HELPER)
def ordered_sum(v, n):
    """sum(v[:n]) in a fixed order, eight interleaved partial sums."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    a4 = 0.0
    a5 = 0.0
    a6 = 0.0
    a7 = 0.0
    n8 = n - n % 8
    for c in range(0, n8, 8):
        a0 += v[c]
        a1 += v[c + 1]
        a2 += v[c + 2]
        a3 += v[c + 3]
        a4 += v[c + 4]
        a5 += v[c + 5]
        a6 += v[c + 6]
        a7 += v[c + 7]
    for c in range(n8, n):
        a0 += v[c]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@cached
@njit(**JIT)
def ordered_total(v):
    """sum(v) in a fixed order with O(log n) rounding growth: blocks of 128
    (eight interleaved partial sums each), then a pairwise tree over the
    block sums. A compiled call, where ``np.add.reduce`` on a small array
    costs several times more (most of a small call's reduction)."""
    n = v.shape[0]
    if n <= 128:
        return ordered_sum(v, n)
    nb = (n + 127) // 128
    parts = np.empty(nb, np.float64)
    for b in range(nb):
        lo = b * 128
        parts[b] = ordered_sum(v[lo:], imin(128, n - lo))
    while nb > 1:
        half = nb // 2
        for j in range(half):
            parts[j] = parts[2 * j] + parts[2 * j + 1]
        if nb % 2 == 1:
            parts[half] = parts[nb - 1]
            half += 1
        nb = half
    return parts[0]
