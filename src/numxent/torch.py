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
differ from PyTorch's.

>>> import torch
>>> from numxent.torch import cross_entropy
>>> x = torch.tensor([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]], requires_grad=True)
>>> loss = cross_entropy(x, torch.tensor([0, 1]))
>>> loss.backward()
>>> round(loss.item(), 5), x.grad.sum().abs().item() < 1e-6
(0.25986, True)
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Reduction

from . import _validation as _V
from . import functional as _nx
from ._torch_linear import LinearCrossEntropyLoss, linear_cross_entropy
from ._torch_serve import plain_tensor
from .errors import NumxentError

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "LinearCrossEntropyLoss",
    "linear_cross_entropy",
    "set_gradient_pool_bytes",
]

_SERVED_DTYPES = (torch.float32, torch.float64)
try:  # bfloat16 tensors reach numxent as ml_dtypes.bfloat16 arrays
    import ml_dtypes as _ml_dtypes

    _BF16_NP: Any = np.dtype(_ml_dtypes.bfloat16)
    #: Served with class-index targets only, read in place (no float32 copy).
    _CE_16BIT: tuple = (torch.bfloat16, torch.float16)
except ImportError:  # pragma: no cover - ml_dtypes comes with the torch extra
    _BF16_NP, _CE_16BIT = None, (torch.float16,)
_LABEL_DTYPES = (torch.int64, torch.uint8)
_REDUCTIONS = ("mean", "sum", "none")


class _Unserved(Exception):
    """Raised inside a forward when numxent rejects the call: PyTorch takes it."""


# --------------------------------------------------------------------------
# layout helpers
# --------------------------------------------------------------------------
def _class_last(t: torch.Tensor) -> torch.Tensor:
    """PyTorch layout (class dim 1) -> numxent layout (class dim last); a view."""
    return t.movedim(1, -1) if t.dim() > 2 else t


def _class_first(t: torch.Tensor) -> torch.Tensor:
    return t.movedim(-1, 1) if t.dim() > 2 else t


# --------------------------------------------------------------------------
# gradient buffer pool
# --------------------------------------------------------------------------
def _tensor_refs(bufs: list, i: int) -> int:
    return sys.getrefcount(bufs[i])


def _storage_refs(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _probe_baseline():
    """Reference counts of a pooled tensor nobody else holds, measured through
    the very calls the pool makes (robust to interpreter differences)."""
    try:
        probe = [torch.empty(1)]
        base = (_tensor_refs(probe, 0), probe[0]._use_count(), _storage_refs(probe[0]))
        held = probe[0]  # a second holder must be visible
        seen = _tensor_refs(probe, 0) > base[0]
        view = probe[0].detach()
        seen_storage = _storage_refs(probe[0]) > base[2]
        del held, view
        return base if seen and seen_storage and base[1] == 1 else None
    except Exception:  # private API missing in this PyTorch: no pooling
        return None


class _GradientPool:
    """Buffers handed to autograd, reused once nobody else holds them."""

    PER_KEY = 4
    #: Smaller buffers come from the heap without page faults: not pooled.
    MIN_BYTES = 1 << 20

    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self._lock = threading.Lock()
        self._bufs: OrderedDict = OrderedDict()  # (shape, dtype) -> [Tensor]
        self._base = _probe_baseline()
        if hasattr(os, "register_at_fork"):
            # A fork while another thread holds the lock would leave the
            # child's copy locked forever.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def _unshared(self, bufs: list, i: int) -> bool:
        base = self._base
        return (
            _tensor_refs(bufs, i) == base[0]
            and bufs[i]._use_count() == base[1]
            and _storage_refs(bufs[i]) == base[2]
        )

    def take(self, like: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor of ``like``'s shape and dtype that nobody else
        holds."""
        shape, dtype = tuple(like.shape), like.dtype
        nbytes = like.numel() * dtype.itemsize
        if self._base is None or nbytes < self.MIN_BYTES or nbytes > self.limit:
            return _fresh(like)
        key = (shape, dtype)
        with self._lock:
            bufs = self._bufs.setdefault(key, [])
            self._bufs.move_to_end(key)
            for i in range(len(bufs)):
                if self._unshared(bufs, i):
                    t = bufs[i]
                    return t
            t = torch.empty(shape, dtype=dtype)
            bufs.append(t)
            if len(bufs) > self.PER_KEY:
                del bufs[0]
            self._trim()
            return t

    def _trim(self) -> None:
        def size(item):
            (shape, dtype), bufs = item
            return math.prod(shape) * dtype.itemsize * len(bufs)

        total = sum(map(size, self._bufs.items()))
        while total > self.limit and self._bufs:
            total -= size(self._bufs.popitem(last=False))

    def set_limit(self, nbytes: int) -> int:
        with self._lock:
            old, self.limit = self.limit, int(nbytes)
            self._trim()
        return old


_POOL = _GradientPool(2 << 30)


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


def _logits_and_buffer(x: torch.Tensor, need_grad: bool, pooled: bool):
    """NumPy logits for the kernel and the tensor that will hold the gradient.

    A contiguous ``x`` is read in place and a fresh or pooled buffer receives
    the gradient; otherwise ``x`` is copied once into such a buffer, which is
    then overwritten by its own gradient (numxent's ``out=logits``). A leaf
    input's gradient is never pooled: ``AccumulateGrad`` adopts it as
    ``.grad`` without a copy only if nobody else holds it.
    """
    x = x.detach()
    take = _POOL.take if pooled else _fresh
    if x.is_contiguous():
        return _to_np(x), (take(x) if need_grad else None)
    if not need_grad:
        return _to_np(x.contiguous()), None
    buf = take(x)
    buf.copy_(x)
    return _to_np(buf), buf


def _fresh(like: torch.Tensor) -> torch.Tensor:
    # (empty_like costs a third of torch.empty(shape, dtype=...) per call)
    return torch.empty_like(like, memory_format=torch.contiguous_format)


def _to_np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor; bfloat16 as ``ml_dtypes.bfloat16``."""
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BF16_NP)
    return t.numpy()


def _np(t: torch.Tensor | None):
    if t is None:
        return None
    if t.dtype is torch.bfloat16:  # weights: numxent checks them as floats
        return t.detach().float().numpy()
    return t.detach().numpy()


def _loss_tensor(loss) -> torch.Tensor:
    """numxent's loss (a NumPy scalar or array) as a tensor, without a copy."""
    a = np.asarray(loss)
    if a.dtype == _BF16_NP:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


_SKIP_UNIT_SCALE_FROM = 1 << 15


def _scale(grad: torch.Tensor, grad_output: torch.Tensor, per_row: bool):
    """grad * grad_output, in place on a buffer nobody else holds."""
    if per_row:
        # grad_output has the leading (per-sample) shape; grad has one more axis.
        return grad.mul_(grad_output.unsqueeze(-1))
    # Skipping a multiplication by 1 saves a pass over a large gradient; a
    # small one is multiplied outright (cheaper than reading grad_output).
    if grad.numel() >= _SKIP_UNIT_SCALE_FROM and grad_output.item() == 1.0:
        return grad
    return grad.mul_(grad_output)


_served_tensor = plain_tensor


# --------------------------------------------------------------------------
# the served computation (shared by the autograd Functions and the custom ops)
# --------------------------------------------------------------------------
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_F64 = np.dtype(np.float64)


def ce_run(input, target, weight, ignore_index, reduction, label_smoothing,
           need_grad: bool, pooled: bool, extras: tuple = ()):  # fmt: skip
    """The loss tensor and the gradient (class dim last, or None).

    Raises :class:`_Unserved` where numxent's checks reject the call. The
    common case (a contiguous (N, C) input, contiguous int64 labels) takes a
    lean entry that skips the general coercions: the bridge's own checks
    have covered them (a small call's time is mostly such overhead).
    """
    x = input.detach()
    if (
        not extras
        and x.dim() == 2
        and x.dtype in _SERVED_DTYPES
        and x.is_contiguous()
        and target.dtype is torch.int64
        and target.is_contiguous()
        and type(label_smoothing) is float
        and 0.0 <= label_smoothing <= 1.0
        and _I64_MIN <= ignore_index <= _I64_MAX
    ):
        x_np = x.numpy()
        buf = g_np = None
        if need_grad:
            if pooled and x.numel() * x.element_size() >= _GradientPool.MIN_BYTES:
                buf = _POOL.take(x)
                g_np = buf.numpy()
            else:
                # (not NumPy's allocation, though cheaper: PyTorch aligns its
                # buffers for its matrix kernels, which read this gradient next)
                buf = _fresh(x)
                g_np = buf.numpy()
        try:
            w = None
            if weight is not None:
                w = _V.check_nonneg_weights(
                    weight.detach().numpy(), "weight", (x.shape[1],)
                )
                w = _V.as_compute(w, _F64)
            res = _nx._ce_hard_checked(
                _V.readonly(x_np),
                _V.readonly(target.numpy()),
                w,
                ignore_index,
                label_smoothing,
                reduction,
                g_np,
            )
        except NumxentError as exc:
            raise _Unserved from exc
        loss = res[0] if need_grad else res
        return _loss_tensor(loss), buf
    soft = target.is_floating_point()
    x_np, buf = _logits_and_buffer(_class_last(x), need_grad, pooled)
    t_np = _np(_class_last(target) if soft else target)
    kw = dict(
        weight=_np(weight),
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    if extras:  # (lse_square_scale, softcap)
        kw.update(lse_square_scale=extras[0], softcap=extras[1])
    try:
        if need_grad:
            loss, _ = _nx.cross_entropy(
                x_np, t_np, return_grad=True, out=_to_np(buf), **kw
            )
        else:
            loss = _nx.cross_entropy(x_np, t_np, **kw)
    except NumxentError as exc:
        raise _Unserved from exc
    return _loss_tensor(loss), buf


def bce_run(input, target, weight, pos_weight, reduction, need_grad: bool,
            pooled: bool):  # fmt: skip
    """The loss tensor and the gradient (or None); raises :class:`_Unserved`."""
    x_np, buf = _logits_and_buffer(input, need_grad, pooled)
    kw = dict(weight=_np(weight), pos_weight=_np(pos_weight), reduction=reduction)
    try:
        if need_grad:
            loss, _ = _nx.binary_cross_entropy_with_logits(
                x_np, _np(target), return_grad=True, out=_to_np(buf), **kw
            )
        else:
            loss = _nx.binary_cross_entropy_with_logits(x_np, _np(target), **kw)
    except NumxentError as exc:
        raise _Unserved from exc
    return _loss_tensor(loss), buf


# --------------------------------------------------------------------------
# layer 1: autograd Functions
# --------------------------------------------------------------------------
class _CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing,
                lse_square_scale=0.0, softcap=None):  # fmt: skip
        args = (ignore_index, reduction, label_smoothing)
        extras = () if not lse_square_scale and softcap is None else (
            lse_square_scale, softcap)  # fmt: skip
        need_grad = ctx.needs_input_grad[0]
        loss, ctx.grad_nl = ce_run(
            input, target, weight, *args, need_grad, not input.is_leaf, extras
        )
        ctx.save_for_backward(input, target, weight)
        ctx.args = args  # ctx.grad_nl (numxent layout): taken by the first backward
        ctx.extras = extras
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad_nl = ctx.grad_nl, None
        reduction = ctx.args[1]
        if grad is None or torch.is_grad_enabled():
            input, target, weight = ctx.saved_tensors
            ignore_index, _, label_smoothing = ctx.args
            if torch.is_grad_enabled():  # create_graph=True: PyTorch's graph
                return _double_backward(
                    lambda x: _ce_reference(
                        x,
                        target,
                        weight,
                        ignore_index,
                        reduction,
                        label_smoothing,
                        *ctx.extras,
                    ),
                    input,
                    grad_output,
                    8,
                )
            # a second backward (retain_graph=True): recompute
            _, grad = ce_run(input, target, weight, *ctx.args, True,
                             not input.is_leaf, ctx.extras)  # fmt: skip
        grad = _scale(grad, grad_output, reduction == "none")
        return _class_first(grad), None, None, None, None, None, None, None


def _ce_reference(x, target, weight, ignore_index, reduction, label_smoothing,
                  z=0.0, cap=None):  # fmt: skip
    """PyTorch's cross-entropy, with z-loss and soft-capping by their formulas
    (class dim 1; the extras need class-index targets)."""
    kw = dict(weight=weight, ignore_index=ignore_index,
              label_smoothing=label_smoothing)  # fmt: skip
    if not z and cap is None:
        return F.cross_entropy(x, target, reduction=reduction, **kw)
    if target.is_floating_point():
        raise ValueError(
            "lse_square_scale and softcap apply to class-index targets only"
        )
    if cap is not None:
        x = cap * torch.tanh(x / cap)
    rows = F.cross_entropy(x, target, reduction="none", **kw)
    keep = target != ignore_index
    wy = keep.to(x.dtype)
    if weight is not None:
        wy = weight[torch.where(keep, target, 0)] * keep
    if z:
        lse = torch.logsumexp(x, dim=1 if x.dim() >= 2 else 0)
        rows = rows + torch.where(keep, z * wy * lse * lse, 0.0)
    if reduction == "none":
        return rows
    return rows.sum() / wy.sum() if reduction == "mean" else rows.sum()


class _BCEWithLogitsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, pos_weight, reduction):
        need_grad = ctx.needs_input_grad[0]
        loss, ctx.grad = bce_run(
            input, target, weight, pos_weight, reduction, need_grad, not input.is_leaf
        )
        ctx.save_for_backward(input, target, weight, pos_weight)
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        reduction = ctx.reduction
        if grad is None or torch.is_grad_enabled():
            input, target, weight, pos_weight = ctx.saved_tensors
            if torch.is_grad_enabled():
                return _double_backward(
                    lambda x: F.binary_cross_entropy_with_logits(
                        x,
                        target,
                        weight=weight,
                        reduction=reduction,
                        pos_weight=pos_weight,
                    ),
                    input,
                    grad_output,
                    5,
                )
            _, grad = bce_run(
                input, target, weight, pos_weight, reduction, True, not input.is_leaf
            )
        if reduction == "none":
            grad = grad.mul_(grad_output)
        else:
            grad = _scale(grad, grad_output, False)
        return (grad,) + (None,) * 4


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


def _reduction_arg(size_average, reduce, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        # PyTorch's own translation of the deprecated pair (and its warning).
        return _Reduction.legacy_get_string(size_average, reduce)
    return reduction


def _ce_served(input, target, weight, reduction) -> bool:
    if not (_served_tensor(input) and _served_tensor(target)):
        return False
    if target.requires_grad:
        return False
    if input.dtype not in _SERVED_DTYPES and not (
        input.dtype in _CE_16BIT and target.dtype in _LABEL_DTYPES
    ):
        return False
    if reduction not in _REDUCTIONS or not isinstance(reduction, str):
        return False
    if weight is not None and not (
        _served_tensor(weight)
        and weight.dtype == input.dtype
        and not weight.requires_grad
    ):
        return False
    if target.dtype in _LABEL_DTYPES:
        shape, tshape = input.shape, target.shape
        if len(shape) == 2:  # (the common case first)
            return len(tshape) == 1 and tshape[0] == shape[0]
        if len(shape) == 0:
            return False
        return tshape == (shape[:1] + shape[2:] if len(shape) >= 2 else ())
    if target.is_floating_point():
        return (
            input.dim() > 0
            and target.dtype == input.dtype
            and target.shape == input.shape
        )
    return False


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
    reduction = _reduction_arg(size_average, reduce, reduction)
    extras: tuple = ()
    if lse_square_scale or softcap is not None:
        cap = None if softcap is None else float(softcap)
        extras = (float(lse_square_scale), cap)
    if torch.compiler.is_compiling():
        # (the registered op serves the plain loss; the extras trace PyTorch's
        # formulas)
        if not extras and _ce_served(input, target, weight, reduction):
            loss, _ = _ops.cross_entropy_op(
                input, target, weight, int(ignore_index), reduction,
                float(label_smoothing), _needs_grad(input),
            )  # fmt: skip
            return _autocast_loss(loss)
    elif _ce_served(input, target, weight, reduction):
        try:
            loss = _CrossEntropyFunction.apply(
                input, target, weight, int(ignore_index), reduction, label_smoothing,
                *extras,
            )  # fmt: skip
        except _Unserved:
            pass
        else:
            return _autocast_loss(loss) if loss.dtype in _CE_16BIT else loss
    return _ce_reference(input, target, weight, ignore_index, reduction,
                         label_smoothing, *extras)  # fmt: skip


def _bce_served(input, target, weight, pos_weight, reduction) -> bool:
    if not (_served_tensor(input) and _served_tensor(target)):
        return False
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        return False
    if input.dtype not in _SERVED_DTYPES or target.requires_grad:
        return False
    if target.dtype != input.dtype or target.shape != input.shape:
        return False
    for w in (weight, pos_weight):
        if w is not None and not (
            _served_tensor(w) and w.dtype == input.dtype and not w.requires_grad
        ):
            return False
    return True


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
    reduction = _reduction_arg(size_average, reduce, reduction)
    if torch.compiler.is_compiling():
        if _bce_served(input, target, weight, pos_weight, reduction):
            loss, _ = _ops.bce_op(
                input, target, weight, pos_weight, reduction, _needs_grad(input)
            )
            return loss
    elif _bce_served(input, target, weight, pos_weight, reduction):
        try:
            return _BCEWithLogitsFunction.apply(
                input, target, weight, pos_weight, reduction
            )
        except _Unserved:
            pass
    return F.binary_cross_entropy_with_logits(
        input, target, weight=weight, reduction=reduction, pos_weight=pos_weight
    )


# --------------------------------------------------------------------------
# layer 3: modules
# --------------------------------------------------------------------------
class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` whose forward is ``cross_entropy``.

    Same constructor, buffers and ``state_dict`` as PyTorch's module, plus
    the keyword arguments ``lse_square_scale`` and ``softcap``.

    Examples
    --------
    >>> import torch
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    >>> loss_fn(torch.zeros(2, 4), torch.tensor([1, 3])).item() == float(
    ...     torch.log(torch.tensor(4.0)))
    True
    """

    def __init__(self, *args, lse_square_scale: float = 0.0,
                 softcap: float | None = None, **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap

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
from . import _torch_ops as _ops  # noqa: E402
