"""The bridge's losses as ``torch.library`` custom ops, for compiled graphs.

``torch.compile`` and ``torch.export`` cannot trace into NumPy code, so under
them the bridge calls ``numxent::cross_entropy`` and
``numxent::binary_cross_entropy_with_logits``: opaque ops with a fake
implementation (the output shapes, for tracing) and a registered autograd
formula. Each op returns ``(loss, grad)``, the gradient computed in the same
fused pass as in eager mode (an empty tensor when no gradient is needed); the
backward multiplies the saved gradient by ``grad_output``. A call numxent's
checks reject at run time (an out-of-range label, a negative weight) gets
PyTorch's loss and gradient from inside the op, as the eager bridge hands
such calls to PyTorch: same value, or PyTorch's error.

Eager calls do not go through these ops: the dispatcher's custom-op path
costs more per call than the bridge's ``autograd.Function``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _torch_serve as _bridge

__all__ = ["cross_entropy_op", "bce_op"]

_NO_GRAD_SHAPE = (0,)


def _autograd_back_on():
    """Undo the dispatcher's "below autograd" state an op's kernel runs in, so
    that PyTorch's loss can be differentiated inside it."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradCPU, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(key)
    include = torch._C._dispatch_tls_local_include_set()
    return torch._C._ForceDispatchKeyGuard(include, exclude)


def _torch_fallback(loss_fn, input: torch.Tensor, need_grad: bool):
    """PyTorch's loss and gradient (of the loss's sum) of ``loss_fn(input)``."""
    if not need_grad:
        with torch.no_grad():
            return loss_fn(input).clone(), input.new_empty(_NO_GRAD_SHAPE)
    with torch.enable_grad(), _autograd_back_on():
        x = input.detach().requires_grad_(True)
        loss = loss_fn(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad.contiguous()


@torch.library.custom_op("numxent::cross_entropy", mutates_args=())
def cross_entropy_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient of the bridge's cross_entropy (grad: input's shape,
    contiguous; empty without ``need_grad``)."""
    try:
        loss, grad = _bridge.ce_run(
            input, target, weight, ignore_index, reduction, label_smoothing,
            need_grad, True,
        )  # fmt: skip
    except _bridge._Unserved as exc:
        _bridge.fallback("cross_entropy", _bridge.rejected(exc))
        return _torch_fallback(
            lambda x: F.cross_entropy(
                x,
                target,
                weight=weight,
                ignore_index=ignore_index,
                reduction=reduction,
                label_smoothing=label_smoothing,
            ),
            input,
            need_grad,
        )
    if grad is None:
        return loss, input.new_empty(_NO_GRAD_SHAPE)
    return loss, _bridge._class_first(grad).contiguous()


@cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, need_grad):
    if reduction == "none":
        shape = input.shape[:1] + input.shape[2:] if input.dim() >= 2 else ()
    else:
        shape = ()
    grad_shape = input.shape if need_grad else _NO_GRAD_SHAPE
    return input.new_empty(shape), input.new_empty(grad_shape)


def _ce_setup(ctx, inputs, output):
    ctx.per_row = inputs[4] == "none" and inputs[0].dim() >= 2
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


def _ce_backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    go = grad_loss.unsqueeze(1) if ctx.per_row else grad_loss
    return grad * go, None, None, None, None, None, None


cross_entropy_op.register_autograd(_ce_backward, setup_context=_ce_setup)


@torch.library.custom_op("numxent::binary_cross_entropy_with_logits", mutates_args=())
def bce_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    reduction: str,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient of the bridge's binary_cross_entropy_with_logits."""
    try:
        loss, grad = _bridge.bce_run(
            input, target, weight, pos_weight, reduction, need_grad, True
        )
    except _bridge._Unserved as exc:
        _bridge.fallback("binary_cross_entropy_with_logits", _bridge.rejected(exc))
        return _torch_fallback(
            lambda x: F.binary_cross_entropy_with_logits(
                x, target, weight=weight, reduction=reduction, pos_weight=pos_weight
            ),
            input,
            need_grad,
        )
    if grad is None:
        return loss, input.new_empty(_NO_GRAD_SHAPE)
    return loss, grad


@bce_op.register_fake
def _(input, target, weight, pos_weight, reduction, need_grad):
    shape = input.shape if reduction == "none" else ()
    grad_shape = input.shape if need_grad else _NO_GRAD_SHAPE
    return input.new_empty(shape), input.new_empty(grad_shape)


def _bce_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


def _bce_backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    return grad * grad_loss, None, None, None, None, None


bce_op.register_autograd(_bce_backward, setup_context=_bce_setup)
