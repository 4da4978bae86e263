"""prepare -> launch -> reduce: the one call path of every loss.

The NumPy functions (``functional``), their Dask blocks (``dask``), the chunks
of ``linear_cross_entropy`` (``linear``) and the PyTorch bridge's lean entry
all run a loss in the same three steps:

*prepare* (``prepare_ce``, ``prepare_bce``)
    validate and coerce the arguments through ``_validation`` and allocate
    the outputs; everything that can raise on bad input happens here (or, for
    the hard labels' range, in the kernel's scan before it writes anything).
    The result is a named call object (``CECall``, ``BCECall``).
*launch* (``launch_ce``, ``launch_bce``)
    the kernel pair and its serial or parallel variant, picked by
    ``_dispatch``; returns the mean's denominator and the float64 loss total.
*reduce* (``reduce_loss``, ``finish``)
    the loss as returned (total, mean, per-row array, the dtype) and the
    gradient copied to its returned dtype where the kernel wrote another.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import _bce_layout as B
from . import _dispatch as D
from . import _kernels as K
from . import _validation as V

F64 = np.dtype(np.float64)
EMPTY_F64 = V.readonly(np.zeros(0, dtype=np.float64))
# A zero-length per-row array the hard-label kernels never write (one array
# type for every call: a read-only one would compile the kernels again).
NO_ROWS = np.zeros(0)
# Hard labels on float16 / bfloat16 logits: the kernels read and write their
# bits in place (uint16 views) and take the format as one more argument.
FMT_NONE = -1
_FMT_16BIT = {"float16": K.FMT_FLOAT16, "bfloat16": K.FMT_BFLOAT16}
REDUCE_CODES = {"none": K.REDUCE_NONE, "sum": K.REDUCE_SUM, "mean": K.REDUCE_MEAN}


# --------------------------------------------------------------------------
# shared pieces of prepare
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def unit_weights(n_classes: int) -> np.ndarray:
    """Read-only ones(C): the class weights when none are given."""
    return V.readonly(np.ones(n_classes))


def detach_from_out(a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """A private copy of ``a`` if writing ``out`` could change it mid-call."""
    if out is not None and np.may_share_memory(a, out):
        return V.readonly(a.copy())
    return a


def logits_for_kernel(x: np.ndarray, out: np.ndarray | None, cdtype) -> np.ndarray:
    xc = V.as_compute(x, cdtype)
    if out is None or not np.may_share_memory(xc, out):
        return xc
    same = (
        out.dtype == xc.dtype
        and out.__array_interface__["data"][0] == xc.__array_interface__["data"][0]
    )
    # out=logits exactly: the kernels read each element before overwriting it.
    # Any other overlap would let one row's gradient clobber another's logits.
    return xc if same else V.readonly(xc.copy())


def alloc_grad(out, shape, dtype, cdtype):
    """(grad returned to the user, array the kernel writes)."""
    grad = out if out is not None else np.empty(shape, dtype=dtype)
    if dtype == cdtype:
        return grad, grad
    # float16 / bfloat16 other than hard labels: computed in float32
    return grad, np.empty(shape, dtype=cdtype)


def class_weights(weight, n_classes: int, out=None) -> tuple[np.ndarray, float]:
    """``(w, sum of w)``: the class weights as the kernels read them
    (float64, contiguous, private from ``out``)."""
    if weight is None:
        return unit_weights(n_classes), float(n_classes)  # cached, read-only
    w = V.check_nonneg_weights(weight, "weight", (n_classes,))
    w = detach_from_out(V.as_compute(w, F64), out)
    return w, float(np.add.reduce(w))


def sample_weights(sample_weight, lead: tuple, out=None) -> np.ndarray:
    """Per-row sample weights as the kernels read them (empty: none)."""
    if sample_weight is None:
        return EMPTY_F64
    sw = V.check_nonneg_weights(sample_weight, "sample_weight", lead).reshape(-1)
    return detach_from_out(V.as_compute(sw, F64), out)


# --------------------------------------------------------------------------
# reduce
# --------------------------------------------------------------------------
def reduce_loss(per_row, red: str, denom: float, total, dtype: np.dtype, lead):
    """The loss as returned, from the kernel's float64 per-row (or per-block)
    losses, or from ``total`` (their ``ordered_total``) when it is known."""
    if red == "mean" and denom == 0.0:
        return dtype.type(math.nan)  # 0/0: PyTorch's NaN loss
    if red != "none" and total is None:
        total = float(K.ordered_total(per_row))  # float64, a fixed order
    if dtype.itemsize == 2:
        # float16 ends at 65504: a larger loss is inf, as PyTorch's, without
        # NumPy's overflow warning
        with np.errstate(over="ignore"):
            return _cast_loss(per_row, red, denom, total, dtype, lead)
    return _cast_loss(per_row, red, denom, total, dtype, lead)


def _cast_loss(per_row, red: str, denom: float, total, dtype, lead):
    if red == "none":
        return per_row.reshape(lead).astype(dtype)
    return dtype.type(total if red == "sum" else total / denom)


def finish(per_row, red: str, denom: float, total, dtype, lead, grad, kgrad):
    """The loss as returned, and the gradient when ``grad`` is not None."""
    if grad is not None and red == "mean" and denom == 0.0:
        grad[...] = 0  # the gradient of a constant NaN is taken as 0
        return dtype.type(math.nan), grad
    if red == "none" or total is None or dtype.itemsize == 2 or denom == 0.0:
        loss = reduce_loss(per_row, red, denom, total, dtype, lead)
    else:  # (the common case inline)
        loss = dtype.type(total if red == "sum" else total / denom)
    if grad is None:
        return loss
    if kgrad is not grad:
        np.copyto(grad, kgrad, casting="same_kind")
    return loss, grad


def finish_grad(grad, kgrad):
    """The gradient as returned: ``kgrad`` (what the kernel wrote) copied
    into ``grad`` where their dtypes differ."""
    if grad is not None and kgrad is not grad:
        np.copyto(grad, kgrad, casting="same_kind")
    return grad


# --------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------
_new = tuple.__new__


class CECall(NamedTuple):
    """A checked cross-entropy call with its outputs allocated."""

    x: np.ndarray  # (N, C) logits as the kernel reads them (uint16 bits: 16-bit)
    target: np.ndarray  # (N,) int64 labels or (N, C) probabilities
    w: np.ndarray  # (C,) float64 class weights
    w_total: float
    sw: np.ndarray  # (N,) float64 sample weights, or empty
    ignore_index: int
    eps: float  # label smoothing
    reduction: str
    per_row: np.ndarray  # (N,) float64 losses, written by the kernel
    kgrad: np.ndarray  # (N, C) gradient the kernel writes, or (0, C)
    fmt: int  # FMT_NONE, or the 16-bit format read in place
    hard: bool
    denom: float  # soft labels: the mean's denominator (the kernel finds hard's)
    dtype: np.dtype  # of the results
    lead: tuple  # the loss's shape for "none"
    grad: np.ndarray | None  # the gradient as returned (logits' shape)
    grad_k: np.ndarray | None  # the same, as the kernel writes it
    labels: np.ndarray  # the target as given (positions in error messages)


def prepare_ce(logits, target, weight, sample_weight, ignore_index, reduction,
               label_smoothing, return_grad: bool, out=None) -> CECall:  # fmt: skip
    """Check and coerce a cross_entropy call and allocate its outputs."""
    x = V.check_logits(logits)
    red = V.check_reduction(reduction)
    eps = V.check_label_smoothing(label_smoothing)
    ignore = V.check_ignore_index(ignore_index)
    t, hard = V.classify_target(target, x)
    dtype, cdtype = V.result_dtype(x), V.compute_dtype(x)
    n_classes = x.shape[-1]
    lead = x.shape[:-1]
    n_rows = math.prod(lead)
    out = V.check_out(out, x.shape, dtype, return_grad)
    # float16 / bfloat16 logits with hard labels are read in place, not copied
    # to float32 (the other 16-bit calls compute on a float32 copy)
    in_place16 = hard and V.is_16bit(dtype)
    if weight is None:  # (the common case inline: a small call is mostly overhead)
        w, w_total = unit_weights(n_classes), float(n_classes)
    else:
        w, w_total = class_weights(weight, n_classes, out)
    sw = (
        EMPTY_F64 if sample_weight is None else sample_weights(sample_weight, lead, out)
    )
    if hard:
        tk, ignore_k = V.hard_labels(t, n_classes, ignore, lead)
        # (labels in out's memory would be overwritten while the kernel reads them)
        tk = detach_from_out(tk, out)
        denom = 1.0
    else:
        V.check_soft_ignore_index(ignore)
        tk = V.as_compute(t, cdtype).reshape(n_rows, n_classes)
        tk = detach_from_out(tk, out)
        ignore_k = ignore
        denom = float(n_rows if sample_weight is None else np.sum(sw))
    # -- every check has passed but the hard labels' range, which the kernel
    # scans before it writes anything: nothing below raises --

    kdtype = dtype if in_place16 else cdtype  # the dtype the kernel reads
    if return_grad:
        grad, grad_k = alloc_grad(out, x.shape, dtype, kdtype)
        kgrad = grad_k if grad_k.ndim == 2 else grad_k.reshape(n_rows, n_classes)
    else:
        grad = grad_k = None
        kgrad = np.empty((0, n_classes), dtype=kdtype)
    xk = logits_for_kernel(x, out, kdtype)
    if xk.ndim != 2:
        xk = xk.reshape(n_rows, n_classes)
    fmt = FMT_NONE
    if in_place16:
        fmt = _FMT_16BIT[dtype.name]
        xk, kgrad = xk.view(np.uint16), kgrad.view(np.uint16)
    per_row = np.empty(n_rows, dtype=np.float64)
    # (tuple.__new__ skips the generated __new__'s Python frame: a small
    # call's time is mostly such overhead)
    return _new(CECall, (xk, tk, w, w_total, sw, ignore_k, eps, red, per_row, kgrad,
                         fmt, hard, denom, dtype, lead, grad, grad_k, t))  # fmt: skip


def launch_ce(c: CECall, z: float = 0.0, cap: float = 0.0, zrows=NO_ROWS,
              scratch=None):  # fmt: skip
    """Run the kernel of a prepared call: ``(the mean's denominator, the loss
    total or None)``. Raises LabelIndexError (before anything is written) on
    a hard label out of range. ``z``, ``cap``, ``zrows``: z-loss and
    soft-capping (hard labels, not 16-bit; see ``_dispatch.ce_hard``);
    ``scratch``: a writable buffer holding the logits that the call may
    overwrite (soft-capped in place), the logits being a read-only view of
    it."""
    x, t, w, w_total, sw, ignore, eps, red, per_row, kgrad, fmt, hard, denom = c[:13]
    if not hard:
        if not (red == "mean" and denom == 0.0):
            gscale = 1.0 / denom if red == "mean" else 1.0
            D.ce_soft(x, t, w, sw, eps, gscale, per_row, kgrad)
        return denom, None
    if fmt != FMT_NONE:
        first_bad, denom, total = D.ce_hard_16bit(
            x, fmt, t, w, w_total, sw, ignore, eps, REDUCE_CODES[red], per_row, kgrad
        )
    else:
        xk = _capped(c, cap, scratch) if cap > 0.0 else x
        first_bad, denom, total = D.ce_hard(
            xk, t, w, w_total, sw, ignore, eps, REDUCE_CODES[red], per_row, kgrad, z,
            cap, zrows,
        )  # fmt: skip
    if first_bad >= 0:
        V.raise_bad_label(c.labels.reshape(-1), first_bad, x.shape[1], c.lead)
    return denom, total


def _capped(c: CECall, cap: float, scratch) -> np.ndarray:
    """The logits soft-capped, as a read-only view (the kernels' one logits
    type): into the gradient buffer (the kernel then runs in place on it) or,
    forward-only, into ``scratch`` or a new array. The labels are scanned
    first, so a bad label raises before anything is written."""
    x, n_classes = c.x, c.x.shape[1]
    first_bad, _ = K.scan_hard_labels(c.target, n_classes, c.ignore_index, c.w, c.sw)
    if first_bad >= 0:
        V.raise_bad_label(c.labels.reshape(-1), first_bad, n_classes, c.lead)
    if c.kgrad.shape[0] > 0 or x.shape[0] == 0:
        xc = c.kgrad
    else:
        xc = scratch if scratch is not None else np.empty_like(x)
    D.softcap(x, cap, xc)
    return V.readonly(xc)


def finish_ce(c: CECall, denom: float, total):
    """The loss (and gradient) of a launched call, as the NumPy API returns
    them."""
    (*_, red, per_row), (dtype, lead, grad, grad_k) = c[:9], c[13:17]
    return finish(per_row, red, denom, total, dtype, lead, grad, grad_k)


def ce_hard_checked(x, y, w, ignore_index: int, eps: float, reduction: str, grad):
    """``cross_entropy`` for a call whose arguments are already checked.

    The PyTorch bridge's entry for its common case (its own checks cost less
    than the general coercions): ``x`` a C-contiguous read-only (N, C)
    float32/float64 array, ``y`` C-contiguous read-only int64 labels of shape
    (N,), ``w`` None or the class weights checked by
    ``V.check_nonneg_weights`` and made by ``V.as_compute`` (float64), an
    int64 ``ignore_index``, ``eps`` in [0, 1], ``reduction`` one of the three
    names and ``grad`` None or a C-contiguous writable array of ``x``'s shape
    and dtype that is ``x`` itself or shares no memory with the inputs.
    Returns what ``cross_entropy`` returns (``return_grad`` is ``grad is not
    None``) and raises its LabelIndexError on a label out of range.
    """
    n_rows, n_classes = x.shape
    if w is None:
        w, w_total = unit_weights(n_classes), float(n_classes)
    else:
        w_total = float(np.add.reduce(w))
    per_row = np.empty(n_rows, dtype=np.float64)
    kgrad = grad if grad is not None else np.empty((0, n_classes), dtype=x.dtype)
    first_bad, denom, total = D.ce_hard(x, y, w, w_total, EMPTY_F64, ignore_index,
                                        eps, REDUCE_CODES[reduction], per_row,
                                        kgrad)  # fmt: skip
    if first_bad >= 0:
        V.raise_bad_label(y, first_bad, n_classes, (n_rows,))
    return finish(per_row, reduction, denom, total, x.dtype, (n_rows,), grad, grad)


_F32, _I64 = np.dtype(np.float32), np.dtype(np.int64)
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def ce_plain(logits, target, ignore_index, reduction, eps, return_grad: bool, out):
    """``cross_entropy`` of the common call, or None where the call is not one.

    The common call: ``logits`` a C-contiguous (N, C) float32/float64 array of
    native byte order with C > 0, ``target`` C-contiguous int64 labels of
    shape (N,), a ``reduction`` string, an int ``ignore_index`` and a float
    ``eps`` (label smoothing) that ``prepare_ce`` would accept, ``out`` None
    or an array ``prepare_ce`` would take that is ``logits`` itself or
    shares no memory with ``logits`` or ``target``. These are type and flag
    tests only (no coercion, no copy); anything else returns None and takes
    ``prepare_ce``, which raises the errors. The kernel and the finish are
    ``prepare_ce``'s, so the results are the same bits.
    """
    if not (type(logits) is np.ndarray and type(target) is np.ndarray
            and logits.ndim == 2 and target.ndim == 1):  # fmt: skip
        return None
    dtype = logits.dtype
    if (dtype is not _F32 and dtype is not F64) or target.dtype is not _I64:
        return None
    n_rows, n_classes = logits.shape
    if (
        n_classes == 0
        or target.shape[0] != n_rows
        or not (logits.flags.c_contiguous and target.flags.c_contiguous)
        or type(reduction) is not str
        or reduction not in REDUCE_CODES
        or type(ignore_index) is not int
        or not _I64_MIN <= ignore_index <= _I64_MAX
        or type(eps) is not float
        or not 0.0 <= eps <= 1.0
    ):
        return None
    grad = None
    if out is not None:
        if not (
            return_grad
            and type(out) is np.ndarray
            and out.dtype is dtype
            and out.shape == logits.shape
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            return None
        # (out is logits: the kernels read each element before writing it.
        # Arrays that own their memory, base None, cannot overlap.)
        owned = out.base is None
        if out is not logits and not (owned and logits.base is None):
            if np.may_share_memory(out, logits):
                return None
        if not (owned and target.base is None) and np.may_share_memory(out, target):
            return None
        grad = out
    elif return_grad:
        grad = np.empty((n_rows, n_classes), dtype=dtype)
    x = logits.view()
    x.setflags(write=False)
    y = target.view()
    y.setflags(write=False)
    return ce_hard_checked(x, y, None, ignore_index, eps, reduction, grad)


# --------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# --------------------------------------------------------------------------
class BCECall(NamedTuple):
    """A checked binary cross-entropy call with its outputs allocated."""

    x: np.ndarray  # the logits, flat, as the kernel reads them
    target: np.ndarray  # flat
    w: np.ndarray  # weight, pos_weight, sample_weight as the kernel gathers
    pw: np.ndarray  # them (flat, see _bce_layout.gathered), or empty
    sw: np.ndarray
    steps: np.ndarray  # the row length and the gathered weights' steps
    fac_pat: np.ndarray  # their periodic patterns (see _bce_layout)
    pw_pat: np.ndarray
    row_scale: np.ndarray
    block_sums: np.ndarray  # float64 loss per kernel block
    elem: np.ndarray  # float64 loss per element ("none"), or empty
    kgrad: np.ndarray  # flat gradient the kernel writes, or empty
    reduction: str
    denom: float  # the mean's denominator
    dtype: np.dtype
    shape: tuple
    grad: np.ndarray | None
    grad_k: np.ndarray | None


def prepare_bce(logits, target, weight, pos_weight, sample_weight, reduction,
                return_grad: bool, out=None) -> BCECall:  # fmt: skip
    """Check and coerce a BCE call and allocate its outputs."""
    x = V.check_logits(logits, min_ndim=0, need_classes=False)
    red = V.check_reduction(reduction)
    t = V.check_bce_target(target, x)
    dtype, cdtype = V.result_dtype(x), V.compute_dtype(x)
    shape = x.shape
    n_cols = shape[-1] if x.ndim >= 2 else math.prod(shape)
    n_rows = math.prod(shape[:-1]) if x.ndim >= 2 else 1
    n_el = math.prod(shape)
    out = V.check_out(out, shape, dtype, return_grad)

    has_sw = sample_weight is not None
    unweighted = weight is None and pos_weight is None and not has_sw
    if unweighted:
        # cached: the weight checks, broadcasts and patterns below are most of
        # a small call's time (the kernel reads the unit patterns)
        w2 = pw2 = sw2 = B.EMPTY_F64
    else:
        w = V.check_nonneg_weights(1.0 if weight is None else weight, "weight", None)
        pw = V.check_nonneg_weights(
            1.0 if pos_weight is None else pos_weight, "pos_weight", None
        )
        sw_shape = shape[:-1] if x.ndim >= 2 else shape
        sw = V.check_nonneg_weights(
            sample_weight if has_sw else 1.0,
            "sample_weight",
            sw_shape if has_sw else None,
        )
        if has_sw and x.ndim >= 2:
            sw = sw[..., np.newaxis]
        w2 = V.broadcast_weight(w, "weight", shape, n_rows, n_cols)
        pw2 = V.broadcast_weight(pw, "pos_weight", shape, n_rows, n_cols)
        sw2 = V.broadcast_weight(sw, "sample_weight", shape, n_rows, n_cols)
    denom = float(np.sum(sw2)) if has_sw else float(n_el)
    # -- every check has passed: nothing below raises on user input --

    if not unweighted:
        w2, pw2, sw2 = (detach_from_out(a, out) for a in (w2, pw2, sw2))
    tk = detach_from_out(V.as_compute(t, cdtype).reshape(-1), out)
    if return_grad:
        grad, grad_k = alloc_grad(out, shape, dtype, cdtype)
        kgrad = grad_k.reshape(-1)
    else:
        grad = grad_k = None
        kgrad = np.empty(0, dtype=cdtype)
    xk = logits_for_kernel(x, out, cdtype).reshape(-1)
    elem = np.empty(n_el if red == "none" else 0, dtype=np.float64)
    block_sums = np.empty(-(-n_el // K.BCE_BLOCK), dtype=np.float64)
    steps = B.pattern_steps(n_cols)
    if unweighted:
        fac_pat, pw_pat, row_scale = B.unit_patterns(cdtype)
    else:
        fac_pat, pw_pat, row_scale = B.weight_pattern(w2, pw2, sw2)
        if cdtype != np.float64:  # the float32 kernel reads float32 patterns
            fac_pat = V.readonly(fac_pat.astype(cdtype))
            pw_pat = V.readonly(pw_pat.astype(cdtype))
        if fac_pat.shape[0] > 0:  # the kernel reads the patterns, not w2, ...
            w2 = pw2 = sw2 = B.EMPTY_F64
        else:
            w2, pw2, sw2, steps = B.gathered(w2, pw2, sw2)
    return _new(BCECall, (xk, tk, w2, pw2, sw2, steps, fac_pat, pw_pat, row_scale,
                          block_sums, elem, kgrad, red, denom, dtype, shape, grad,
                          grad_k))  # fmt: skip


def launch_bce(c: BCECall) -> None:
    """Run the kernel of a prepared call (not for an empty "mean")."""
    x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, block_sums, elem, kgrad = c[:12]
    denom = c.denom
    if c.reduction == "mean" and denom == 0.0:
        return
    gscale = 1.0 / denom if c.reduction == "mean" else 1.0
    D.bce(x, t, w, pw, sw, steps, fac_pat, pw_pat, row_scale, gscale, block_sums, elem,
          kgrad)  # fmt: skip


def bce_losses(c: BCECall) -> np.ndarray:
    """The float64 losses a launched call reduces: per element ("none") or
    per kernel block."""
    return c.elem if c.reduction == "none" else c.block_sums


def finish_bce(c: BCECall):
    (*_, block_sums, elem, _, red, denom, dtype, shape, grad, grad_k) = c
    per = elem if red == "none" else block_sums
    return finish(per, red, denom, None, dtype, shape, grad, grad_k)


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------
def rowwise(x, axis, mode: int):
    """logsumexp, log_softmax or softmax (``mode``) of ``x`` along ``axis``:
    prepare, launch and reduce of the rowwise family."""
    a = V.check_logits(x, "x")
    axis = V.check_axis(axis, a.ndim)
    dtype, cdtype = V.result_dtype(a), V.compute_dtype(a)
    last = axis in (-1, a.ndim - 1)  # the common case: no axis moves
    moved = a if last else np.moveaxis(a, axis, -1)
    lead = moved.shape[:-1]
    n = moved.shape[-1]
    rows = math.prod(lead)
    xk = V.as_compute(moved, cdtype)
    if xk.ndim != 2:
        xk = xk.reshape(rows, n)
    if mode == K.MODE_LOGSUMEXP:
        lse = np.empty(rows, dtype=np.float64)
        res = np.empty((0, n), dtype=cdtype)
    else:
        lse = np.empty(0, dtype=np.float64)
        res = np.empty((rows, n), dtype=cdtype)

    D.rowwise(xk, mode, lse, res)

    if mode == K.MODE_LOGSUMEXP:
        return lse.reshape(lead).astype(dtype)[()]
    res = res.reshape(moved.shape).astype(dtype, copy=False)
    return res if last else np.moveaxis(res, -1, axis)
