"""The NumPy functional API.

Each public function runs the three steps of ``_ops``: *prepare* (validate
and coerce the arguments through ``_validation``, allocate the outputs;
everything that can raise on bad input happens here, before anything is
written), *launch* (the kernel pair and its serial or parallel variant, picked
by ``_dispatch``) and *reduce* (the loss total, the mean, the dtype of the
results).

Given a dask array (the logits, the target or ``sample_weight``), each
function hands the call to its twin in ``numxent.dask`` and returns lazy dask
arrays, as NumPy functions do for dask arrays: nothing is computed into
memory. (A type test on the hot path; dask is imported only then.)
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels as K
from . import _ops as O
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
    if (
        weight is None
        and sample_weight is None
        and softcap is None
        and not return_z_loss
        and type(lse_square_scale) is float
        and lse_square_scale == 0.0
    ):
        res = O.ce_plain(logits, target, ignore_index, reduction, label_smoothing,
                         return_grad, out)  # fmt: skip
        if res is not None:
            return res
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
    c = O.prepare_ce(logits, target, weight, sample_weight, ignore_index,
                     reduction, label_smoothing, return_grad, out)  # fmt: skip
    V.check_hard_only(c.hard, z, cap, return_z_loss)
    if c.fmt != O.FMT_NONE:  # (the kernels read 16-bit logits as uint16 bits)
        V.check_plain_extras("float16/bfloat16 logits", z, cap, return_z_loss)
    zrows = O.NO_ROWS
    if return_z_loss and z > 0.0:
        zrows = np.zeros(c.per_row.shape[0])
    denom, total = O.launch_ce(c, z, cap, zrows)
    res = O.finish_ce(c, denom, total)
    if not return_z_loss:
        return res
    if z == 0.0:
        zrows = np.zeros(c.per_row.shape[0])
    z_loss = O.reduce_loss(zrows, c.reduction, denom, None, c.dtype, c.lead)
    return (res[0], z_loss, res[1]) if return_grad else (res, z_loss)


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
    c = O.prepare_bce(logits, target, weight, pos_weight, sample_weight,
                      reduction, return_grad, out)  # fmt: skip
    O.launch_bce(c)
    return O.finish_bce(c)


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------


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
    return O.rowwise(x, axis, K.MODE_LOGSUMEXP)


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
    return O.rowwise(x, axis, K.MODE_LOG_SOFTMAX)


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
    return O.rowwise(x, axis, K.MODE_SOFTMAX)
