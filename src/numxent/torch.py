"""PyTorch bridge: drop-in CPU cross-entropy losses backed by numxent's kernels.

Provides ``cross_entropy`` and ``binary_cross_entropy_with_logits`` (the
arguments of ``torch.nn.functional``'s), the ``CrossEntropyLoss`` and
``BCEWithLogitsLoss`` modules, and ``set_gradient_pool_bytes`` (the pool of
reused gradient buffers). A served call computes loss and gradient in one
fused pass in the forward; the backward only scales the saved gradient.

Served: CPU float32/float64 tensors of any layout, int64 or
uint8 class indices or probability targets, every reduction, weights,
``ignore_index`` and label smoothing; bfloat16/float16 logits with class
indices (read in place, float32 arithmetic, gradient in the logits' dtype,
a float32 loss under CPU autocast). Handed to PyTorch's own implementation
(same results and errors): other devices and dtypes, tensor subclasses
with a ``__torch_function__`` of their own (``nn.Parameter`` is served),
targets or weights that require grad, double backward, and every call
numxent's checks reject (a :class:`numxent.NumxentError`).

Eager calls run ``torch.autograd.Function``s; a contiguous (N, C) input with
contiguous int64 labels takes a lean pre-checked entry to the kernel. While
compiling (``torch.compile``, ``torch.export``) the functions call the custom
ops of ``numxent._torch_ops`` instead (no graph break). See docs/torch.md for
the layout, the gradient pool, compile, bfloat16, DDP and where the results
differ from PyTorch's. With ``process_group=``, ``cross_entropy`` and
``linear_cross_entropy`` split the vocabulary over the ranks of a
``torch.distributed`` group (``numxent._torch_vocab``; see docs/large-vocabulary.md).

>>> import torch
>>> from numxent.torch import cross_entropy
>>> x = torch.tensor([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]], requires_grad=True)
>>> loss = cross_entropy(x, torch.tensor([0, 1]))
>>> loss.backward()
>>> round(loss.item(), 5), x.grad.sum().abs().item() < 1e-6
(0.25986, True)
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Reduction

from . import _torch_ops as _ops
from . import _validation as _V
from ._torch_linear import LinearCrossEntropyLoss, linear_cross_entropy
from ._torch_serve import (
    _CE_16BIT,
    _LABEL_DTYPES,
    _POOL,
    _REDUCTIONS,
    _SERVED_DTYPES,
    FallbackWarning,
    _ce_reference,
    _class_first,
    _scale,
    _Unserved,
    bce_run,
    ce_run,
    fallback,
    fast_apply,
    plain_tensor,
    rejected,
    tensor_problem,
    with_c_apply,
)
from ._torch_vocab import vocab_cross_entropy

__all__ = [
    "FallbackWarning",
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "LinearCrossEntropyLoss",
    "linear_cross_entropy",
    "set_gradient_pool_bytes",
]


def set_gradient_pool_bytes(nbytes: int) -> int:
    """Cap the memory the bridge keeps in reusable gradient buffers.

    Parameters
    ----------
    nbytes : int
        Total bytes of pooled buffers kept between calls (default 2 GiB);
        buffers larger than this are never pooled. 0 turns pooling off and
        releases the buffers the pool holds.

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> old = set_gradient_pool_bytes(0)   # every call allocates afresh
    >>> set_gradient_pool_bytes(old)
    0
    """
    return _POOL.set_limit(_V.check_nonneg_int(nbytes, "nbytes"))


# --------------------------------------------------------------------------
# layer 1: autograd Functions
# --------------------------------------------------------------------------
# The options of a call live on a subclass per distinct set of them (class
# attributes, made once and cached), so that ``apply`` takes the tensors
# only: every argument costs the autograd machinery time on a small call.
class _CrossEntropyFunction(torch.autograd.Function):
    options: tuple = ()  # ignore_index, reduction, label_smoothing
    extras: tuple = ()  # (lse_square_scale, softcap) or ()

    @staticmethod
    def forward(ctx, input, target, weight=None):
        cls = ctx._forward_cls
        need_grad = ctx.needs_input_grad[0]
        loss, ctx.grad_nl = ce_run(input, target, weight, *cls.options, need_grad,
                                   not input.is_leaf, cls.extras)  # fmt: skip
        ctx.save_for_backward(input, target, weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        # the gradient (numxent's layout) computed in the forward: taken by
        # the first backward
        grad, ctx.grad_nl = ctx.grad_nl, None
        cls = ctx._forward_cls
        reduction = cls.options[1]
        if grad is None or torch.is_grad_enabled():
            input, target, weight = ctx.saved_tensors
            if torch.is_grad_enabled():  # create_graph=True: PyTorch's graph
                fallback("cross_entropy", _DOUBLE_BACKWARD)
                ignore_index, _, label_smoothing = cls.options
                return _double_backward(
                    lambda x: _ce_reference(
                        x,
                        target,
                        weight,
                        ignore_index,
                        reduction,
                        label_smoothing,
                        *cls.extras,
                    ),  # fmt: skip
                    input,
                    grad_output,
                    len(ctx.needs_input_grad),
                )
            # a second backward (retain_graph=True): recompute
            _, grad = ce_run(input, target, weight, *cls.options, True,
                             not input.is_leaf, cls.extras)  # fmt: skip
        grad = _scale(grad, grad_output, reduction == "none")
        return (_class_first(grad),) + (None,) * (len(ctx.needs_input_grad) - 1)


@functools.lru_cache(maxsize=256)
def _ce_function(options: tuple, extras: tuple):
    attrs = {"options": options, "extras": extras}
    return with_c_apply(type("_CrossEntropyFunction", (_CrossEntropyFunction,), attrs))


class _BCEWithLogitsFunction(torch.autograd.Function):
    reduction = "mean"

    @staticmethod
    def forward(ctx, input, target, weight=None, pos_weight=None):
        reduction = ctx._forward_cls.reduction
        need_grad = ctx.needs_input_grad[0]
        loss, ctx.grad = bce_run(input, target, weight, pos_weight, reduction,
                                 need_grad, not input.is_leaf)  # fmt: skip
        ctx.save_for_backward(input, target, weight, pos_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        reduction = ctx._forward_cls.reduction
        if grad is None or torch.is_grad_enabled():
            input, target, weight, pos_weight = ctx.saved_tensors
            if torch.is_grad_enabled():
                fallback("binary_cross_entropy_with_logits", _DOUBLE_BACKWARD)
                return _double_backward(
                    lambda x: F.binary_cross_entropy_with_logits(
                        x,
                        target,
                        weight=weight,
                        reduction=reduction,
                        pos_weight=pos_weight,
                    ),  # fmt: skip
                    input,
                    grad_output,
                    len(ctx.needs_input_grad),
                )
            _, grad = bce_run(input, target, weight, pos_weight, reduction, True,
                              not input.is_leaf)  # fmt: skip
        if reduction == "none":
            grad = grad.mul_(grad_output)
        else:
            grad = _scale(grad, grad_output, False)
        return (grad,) + (None,) * (len(ctx.needs_input_grad) - 1)


_BCE_FUNCTIONS = {
    r: with_c_apply(
        type("_BCEWithLogitsFunction", (_BCEWithLogitsFunction,), {"reduction": r})
    )
    for r in _REDUCTIONS
}
_DOUBLE_BACKWARD = (
    "double backward (create_graph=True): PyTorch's functions recompute the "
    "loss from the saved input and differentiate it"
)


def _double_backward(loss_fn, input, grad_output, n_inputs):
    """Backward with create_graph=True: differentiate PyTorch's own loss.

    ``input`` comes out of ``saved_tensors`` still attached to the caller's
    graph, so the gradient returned here is itself differentiable.
    """
    (g,) = torch.autograd.grad(
        loss_fn(input), input, grad_output, create_graph=True, allow_unused=False
    )
    return (g,) + (None,) * (n_inputs - 1)


# --------------------------------------------------------------------------
# layer 2: functional API
# --------------------------------------------------------------------------
def _autocast_loss(loss: torch.Tensor) -> torch.Tensor:
    """Under CPU autocast PyTorch computes cross-entropy in float32 and
    returns a float32 loss: so does the bridge (its 16-bit kernels compute in
    float32 too; the loss is the one rounded to the logits' dtype)."""
    if loss.dtype in _CE_16BIT and torch.is_autocast_enabled("cpu"):
        return loss.float()
    return loss


def _needs_grad(input: torch.Tensor) -> bool:
    return input.requires_grad and torch.is_grad_enabled()


def _ce_unserved(input, target, weight, reduction) -> str | None:
    """Why numxent cannot serve this cross_entropy call, or None."""
    if not (plain_tensor(input) and plain_tensor(target)):
        return tensor_problem(input, "input") or tensor_problem(target, "target")
    if target.requires_grad:
        return "target requires grad"
    if reduction not in _REDUCTIONS or not isinstance(reduction, str):
        return f"reduction={reduction!r}"
    dtype, tdtype = input.dtype, target.dtype
    if tdtype in _LABEL_DTYPES:
        if dtype not in _SERVED_DTYPES and dtype not in _CE_16BIT:
            return f"input dtype {dtype}"
        shape, tshape = input.shape, target.shape
        if len(shape) == 2:  # (the common case first)
            ok = len(tshape) == 1 and tshape[0] == shape[0]
        elif len(shape) == 1:  # unbatched: a 0-d target
            ok = len(tshape) == 0
        else:
            ok = len(shape) > 0 and tshape == (shape[:1] + shape[2:])
        if not ok:
            return f"target shape {tuple(tshape)} for input shape {tuple(shape)}"
    elif target.is_floating_point():
        if dtype not in _SERVED_DTYPES:
            return f"input dtype {dtype} with probability targets"
        if tdtype != dtype or target.shape != input.shape or input.dim() == 0:
            return (
                f"probability target of dtype {tdtype} and shape "
                f"{tuple(target.shape)} for input {dtype} {tuple(input.shape)}"
            )
    else:
        return (
            f"target dtype {tdtype} (served: int64, uint8 or the input's float dtype)"
        )
    if weight is not None and not (
        plain_tensor(weight) and weight.dtype == dtype and not weight.requires_grad
    ):
        return (
            tensor_problem(weight, "weight")
            or "weight of another dtype than the input's, or requiring grad"
        )
    return None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    process_group: object | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` computed by numxent on CPU tensors.

    Parameters
    ----------
    input : Tensor of shape (C,), (N, C) or (N, C, d1, ..., dK)
        Unnormalised scores, class dimension 1 (PyTorch's layout).
    target : Tensor
        Class indices (int64 or uint8) of shape (), (N,) or (N, d1, ..., dK),
        or class probabilities of the input's shape and dtype.
    weight : Tensor of shape (C,), optional
        Class weights, as in PyTorch (finite, >= 0).
    size_average, reduce : bool, optional
        Deprecated; translated into ``reduction`` as PyTorch translates them.
    ignore_index : int, default -100
        Class-index targets equal to it add no loss and no gradient.
    reduction : {"mean", "sum", "none"}, default "mean"
        Weighted mean, sum or per-sample losses, as in PyTorch.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the target with the uniform distribution over the C classes.
    lse_square_scale : float >= 0, default 0.0
        z-loss (class-index targets), as in :func:`numxent.cross_entropy`.
    softcap : float > 0, optional
        Logit soft-capping (class-index targets), as in
        :func:`numxent.cross_entropy`.
    process_group : torch.distributed.ProcessGroup, optional
        Vocabulary parallelism: ``input`` holds this rank's contiguous shard
        of the classes (ranks in order, uneven shards allowed), ``target``
        the global class indices (the same on every rank), ``weight`` this
        shard's slice of the class weights. The loss is the whole
        vocabulary's, the same on every rank; the gradient is this shard's.
        Class-index targets, float32/float64 CPU tensors only; every rank
        must make the call (and its backward). See "Vocabulary-parallel" in
        docs/large-vocabulary.md.

    Returns
    -------
    Tensor
        A scalar, or the per-sample losses of shape (), (N,) or
        (N, d1, ..., dK) for "none". Its backward multiplies the gradient the
        forward already computed by ``grad_output``.

    Notes
    -----
    Calls numxent cannot serve go to ``torch.nn.functional.cross_entropy``;
    the list is in the section "What goes to PyTorch" of docs/torch.md.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 4, requires_grad=True)
    >>> loss = cross_entropy(x, torch.tensor([1, 3]), reduction="sum")
    >>> loss.backward()
    >>> x.grad
    tensor([[ 0.2500, -0.7500,  0.2500,  0.2500],
            [ 0.2500,  0.2500,  0.2500, -0.7500]])
    """
    if size_average is not None or reduce is not None:
        # PyTorch's own translation of the deprecated pair (and its warning).
        reduction = _Reduction.legacy_get_string(size_average, reduce)
    if process_group is not None:  # no fall-back: PyTorch has no such loss
        return vocab_cross_entropy(input, target, weight, ignore_index, reduction,
                                   label_smoothing, lse_square_scale, softcap,
                                   process_group)  # fmt: skip
    extras: tuple = ()
    if lse_square_scale or softcap is not None:
        extras = (lse_square_scale, softcap)
    why = _ce_unserved(input, target, weight, reduction)
    if why is None:
        try:
            options = (int(ignore_index), reduction, float(label_smoothing))
            if extras:
                extras = (float(lse_square_scale),
                          None if softcap is None else float(softcap))  # fmt: skip
        except (TypeError, ValueError, OverflowError) as exc:
            why = f"an option is not a number ({exc})"
    if why is None and torch.compiler.is_compiling():
        if not extras:  # the registered op
            loss, _ = _ops.cross_entropy_op(input, target, weight, *options,
                                            _needs_grad(input))  # fmt: skip
            return _autocast_loss(loss)
        why = "z-loss or soft-capping while compiling: traced as PyTorch's formulas"
    elif why is None:
        fn = _ce_function(options, extras)
        try:
            if weight is None:
                loss = fast_apply(fn, input, target)
            else:
                loss = fast_apply(fn, input, target, weight)
        except _Unserved as exc:
            why = rejected(exc)
        else:
            return _autocast_loss(loss) if loss.dtype in _CE_16BIT else loss
    fallback("cross_entropy", why)
    return _ce_reference(input, target, weight, ignore_index, reduction,
                         label_smoothing, *extras)  # fmt: skip


def _bce_unserved(input, target, weight, pos_weight, reduction) -> str | None:
    """Why numxent cannot serve this BCE call, or None."""
    if not (plain_tensor(input) and plain_tensor(target)):
        return tensor_problem(input, "input") or tensor_problem(target, "target")
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        return f"reduction={reduction!r}"
    if input.dtype not in _SERVED_DTYPES and input.dtype not in _CE_16BIT:
        return f"input dtype {input.dtype}"
    if target.requires_grad:
        return "target requires grad"
    if target.dtype != input.dtype or target.shape != input.shape:
        return (
            f"target of dtype {target.dtype} and shape {tuple(target.shape)} for "
            f"input {input.dtype} {tuple(input.shape)}"
        )
    for w, name in ((weight, "weight"), (pos_weight, "pos_weight")):
        if w is not None and not (
            plain_tensor(w) and w.dtype == input.dtype and not w.requires_grad
        ):
            return tensor_problem(w, name) or (
                f"{name} of another dtype than the input's, or requiring grad"
            )
    return None


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.binary_cross_entropy_with_logits`` by numxent.

    Parameters
    ----------
    input : Tensor of any shape
        Logits; every element is its own binary problem.
    target : Tensor of the input's shape and dtype
        Probabilities of the positive class.
    weight : Tensor broadcastable to the input's shape, optional
        Rescales each element's loss (finite, >= 0).
    size_average, reduce : bool, optional
        Deprecated; translated into ``reduction`` as PyTorch translates them.
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean, sum or elementwise losses, as in PyTorch.
    pos_weight : Tensor broadcastable to the input's shape (usually (C,)), optional
        Weight of the positive term (finite, >= 0).

    Returns
    -------
    Tensor
        A scalar, or the elementwise losses (input's shape) for "none".
        Infinite logits give the loss's limit (0 or +inf), not PyTorch's NaN.

    Notes
    -----
    Calls numxent cannot serve go to
    ``torch.nn.functional.binary_cross_entropy_with_logits``; the list is in
    the section "What goes to PyTorch" of docs/torch.md.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(3)
    >>> binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0, 1.0])).item()
    0.6931471824645996
    """
    if size_average is not None or reduce is not None:
        reduction = _Reduction.legacy_get_string(size_average, reduce)
    why = _bce_unserved(input, target, weight, pos_weight, reduction)
    if why is None and torch.compiler.is_compiling():
        loss, _ = _ops.bce_op(input, target, weight, pos_weight, reduction,
                              _needs_grad(input))  # fmt: skip
        return loss
    if why is None:
        fn = _BCE_FUNCTIONS[reduction]
        try:
            if weight is None and pos_weight is None:
                loss = fast_apply(fn, input, target)
            else:
                loss = fast_apply(fn, input, target, weight, pos_weight)
        except _Unserved as exc:
            why = rejected(exc)
        else:
            return _autocast_loss(loss) if loss.dtype in _CE_16BIT else loss
    fallback("binary_cross_entropy_with_logits", why)
    return F.binary_cross_entropy_with_logits(
        input, target, weight=weight, reduction=reduction, pos_weight=pos_weight
    )


# --------------------------------------------------------------------------
# layer 3: modules
# --------------------------------------------------------------------------
class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` whose forward is ``cross_entropy``.

    Same constructor, buffers and ``state_dict`` as PyTorch's module, plus
    the keyword arguments ``lse_square_scale``, ``softcap`` and
    ``process_group`` (vocabulary parallelism, as for ``cross_entropy``).

    Examples
    --------
    >>> import torch
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    >>> loss_fn(torch.zeros(2, 4), torch.tensor([1, 3])).item() == float(
    ...     torch.log(torch.tensor(4.0)))
    True
    """

    def __init__(self, *args, lse_square_scale: float = 0.0,
                 softcap: float | None = None, process_group: object | None = None,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap
        self.process_group = process_group

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            lse_square_scale=getattr(self, "lse_square_scale", 0.0),
            softcap=getattr(self, "softcap", None),
            process_group=getattr(self, "process_group", None),
        )


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by ``binary_cross_entropy_with_logits``.

    Same constructor, buffers and ``state_dict`` as PyTorch's module.

    Examples
    --------
    >>> import torch
    >>> loss_fn = BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))
    >>> loss_fn(torch.zeros(2, 1), torch.ones(2, 1)).item() == 2 * float(
    ...     torch.log(torch.tensor(2.0)))
    True
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy_with_logits(
            input,
            target,
            weight=self.weight,
            pos_weight=self.pos_weight,
            reduction=self.reduction,
        )


# The custom ops that compiled graphs call (they call back into ce_run/bce_run).
