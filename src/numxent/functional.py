"""The NumPy functional API.

Each public function runs in three steps: *prepare* (validate and coerce the
arguments through ``_validation``, allocate the outputs; everything that can
raise on bad input happens here, before anything is written), *launch* (the
kernel pair and its serial or parallel variant, picked by ``_dispatch``) and
*reduce* (the loss total, the mean, the dtype of the results).

Given a dask array (the logits, the target or ``sample_weight``), each
function hands the call to its twin in ``numxent.dask`` and returns lazy dask
arrays, as NumPy functions do for dask arrays: nothing is computed into
memory. (A type test on the hot path; dask is imported only then.)
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _bce_layout as B
from . import _dispatch as D
from . import _kernels as K
from . import _validation as V

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "logsumexp",
    "log_softmax",
    "softmax",
]

#: A loss: a NumPy scalar ("mean", "sum") or an array ("none").
Loss = np.floating[Any] | NDArray[np.floating[Any]]
Grad = NDArray[np.floating[Any]]

_EMPTY_F64 = V.readonly(np.zeros(0, dtype=np.float64))
# Hard labels on float16 / bfloat16 logits: the kernels read and write their
# bits in place (uint16 views) and take the format as one more argument.
_FMT_16BIT = {"float16": K.FMT_FLOAT16, "bfloat16": K.FMT_BFLOAT16}
_REDUCE_CODES = {"none": K.REDUCE_NONE, "sum": K.REDUCE_SUM, "mean": K.REDUCE_MEAN}


@functools.lru_cache(maxsize=64)
def _unit_weights(n_classes: int) -> np.ndarray:
    """Read-only ones(C): the class weights when none are given."""
    return V.readonly(np.ones(n_classes))


def _detach_from_out(a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """A private copy of ``a`` if writing ``out`` could change it mid-call."""
    if out is not None and np.may_share_memory(a, out):
        return V.readonly(a.copy())
    return a


def _logits_for_kernel(x: np.ndarray, out: np.ndarray | None, cdtype) -> np.ndarray:
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


def _alloc_grad(out, shape, dtype, cdtype):
    """(grad returned to the user, array the kernel writes)."""
    grad = out if out is not None else np.empty(shape, dtype=dtype)
    if dtype == cdtype:
        return grad, grad
    # float16 / bfloat16 other than hard labels: computed in float32
    return grad, np.empty(shape, dtype=cdtype)


def _reduce(per_row, red: str, denom: float, total, dtype, shape, grad, kgrad):
    """The loss as returned (and the gradient, when ``grad`` is not None).

    ``per_row`` holds the kernel's float64 per-row (or per-block) losses and
    ``total`` their ``ordered_total`` when the kernel computed it already.
    """
    if red == "mean" and denom == 0.0:
        # 0/0: PyTorch's NaN loss; the gradient of a constant NaN is taken as 0.
        if grad is None:
            return dtype.type(math.nan)
        grad[...] = 0
        return dtype.type(math.nan), grad
    if red != "none" and total is None:
        total = float(K.ordered_total(per_row))  # float64, a fixed order
    if dtype.itemsize == 2:
        # float16 ends at 65504: a larger loss is inf, as PyTorch's, without
        # NumPy's overflow warning
        with np.errstate(over="ignore"):
            loss = _cast_loss(per_row, red, denom, total, dtype, shape)
    else:
        loss = _cast_loss(per_row, red, denom, total, dtype, shape)
    if grad is None:
        return loss
    if kgrad is not grad:
        np.copyto(grad, kgrad, casting="same_kind")
    return loss, grad


def _cast_loss(per_row, red: str, denom: float, total, dtype, shape):
    if red == "none":
        return per_row.reshape(shape).astype(dtype)
    return dtype.type(total if red == "sum" else total / denom)


# --------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------


@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    ignore_index: int = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    label_smoothing: float = ...,
    lse_square_scale: float = ...,
    softcap: float | None = ...,
    return_z_loss: Literal[False] = ...,
    return_grad: Literal[False] = ...,
    out: None = ...,
) -> Loss: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    ignore_index: int = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    label_smoothing: float = ...,
    lse_square_scale: float = ...,
    softcap: float | None = ...,
    return_z_loss: Literal[False] = ...,
    return_grad: Literal[True],
    out: NDArray[np.floating[Any]] | None = ...,
) -> tuple[Loss, Grad]: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    ignore_index: int = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    label_smoothing: float = ...,
    lse_square_scale: float = ...,
    softcap: float | None = ...,
    return_z_loss: Literal[True],
    return_grad: bool = ...,
    out: NDArray[np.floating[Any]] | None = ...,
) -> tuple[Loss, Loss] | tuple[Loss, Loss, Grad]: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    ignore_index: int = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    label_smoothing: float = ...,
    lse_square_scale: float = ...,
    softcap: float | None = ...,
    return_z_loss: bool = ...,
    return_grad: bool = ...,
    out: NDArray[np.floating[Any]] | None = ...,
) -> Loss | tuple[Loss, Grad] | tuple[Loss, Loss] | tuple[Loss, Loss, Grad]: ...


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    return_grad: bool = False,
    out: NDArray[np.floating[Any]] | None = None,
) -> Loss | tuple[Loss, Grad] | tuple[Loss, Loss] | tuple[Loss, Loss, Grad]:
    r"""Softmax cross-entropy of ``logits`` against ``target``, with its gradient.

    PyTorch's ``torch.nn.functional.cross_entropy`` with the class axis last,
    computed in one fused pass (loss and gradient together) by a parallel
    Numba kernel.

    Parameters
    ----------
    logits : array of shape (..., n_classes)
        Unnormalised scores, float16/32/64 or ``ml_dtypes.bfloat16``. Leading
        axes are samples; a 1-D array is one unbatched sample.
    target : int array of shape logits.shape[:-1], or float array of shape logits.shape
        Class indices (any integer dtype, "hard" labels) or class
        probabilities ("soft" labels).
    weight : array of shape (n_classes,), optional
        Class weights ``w`` (finite, >= 0).
    sample_weight : array of shape logits.shape[:-1], optional
        Per-sample weights ``v`` (finite, >= 0), scikit-learn's meaning: each
        sample's loss is multiplied by ``v_i`` and so is its term in the mean's
        denominator.
    ignore_index : int, default -100
        Hard labels equal to it give exactly 0 loss and 0 gradient (whatever
        that row's logits hold) and leave the mean's denominator. With soft
        labels it must be negative (it is then unused).
    reduction : {"mean", "sum", "none"}, default "mean"
        How the per-sample losses ``loss_i`` are combined: "none" returns
        them, "sum" adds them, "mean" divides their sum by the total weight
        of the kept samples (see Returns).
    label_smoothing : float in [0, 1], default 0.0
        Mixes the target with the uniform distribution: ``q = (1-eps) t + eps/C``.
    lse_square_scale : float >= 0, default 0.0
        z-loss (class-index targets): adds ``lse_square_scale * w_{y_i} *
        lse_i**2`` to each kept row's loss before ``v_i`` multiplies it,
        ``lse_i`` the log-sum-exp of the row's (capped) logits; so the z term
        carries the same weight as the row's cross-entropy term and "mean"
        divides it by the same denominator. Its gradient is ``2 *
        lse_square_scale * w_{y_i} * lse_i * softmax(x_i)`` (times ``v_i``).
    softcap : float > 0 or None, default None
        Logit soft-capping (class-index targets): every logit becomes
        ``softcap * tanh(x / softcap)`` before anything else, and the gradient
        is taken through it (times ``1 - tanh**2``).
    return_z_loss : bool, default False
        Also return the z-loss part of the loss (already included in it),
        reduced the same way, for logging: the result is then ``(loss,
        z_loss)`` or, with ``return_grad``, ``(loss, z_loss, grad)``.
    return_grad : bool, default False
        Also return the gradient w.r.t. ``logits``: for "sum" the gradient of
        the summed loss; for "mean" that gradient divided by the mean's
        denominator; for "none" row ``i`` holds the gradient of ``loss_i``
        alone (which is the gradient of ``loss.sum()``).
    out : array of shape logits.shape, optional
        C-contiguous array of the logits' dtype that receives the gradient;
        may be ``logits`` itself (in place). Needs ``return_grad=True``.

    Returns
    -------
    loss : scalar of the logits' dtype, or array of shape logits.shape[:-1]
        With ``a_ik = w_k q_ik`` (soft) or ``a_ik = (1-eps) w_y [k=y_i] +
        (eps/C) w_k`` (hard), ``loss_i = -v_i sum_k a_ik log softmax(x_i)_k``.
        "none" returns ``loss_i``; "sum" returns ``sum_i loss_i``; "mean"
        divides that by ``sum_i v_i w_{y_i}`` over kept rows (hard) or by
        ``sum_i v_i`` (soft). A zero denominator (empty or all-ignored batch,
        all-zero weights) gives NaN and a zero gradient.
    grad : array of logits' shape and dtype (only with ``return_grad=True``)
        ``v_i (A_i softmax(x_i) - a_i)`` with ``A_i = sum_k a_ik``, divided by
        the denominator for "mean"; for "none", row ``i`` is the gradient of
        ``loss_i`` alone.

    Notes
    -----
    float32 logits are exponentiated in float32 (within 1 ulp) with row sums,
    logs and the gradient's scale factor in float64 (rounded once to float32
    before it multiplies the row); float64 logits are float64 throughout;
    float16 and bfloat16 are computed as float32 and rounded once to their
    format (with hard labels the logits are read in place, a block of rows
    at a time, not copied to float32). Sums across samples are float64 in a
    fixed order, so the result is
    bitwise identical for any number of threads. Where PyTorch gives NaN,
    numxent gives the limit in two cases: ignored rows (0 whatever their
    logits) and a zero target weight meeting a ``-inf`` logit (``0 log 0 = 0``).

    Examples
    --------
    >>> import numpy as np, numxent as nx
    >>> logits = np.array([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]])
    >>> float(nx.cross_entropy(logits, np.array([0, 1])))  # doctest: +ELLIPSIS
    0.25986...
    >>> loss, grad = nx.cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> bool(np.allclose(grad.sum(axis=-1), 0.0))
    True
    """
    z = V.check_lse_square_scale(lse_square_scale)
    cap = V.check_softcap(softcap)
    if V.lazy(logits, target, sample_weight):
        from . import dask as lazy

        V.check_plain_extras("dask arrays", z, cap, return_z_loss)
        return lazy.cross_entropy(logits, target, weight=weight,
                                  sample_weight=sample_weight,
                                  ignore_index=ignore_index, reduction=reduction,
                                  label_smoothing=label_smoothing,
                                  return_grad=return_grad, out=out)  # fmt: skip
    prep = _ce_prepare(logits, target, weight, sample_weight, ignore_index,
                       reduction, label_smoothing, return_grad, out)  # fmt: skip
    args, hard, red, denom, dtype, lead, grad, kgrad, t = prep
    V.check_hard_only(hard, z, cap, return_z_loss)
    per_row = args[-2]
    if not hard:
        total = None
        if not (red == "mean" and denom == 0.0):
            D.ce_soft(*args)
        return _reduce(per_row, red, denom, total, dtype, lead, grad, kgrad)
    if args[0].itemsize == 2:
        # (the kernels read 16-bit logits as uint16 bits)
        V.check_plain_extras("float16/bfloat16 logits", z, cap, return_z_loss)
        first_bad, denom, total = D.ce_hard_16bit(*args)
    else:
        zrows = np.zeros(per_row.shape[0]) if return_z_loss and z > 0.0 else _NO_ROWS
        if cap > 0.0:
            args = _capped_args(args, cap, t, lead)
        first_bad, denom, total = D.ce_hard(*args, z, cap, zrows)  # type: ignore[call-arg]
    if first_bad >= 0:
        V.raise_bad_label(t.reshape(-1), first_bad, args[0].shape[1], lead)
    res = _reduce(per_row, red, denom, total, dtype, lead, grad, kgrad)
    if not return_z_loss:
        return res
    z_loss = _reduce(zrows if z > 0.0 else np.zeros(per_row.shape[0]), red, denom,
                     None, dtype, lead, None, None)  # fmt: skip
    return (res[0], z_loss, res[1]) if return_grad else (res, z_loss)


# A zero-length per-row array the hard-label kernels never write (one array
# type for every call: a read-only one would compile the kernels again).
_NO_ROWS = np.zeros(0)


def _capped_args(args, cap: float, t, lead):
    """The hard-label kernel's arguments with the logits soft-capped: into the
    gradient buffer (the kernel then runs in place on it) or, forward-only,
    into a scratch array. The labels are scanned first, so a bad label raises
    before anything is written."""
    x, y, w, w_total, sw, ignore_k, eps, red_code, per_row, kgrad2 = args
    first_bad, _ = K.scan_hard_labels(y, x.shape[1], ignore_k, w, sw)
    if first_bad >= 0:
        V.raise_bad_label(t.reshape(-1), first_bad, x.shape[1], lead)
    xc = kgrad2 if kgrad2.shape[0] > 0 or x.shape[0] == 0 else np.empty_like(x)
    D.softcap(x, cap, xc)
    return (xc, y, w, w_total, sw, ignore_k, eps, red_code, per_row, kgrad2)


def _ce_hard_checked(x, y, w, ignore_index, eps, reduction, grad):
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
        w, w_total = _unit_weights(n_classes), float(n_classes)
    else:
        w_total = float(np.add.reduce(w))
    per_row = np.empty(n_rows, dtype=np.float64)
    kgrad = grad if grad is not None else np.empty((0, n_classes), dtype=x.dtype)
    first_bad, denom, total = D.ce_hard(x, y, w, w_total, _EMPTY_F64, ignore_index,
                                        eps, _REDUCE_CODES[reduction], per_row,
                                        kgrad)  # fmt: skip
    if first_bad >= 0:
        V.raise_bad_label(y, first_bad, n_classes, (n_rows,))
    return _reduce(per_row, reduction, denom, total, x.dtype, (n_rows,), grad, grad)


def _ce_prepare(logits, target, weight, sample_weight, ignore_index, reduction,
                label_smoothing, return_grad, out):  # fmt: skip
    """Check and coerce a cross_entropy call and allocate its outputs.

    Returns ``(kernel args, hard, reduction, the mean's denominator (soft
    labels; hard-label kernels compute it), dtype, leading shape, grad as
    returned or None, the gradient the kernel writes, target)``.
    """
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

    # The weights as the kernels read them: float64, contiguous, and a private
    # copy if they share memory with ``out``.
    if weight is None:
        w = _unit_weights(n_classes)  # cached, read-only, private: as is
    else:
        w = V.check_nonneg_weights(weight, "weight", (n_classes,))
        w = _detach_from_out(V.as_compute(w, np.float64), out)
    sw = _EMPTY_F64
    if sample_weight is not None:
        sw = V.check_nonneg_weights(sample_weight, "sample_weight", lead).reshape(-1)
        sw = _detach_from_out(V.as_compute(sw, np.float64), out)
    denom = 1.0
    if hard:
        y, ignore_k = V.hard_labels(t, n_classes, ignore, lead)
    else:
        V.check_soft_ignore_index(ignore)
        tc = V.as_compute(t, cdtype).reshape(n_rows, n_classes)
        tc = _detach_from_out(tc, out)
        if red == "mean":
            denom = float(n_rows if sample_weight is None else np.sum(sw))
    # -- every check has passed but the hard labels' range, which the kernel
    # scans before it writes anything: nothing below raises --

    kdtype = dtype if in_place16 else cdtype  # the dtype the kernel reads
    if return_grad:
        grad, kgrad = _alloc_grad(out, x.shape, dtype, kdtype)
        kgrad2 = kgrad if kgrad.ndim == 2 else kgrad.reshape(n_rows, n_classes)
    else:
        grad = kgrad = None
        kgrad2 = np.empty((0, n_classes), dtype=kdtype)
    per_row = np.empty(n_rows, dtype=np.float64)
    xk = _logits_for_kernel(x, out, kdtype)
    if xk.ndim != 2:
        xk = xk.reshape(n_rows, n_classes)
    if in_place16:
        w_total = float(n_classes) if weight is None else float(np.add.reduce(w))
        args = (xk.view(np.uint16), _FMT_16BIT[dtype.name], y, w, w_total, sw,
                ignore_k, eps, _REDUCE_CODES[red], per_row,
                kgrad2.view(np.uint16))  # fmt: skip
    elif hard:
        w_total = float(n_classes) if weight is None else float(np.add.reduce(w))
        args = (xk, y, w, w_total, sw, ignore_k, eps, _REDUCE_CODES[red], per_row,
                kgrad2)  # fmt: skip
    else:
        gscale = 1.0 / denom if red == "mean" and denom != 0.0 else 1.0
        args = (xk, tc, w, sw, eps, gscale, per_row, kgrad2)
    return args, hard, red, denom, dtype, lead, grad, kgrad, t


# --------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# --------------------------------------------------------------------------


@overload
def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    return_grad: Literal[False] = ...,
    out: None = ...,
) -> Loss: ...
@overload
def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    return_grad: Literal[True],
    out: NDArray[np.floating[Any]] | None = ...,
) -> tuple[Loss, Grad]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ...,
    sample_weight: ArrayLike | None = ...,
    reduction: Literal["mean", "sum", "none"] = ...,
    return_grad: bool = ...,
    out: NDArray[np.floating[Any]] | None = ...,
) -> Loss | tuple[Loss, Grad]: ...


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    return_grad: bool = False,
    out: NDArray[np.floating[Any]] | None = None,
) -> Loss | tuple[Loss, Grad]:
    r"""Binary cross-entropy of sigmoid(``logits``) against ``target``.

    PyTorch's ``torch.nn.functional.binary_cross_entropy_with_logits``,
    elementwise, computed in the overflow-free form in one fused pass.

    Parameters
    ----------
    logits : array of any shape
        Float16/32/64 scores. Every element is its own binary problem.
    target : array of logits.shape
        Probabilities of the positive class (integer and bool are cast).
    weight : array broadcastable to logits.shape, optional
        Rescales each element's loss (finite, >= 0).
    pos_weight : array broadcastable to logits.shape, optional
        Weight of the positive term, usually of shape (n_classes,) so it runs
        along the last axis (finite, >= 0).
    sample_weight : array, optional
        One weight per sample, shape logits.shape[:-1] (broadcast over the
        last axis) when logits have 2 or more dimensions, logits.shape for
        1-D logits. "mean" becomes ``np.average(loss, weights=sample_weight)``.
    reduction : {"mean", "sum", "none"}, default "mean"
        How the elementwise losses are combined: "none" returns them, "sum"
        adds them, "mean" averages them (weighted by ``sample_weight`` when
        given).
    return_grad : bool, default False
        Also return the gradient w.r.t. ``logits``: for "sum" the gradient of
        the summed loss; for "mean" that gradient divided by the mean's
        denominator (the element count, or the broadcast ``sample_weight``
        total); for "none" each element's own derivative (which is the
        gradient of ``loss.sum()``).
    out : array of logits.shape, optional
        C-contiguous gradient buffer of the logits' dtype; may be ``logits``
        itself (in place). Needs ``return_grad=True``.

    Returns
    -------
    loss : scalar of the logits' dtype, or array of logits.shape for "none"
        ``l = v w [(1-t) x + (1 + (p-1) t) log(1 + exp(-x))]`` elementwise
        (``p`` = pos_weight, ``v`` = sample_weight), reduced by sum or by
        ``np.average`` with weights ``v``.
    grad : array of logits' shape and dtype (only with ``return_grad=True``)
        ``v w [(1-t) sigmoid(x) - p t sigmoid(-x)]``, divided by the mean's
        denominator for "mean"; for "none" each element's own derivative.

    Notes
    -----
    Exact in the tails where the naive form is not (float32 ``x = -20``,
    ``t = 0`` gives 2.06e-9, not 0), and infinite logits give the limit (0 or
    +inf) rather than NaN. float32 logits are computed in float32 arithmetic
    (each element's loss within 4 ulp of the float64 value, subnormal results
    included) and summed in float64; float64 logits in float64.

    Examples
    --------
    >>> import numpy as np, numxent as nx
    >>> x = np.array([[2.0], [0.5], [-1.0]]); t = np.array([[1.0], [1.0], [0.0]])
    >>> float(nx.binary_cross_entropy_with_logits(x, t))  # doctest: +ELLIPSIS
    0.30475...
    >>> loss, grad = nx.binary_cross_entropy_with_logits(
    ...     x, t, reduction="sum", return_grad=True)
    >>> bool(np.allclose(grad, 1 / (1 + np.exp(-x)) - t))
    True
    """
    if V.lazy(logits, target, sample_weight):
        from . import dask as lazy

        return lazy.binary_cross_entropy_with_logits(
            logits, target, weight=weight, pos_weight=pos_weight,
            sample_weight=sample_weight, reduction=reduction,
            return_grad=return_grad, out=out,
        )  # fmt: skip
    prep = _bce_prepare(logits, target, weight, pos_weight, sample_weight,
                        reduction, return_grad, out)  # fmt: skip
    args, red, denom, dtype, shape, grad, kgrad = prep
    if not (red == "mean" and denom == 0.0):
        D.bce(*args)
    per_block = args[-2] if red == "none" else args[-3]  # elem_loss / block_sums
    return _reduce(per_block, red, denom, None, dtype, shape, grad, kgrad)


def _bce_prepare(logits, target, weight, pos_weight, sample_weight, reduction,
                 return_grad, out):  # fmt: skip
    """Check and coerce a BCE call and allocate its outputs.

    Returns ``(kernel args, reduction, the mean's denominator, dtype, shape,
    grad as returned or None, the gradient the kernel writes)``.
    """
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
        # a small call's time
        w2 = pw2 = sw2 = B.unit_weights(n_rows, n_cols)
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
    denom = 1.0
    if red == "mean":
        denom = float(np.sum(sw2)) if has_sw else float(n_el)
    # -- every check has passed: nothing below raises on user input --

    if not unweighted:
        w2, pw2, sw2 = (_detach_from_out(a, out) for a in (w2, pw2, sw2))
    tk = _detach_from_out(V.as_compute(t, cdtype).reshape(-1), out)
    if return_grad:
        grad, kgrad = _alloc_grad(out, shape, dtype, cdtype)
        kgrad1 = kgrad.reshape(-1)
    else:
        grad = kgrad = None
        kgrad1 = np.empty(0, dtype=cdtype)
    xk = _logits_for_kernel(x, out, cdtype).reshape(-1)
    elem = np.empty(n_el if red == "none" else 0, dtype=np.float64)
    block_sums = np.empty(-(-n_el // K.BCE_BLOCK), dtype=np.float64)
    gscale = 1.0 / denom if red == "mean" and denom != 0.0 else 1.0
    if unweighted:
        fac_pat, pw_pat, row_scale = B.unit_patterns(cdtype)
    else:
        fac_pat, pw_pat, row_scale = B.weight_pattern(w2, pw2, sw2)
        if cdtype != np.float64:  # the float32 kernel reads float32 patterns
            fac_pat, pw_pat = fac_pat.astype(cdtype), pw_pat.astype(cdtype)
    args = (xk, tk, w2, pw2, sw2, fac_pat, pw_pat, row_scale, gscale, block_sums,
            elem, kgrad1)  # fmt: skip
    return args, red, denom, dtype, shape, grad, kgrad


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------


def _rowwise(x, axis, mode: int):
    """prepare, launch and reduce of the rowwise family."""
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


def logsumexp(x: ArrayLike, axis: int = -1) -> Loss:
    """``log(sum(exp(x), axis))``, stable (max-shifted), in x's dtype.

    Parameters
    ----------
    x : float array of shape (..., n, ...)
        float16/32/64 values; ``n`` is the length of the reduced ``axis``
        (at least 1).
    axis : int, default -1
        The axis summed over, in ``[-x.ndim, x.ndim)``.

    Returns
    -------
    scalar or array of x's dtype, of shape x.shape without axis
        ``m + log(sum(exp(x - m), axis))`` with ``m`` the maximum along
        ``axis``; a NumPy scalar for 1-D ``x``. A row of all ``-inf`` gives
        ``-inf``; one holding ``+inf`` gives ``+inf``.

    Examples
    --------
    >>> import numpy as np, numxent as nx
    >>> float(nx.logsumexp(np.array([0.0, np.log(3.0)])))  # doctest: +ELLIPSIS
    1.386294...
    >>> x = np.array([[0.0, np.log(3.0)], [1.0, 1.0]])
    >>> nx.logsumexp(x)
    array([1.38629436, 1.69314718])
    >>> nx.logsumexp(x, axis=0)
    array([1.31326169, 1.74366838])
    """
    if V.lazy(x):
        from . import dask as lazy

        return lazy.logsumexp(x, axis)
    return _rowwise(x, axis, K.MODE_LOGSUMEXP)


def log_softmax(x: ArrayLike, axis: int = -1) -> NDArray[np.floating]:
    """``x - logsumexp(x, axis)``, stable, in x's dtype and shape.

    Parameters
    ----------
    x : float array of shape (..., n, ...)
        float16/32/64 values; ``n`` is the length of the normalised ``axis``
        (at least 1).
    axis : int, default -1
        The axis normalised over, in ``[-x.ndim, x.ndim)``.

    Returns
    -------
    array of x's shape and dtype
        The log-probabilities: ``exp`` of each slice along ``axis`` sums
        to 1.

    Examples
    --------
    >>> import numpy as np, numxent as nx
    >>> nx.log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    >>> nx.log_softmax(np.array([[0.0, np.log(3.0)], [2.0, 2.0]]))
    array([[-1.38629436, -0.28768207],
           [-0.69314718, -0.69314718]])
    """
    if V.lazy(x):
        from . import dask as lazy

        return lazy.log_softmax(x, axis)
    return _rowwise(x, axis, K.MODE_LOG_SOFTMAX)


def softmax(x: ArrayLike, axis: int = -1) -> NDArray[np.floating]:
    """``exp(x - logsumexp(x, axis))``, stable, in x's dtype and shape.

    Parameters
    ----------
    x : float array of shape (..., n, ...)
        float16/32/64 values; ``n`` is the length of the normalised ``axis``
        (at least 1).
    axis : int, default -1
        The axis normalised over, in ``[-x.ndim, x.ndim)``.

    Returns
    -------
    array of x's shape and dtype
        The probabilities: each slice along ``axis`` is >= 0 and sums to 1.

    Examples
    --------
    >>> import numpy as np, numxent as nx
    >>> nx.softmax(np.array([0.0, 0.0]))
    array([0.5, 0.5])
    >>> nx.softmax(np.array([[0.0, 1.0], [1.0, 0.0]]), axis=0)
    array([[0.26894142, 0.73105858],
           [0.73105858, 0.26894142]])
    """
    if V.lazy(x):
        from . import dask as lazy

        return lazy.softmax(x, axis)
    return _rowwise(x, axis, K.MODE_SOFTMAX)
