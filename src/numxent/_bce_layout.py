"""How binary cross-entropy's weights reach the kernel.

``weight``, ``pos_weight`` and ``sample_weight`` are broadcast to the logits'
shape as (rows, cols) views; when they do not vary along rows they are laid
out once as short periodic patterns, so that each kernel block reads
contiguous slices and stays one vector loop; otherwise the kernel gathers
them through flat views and element steps (``gathered``). Unit weights (no
weights given) are cached: the common call pays for no broadcast or pattern.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _kernels as K
from . import _validation as V

EMPTY_F64 = V.readonly(np.zeros(0, dtype=np.float64))


@functools.lru_cache(maxsize=64)
def pattern_steps(n_cols: int) -> np.ndarray:
    """The kernel's ``steps`` when it reads the patterns, not the weights:
    only the row length is used. (A call without elements reads nothing.)"""
    return V.readonly(np.array([max(n_cols, 1), 0, 0, 0, 0, 0, 0], dtype=np.int64))


def _steps(a: np.ndarray) -> tuple[int, int]:
    # (the stride of a length-1 axis is never used: 0)
    (rs, cs), (rows, cols) = a.strides, a.shape
    return rs if rows > 1 else 0, cs if cols > 1 else 0


def gathered(w2, pw2, sw2):
    """The weights as the kernel gathers them: ``(w, pw, sw, steps)``, each a
    1-D read-only float64 array over a (rows, cols) view's memory, with
    element (r, c) at ``r * row_step + c * col_step``; ``steps`` holds the
    row length and the three pairs of steps. Whatever the views' layouts
    (contiguous, Fortran-ordered, broadcast, strided), the kernel gets one
    argument type: Numba compiles a kernel per array layout. A view with
    negative strides is copied first."""
    n_rows, n_cols = w2.shape
    flat: list[np.ndarray] = []
    steps = [n_cols]
    for a in (w2, pw2, sw2):
        if a.size == 0:
            flat.append(EMPTY_F64)
            steps += [0, 0]
            continue
        rs, cs = _steps(a)
        if rs < 0 or cs < 0 or rs % a.itemsize or cs % a.itemsize:
            a = np.ascontiguousarray(a)
            rs, cs = _steps(a)
        rs, cs = rs // a.itemsize, cs // a.itemsize
        span = (n_rows - 1) * rs + (n_cols - 1) * cs + 1
        flat.append(
            np.lib.stride_tricks.as_strided(
                a, shape=(span,), strides=(a.itemsize,), writeable=False
            )
        )
        steps += [rs, cs]
    return (*flat, V.readonly(np.array(steps, dtype=np.int64)))


@functools.lru_cache(maxsize=4)
def unit_patterns(cdtype: np.dtype):
    """``weight_pattern`` of unit weights, in the kernel's dtype."""
    one = V.broadcast_weight(np.float64(1.0), "weight", (1, 1), 1, 1)
    fac_pat, pw_pat, row_scale = weight_pattern(one, one, one)
    if cdtype != np.float64:
        fac_pat, pw_pat = (
            V.readonly(fac_pat.astype(cdtype)),
            V.readonly(pw_pat.astype(cdtype)),
        )
    return fac_pat, pw_pat, row_scale


def weight_pattern(w2, pw2, sw2):
    """Lay the BCE weights out so that kernel blocks read contiguous slices.

    Returns ``(fac_pat, pw_pat, row_scale)``. When weight and pos_weight do
    not vary along rows, ``fac_pat``/``pw_pat`` hold weight (times
    sample_weight if that does not vary either) and pos_weight repeated with
    period P (1 if constant, else the row length, at most BCE_BLOCK), P +
    BCE_BLOCK long; ``row_scale`` is the per-row sample weight when only it
    varies along rows. Empty arrays where the weights must be gathered.
    """
    n_rows, n_cols = w2.shape
    if n_rows * n_cols == 0:
        return EMPTY_F64, EMPTY_F64, EMPTY_F64
    row_free = n_rows == 1 or (w2.strides[0] == 0 and pw2.strides[0] == 0)
    sw_row_free = n_rows == 1 or sw2.strides[0] == 0
    if w2.strides == pw2.strides == sw2.strides == (0, 0):
        period = 1
    elif row_free and n_cols <= K.BCE_BLOCK and (sw_row_free or sw2.strides[1] == 0):
        period = n_cols
    else:
        return EMPTY_F64, EMPTY_F64, EMPTY_F64
    reps = -(-(period + K.BCE_BLOCK) // period)
    fac = np.asarray(w2[0, :period], dtype=np.float64)
    row_scale = EMPTY_F64
    if sw_row_free:
        fac = fac * sw2[0, :period]
    else:
        row_scale = V.readonly(np.ascontiguousarray(sw2[:, 0]))
    fac = np.tile(fac, reps)[: period + K.BCE_BLOCK]
    pwp = np.tile(np.asarray(pw2[0, :period], dtype=np.float64), reps)
    return V.readonly(fac), V.readonly(pwp[: period + K.BCE_BLOCK]), row_scale
