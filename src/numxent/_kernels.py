"""Numba kernels: where every loss, gradient and softmax is computed.

Layer 1 of the package: loops only. Outputs are passed in, nothing is
allocated or validated here (``functional.py`` does that), and options are
runtime arguments so each kernel compiles once per logits dtype.

Every kernel comes as a pair, ``*_par`` (``prange`` over samples) and
``*_ser`` (``range``), built from the same ``inline="always"`` row function:
a row's values never depend on which variant or how many threads ran it, and
no parallel kernel sums across rows (the per-row values are reduced by
``ordered_total`` in a fixed order -- by the caller, or at the end of a
serial hard-label kernel; binary cross-entropy sums within fixed
8,192-element blocks), so results are bitwise identical for any thread
count. Hard-label rows of at most NARROW_CLASSES classes (256 float32, 100
float64) are processed a tile of rows at a time (``_ce_hard_tile``, the
``ce_narrow_*`` pair) so that the exp loop stays long enough to vectorise;
the caller picks the pair from C and the dtype, so a first call compiles one
loop shape.

Precision: float32 rows are exponentiated in float32 (the vectorised exp
below, <= 1 ulp); row sums, logs, losses and gradient scales are float64;
float64 rows are float64 throughout. Binary cross-entropy on float32 logits
is elementwise float32 arithmetic (float32-sized exp and log1p polynomials;
loss within 4 ulp of float64, subnormal tails included; tests/test_accuracy)
and float64 block sums. Rows holding NaN or +inf take a scalar
float64 path (``*_exact``) whose NaN/inf pattern is PyTorch's.

Row layout of the softmax cross-entropy kernels (a row stays in cache between
the passes, so memory is read once and written once):

1. ``m = max_k x_k``;
2. ``e_k = exp(x_k - m)``, ``s = sum_k e_k`` and the target terms, with
   ``e_k`` parked in the gradient row (forward-only calls: one scratch row
   per task);
3. ``grad_k = scale * (A * e_k / s - a_k)`` in place over ``e_k``, where
   ``a_k`` is the target weight of class ``k`` and ``A = sum_k a_k``.

The loss is ``sum_k a_k (log s - (x_k - m))``: both factors are >= 0, so the
sum has no cancellation however large the logits are.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from ._config import JIT_CACHE

# error_model="numpy": a float division is a plain fdiv (the default "python"
# model adds a zero-divisor check whose branch keeps loops scalar).
# The on-disk cache is on unless NUMXENT_CACHE=0 or NUMBA_CACHE_DIR is unusable.
_JIT = {"fastmath": False, "error_model": "numpy", "cache": JIT_CACHE, "nogil": True}
# Helpers are ordinary compiled calls, not IR-inlined, except the per-row
# functions (a call per short row costs ~50 ns): inlining every helper into
# every kernel made the kernels' IR so large that a cold start took ~25 s.
_HELPER = {"fastmath": False, "error_model": "numpy"}


@njit(**_HELPER)
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
#   exact) and a low part, |r| <= ln2/2, then a polynomial p(r) ~ exp(r)
#   times 2**k, made by bit-casting the integer (k + bias) << mantissa_bits.
#   Reduction and polynomial use fused multiply-adds (llvm.fma: one rounding
#   each, the same on every thread; fastmath stays off). Arguments below the
#   smallest normal power of two (d < -87.34 in float32, -708.4 in float64)
#   give exactly 0 (the true value is below 1.2e-38 / 2.3e-308 of the row's
#   largest term, which is 1).
#   Accuracy: float32 uses the degree-7 Taylor polynomial (truncation error
#   < 4e-9 relative on |r| <= ln2/2), float64 the degree-13 one (< 1e-17).
#   Measured against NumPy's exp (float32: float64 exp rounded once; float64:
#   longdouble exp): over all 1,118,738,843 float32 d in [-87.3, 0] at most
#   1 ulp (99.55 % exact); on 10**7 random float64 d in [-708, 0] at most
#   0.88 ulp.
#   tests/test_exp_accuracy.py holds the bound at 2 ulp (the float32 sweep is
#   its `slow` test).
# * The sum of the e_k is accumulated in int64 fixed point, e * 2**S with
#   S = 62 - bitlen(C) so that it cannot overflow: integer adds vectorise and
#   give the same sum in any order. Truncation costs < C * 2**-S relative for
#   float32 (< 2.3e-10 at C = 32000); float64 keeps a second int64 sum of the
#   truncated remainders scaled by 2**40, for < C * 2**-(S+40).
#
# Every result is a function of the row alone, so it is the same whichever
# thread computes it.


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret int32 / int64 bits as float32 / float64 (no conversion)."""
    fty = types.float32 if bits.bitwidth == 32 else types.float64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(fty))

    return fty(bits), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma; vectorises with the loop)."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fnty = ir.FunctionType(ty, [ty, ty, ty])
        fn = builder.module.declare_intrinsic("llvm.fma", [ty], fnty)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _float_to_bits(typingctx, f):
    """Reinterpret float32 / float64 bits as int32 / int64 (no conversion)."""
    ity = types.int32 if f.bitwidth == 32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(ity))

    return ity(f), codegen


@intrinsic
def _unmanaged(typingctx, ary):
    """A view of ``ary`` without its reference-counted owner (meminfo NULL).

    Numba increfs/decrefs every array an inlined per-row function re-binds:
    atomic operations on arrays that came from Python, null checks on arrays
    without an owner (those of a parfor task). For use inside one call, while
    the owning argument keeps the memory alive.
    """
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, sig, args):
        from numba.np.arrayobj import make_array, populate_array

        src = make_array(sig.args[0])(context, builder, value=args[0])
        dst = make_array(sig.return_type)(context, builder)
        populate_array(dst, data=src.data, shape=src.shape, strides=src.strides,
                       itemsize=src.itemsize, meminfo=None)  # fmt: skip
        return dst._getvalue()

    return ary(ary), codegen


@intrinsic
def _prefetch(typingctx, ary, idx):
    """Hint the cache to fetch the line holding ary.flat[idx] (llvm.prefetch,
    for reading, into all levels). idx must be in bounds of a C-contiguous
    array."""
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, sig, args):
        from numba.np.arrayobj import make_array

        data = make_array(sig.args[0])(context, builder, value=args[0]).data
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(ary, idx), codegen


if numba.config.DISABLE_JIT:  # plain-Python stand-ins for the intrinsics

    def _prefetch(ary, idx):  # noqa: F811
        pass

    def _bits_to_float(bits):  # noqa: F811
        return np.asarray(bits).view(
            np.float32 if np.asarray(bits).dtype == np.int32 else np.float64
        )[()]

    def _fma(a, b, c):  # noqa: F811  (two roundings: fine for coverage)
        return a * b + c

    def _unmanaged(ary):  # noqa: F811
        return ary

    def _float_to_bits(f):  # noqa: F811
        return np.asarray(f).view(
            np.int32 if np.asarray(f).dtype == np.float32 else np.int64
        )[()]


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


# The overloaded helpers below have plain-Python bodies too: Numba compiles
# the @overload implementations; NUMBA_DISABLE_JIT=1 (the coverage run) runs
# these bodies.


def row_max(xi, i):
    """(max of row i, whether the row is finite); xi = int_view(logits)."""
    return _row_max_impl(numba.typeof(xi), None)(xi, i)


def int_view(x):
    """The logits' bits as int32 / int64 (made once per task, not per row:
    a per-row ``view`` costs more than a 100-class row's max)."""
    return x.view(np.int32 if x.dtype == np.float32 else np.int64)


@overload(int_view)
def _int_view_impl(x):
    if x.dtype == types.float32:
        return lambda x: x.view(np.int32)
    return lambda x: x.view(np.int64)


def exp_shifted(x, i, m, e, ei, fix):
    """e[ei, k] = exp(x[i, k] - m) for row i's finite max m; returns their sum.

    Rows are addressed by index, not by views (a row view costs two atomic
    refcount updates, ~20 ns a row). ``fix`` is ``fixed_point_scale(C)``.
    """
    impl = _exp_shifted_impl(numba.typeof(x), *([None] * 5))
    return impl(x, i, m, e, ei, fix)


def _make_row_max(itype, shift, abs_mask, inf_bits):
    # key(-inf): keys below it are negative NaNs; keys from inf_bits = key(+inf)
    # up are +inf or positive NaNs. So the row is "finite" iff its key range
    # lies in [key(-inf), inf_bits) -- a min and a max, no per-element NaN test.
    neg_inf_key = itype(itype(-1) << shift) ^ abs_mask ^ inf_bits

    def impl(xi, i):
        key_max = itype(-1) << shift
        key_min = ~key_max
        for k in range(xi.shape[1]):
            b = xi[i, k]
            # (numba widens int32 arithmetic to int64: cast back)
            key = itype(b ^ ((b >> shift) & abs_mask))
            key_max = key if key > key_max else key_max
            key_min = key if key < key_min else key_min
        m_bits = itype(key_max ^ ((key_max >> shift) & abs_mask))
        return _bits_to_float(m_bits), key_max < inf_bits and key_min >= neg_inf_key

    return impl


@overload(row_max)
def _row_max_impl(xi, i):
    if xi.dtype == types.int32:
        return _make_row_max(
            np.int32, np.int32(31), np.int32(0x7FFFFFFF), np.int32(0x7F800000)
        )
    return _make_row_max(
        np.int64,
        np.int64(63),
        np.int64(0x7FFFFFFFFFFFFFFF),
        np.int64(0x7FF0000000000000),
    )


@njit
def fixed_point_scale(n):
    """2**S for the int64 fixed-point row sums of rows of length n."""
    nbits = 0
    while (1 << nbits) <= n:
        nbits += 1
    # 2.0 ** (62 - nbits) from its bits: ``**`` would be a libm pow call per row
    return _bits_to_float(np.int64(1023 + 62 - nbits) << 52)


@njit(inline="always")
def _exp_f32(d0):
    """exp(d0) for d0 <= 0 (or -inf), float32; 0 below the normal range."""
    lo, log2e, magic = _F32_LO, _F32_LOG2E, _F32_MAGIC
    p0, p1, p2, p3, p4, p5, p6, p7 = _F32_P
    d = d0 if d0 > lo else lo
    # t = magic + rint(d log2e) exactly (its ulp is 1); its low bits are k.
    t = _fma(d, log2e, magic)
    kf = t - magic
    r = _fma(kf, _F32_NLN2LO, _fma(kf, _F32_NLN2HI, d))
    p = _fma(_fma(_fma(p7, r, p6), r, p5), r, p4)
    p = _fma(_fma(_fma(_fma(p, r, p3), r, p2), r, p1), r, p0)
    # 2**k: (bits(t) - bits(magic) + 127) << 23, no float->int conversion
    e = p * _bits_to_float(np.int32((_float_to_bits(t) + _F32_BIAS_FROM_MAGIC) << 23))
    return e if d0 >= lo else np.float32(0.0)


@njit(inline="always")
def _exp_f64(d0):
    """exp(d0) for d0 <= 0 (or -inf), float64; 0 below the normal range."""
    lo, log2e, magic = _F64_LO, _F64_LOG2E, _F64_MAGIC
    p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13 = _F64_P
    d = d0 if d0 > lo else lo
    kf = (d * log2e + magic) - magic
    r = _fma(kf, _F64_NLN2LO, _fma(kf, _F64_NLN2HI, d))
    p = _fma(_fma(_fma(_fma(p13, r, p12), r, p11), r, p10), r, p9)
    p = _fma(_fma(_fma(_fma(_fma(p, r, p8), r, p7), r, p6), r, p5), r, p4)
    p = _fma(_fma(_fma(_fma(p, r, p3), r, p2), r, p1), r, p0)
    e = p * _bits_to_float((np.int64(kf) + np.int64(1023)) << 52)
    return e if d0 >= lo else 0.0


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
def _log_f64(v):
    """log(v) for a normal v >= 1 (a row's sum of exp), vectorisable.

    fdlibm's e_log.c without its branches: v = 2**k m with m in
    [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f) and
    log m = f - (f**2/2 - s (f**2/2 + R(s**2))). Checked against long-double
    log on 10**7 sums in [1, 1e6] (tests/test_exp_accuracy.py): < 1 ulp.
    """
    b = _float_to_bits(v)
    k = (b >> 52) - 1023
    mbits = (b & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000)
    m = _bits_to_float(mbits)
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


# The exp loop and the sum loop are separate loops over the row (the row is
# in L1 for the second): fused, the int64 accumulator made LLVM pick a narrow
# vector width for the float32 exp too (measured, float32 C = 1,000, one
# thread: 0.26 -> 0.16 ns an element for exp + sum).


def _exp_shifted_f32(x, i, m, e, ei, fix):
    for k in range(x.shape[1]):
        e[ei, k] = _exp_f32(x[i, k] - m)
    return fixed_sum(e, ei, x.shape[1], fix)


def _exp_shifted_f64(x, i, m, e, ei, fix):
    for k in range(x.shape[1]):
        e[ei, k] = _exp_f64(x[i, k] - m)
    return fixed_sum(e, ei, x.shape[1], fix)


@overload(exp_shifted)
def _exp_shifted_impl(x, i, m, e, ei, fix):
    if x.dtype == types.float32:
        return _exp_shifted_f32
    return _exp_shifted_f64


def fixed_sum(e, ei, n, fix):
    """sum_{k < n} e[ei, k] for 0 <= e <= 1, in int64 fixed point (exact for
    any summation order; ``fix`` is ``fixed_point_scale(n)``)."""
    impl = _fixed_sum_impl(numba.typeof(e), *([None] * 3))
    return impl(e, ei, n, fix)


def _fixed_sum_f32(e, ei, n, fix):
    # fix is a power of two <= 2**61: ek * fix is exact in float32 too, and
    # converting float32 -> int64 directly saves a widening per element.
    fix32 = np.float32(fix)
    acc = np.int64(0)
    for k in range(n):
        acc += np.int64(e[ei, k] * fix32)
    return acc / fix


def _fixed_sum_f64(e, ei, n, fix):
    fix2 = _REMAINDER_SCALE
    acc = np.int64(0)
    acc2 = np.int64(0)
    for k in range(n):
        v = e[ei, k] * fix
        h = np.int64(v)
        acc += h
        acc2 += np.int64((v - h) * fix2)
    return (acc + acc2 / fix2) / fix


@overload(fixed_sum)
def _fixed_sum_impl(e, ei, n, fix):
    if e.dtype == types.float32:
        return _fixed_sum_f32
    return _fixed_sum_f64


@njit(**_HELPER)
def _shifted_dot(w, x, i, m):
    """sum_k w_k (x[i, k] - m) in float64, zero weights skipped (0 * -inf = 0)."""
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


# Rows per parallel task: each task allocates its scratch rows once.
ROWS_PER_TASK = 16
# Hard-label rows of at most this many classes are processed a tile at a
# time (``_ce_hard_tile``), wider rows one at a time (``_ce_hard_rows``).
# Measured crossovers (one thread, ns a row, tile vs row at a time):
# float32 C = 100 48 vs 62, 200 80 vs 87, 400 141 vs 140; float64 C = 100
# 92 vs 99, 128 110 vs 101.
NARROW_CLASSES = {4: 256, 8: 100}  # by the logits' itemsize: float32, float64
# Elements per tile of narrow rows, and per task of wide hard-label rows
# (at least ROWS_PER_TASK rows). Measured: 4,096- and 8,192-element tiles
# were 5-10 % slower than 16,384 at C = 64-200.
NARROW_TILE = 16384


def narrow_rows(n_classes, dtype: np.dtype):
    """Whether hard-label rows of this width go to the ``ce_narrow_*`` pair.
    (By itemsize: ``dtype.name`` builds a string, 1.5 us a call.)"""
    return n_classes <= NARROW_CLASSES[dtype.itemsize]


@njit(inline="always")
def _prefetch_lines(af, lo, hi, step):
    """Prefetch the cache lines that start in flat elements [lo, hi) of the
    flat array af, ``step`` (a power of two) elements a line: lines, not
    elements, so a row of a few classes issues one every few rows."""
    for j in range((lo + step - 1) & -step, min(hi, af.shape[0]), step):
        _prefetch(af, j)


@njit(inline="always")
def _rows_per_tile(n_classes):
    return max(NARROW_TILE // n_classes, 1)


@njit(inline="always")
def _rows_per_task(n_classes):
    return max(NARROW_TILE // n_classes, ROWS_PER_TASK)


def exp_nonpos(d):
    """exp(d) for d <= 0, in d's float type (the exp_shifted element)."""
    return _exp_f32(d) if isinstance(d, np.float32) else _exp_f64(d)


@overload(exp_nonpos)
def _exp_nonpos_impl(d):
    if d == types.float32:
        return lambda d: _exp_f32(d)
    return lambda d: _exp_f64(d)


# --------------------------------------------------------------------------
# softmax cross-entropy, hard (integer) labels
# --------------------------------------------------------------------------


@njit(**_JIT)
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


@njit(inline="always")
def _ce_hard_finish(w, w_total, sw, eps, gscale, loss_rows, want_grad, e, ei, s,
                    d_y, wd, yi, i):  # fmt: skip
    _ce_hard_finish_log(w, w_total, sw, eps, gscale, loss_rows, want_grad, e, ei,
                        s, math.log(s), d_y, wd, yi, i)  # fmt: skip


@njit(inline="always")
def _ce_hard_finish_log(w, w_total, sw, eps, gscale, loss_rows, want_grad, e, ei,
                        s, log_s, d_y, wd, yi, i):  # fmt: skip
    # Loss and gradient of row i from s = sum_k e_k and log_s = log(s), the
    # e_k parked in e[ei] (the gradient row, or a scratch row for
    # forward-only calls) and scaled in place.
    n_classes = w.shape[0]
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    w_y = w[yi]
    loss = (1.0 - eps) * w_y * (log_s - d_y)
    if eps > 0.0:
        loss += (eps / n_classes) * (w_total * log_s - wd)
    loss_rows[i] = s_w * loss
    if want_grad:
        scale = s_w * gscale
        big_a = (1.0 - eps) * w_y + (eps / n_classes) * w_total
        c = scale * big_a / s
        if eps > 0.0:
            b = scale * eps / n_classes
            for k in range(n_classes):
                e[ei, k] = c * e[ei, k] - b * w[k]
        else:
            # In e's dtype: a float32 multiply keeps the loop one vector width
            # (float64 c would widen every element and narrow it back; ~18 %
            # of a 100-class row's time). Costs float32 gradients one more
            # rounding, of c.
            c_e = e.dtype.type(c)
            for k in range(n_classes):
                e[ei, k] = c_e * e[ei, k]
        e[ei, yi] -= scale * (1.0 - eps) * w_y


@njit(inline="always")
def _ce_hard_finish_from(w, w_total, sw, eps, gscale, loss_rows, want_grad, src, si,
                         grad, i, s, log_s, d_y, wd, yi):  # fmt: skip
    # _ce_hard_finish_log with the e_k in a scratch row src[si] and the
    # gradient written to grad[i]. The same formulas written out twice, on
    # purpose: with the loss in a shared inline helper, or with this function
    # doing both jobs (src = e), the tile kernel's forward-only loop ran
    # 1.6-2x slower (16 -> 25-36 ns a 10-class row).
    n_classes = w.shape[0]
    s_w = sw[i] if sw.shape[0] > 0 else 1.0
    w_y = w[yi]
    loss = (1.0 - eps) * w_y * (log_s - d_y)
    if eps > 0.0:
        loss += (eps / n_classes) * (w_total * log_s - wd)
    loss_rows[i] = s_w * loss
    if want_grad:
        scale = s_w * gscale
        big_a = (1.0 - eps) * w_y + (eps / n_classes) * w_total
        c = scale * big_a / s
        if eps > 0.0:
            b = scale * eps / n_classes
            for k in range(n_classes):
                grad[i, k] = c * src[si, k] - b * w[k]
        else:
            c_e = grad.dtype.type(c)
            for k in range(n_classes):
                grad[i, k] = c_e * src[si, k]
        grad[i, yi] -= scale * (1.0 - eps) * w_y


@njit(**_HELPER)
def _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows, want_grad, e,
                       ei, i):  # fmt: skip
    # Scalar float64 path for rows holding NaN or +inf, or all -inf: PyTorch's
    # NaN/inf pattern falls out of plain libm arithmetic.
    yi = y[i]
    m = _row_max(x, i)
    d_y = x[i, yi] - m  # read before the gradient row may overwrite it (out=x)
    smooth = eps > 0.0
    s = 0.0
    wd = 0.0
    for k in range(x.shape[1]):
        d = x[i, k] - m
        ek = math.exp(d)
        s += ek
        if smooth and w[k] != 0.0:  # xlogy: a zero weight never meets -inf
            wd += w[k] * d
        if want_grad:
            e[ei, k] = ek
    _ce_hard_finish(w, w_total, sw, eps, gscale, loss_rows, want_grad, e, ei, s,
                    d_y, wd, yi, i)  # fmt: skip


@njit(inline="always")
def _ce_hard_row_sum(
    x, xi, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, want_grad, grad,
    sc, r, fix, i,
):  # fmt: skip
    # First half of row i: sc[r] = exp(x_i - m), sc a scratch group or the
    # gradient itself (sc = grad, r = i). Returns (s, d_y, wd) for the
    # finish, or s = 0 when the row is already done (ignored, or non-finite:
    # the exact path, straight into grad[i]).
    yi = y[i]
    if yi == ignore_index:
        # Padding rows may hold garbage: neither read nor propagated.
        loss_rows[i] = 0.0
        if want_grad:
            for k in range(x.shape[1]):
                grad[i, k] = 0.0
        return 0.0, 0.0, 0.0
    m, finite = row_max(xi, i)
    if not finite:
        _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows,
                           want_grad, grad, i, i)  # fmt: skip
        return 0.0, 0.0, 0.0
    d_y = np.float64(x[i, yi]) - np.float64(m)
    wd = _shifted_dot(w, x, i, np.float64(m)) if eps > 0.0 else 0.0
    return exp_shifted(x, i, m, sc, r, fix), d_y, wd


# Rows of wide hard-label tasks are finished a group at a time, so that the
# group's logs are one vector loop (a scalar libm log per 100-class row was
# ~15 % of its time). With out=logits the exp values wait in a scratch group
# (in L1), not in the gradient rows (the logits): a loop reading and writing
# two arrays that overlap stays scalar (LLVM's runtime overlap check fails):
# 65,536 x 1,000 float32 in place took 67 ms vs 17.
GROUP_ELEMENTS = 4096
GROUP_ROWS = 8


@njit(**_HELPER)
def _ce_hard_rows(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                  r0, r1):  # fmt: skip
    x, y, w, sw = _unmanaged(x), _unmanaged(y), _unmanaged(w), _unmanaged(sw)
    loss_rows, grad = _unmanaged(loss_rows), _unmanaged(grad)
    n_classes = x.shape[1]
    fix = fixed_point_scale(n_classes)
    xi = int_view(x)
    want_grad = grad.shape[0] > 0
    group = min(max(GROUP_ELEMENTS // n_classes, 1), GROUP_ROWS)
    xf = xi.reshape(x.shape[0] * n_classes)
    step = 64 // x.itemsize  # elements a cache line
    # Rows up to 16 KiB: asked for two rows ahead (measured, forward-only
    # 65,536 x 1,000 float32 at 2 threads 1.04 -> 0.71x copy time); longer
    # rows stream well on the hardware prefetcher alone (8,192 x 32,000 was
    # 10 % slower with it).
    prefetch = n_classes * x.itemsize <= 16384
    # The exp values go to the gradient rows (finished in place, in L1), or
    # to a scratch group when there is no gradient or it is the logits
    # themselves (out=logits: a loop reading and writing one memory through
    # two arrays stays scalar). Scratch for every call was measured: the
    # finish then streams to a gradient row not yet in cache, 65,536 x
    # 1,000 float32 15 -> 18-22 ms.
    scratch = not want_grad or x.ctypes.data == grad.ctypes.data
    sc = np.empty((group if scratch else 0, n_classes), x.dtype)
    per_row = np.empty(4 * GROUP_ROWS, np.float64)
    ss, logs = per_row[:GROUP_ROWS], per_row[GROUP_ROWS : 2 * GROUP_ROWS]
    d_ys, wds = per_row[2 * GROUP_ROWS : 3 * GROUP_ROWS], per_row[3 * GROUP_ROWS :]
    for g0 in range(r0, r1, group):
        n = min(r1 - g0, group)
        for r in range(n):
            if prefetch:
                lo = (g0 + r + 2) * n_classes  # two rows ahead
                _prefetch_lines(xf, lo, lo + n_classes, step)
            if scratch:
                s, d_y, wd = _ce_hard_row_sum(x, xi, y, w, w_total, sw, ignore_index,
                                              eps, gscale, loss_rows, want_grad, grad,
                                              sc, r, fix, g0 + r)  # fmt: skip
            else:
                s, d_y, wd = _ce_hard_row_sum(x, xi, y, w, w_total, sw, ignore_index,
                                              eps, gscale, loss_rows, want_grad, grad,
                                              grad, g0 + r, fix, g0 + r)  # fmt: skip
            ss[r] = s
            d_ys[r] = d_y
            wds[r] = wd
        for r in range(n):
            s = ss[r]
            logs[r] = _log_f64(s if s > 0.0 else 1.0)
        for r in range(n):
            if ss[r] > 0.0:
                i = g0 + r
                if scratch:
                    _ce_hard_finish_from(w, w_total, sw, eps, gscale, loss_rows,
                                         want_grad, sc, r, grad, i, ss[r], logs[r],
                                         d_ys[r], wds[r], y[i])  # fmt: skip
                else:
                    _ce_hard_finish_log(w, w_total, sw, eps, gscale, loss_rows,
                                        want_grad, grad, i, ss[r], logs[r],
                                        d_ys[r], wds[r], y[i], i)  # fmt: skip


@njit(**_HELPER)
def _ce_hard_tile(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                  r0, r1):  # fmt: skip
    # Narrow rows (few classes): a row-at-a-time exp loop is mostly scalar
    # remainder, so the tile's rows are shifted into one flat array and
    # exponentiated in a single vector loop.
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
    nxt_hi = min(r1 + n, x.shape[0]) * n_classes
    per_row = (nxt_hi - nxt_lo + n * step - 1) // (n * step)  # lines a row
    # Measured at 2 threads, float32: 262,144 x 100 -7 %, 500,000 x 32 +-0,
    # 1,000,000 x 10 +9 %: rows under 4 lines go without.
    prefetch = n_classes >= 4 * step
    for r in range(n):
        if prefetch:
            lo = nxt_lo + r * per_row * step
            _prefetch_lines(xf, lo, min(lo + per_row * step, nxt_hi), step)
        m, finite = row_max(xi, r0 + r)
        ms[r] = m
        if y[r0 + r] != ignore_index and not finite:
            n_exact += 1
    exact = np.empty((n if n_exact > 0 else 0, n_classes), x.dtype)
    is_exact = np.zeros(n, np.bool_)
    d = np.empty(n * n_classes, x.dtype)
    # the tile's float64 per-row values, one allocation (each costs ~40 ns)
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
        o = r * n_classes
        m = ms[r]
        if y[i] == ignore_index or n_exact > 0 and not row_max(xi, i)[1]:
            if y[i] != ignore_index:
                is_exact[r] = True
                _ce_hard_row_exact(x, y, w, w_total, sw, eps, gscale, loss_rows,
                                   want_grad, exact, r, i)  # fmt: skip
            for k in range(n_classes):
                d[o + k] = 0.0
            continue
        d_ys[r] = np.float64(x[i, y[i]]) - np.float64(m)
        if eps > 0.0:
            wds[r] = _shifted_dot(w, x, i, np.float64(m))
        for k in range(n_classes):
            d[o + k] = x[i, k] - m
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
    # is a chain of dependent adds, ~0.25 ns an element), then their logs in
    # one vector loop, then each row's loss and gradient.
    ss[:] = 1.0  # for rows skipped below: log(1) = 0
    fix = fixed_point_scale(n_classes)
    for r in range(n):
        if is_exact[r] or y[r0 + r] == ignore_index:
            continue
        ss[r] = fixed_sum(e, e0 + r, n_classes, fix)
    for r in range(n):
        logs[r] = _log_f64(ss[r])
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
        _ce_hard_finish_log(w, w_total, sw, eps, gscale, loss_rows, want_grad, e,
                            ei, ss[r], logs[r], d_ys[r], wds[r], y[i], i)  # fmt: skip


# Two kernel pairs, chosen by the caller from C: a call compiles only the
# loop shape it uses (a cold start compiles one pair, not both).


@njit(parallel=True, **_JIT)
def ce_hard_par(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad):
    """Rows wider than NARROW_CLASSES, _rows_per_task rows a task."""
    n_rows = x.shape[0]
    per_task = _rows_per_task(x.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _ce_hard_rows(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, r0, min(n_rows, r0 + per_task))  # fmt: skip


# The serial variants are whole small calls: label scan, rows and the
# loss total in one compiled call (as three calls from Python, the two extra
# dispatches were ~0.7 us of a 7 us 64 x 10 call). They return (index of the
# first bad label or -1, the mean's denominator, the total of loss_rows) and
# write nothing when a label is bad or a "mean" has a zero denominator.


@njit(**_JIT)
def ce_hard_ser(x, y, w, w_total, sw, ignore_index, eps, mean, loss_rows, grad):
    first_bad, denom = scan_hard_labels(y, x.shape[1], ignore_index, w, sw)
    if first_bad >= 0 or (mean and denom == 0.0):
        return first_bad, denom, 0.0
    gscale = 1.0 / denom if mean else 1.0
    _ce_hard_rows(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad,
                  0, x.shape[0])  # fmt: skip
    return first_bad, denom, ordered_total(loss_rows)


@njit(parallel=True, **_JIT)
def ce_narrow_par(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows, grad):
    """Rows of at most NARROW_CLASSES classes, a tile of rows a task."""
    n_rows = x.shape[0]
    per_task = _rows_per_tile(x.shape[1])
    for b in prange((n_rows + per_task - 1) // per_task):
        r0 = b * per_task
        _ce_hard_tile(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, r0, min(n_rows, r0 + per_task))  # fmt: skip


@njit(**_JIT)
def ce_narrow_ser(x, y, w, w_total, sw, ignore_index, eps, mean, loss_rows, grad):
    first_bad, denom = scan_hard_labels(y, x.shape[1], ignore_index, w, sw)
    if first_bad >= 0 or (mean and denom == 0.0):
        return first_bad, denom, 0.0
    gscale = 1.0 / denom if mean else 1.0
    n_rows = x.shape[0]
    per_task = _rows_per_tile(x.shape[1])
    for r0 in range(0, n_rows, per_task):
        _ce_hard_tile(x, y, w, w_total, sw, ignore_index, eps, gscale, loss_rows,
                      grad, r0, min(n_rows, r0 + per_task))  # fmt: skip
    return first_bad, denom, ordered_total(loss_rows)


# --------------------------------------------------------------------------
# softmax cross-entropy, soft labels (class probabilities)
# --------------------------------------------------------------------------


@njit(**_HELPER)
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


@njit(**_HELPER)
def _ce_soft_task(x, t, w, sw, eps, gscale, loss_rows, grad, b):
    x, t, w, sw = _unmanaged(x), _unmanaged(t), _unmanaged(w), _unmanaged(sw)
    loss_rows, grad = _unmanaged(loss_rows), _unmanaged(grad)
    n_rows, n_classes = x.shape
    rows = range(b * ROWS_PER_TASK, min(n_rows, (b + 1) * ROWS_PER_TASK))
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

_LN2 = 0.6931471805599453
_SQRT2_M1 = 0.41421356237309503
_ATANH_C = tuple(1.0 / (2 * j + 1) for j in range(12))
_F32_LN2 = np.float32(_LN2)
_F32_SQRT2_M1 = np.float32(_SQRT2_M1)
_F32_ATANH_C = tuple(np.float32(1.0 / (2 * j + 1)) for j in range(5))
_F32_0 = np.float32(0.0)
_F32_HALF = np.float32(0.5)
_F32_1 = np.float32(1.0)
_F32_2 = np.float32(2.0)


@njit(inline="always")
def _log1p_unit(e):
    """log(1 + e) for e in [0, 1], float64, vectorisable.

    log1p(e) = 2 atanh(v / (2 + v)) (+ ln 2) with v = e, or v = (e - 1) / 2
    when e > sqrt(2) - 1, so |s| = |v / (2 + v)| <= 0.1716 and the odd series
    in s (12 terms, s**24/25 < 1e-19) converges to float64 precision. No
    1 + e is ever formed, so tiny e keep all their digits (log1p(e) ~ e).
    """
    # Both candidates are computed before the select: an expression inside a
    # conditional stays a branch, and a branch keeps the loop scalar.
    big = e > _SQRT2_M1
    v_big = (e - 1.0) * 0.5
    v = v_big if big else e
    s = v / (2.0 + v)
    z = s * s
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 = _ATANH_C
    q = _fma(_fma(_fma(_fma(_fma(c11, z, c10), z, c9), z, c8), z, c7), z, c6)
    q = _fma(_fma(_fma(_fma(_fma(_fma(q, z, c5), z, c4), z, c3), z, c2), z, c1), z, c0)
    return _fma(2.0 * s, q, _LN2 if big else 0.0)


# exp for float32 BCE tails down to the subnormal range: below the normal
# range the argument is shifted up by 22.1875 (few bits: the sum is exact)
# and the result scaled by exp(-22.1875) (one more rounding).
_F32_TAIL_SHIFT = np.float32(22.1875)
_F32_TAIL_SCALE = np.float32(math.exp(-22.1875))


@njit(inline="always")
def _exp_f32_wide(d0):
    """exp(d0) for d0 <= 0, float32, subnormal results included."""
    tail = d0 < _F32_LO
    e = _exp_f32(d0 + _F32_TAIL_SHIFT if tail else d0)
    return e * _F32_TAIL_SCALE if tail else e


@njit(inline="always")
def _log1p_unit_f32(e):
    """log(1 + e) for e in [0, 1], float32 arithmetic: ``_log1p_unit``'s
    reduction with 5 series terms (s**10/11 < 3e-9, below float32's 6e-8)."""
    big = e > _F32_SQRT2_M1
    v_big = (e - _F32_1) * _F32_HALF
    v = v_big if big else e
    s = v / (_F32_2 + v)
    z = s * s
    c0, c1, c2, c3, c4 = _F32_ATANH_C
    q = _fma(_fma(_fma(_fma(c4, z, c3), z, c2), z, c1), z, c0)
    return _fma(_F32_2 * s, q, _F32_LN2 if big else _F32_0)


@njit(**_HELPER)
def _bce_segment_f32(x, t, fac, pwv, loss, grad, gscale):
    # _bce_segment_f64's formulas in float32 arithmetic, every array float32:
    # one vector width through the loop (8 lanes where float64 has 4) and
    # float32-sized polynomials (exp degree 7, log1p 5 terms). Elementwise
    # values are within a few float32 ulp; block sums are float64.
    gs = np.float32(gscale)
    one = _F32_1
    zero = _F32_0
    for c in range(x.shape[0]):
        xv = x[c]
        tv = t[c]
        pwt = pwv[c] * tv
        pos = xv if xv > zero else zero
        neg = -xv if xv < zero else zero
        e = _exp_f32_wide(-abs(xv))
        pos_term = (one - tv) * pos
        neg_term = pwt * neg
        lv = (one + (pwv[c] - one) * tv) * _log1p_unit_f32(e)
        lv += pos_term if tv != one else zero
        lv += neg_term if pwt != zero else zero
        lv = fac[c] * lv
        loss[c] = lv if xv == xv else xv
        rcp = one / (one + e)
        e_rcp = e * rcp
        sig_pos = rcp if xv >= zero else e_rcp
        sig_neg = e_rcp if xv >= zero else rcp
        g = (fac[c] * gs) * ((one - tv) * sig_pos - pwt * sig_neg)
        grad[c] = g if xv == xv else xv


def bce_segment(x, t, fac, pwv, loss, grad, gscale):
    """One contiguous stretch of BCE: float32 or float64 arithmetic by x's
    dtype (fac, pwv, loss, grad have x's dtype)."""
    f = _bce_segment_f32 if x.dtype == np.float32 else _bce_segment_f64
    return f(x, t, fac, pwv, loss, grad, gscale)


@overload(bce_segment)
def _bce_segment_impl(x, t, fac, pwv, loss, grad, gscale):
    if x.dtype == types.float32:
        return lambda x, t, fac, pwv, loss, grad, gscale: _bce_segment_f32(
            x, t, fac, pwv, loss, grad, gscale
        )
    return lambda x, t, fac, pwv, loss, grad, gscale: _bce_segment_f64(
        x, t, fac, pwv, loss, grad, gscale
    )


@njit(**_HELPER)
def _bce_segment_f64(x, t, fac, pwv, loss, grad, gscale):
    # One stretch of a row, all arrays contiguous and aligned from 0: x, t
    # and grad (the gradient or a scratch row) slices, fac (weight * sample
    # weight), pwv (pos_weight). Only selects between values computed
    # beforehand, so the loop vectorises; float64 arithmetic throughout.
    for c in range(x.shape[0]):
        xv = np.float64(x[c])
        tv = np.float64(t[c])
        pwt = pwv[c] * tv
        # loss = (1-t) max(x,0) + pw t max(-x,0) + (1+(pw-1)t) log1p(exp(-|x|)):
        # the overflow-free softplus form. A zero coefficient times an
        # infinite logit counts as 0, so x = +-inf gives the limit, not NaN.
        pos = xv if xv > 0.0 else 0.0
        neg = -xv if xv < 0.0 else 0.0
        e = _exp_f64(-abs(xv))
        pos_term = (1.0 - tv) * pos
        neg_term = pwt * neg
        lv = (1.0 + (pwv[c] - 1.0) * tv) * _log1p_unit(e)
        lv += pos_term if tv != 1.0 else 0.0
        lv += neg_term if pwt != 0.0 else 0.0
        lv = fac[c] * lv
        loss[c] = lv if xv == xv else xv  # NaN logits propagate
        # d/dx = (1-t) sigmoid(x) - pw t sigmoid(-x): no cancellation in the
        # tails, unlike (1-t) - (1+(pw-1)t) sigmoid(-x).
        rcp = 1.0 / (1.0 + e)
        e_rcp = e * rcp
        sig_pos = rcp if xv >= 0.0 else e_rcp
        sig_neg = e_rcp if xv >= 0.0 else rcp
        g = (fac[c] * gscale) * ((1.0 - tv) * sig_pos - pwt * sig_neg)
        grad[c] = g if xv == xv else xv


@njit(**_HELPER)
def _ordered_sum(v, n):
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


@njit(**_JIT)
def ordered_total(v):
    """sum(v) in a fixed order with O(log n) rounding growth: blocks of 128
    (eight interleaved partial sums each), then a pairwise tree over the
    block sums. One Numba call costs ~0.15 us where ``np.add.reduce`` on a
    small array costs ~0.6 us (most of a 64 x 10 call's reduction)."""
    n = v.shape[0]
    if n <= 128:
        return _ordered_sum(v, n)
    nb = (n + 127) // 128
    parts = np.empty(nb, np.float64)
    for b in range(nb):
        lo = b * 128
        parts[b] = _ordered_sum(v[lo:], min(128, n - lo))
    while nb > 1:
        half = nb // 2
        for j in range(half):
            parts[j] = parts[2 * j] + parts[2 * j + 1]
        if nb % 2 == 1:
            parts[half] = parts[nb - 1]
            half += 1
        nb = half
    return parts[0]


@njit(**_HELPER)
def _bce_block(x, t, w, pw, sw, fac_pat, pw_pat, row_scale, gscale, block_sums,
               elem_loss, grad, b):  # fmt: skip
    # x, t, grad, elem_loss are flat; w, pw, sw are (rows, cols) broadcast
    # views. When the weights do not vary along rows (no weight, a (C,)
    # pos_weight, ...), the caller passes them periodically laid out
    # (fac_pat, pw_pat, period = len - BCE_BLOCK) and the block is one
    # vector loop; with a per-row sample weight (row_scale) a loop per row
    # stretch; otherwise they are gathered a row stretch at a time.
    n_el = x.shape[0]
    n_cols = w.shape[1]
    start = b * BCE_BLOCK
    stop = min(start + BCE_BLOCK, n_el)
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
        bce_segment(x[start:stop], t[start:stop], fac, pwv, loss, g[g0 : g0 + n],
                    gscale)  # fmt: skip
        total = _ordered_sum(loss, n)
        if elem_loss.shape[0] > 0:
            elem_loss[start:stop] = loss[:n]
    else:
        fac = np.empty(BCE_BLOCK, x.dtype)
        pwv = np.empty(BCE_BLOCK, x.dtype)
        j = start
        while j < stop:
            r = j // n_cols
            c0 = j - r * n_cols
            n = min(stop - j, n_cols - c0)
            if row_scale.shape[0] > 0:
                scale_r = row_scale[r]
                for c in range(n):
                    fac[c] = fac_pat[c0 + c] * scale_r
                    pwv[c] = pw_pat[c0 + c]
            else:
                for c in range(n):
                    fac[c] = w[r, c0 + c] * sw[r, c0 + c]
                    pwv[c] = pw[r, c0 + c]
            gj = g0 + j - start
            bce_segment(x[j : j + n], t[j : j + n], fac, pwv, loss,
                        g[gj : gj + n], gscale)  # fmt: skip
            total += _ordered_sum(loss, n)
            if elem_loss.shape[0] > 0:
                elem_loss[j : j + n] = loss[:n]
            j += n
    block_sums[b] = total


@njit(parallel=True, **_JIT)
def bce_par(x, t, w, pw, sw, fac_pat, pw_pat, row_scale, gscale, block_sums,
            elem_loss, grad):  # fmt: skip
    for b in prange(block_sums.shape[0]):
        _bce_block(x, t, w, pw, sw, fac_pat, pw_pat, row_scale, gscale, block_sums,
                   elem_loss, grad, b)  # fmt: skip


@njit(**_JIT)
def bce_ser(x, t, w, pw, sw, fac_pat, pw_pat, row_scale, gscale, block_sums,
            elem_loss, grad):  # fmt: skip
    for b in range(block_sums.shape[0]):
        _bce_block(x, t, w, pw, sw, fac_pat, pw_pat, row_scale, gscale, block_sums,
                   elem_loss, grad, b)  # fmt: skip


# --------------------------------------------------------------------------
# row-wise logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------

MODE_LOGSUMEXP = 0
MODE_LOG_SOFTMAX = 1
MODE_SOFTMAX = 2


@njit(**_HELPER)
def _softmax_row_exact(x, mode, lse, out, i):
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


@njit(**_HELPER)
def _softmax_task(x, mode, lse, out, b):
    x, lse, out = _unmanaged(x), _unmanaged(lse), _unmanaged(out)
    n_rows, n = x.shape
    rows = range(b * ROWS_PER_TASK, min(n_rows, (b + 1) * ROWS_PER_TASK))
    fix = fixed_point_scale(x.shape[1])
    xi = int_view(x)
    if mode == MODE_SOFTMAX:
        for i in rows:
            _softmax_row(x, xi, mode, lse, out, out, i, fix, i)
    else:
        scratch = np.empty((1, n), x.dtype)
        for i in rows:
            _softmax_row(x, xi, mode, lse, out, scratch, 0, fix, i)


@njit(parallel=True, **_JIT)
def softmax_par(x, mode, lse, out):
    for b in prange((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _softmax_task(x, mode, lse, out, b)


@njit(**_JIT)
def softmax_ser(x, mode, lse, out):
    for b in range((x.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _softmax_task(x, mode, lse, out, b)
