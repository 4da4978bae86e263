"""Which kernel runs, serial or parallel, for every op.

Each op has a kernel pair (``*_par`` / ``*_ser``, see ``numxent._kernels``)
whose two variants take the same arguments, return the same thing and give
the same bits; this module picks the pair and the variant from the call's
size, and runs a parallel variant through ``_config.run_parallel`` (which
serialises launches where the threading layer needs it). A forked child of a
process whose GNU OpenMP pool ran runs the serial variants only.

Cold calls run serially first. A call large enough for the parallel variant,
whose parallel variant is neither compiled in this process nor in the on-disk
cache, runs the serial variant (the same bits) and leaves the parallel one
uncompiled; the next such call compiles it. Compiling a parallel kernel costs
about 40 % more than its serial twin (Numba compiles and optimises the row
code once more for each of the layers around a ``prange`` loop), so a process
that makes one call of each kind starts that much sooner.
``NUMXENT_DEFER_PARALLEL=0`` compiles the parallel variant on the first call.
"""

from __future__ import annotations

import os

import numpy as np

from . import _kernels as K
from ._config import (
    CompileDeferred,
    forked_after_openmp,
    is_cached,
    load_only,
    run_parallel,
    start_pool,
)

__all__ = [
    "DEFER_PARALLEL",
    "NARROW_CLASSES",
    "SERIAL_BELOW",
    "WIDE_SERIAL_BELOW",
    "bce",
    "ce_hard",
    "ce_hard_16bit",
    "ce_soft",
    "narrow_rows",
    "rowwise",
    "softcap",
]

# Below this many logits a parallel launch costs more than it saves.
SERIAL_BELOW = 1 << 15
# Wide hard-label rows go parallel from here: a parallel launch pays from two
# tasks of NARROW_TILE elements (256 x 100 is faster parallel, 128 x 100
# serial).
WIDE_SERIAL_BELOW = 16384
# Hard-label rows of at most this many classes, by the logits' itemsize
# (float32, float64), go to the tile kernel (``ce_narrow_*``), wider rows to
# the row-at-a-time one (``ce_hard_*``): the crossovers measured on one
# thread, one kernel against the other. float32 rows of at most
# ``K.LANE_CLASSES`` classes without soft-capping take the lane kernel
# (``ce_lanes_*``; 16-bit logits its staged twin).
NARROW_CLASSES = {4: 256, 8: 100}


#: Whether a cold parallel variant waits for its second call (see above).
DEFER_PARALLEL = os.environ.get("NUMXENT_DEFER_PARALLEL", "").strip() != "0"
# Call kinds (kernel, logits dtype and writability, variant) whose parallel
# variant runs, and those whose first call the serial variant served. (A
# finer signature than these keys compiles as Numba does, on first call.)
_parallel_ready: set = set()
_deferred: set = set()


def _run(parallel_kernel, serial_kernel, n_elements: int, serial_below: int, args,
         variant=None):  # fmt: skip
    if n_elements < serial_below or forked_after_openmp():
        return serial_kernel(*args)
    x = args[0]
    kind = (parallel_kernel, x.dtype.num, x.flags.writeable, variant)
    if kind in _parallel_ready:
        return run_parallel(parallel_kernel, *args)
    return _first_parallel(parallel_kernel, serial_kernel, args, kind)


def _first_parallel(parallel_kernel, serial_kernel, args, kind):
    # (only numxent's cached kernels defer: a wrapper around one is run as is)
    if DEFER_PARALLEL and kind not in _deferred and is_cached(parallel_kernel):
        try:
            with load_only():
                result = run_parallel(parallel_kernel, *args)
        except CompileDeferred:
            _deferred.add(kind)
            start_pool()
            return serial_kernel(*args)
    else:
        result = run_parallel(parallel_kernel, *args)
    _parallel_ready.add(kind)
    return result


def narrow_rows(n_classes: int, dtype: np.dtype) -> bool:
    """Whether hard-label rows of this width go to the tile kernel. (Looked
    up by itemsize: ``dtype.name`` builds a string on every call.)"""
    return n_classes <= NARROW_CLASSES[dtype.itemsize]


_NO_ROWS = np.zeros(0)


def ce_hard(x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows, grad,
            z=0.0, cap=0.0, zrows=_NO_ROWS):  # fmt: skip
    """Hard-label cross-entropy: ``(first bad label or -1, the mean's
    denominator, the loss total)``; nothing is written on a bad label.

    ``z``: the z-loss scale (0: off), its per-row terms into ``zrows`` when
    that is not empty; ``cap`` > 0: ``x`` holds soft-capped logits (see
    ``softcap``) and the gradient is taken through the cap.

    The kernels take z-loss and soft-capping as ``None`` when off: Numba then
    compiles them without that code, so a plain call compiles neither the
    soft-capped finish nor the z-loss (a call with them compiles its own
    variant, one of three: soft-capped calls share one, given ``z = 0.0``
    without z-loss, whose every use is behind ``z > 0`` or a non-empty
    ``zrows``: the same bits as a variant without it).
    """
    n_classes = x.shape[1]
    co = cap if cap > 0.0 else None
    zo = z if z > 0.0 or zrows.shape[0] > 0 or co is not None else None
    args = (x, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows, grad, zo,
            co, zrows)  # fmt: skip
    if narrow_rows(n_classes, x.dtype):
        par, ser, below = K.ce_narrow_par, K.ce_narrow_ser, SERIAL_BELOW
    else:
        par, ser, below = K.ce_hard_par, K.ce_hard_ser, WIDE_SERIAL_BELOW
    if co is None and n_classes <= K.LANE_CLASSES and x.dtype.itemsize == 4:
        par, ser = K.ce_lanes_par, K.ce_lanes_ser
    variant = (zo is None, co is None)
    return _run(par, ser, x.shape[0] * n_classes, below, args, variant)


def ce_hard_16bit(xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction,
                  loss_rows, gb):  # fmt: skip
    """``ce_hard`` on float16 / bfloat16 logits given as their uint16 bits
    (``fmt``: ``K.FMT_FLOAT16`` / ``K.FMT_BFLOAT16``), staged through float32
    (``ce_lowp``); tile or wide rows and the thresholds as for float32."""
    n_classes = xb.shape[1]
    args = (xb, fmt, y, w, w_total, sw, ignore_index, eps, reduction, loss_rows, gb)
    if n_classes <= K.LANE_CLASSES:
        par, ser, below = K.ce_lowp_lanes_par, K.ce_lowp_lanes_ser, SERIAL_BELOW
    elif n_classes <= NARROW_CLASSES[4]:
        par, ser, below = K.ce_lowp_narrow_par, K.ce_lowp_narrow_ser, SERIAL_BELOW
    else:
        par, ser, below = K.ce_lowp_wide_par, K.ce_lowp_wide_ser, WIDE_SERIAL_BELOW
    return _run(par, ser, xb.shape[0] * n_classes, below, args)


def softcap(x, cap: float, out) -> None:
    """``out = cap * tanh(x / cap)`` (``out`` may be ``x``)."""
    n = x.shape[0] * x.shape[1]
    _run(K.softcap_par, K.softcap_ser, n, SERIAL_BELOW, (x, cap, out))


def ce_soft(x, t, w, sw, eps, gscale, loss_rows, grad) -> None:
    """Soft-label cross-entropy into ``loss_rows`` and ``grad``."""
    args = (x, t, w, sw, eps, gscale, loss_rows, grad)
    _run(K.ce_soft_par, K.ce_soft_ser, x.shape[0] * x.shape[1], SERIAL_BELOW, args)


def bce(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale, block_sums,
        elem_loss, grad) -> None:  # fmt: skip
    """Binary cross-entropy into ``block_sums``, ``elem_loss`` and ``grad``."""
    args = (x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale, block_sums,
            elem_loss, grad)  # fmt: skip
    _run(K.bce_par, K.bce_ser, x.shape[0], SERIAL_BELOW, args)


def rowwise(x, mode: int, lse, out) -> None:
    """logsumexp (into ``lse``), log_softmax or softmax (into ``out``)."""
    args = (x, mode, lse, out)
    _run(K.softmax_par, K.softmax_ser, x.shape[0] * x.shape[1], SERIAL_BELOW, args)
