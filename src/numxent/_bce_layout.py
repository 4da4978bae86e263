"""How binary cross-entropy's weights reach the kernel.

``weight``, ``pos_weight`` and ``sample_weight`` are broadcast to the logits'
shape as (rows, cols) views; when they do not vary along rows they are laid
out once as short periodic patterns, so that each kernel block reads
contiguous slices and stays one vector loop. Unit weights (no weights given)
are cached: the common call pays for no broadcast or pattern.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _kernels as K
from . import _validation as V

EMPTY_F64 = V.readonly(np.zeros(0, dtype=np.float64))


@functools.lru_cache(maxsize=64)
def unread_weights(n_cols: int) -> np.ndarray:
    """What the kernel gets for weight, pos_weight and sample_weight when it
    reads the patterns instead: only their row length (``shape[1]``) is
    used. A zero-strided (2, n_cols) view, never contiguous, so that every
    such call has one argument type (Numba compiles one kernel per layout
    of these arrays). A call without elements reads nothing: its row length
    is 1 here, as a (2, 0) view would be contiguous."""
    return np.broadcast_to(np.float64(1.0), (2, max(n_cols, 1)))


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
