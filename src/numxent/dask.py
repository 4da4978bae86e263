"""The functional API on dask arrays: one fused numxent call per block.

``import numxent.dask`` needs dask (the ``dask`` extra: ``dask[array]`` and
``distributed``); ``import numxent`` never imports it. The NumPy functions
(``numxent.cross_entropy`` and the others) given a dask array route here, so
``nx.cross_entropy(logits_dask, target_dask)`` is lazy like any dask
operation and never pulls the data into one process.

Layout
    Logits are chunked along the sample (leading) axes only; the class axis
    (the last, or ``axis`` for the rowwise functions) must be one chunk. A
    chunked class axis is rechunked into one, with a :class:`RechunkWarning`.
    ``target`` and ``sample_weight`` may be dask or NumPy arrays; they are
    rechunked to the logits' sample chunks (a NumPy one is split, not copied
    whole into every task).

Determinism
    Each block runs one fused numxent call and returns its float64 partial
    sums (loss total, the mean's denominator); the partials are added by a
    fixed tree (:data:`SPLIT_EVERY` consecutive blocks per node, in block
    order). The graph fixes every addition, so for a given chunking the
    result is the same bits under any scheduler (synchronous, threads,
    processes, a ``distributed`` cluster) and any timing. A different
    chunking adds in a different order: the loss may differ from the
    in-memory call's in the last bits (float64 sums, rounded once to the
    result dtype).

Gradients
    ``return_grad=True`` returns ``(loss, grad)``, both lazy; ``grad`` has
    the logits' chunks. The fused task of a block computes the block's
    loss and its gradient of the *summed* loss; for ``reduction="mean"``
    each gradient block is then multiplied by ``1 / D`` with ``D`` the global
    denominator (a small task that depends on every block's denominator).
    ``dask.compute(loss, grad)`` therefore reads the logits once. (In the
    result dtype, so a float32 gradient of "mean" may differ from the
    in-memory call's by an ulp: the in-memory kernel scales in float64
    before rounding once.) Computing ``loss`` and ``grad`` in two separate
    ``compute`` calls runs the fused blocks twice.

Errors
    Arguments are checked when the call is made (dtypes, shapes, reductions,
    class-weight shapes, ``label_smoothing``...) by running the same checks as
    the NumPy API. The range of hard labels is checked by the kernels, so an
    out-of-range label raises :class:`numxent.LabelIndexError` when the
    result is computed, with its position inside its block.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.array.core import PerformanceWarning

from . import _kernels as K
from . import _ops as O
from . import _validation as V

__all__ = [
    "RechunkWarning",
    "SPLIT_EVERY",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "log_softmax",
    "logsumexp",
    "softmax",
]

#: Consecutive partial sums added by one node of the reduction tree.
SPLIT_EVERY = 8


class RechunkWarning(PerformanceWarning):
    """A dask array was rechunked so that its class axis is one chunk."""


is_dask_array = V.is_dask_collection


# --------------------------------------------------------------------------
# layout helpers
# --------------------------------------------------------------------------


def _as_logits(x, name: str = "logits", *, min_ndim: int = 1) -> da.Array:
    V.check_dask_array(x, name, isinstance(x, da.Array))
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    V.check_known_chunks(x.chunks, name)
    # the NumPy API's dtype and dimension checks, on an empty block
    V.check_logits(
        np.empty((0,) * x.ndim, dtype=x.dtype),
        name,
        min_ndim=min_ndim,
        need_classes=False,
    )
    if x.ndim >= 1 and x.shape[-1] == 0 and min_ndim >= 1:
        V.check_logits(np.empty(x.shape[-1:], dtype=x.dtype), name)
    return x


def _one_chunk(x: da.Array, axis: int, name: str) -> da.Array:
    """``x`` with ``axis`` in a single chunk (rechunked with a warning)."""
    if len(x.chunks[axis]) > 1:
        warnings.warn(
            f"{name}: axis {axis} (classes) is split into {len(x.chunks[axis])} "
            f"chunks; numxent.dask needs it whole and rechunks it (a copy of "
            f"the array through the scheduler). Chunk {name} along the sample axes "
            f"only, e.g. {name}.rechunk({{{axis}: -1}}).",
            RechunkWarning,
            stacklevel=3,
        )
        x = x.rechunk({axis: -1})
    return x


def _like_rows(a, name: str, chunks: tuple, shape: tuple) -> da.Array:
    """``a`` (NumPy or dask) as a dask array of ``shape`` with ``chunks``."""
    V.check_dask_array(a, name, isinstance(a, da.Array))
    arr = a if isinstance(a, da.Array) else da.from_array(np.asarray(a), chunks=-1)
    if arr.shape != tuple(shape):
        return arr  # the caller's check names the wrong shape
    if arr.chunks != tuple(chunks):
        arr = arr.rechunk(chunks)
    return arr


def _probe(a, shape_tail: tuple = ()) -> np.ndarray:
    """An empty NumPy array with ``a``'s dtype (for the eager checks)."""
    return np.empty((0, *shape_tail), dtype=a.dtype)


def _blocks(a: da.Array | None, numblocks: tuple) -> np.ndarray:
    """``a``'s blocks as an object array of Delayed (or of None)."""
    if a is None:
        out = np.empty(numblocks, dtype=object)
        out.fill(None)
        return out
    return a.to_delayed(optimize_graph=False).reshape(numblocks)


def tree(parts: list, func, *, pure: bool = True, until: int = 1) -> list:
    """``parts`` combined by ``func`` in a fixed tree, in order: each node
    combines :data:`SPLIT_EVERY` consecutive parts, level by level, until at
    most ``until`` parts are left (returned as a list)."""
    node = dask.delayed(func, pure=pure)
    while len(parts) > until:
        parts = [
            node(*parts[i : i + SPLIT_EVERY]) for i in range(0, len(parts), SPLIT_EVERY)
        ]
    return parts


def _add_floats(*parts: float) -> float:
    total = 0.0
    for p in parts:  # in order: the tree fixes every addition
        total += p
    return total


def _assemble(pieces: np.ndarray, block_shape, dtype) -> da.Array:
    """A dask array from an object array of Delayed blocks."""
    meta = np.empty((0,) * pieces.ndim, dtype=dtype)

    def nest(index: tuple):
        if len(index) == pieces.ndim:
            return da.from_delayed(
                pieces[index], shape=block_shape(index), dtype=dtype, meta=meta
            )
        return [nest((*index, i)) for i in range(pieces.shape[len(index)])]

    return da.block(nest(()))


def _finish(total: float, denom: float, red: str, dtype: np.dtype):
    """The reduced loss as the NumPy API returns it."""
    if red == "mean":
        if denom == 0.0:
            return dtype.type(math.nan)
        return dtype.type(total / denom)
    return dtype.type(total)


def _scale_grad(grad: np.ndarray, denom: float) -> np.ndarray:
    if denom == 0.0:  # NaN loss: the gradient is taken as 0 (as in NumPy)
        return np.zeros_like(grad)
    scale = 1.0 / denom
    if grad.dtype == np.float64:
        grad *= scale
    else:
        np.multiply(grad, scale, out=grad, casting="same_kind")
    return grad


def _lazy_result(fused, chunks, red, dtype, return_grad, row_ndim):
    """The loss (and gradient) from the fused blocks' Delayed results.

    ``fused`` is an object array over the logits' block grid, each entry the
    Delayed ``(losses or None, total, denominator, grad or None)`` of one
    block; the "none" losses have ``row_ndim`` dimensions (the logits' first
    ``row_ndim`` axes).
    """

    def block_shape(index: tuple) -> tuple:
        return tuple(chunks[a][i] for a, i in enumerate(index))

    get = dask.delayed(operator.getitem, pure=True)
    denom = None
    if red == "none":
        grid = fused if row_ndim == fused.ndim else fused[..., 0]
        rows = np.empty(grid.shape, dtype=object)
        for idx in np.ndindex(*grid.shape):
            rows[idx] = get(grid[idx], 0)
        loss = _assemble(rows, block_shape, dtype)
    else:
        flat = list(fused.ravel())
        (total,) = tree([get(f, 1) for f in flat], _add_floats)
        (denom,) = tree([get(f, 2) for f in flat], _add_floats)
        value = dask.delayed(_finish, pure=True)(total, denom, red, dtype)
        loss = da.from_delayed(value, shape=(), dtype=dtype, meta=np.empty((), dtype))
    if not return_grad:
        return loss
    grads = np.empty(fused.shape, dtype=object)
    scale = dask.delayed(_scale_grad, pure=True)
    for idx in np.ndindex(*fused.shape):
        g = get(fused[idx], 3)
        grads[idx] = scale(g, denom) if red == "mean" else g
    return loss, _assemble(grads, block_shape, dtype)


# --------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------


def _ce_block(x, t, sw, weight, ignore_index, eps, red, want_grad):
    """One block: ``(loss rows or None, total, denominator, grad or None)``
    with the block's float64 loss total and "mean" denominator; the gradient
    is that of the block's summed loss."""
    block_red = "none" if red == "none" else "sum"
    c = O.prepare_ce(x, t, weight, sw, ignore_index, block_red, eps, want_grad)
    denom, total = O.launch_ce(c)
    if total is None:  # soft labels
        total = float(K.ordered_total(c.per_row)) if block_red == "sum" else 0.0
    grad = O.finish_grad(c.grad, c.grad_k)
    rows = O.reduce_loss(c.per_row, red, denom, total, c.dtype, c.lead)
    return (rows if red == "none" else None), float(total), float(denom), grad


def cross_entropy(
    logits,
    target,
    *,
    weight=None,
    sample_weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    return_grad: bool = False,
    out=None,
):
    """:func:`numxent.cross_entropy` on dask arrays, lazily.

    Same arguments and results as the NumPy function, as dask arrays:
    ``logits`` of shape (..., n_classes) chunked along the leading axes;
    ``target`` (class indices of shape logits.shape[:-1] or probabilities of
    logits.shape) and ``sample_weight`` (shape logits.shape[:-1]) as dask or
    NumPy arrays, rechunked to the logits' chunks; ``weight`` (n_classes,)
    a NumPy array sent with every task. The loss is a 0-d dask array
    ("mean", "sum") or one of shape logits.shape[:-1] ("none");
    ``return_grad=True`` also gives the lazy gradient, chunked like
    ``logits``. ``out`` is not supported (the gradient is a new dask array).

    Examples
    --------
    >>> import dask.array as da, numpy as np, numxent as nx
    >>> x = np.array([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]])
    >>> loss, grad = nx.cross_entropy(da.from_array(x, chunks=(1, 3)),
    ...                               np.array([0, 1]), return_grad=True)
    >>> round(float(loss.compute()), 7), grad.chunks
    (0.2598602, ((1, 1), (3,)))
    """
    V.check_no_out(out)
    x = _as_logits(logits)
    single = x.ndim == 1
    if single:
        x = x[np.newaxis]
    x = _one_chunk(x, x.ndim - 1, "logits")
    red: Any = V.check_reduction(reduction)
    lead = x.shape[:-1]
    n_classes = x.shape[-1]
    t_arr = target if is_dask_array(target) else np.asarray(target)
    if single:
        t_arr = t_arr[np.newaxis]
    hard = t_arr.dtype.kind in "iu"
    # the NumPy API's argument checks, on empty blocks of the right dtypes
    probe_x = np.empty((0, n_classes), dtype=x.dtype)
    probe_t = _probe(t_arr, () if hard else (n_classes,))
    probe_sw = None if sample_weight is None else np.empty(0)
    if sample_weight is not None and not is_dask_array(sample_weight):
        V.check_nonneg_weights(sample_weight, "sample_weight", None)
    O.prepare_ce(probe_x, probe_t, weight, probe_sw, ignore_index, red,
                 label_smoothing, False)  # fmt: skip
    V.classify_target(_shape_only(t_arr), _shape_only(x))  # dtype and shape
    if hard and t_arr.shape != lead:
        V.hard_labels(_shape_only(t_arr), n_classes, 0, lead)  # raises
    w = None if weight is None else V.check_nonneg_weights(weight, "weight", None)
    t = _like_rows(t_arr, "target", x.chunks[:-1] if hard else x.chunks,
                   lead if hard else x.shape)  # fmt: skip
    sw = None
    if sample_weight is not None:
        s_arr = sample_weight if is_dask_array(sample_weight) else (
            np.asarray(sample_weight)
        )  # fmt: skip
        if single:
            s_arr = s_arr[np.newaxis]
        V.check_shape(s_arr.shape, lead, "sample_weight")
        sw = _like_rows(s_arr, "sample_weight", x.chunks[:-1], lead)

    numblocks = x.numblocks
    xb = _blocks(x, numblocks)
    lead_blocks = numblocks[:-1]
    tb = _blocks(t, lead_blocks if hard else numblocks)
    swb = _blocks(sw, lead_blocks)
    block = dask.delayed(_ce_block, pure=True)
    eps = float(label_smoothing)
    fused = np.empty(numblocks, dtype=object)
    for idx in np.ndindex(*lead_blocks):
        fused[idx + (0,)] = block(xb[idx + (0,)], tb[idx] if hard else tb[idx + (0,)],
                           swb[idx], w, int(ignore_index), eps, red,
                           bool(return_grad))  # fmt: skip
    res = _lazy_result(fused, x.chunks, red, V.result_dtype(x), return_grad,
                       x.ndim - 1)  # fmt: skip
    return _unbatch(res, single, red, return_grad)


def _shape_only(x) -> np.ndarray:
    """A zero-strided stand-in of ``x``'s shape and dtype (shape checks)."""
    return np.broadcast_to(np.empty((), dtype=x.dtype), x.shape)


def _unbatch(res, single: bool, red: str, return_grad: bool):
    if not single:
        return res
    loss, grad = res if return_grad else (res, None)
    grad_: Any = grad
    if red == "none":
        loss = loss[0]
    if not return_grad:
        return loss
    return loss, grad_[0]


# --------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# --------------------------------------------------------------------------


def _bce_block(x, t, w, pw, sw, red, want_grad):
    """One block: ``(losses or None, total, denominator, grad or None)``."""
    block_red = "none" if red == "none" else "sum"
    c = O.prepare_bce(x, t, w, pw, sw, block_red, want_grad)
    O.launch_bce(c)
    grad = O.finish_grad(c.grad, c.grad_k)
    if red == "none":
        return O.reduce_loss(c.elem, red, 1.0, None, c.dtype, c.shape), 0.0, 0.0, grad
    return None, float(K.ordered_total(c.block_sums)), c.denom, grad


def _bce_weight(w, name: str, x: da.Array):
    """A BCE weight as each block needs it: a NumPy array every block can
    broadcast (constant along the sample axes), else a dask array of the
    logits' shape and chunks. ``None`` stays ``None``."""
    if w is None:
        return None, False
    if is_dask_array(w):
        a = w
    else:
        a = V.check_nonneg_weights(w, name, None)
    V.check_broadcastable(a.shape, x.shape, name)
    if not is_dask_array(a):
        lead = a.shape[: max(0, a.ndim - 1)]
        per_block = a.size == 1 or (x.ndim >= 2 and all(s == 1 for s in lead))
        if per_block:
            return (a.reshape(a.shape[-1:]) if a.ndim else a), False
    d = da.broadcast_to(da.asarray(a), x.shape).rechunk(x.chunks)
    return d, True


def binary_cross_entropy_with_logits(
    logits,
    target,
    *,
    weight=None,
    pos_weight=None,
    sample_weight=None,
    reduction: str = "mean",
    return_grad: bool = False,
    out=None,
):
    """:func:`numxent.binary_cross_entropy_with_logits` on dask arrays, lazily.

    Same arguments and results as the NumPy function: ``logits`` of any
    shape, chunked along the leading axes (for 2 or more dimensions the
    last axis is one chunk, rechunked with a :class:`RechunkWarning`
    otherwise); ``target`` of the logits' shape and ``sample_weight`` (shape
    logits.shape[:-1], or logits.shape for 1-D logits) as dask or NumPy
    arrays; ``weight`` and ``pos_weight`` broadcastable to the logits' shape
    (NumPy arrays constant along the sample axes are sent with every task,
    others are split with the logits). The loss is a 0-d dask array ("mean",
    "sum") or one of the logits' shape ("none"); ``return_grad=True`` also
    gives the lazy gradient, chunked like ``logits``.

    Examples
    --------
    >>> import dask.array as da, numpy as np, numxent as nx
    >>> x = da.from_array(np.array([[2.0], [0.5], [-1.0]]), chunks=(2, 1))
    >>> loss = nx.binary_cross_entropy_with_logits(x, np.array([[1.0], [1.0], [0.0]]))
    >>> float(loss.compute())  # doctest: +ELLIPSIS
    0.30475...
    """
    V.check_no_out(out)
    x = _as_logits(logits, min_ndim=0)
    scalar = x.ndim == 0
    if scalar:
        x = x.reshape(1)
    if x.ndim >= 2:
        x = _one_chunk(x, x.ndim - 1, "logits")
    red: Any = V.check_reduction(reduction)
    t_arr = target if is_dask_array(target) else np.asarray(target)
    if scalar:
        t_arr = t_arr.reshape(1)
    V.check_bce_target(np.empty(t_arr.shape, t_arr.dtype), _shape_only(x))
    t = _like_rows(t_arr, "target", x.chunks, x.shape)
    w, w_split = _bce_weight(weight, "weight", x)
    pw, pw_split = _bce_weight(pos_weight, "pos_weight", x)
    sw_lead = x.shape[:-1] if x.ndim >= 2 else x.shape
    sw = None
    if sample_weight is not None:
        s_arr = sample_weight if is_dask_array(sample_weight) else (
            V.check_nonneg_weights(sample_weight, "sample_weight", sw_lead)
        )  # fmt: skip
        V.check_shape(s_arr.shape, sw_lead, "sample_weight")
        sw_chunks = x.chunks[:-1] if x.ndim >= 2 else x.chunks
        sw = _like_rows(s_arr, "sample_weight", sw_chunks, sw_lead)
    O.prepare_bce(
        np.empty((0, 1), x.dtype),
        np.empty((0, 1), t_arr.dtype),
        None,
        None,
        None,
        red,
        False,
    )  # the remaining checks, on an empty block

    numblocks = x.numblocks
    xb = _blocks(x, numblocks)
    tb = _blocks(t, numblocks)
    wb: Any = _blocks(w, numblocks) if w_split else None
    pwb: Any = _blocks(pw, numblocks) if pw_split else None
    sw_blocks = numblocks[:-1] if x.ndim >= 2 else numblocks
    swb = _blocks(sw, sw_blocks)
    block = dask.delayed(_bce_block, pure=True)
    fused = np.empty(numblocks, dtype=object)
    for idx in np.ndindex(*numblocks):
        s_idx = idx[:-1] if x.ndim >= 2 else idx
        fused[idx] = block(
            xb[idx], tb[idx], wb[idx] if w_split else w,
            pwb[idx] if pw_split else pw, swb[s_idx], red, bool(return_grad),
        )  # fmt: skip
    res = _lazy_result(fused, x.chunks, red, V.result_dtype(x), return_grad,
                       x.ndim)  # fmt: skip
    if scalar:
        loss, grad = res if return_grad else (res, None)
        loss = loss.reshape(()) if red == "none" else loss
        grad_: Any = grad
        return (loss, grad_.reshape(())) if return_grad else loss
    return res


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------


def _rowwise(x, axis, mode: int, keep: bool):
    func = functools.partial(O.rowwise, mode=mode)
    a = _as_logits(x, "x")
    axis = V.check_axis(axis, a.ndim) % a.ndim
    O.rowwise(np.empty((0, 1), a.dtype), -1, K.MODE_LOGSUMEXP)  # the dtype checks
    if a.shape[axis] == 0:
        V.check_logits(np.empty((0,), a.dtype), "x")
    a = _one_chunk(a, axis, "x")
    dtype = V.result_dtype(a)
    meta = np.empty((0,) * (a.ndim - (0 if keep else 1)), dtype=dtype)
    if keep:
        return a.map_blocks(func, axis=axis, dtype=dtype, meta=meta)
    if a.ndim == 1:
        return a.map_blocks(
            lambda b: np.asarray(func(b, axis=0)).reshape(()),
            drop_axis=0,
            dtype=dtype,
            meta=meta,
        )
    return a.map_blocks(func, axis=axis, drop_axis=axis, dtype=dtype, meta=meta)


def logsumexp(x, axis: int = -1):
    """:func:`numxent.logsumexp` on a dask array, one call per block (the
    reduced ``axis`` in one chunk; rechunked with a :class:`RechunkWarning`
    otherwise).

    >>> import dask.array as da, numpy as np, numxent as nx
    >>> x = da.from_array(np.array([[0.0, np.log(3.0)], [1.0, 1.0]]), chunks=(1, 2))
    >>> nx.logsumexp(x).compute()
    array([1.38629436, 1.69314718])
    """
    return _rowwise(x, axis, K.MODE_LOGSUMEXP, keep=False)


def log_softmax(x, axis: int = -1):
    """:func:`numxent.log_softmax` on a dask array, one call per block, with
    ``x``'s chunks (``axis`` in one chunk)."""
    return _rowwise(x, axis, K.MODE_LOG_SOFTMAX, keep=True)


def softmax(x, axis: int = -1):
    """:func:`numxent.softmax` on a dask array, one call per block, with
    ``x``'s chunks (``axis`` in one chunk)."""
    return _rowwise(x, axis, K.MODE_SOFTMAX, keep=True)
