"""Compile options, LLVM intrinsics and the dtype-specialised helper pattern.

The intrinsics have plain-Python stand-ins for ``NUMBA_DISABLE_JIT=1`` (the
coverage run), where Numba runs every kernel as ordinary Python.
"""

from __future__ import annotations

import inspect

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# The entry points' options (the kernels called from Python). error_model=
# "numpy": a float division is a plain fdiv (the default "python" model adds
# a zero-divisor check whose branch keeps loops scalar). Each entry point is
# decorated ``@cached`` over ``@njit(**JIT)``: numxent's on-disk cache (keyed
# by the sources of this package; on unless NUMXENT_CACHE=0 or
# NUMBA_CACHE_DIR is unusable), not Numba's ``cache=True``.
JIT = {"fastmath": False, "error_model": "numpy", "nogil": True}
# Helpers are ordinary compiled calls, not IR-inlined, except the per-row
# functions (a call per short row costs more than the row): inlining every
# helper into every kernel made the kernels' IR so large that a cold start
# took many times longer.
HELPER = {"fastmath": False, "error_model": "numpy"}


def by_width(arg: int = 0):
    """Decorator: one helper with a 32-bit and a 64-bit implementation.

    The decorated function is a factory: ``make(bits)`` returns the implementation for
    ``bits`` = 32 (float32 / int32 values) or 64; its closure constants become
    compile-time constants (as in ``_vecmath.row_max``). The decorator returns
    a plain-Python function that picks the implementation from the width of
    argument ``arg`` (NUMBA_DISABLE_JIT runs it), registered with Numba as an
    ``@overload`` that picks it at compile time, so compiled callers contain
    only the one they use.
    """

    def decorate(make):
        impls = {32: make(32), 64: make(64)}
        signature = inspect.signature(impls[64])

        def helper(*args):
            return impls[np.asarray(args[arg]).dtype.itemsize * 8](*args)

        def typer(*args):  # at compile time
            t = args[arg]
            return impls[getattr(t, "dtype", t).bitwidth]

        for f in (helper, typer):
            f.__signature__ = signature
        helper.__name__ = helper.__qualname__ = make.__name__
        helper.__doc__ = make.__doc__
        helper.__module__ = make.__module__
        overload(helper, jit_options=HELPER)(typer)
        return helper

    return decorate


@njit(inline="always")
def imin(a, b):
    """min of two integers (Python's ``min`` is a compiled function of its
    own in Numba, compiled again for every caller)."""
    return a if a < b else b


@njit(inline="always")
def imax(a, b):
    """max of two integers (see :func:`imin`)."""
    return a if a > b else b


@intrinsic
def int_view(typingctx, ary):
    """The float32 / float64 array ``ary`` as int32 / int64 bits (``ary.view``
    of the same-width integer: same memory, shape and strides), without
    compiling ``ndarray.view``'s generic machinery for every caller."""
    if not (isinstance(ary, types.Array) and isinstance(ary.dtype, types.Float)):
        return None
    ity = types.int32 if ary.dtype.bitwidth == 32 else types.int64
    rty = ary.copy(dtype=ity)

    def codegen(context, builder, sig, args):
        from numba.core.imputils import impl_ret_borrowed
        from numba.np.arrayobj import make_array, populate_array

        src = make_array(sig.args[0])(context, builder, value=args[0])
        dst = make_array(sig.return_type)(context, builder)
        data = builder.bitcast(src.data, dst.data.type)
        populate_array(dst, data=data, shape=src.shape, strides=src.strides,
                       itemsize=src.itemsize, meminfo=src.meminfo)  # fmt: skip
        return impl_ret_borrowed(context, builder, sig.return_type, dst._getvalue())

    return rty(ary), codegen


@intrinsic
def as_readonly(typingctx, ary):
    """``ary`` typed read-only (the same array): helpers taking it compile
    once for read-only and writable arrays alike."""
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, sig, args):
        from numba.core.imputils import impl_ret_borrowed

        return impl_ret_borrowed(context, builder, sig.return_type, args[0])

    return ary.copy(readonly=True)(ary), codegen


@intrinsic
def bits_to_float(typingctx, bits):
    """Reinterpret int32 / int64 bits as float32 / float64 (no conversion)."""
    fty = types.float32 if bits.bitwidth == 32 else types.float64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(fty))

    return fty(bits), codegen


@intrinsic
def fma(typingctx, a, b, c):
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
def float_to_bits(typingctx, f):
    """Reinterpret float32 / float64 bits as int32 / int64 (no conversion)."""
    ity = types.int32 if f.bitwidth == 32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(ity))

    return ity(f), codegen


@intrinsic
def unmanaged(typingctx, ary):
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
def prefetch(typingctx, ary, idx):
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


#: Bytes one non-temporal store of :func:`store_nt_line` writes (a cache line).
NT_LINE = 64


@intrinsic
def address(typingctx, ary, idx):
    """The address of ary.flat[idx] as an integer (for alignment arithmetic;
    idx may be one past the end)."""
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, sig, args):
        from numba.np.arrayobj import make_array

        data = make_array(sig.args[0])(context, builder, value=args[0]).data
        return builder.ptrtoint(builder.gep(data, [args[1]]), ir.IntType(64))

    return types.intp(ary, idx), codegen


@intrinsic
def store_nt_line(typingctx, dst, i, src, j):
    """Copy one 64-byte line, src.flat[j:j+L] to dst.flat[i:i+L] (L = 64 //
    itemsize), with a non-temporal store: the line goes to memory without
    first being read into the cache (no read-for-ownership). The address of
    dst.flat[i] MUST be 64-byte aligned (a misaligned one faults); src needs
    no alignment. Weakly ordered: call :func:`nt_fence` before another thread
    may read dst.

    One explicit 64-byte vector store rather than a ``!nontemporal`` scalar
    store in a loop: LLVM's loop vectoriser refuses to widen a non-temporal
    store unless its alignment is the vector's, and claiming that for every
    element of a loop would be false for all but one in sixteen.
    """
    if not (
        isinstance(dst, types.Array)
        and isinstance(src, types.Array)
        and dst.dtype == src.dtype
        and isinstance(dst.dtype, types.Float)
    ):
        return None

    def codegen(context, builder, sig, args):
        from numba.np.arrayobj import make_array

        d = make_array(sig.args[0])(context, builder, value=args[0]).data
        s = make_array(sig.args[2])(context, builder, value=args[2]).data
        size = sig.args[0].dtype.bitwidth // 8
        vty = ir.VectorType(context.get_value_type(sig.args[0].dtype), NT_LINE // size)
        sp = builder.bitcast(builder.gep(s, [args[3]]), vty.as_pointer())
        dp = builder.bitcast(builder.gep(d, [args[1]]), vty.as_pointer())
        st = builder.store(builder.load(sp, align=size), dp, align=NT_LINE)
        one = ir.Constant(ir.IntType(32), 1)
        st.set_metadata("nontemporal", builder.module.add_metadata([one]))
        return context.get_dummy_value()

    return types.none(dst, i, src, j), codegen


@intrinsic
def nt_fence(typingctx):
    """A full memory fence (LLVM ``fence seq_cst``; on x86 a locked
    instruction, which like ``mfence`` drains the write-combining buffers),
    so this thread's earlier non-temporal stores are ordered before its later
    memory operations. Portable: no target-specific intrinsic."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


def _arrays_of(dtype, *arys) -> bool:  # at compile time
    """Whether every one of ``arys`` (Numba types) is an array of ``dtype``."""
    return all(isinstance(a, types.Array) and a.dtype == dtype for a in arys)


def _data(context, builder, sig, args, *which: int) -> list:  # at compile time
    """The data pointers of the intrinsic's array arguments ``which``."""
    from numba.np.arrayobj import make_array

    return [
        make_array(sig.args[i])(context, builder, value=args[i]).data for i in which
    ]


@intrinsic
def transpose8(typingctx, src, s0, s_stride, dst, d0, d_stride):
    """Copy an 8 x 8 block of float32 transposed: ``dst.flat[d0 + j *
    d_stride + i] = src.flat[s0 + i * s_stride + j]`` for i, j < 8, where
    ``.flat`` counts elements from the arrays' first (the memory must be
    laid out with those strides: C-contiguous rows of ``s_stride`` /
    ``d_stride`` elements). No bounds checks: the caller's indices must lie
    inside both arrays.

    Eight vector loads, three rounds of eight two-vector shuffles (pairs of
    rows interleaved, then pairs of pairs, then halves), eight vector stores:
    about a third of the time of the scalar loop, which LLVM cannot
    vectorise (a strided store on each side).
    """
    if not _arrays_of(types.float32, src, dst):
        return None

    def codegen(context, builder, sig, args):
        s, d = _data(context, builder, sig, args, 0, 3)
        s0, ss, d0, ds = args[1], args[2], args[4], args[5]
        vty = ir.VectorType(ir.FloatType(), 8)

        def shuffle(a, b, mask):
            mask_type = ir.VectorType(ir.IntType(32), 8)
            return builder.shuffle_vector(a, b, ir.Constant(mask_type, mask))

        def at(base, start, stride, i):
            off = builder.add(start, builder.mul(stride, ir.Constant(start.type, i)))
            return builder.bitcast(builder.gep(base, [off]), vty.as_pointer())

        rows = [builder.load(at(s, s0, ss, i), align=4) for i in range(8)]
        # rows 2i, 2i+1 interleaved: a[2i] their columns 0-3, a[2i+1] 4-7
        a = []
        for i in range(4):
            r0, r1 = rows[2 * i], rows[2 * i + 1]
            a.append(shuffle(r0, r1, [0, 8, 1, 9, 2, 10, 3, 11]))
            a.append(shuffle(r0, r1, [4, 12, 5, 13, 6, 14, 7, 15]))
        # rows 0-3 (and 4-7), two columns a vector: b[half, group, pair]
        b = {}
        for half, (p, q) in enumerate([(0, 2), (4, 6)]):
            for g in range(2):
                lo, hi = a[p + g], a[q + g]
                b[half, g, 0] = shuffle(lo, hi, [0, 1, 8, 9, 2, 3, 10, 11])
                b[half, g, 1] = shuffle(lo, hi, [4, 5, 12, 13, 6, 7, 14, 15])
        # halves joined: column j = 4 g + 2 pair + sub
        for g in range(2):
            for pair in range(2):
                lo, hi = b[0, g, pair], b[1, g, pair]
                for sub, mask in enumerate(
                    ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])
                ):
                    col = shuffle(lo, hi, mask)
                    builder.store(col, at(d, d0, ds, 4 * g + 2 * pair + sub), align=4)
        return context.get_dummy_value()

    return types.none(src, s0, s_stride, dst, d0, d_stride), codegen


#: dot's vectors of eight float64 lanes (its interleaved partial sums:
#: 8 * DOT_VECTORS): independent chains of additions (on cache-resident
#: data, one thread, AVX-512: 0.11-0.15 ns a term with four, 0.15 with one).
DOT_VECTORS = 4


@intrinsic
def dot(typingctx, p, p0, v, v0, n):
    """``sum_j p.flat[p0 + j] * v.flat[v0 + j]`` for j < n (float64) in a
    fixed order: ``L = 8 * DOT_VECTORS`` interleaved partial sums (sum ``l``
    adds the terms ``j % L == l``) over the first ``n - n % L`` terms; sums
    ``l`` and ``l + 8``, ... added as a pairwise tree of vectors (``(v0 + v1)
    + (v2 + v3)``), the eight lanes of the result as ``((l0 + l1) + (l2 +
    l3)) + ((l4 + l5) + (l6 + l7))``; then the remaining terms in order. No
    bounds checks (the memory must be contiguous from both offsets).

    The partial sums are vectors of eight doubles: the operations of as many
    scalar accumulators, in the same order, which LLVM keeps scalar (it does
    not vectorise a floating-point reduction without reassociation)."""
    if not _arrays_of(types.float64, p, v):
        return None

    def codegen(context, builder, sig, args):
        from numba.core import cgutils

        pd, vd = _data(context, builder, sig, args, 0, 2)
        p0, v0, n = args[1], args[3], args[4]
        vty = ir.VectorType(ir.DoubleType(), 8)
        lanes = ir.Constant(n.type, 8 * DOT_VECTORS)
        n_vec = builder.sub(n, builder.srem(n, lanes))
        zero = ir.Constant(vty, [0.0] * 8)
        acc = [cgutils.alloca_once_value(builder, zero) for _ in range(DOT_VECTORS)]

        def load(base, start, j, width):
            at = builder.gep(base, [builder.add(start, j)])
            if width == 1:
                return builder.load(at)
            return builder.load(builder.bitcast(at, vty.as_pointer()), align=8)

        start = ir.Constant(n.type, 0)
        with cgutils.for_range_slice(builder, start, n_vec, lanes) as (j, _):
            for u in range(DOT_VECTORS):
                ju = builder.add(j, ir.Constant(n.type, 8 * u))
                prod = builder.fmul(load(pd, p0, ju, 8), load(vd, v0, ju, 8))
                builder.store(builder.fadd(builder.load(acc[u]), prod), acc[u])
        vec = [builder.load(a) for a in acc]
        while len(vec) > 1:
            vec = [builder.fadd(vec[k], vec[k + 1]) for k in range(0, len(vec), 2)]
        lane = [
            builder.extract_element(vec[0], ir.Constant(ir.IntType(32), i))
            for i in range(8)
        ]
        while len(lane) > 1:
            lane = [builder.fadd(lane[k], lane[k + 1]) for k in range(0, len(lane), 2)]
        total = cgutils.alloca_once_value(builder, lane[0])
        one = ir.Constant(n.type, 1)
        with cgutils.for_range_slice(builder, n_vec, n, one) as (j, _):
            prod = builder.fmul(load(pd, p0, j, 1), load(vd, v0, j, 1))
            builder.store(builder.fadd(builder.load(total), prod), total)
        return builder.load(total)

    return types.float64(p, p0, v, v0, n), codegen


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM's vectorisers use the CPU's widest vectors in the calling
    function (a no-op where the widest are 256 bits or narrower).

    LLVM's x86 cost model prefers 256-bit vectors on AVX-512 CPUs
    (``prefer-256-bit``, chosen for older Xeons whose clock dropped while
    512-bit units ran), so by default every loop here ran at half an
    AVX-512 CPU's width. This sets the function's ``"prefer-vector-width"``
    string attribute, the one clang's ``-mprefer-vector-width=512`` sets, on
    the function being compiled only: other Numba code in the process keeps
    its target. Loops vectorise lane by lane, so results do not change
    (every reduction here is an integer one or in source order).
    """

    def codegen(context, builder, sig, args):
        # (llvmlite checks attribute names against LLVM's enum attributes; a
        # string attribute is written as it is, quoted, into the IR. Should a
        # later llvmlite store attributes otherwise, the loops keep LLVM's
        # default width rather than fail to compile.)
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except (TypeError, AttributeError):
            pass
        return context.get_dummy_value()

    return types.none(), codegen


if numba.config.DISABLE_JIT:  # plain-Python stand-ins for the intrinsics

    def wide_vectors():  # noqa: F811
        pass

    def prefetch(ary, idx):  # noqa: F811
        pass

    def address(ary, idx):  # noqa: F811
        return ary.ctypes.data + idx * ary.itemsize

    def store_nt_line(dst, i, src, j):  # noqa: F811  (an ordinary copy)
        n = NT_LINE // dst.itemsize
        dst[i : i + n] = src[j : j + n]

    def nt_fence():  # noqa: F811
        pass

    def transpose8(src, s0, s_stride, dst, d0, d_stride):  # noqa: F811
        sf, df = src.reshape(-1), dst.reshape(-1)
        for i in range(8):
            for j in range(8):
                df[d0 + j * d_stride + i] = sf[s0 + i * s_stride + j]

    def bits_to_float(bits):  # noqa: F811
        return np.asarray(bits).view(
            np.float32 if np.asarray(bits).dtype == np.int32 else np.float64
        )[()]

    def dot(p, p0, v, v0, n):  # noqa: F811
        a, b = p.reshape(-1)[p0 : p0 + n], v.reshape(-1)[v0 : v0 + n]
        width = 8 * DOT_VECTORS
        n_vec = n - n % width
        part = [0.0] * width
        for j in range(n_vec):
            part[j % width] += float(a[j]) * float(b[j])
        vec = [part[8 * u : 8 * u + 8] for u in range(DOT_VECTORS)]
        while len(vec) > 1:
            vec = [
                [x + y for x, y in zip(vec[k], vec[k + 1], strict=True)]
                for k in range(0, len(vec), 2)
            ]
        lane = vec[0]
        while len(lane) > 1:
            lane = [lane[k] + lane[k + 1] for k in range(0, len(lane), 2)]
        total = lane[0]
        for j in range(n_vec, n):
            total += float(a[j]) * float(b[j])
        return total

    def fma(a, b, c):  # noqa: F811  (two roundings: fine for coverage)
        return a * b + c

    def unmanaged(ary):  # noqa: F811
        return ary

    def as_readonly(ary):  # noqa: F811
        return ary

    def int_view(ary):  # noqa: F811
        return ary.view(np.int32 if ary.dtype == np.float32 else np.int64)

    def float_to_bits(f):  # noqa: F811
        return np.asarray(f).view(
            np.int32 if np.asarray(f).dtype == np.float32 else np.int64
        )[()]
