"""The PyTorch bridge's served computation, shared by the eager
``autograd.Function``s (``numxent.torch``) and the custom ops of compiled
graphs (``numxent._torch_ops``): what can be served (``plain_tensor``), the
gradient buffer pool, ``ce_run`` / ``bce_run`` (a loss and its gradient on
the tensors' memory) and PyTorch's own reference computations.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
import threading
import warnings
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from . import _ops as _O
from . import _validation as _V
from . import functional as _nx
from .errors import NumxentError

_BASE_TORCH_FUNCTION = torch.Tensor.__torch_function__.__func__  # type: ignore[attr-defined]
# nn.Parameter's override only switches the subclass off in results
_PLAIN_TORCH_FUNCTIONS = (_BASE_TORCH_FUNCTION, torch._C._disabled_torch_function_impl)


def plain_tensor(t) -> bool:
    """True for a tensor numxent may read as plain memory.

    ``torch.Tensor`` itself, ``nn.Parameter`` and any other subclass that
    adds no ``__torch_function__`` of its own (a subclass that does, such as
    a tensor wrapper that logs or redirects operations, must see PyTorch's
    operations and is handed to PyTorch). While compiling (``torch.compile``,
    ``torch.export``) tensors are fake or functional: their type says
    nothing, and the registered ops take them. Only strided CPU tensors
    qualify.
    """
    if not isinstance(t, torch.Tensor):
        return False
    tf = type(t).__torch_function__
    plain = getattr(tf, "__func__", tf) in _PLAIN_TORCH_FUNCTIONS
    if not plain and not (
        torch.compiler.is_compiling() and isinstance(t, torch.Tensor)
    ):
        return False
    return t.is_cpu and t.layout is torch.strided


class FallbackWarning(UserWarning):
    """A call the bridge handed to PyTorch's own implementation.

    The message says why. Under Python's default warning filter each distinct
    reason is shown once; ``warnings.simplefilter("error", FallbackWarning)``
    turns every hand-off into an error (a test that no call falls back).
    """


_WARNED: set[str] = set()  # the reasons warned about once already


def fallback(op: str, why: str) -> None:
    """Warn that ``op`` was handed to PyTorch, and why: once per reason, or
    every time where the warning filters say "error" or "always". (Python's
    own once-per-location registry is reset whenever any code changes the
    filters, which PyTorch does, so numxent keeps its own.) Not while Dynamo
    traces: a warning there would break the graph; the compiled graph's
    run-time hand-offs, inside the custom ops, do warn."""
    if torch.compiler.is_compiling():
        return
    message = f"numxent.torch.{op}: handed to PyTorch's own implementation: {why}"
    if message in _WARNED and _action(message) not in ("error", "always", "all"):
        return
    _WARNED.add(message)
    warnings.warn(message, FallbackWarning, stacklevel=3)


def _action(message: str) -> str:
    """The action of the first warning filter that matches a FallbackWarning
    with this message (the matching rules of ``warnings.warn``)."""
    for action, msg, category, module, _lineno in warnings.filters:
        if (
            (msg is None or msg.match(message))
            and issubclass(FallbackWarning, category)
            and (module is None or module.match(__name__) or module.match(""))
        ):
            return action
    return getattr(warnings, "defaultaction", "default")


def rejected(exc: BaseException) -> str:
    """The reason of a hand-off after numxent's checks rejected the call."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return f"numxent's checks rejected it ({type(cause).__name__}: {cause})"


def tensor_problem(t, name: str) -> str | None:
    """Why ``t`` cannot be read as plain memory, or None."""
    if not isinstance(t, torch.Tensor):
        return f"{name} is not a tensor ({type(t).__name__})"
    if not plain_tensor(t):
        if not (t.is_cpu and t.layout is torch.strided):
            return f"{name} is on {t.device} with layout {t.layout}"
        return (
            f"{name} is a {type(t).__name__}, a tensor subclass with a "
            "__torch_function__ of its own"
        )
    return None


# The C-level ``apply`` of ``autograd.Function``: the Python wrapper around it
# only binds default arguments (for Functions with ``setup_context``, which
# the bridge's have not) and unwraps functorch's dead wrappers, a few
# microseconds per call that the bridge spends only where functorch is in play.
_functorch_active = torch._C._are_functorch_transforms_active
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def fast_apply(fn, *args):
    """``fn.apply(*args)``, through the C-level apply where nothing needs the
    Python wrapper."""
    if _functorch_active() or _is_wrapped(args[0]):
        return fn.apply(*args)
    return fn.c_apply(*args)


def with_c_apply(cls):
    """Give an ``autograd.Function`` subclass its C-level apply as
    ``cls.c_apply`` (see :func:`fast_apply`)."""
    cls.c_apply = super(torch.autograd.Function, cls).apply
    return cls


_SERVED_DTYPES = (torch.float32, torch.float64)
#: Served with class-index targets only, read in place (no float32 copy).
#: bfloat16 tensors reach numxent as ml_dtypes.bfloat16 arrays; ml_dtypes
#: (about 1 s to import) is imported at the first bfloat16 tensor.
_CE_16BIT: tuple = (
    (torch.bfloat16, torch.float16)
    if importlib.util.find_spec("ml_dtypes") is not None
    else (torch.float16,)  # pragma: no cover - ml_dtypes comes with the torch extra
)


@functools.cache
def _bf16_np() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


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
        return t.view(torch.int16).numpy().view(_bf16_np())
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
    if _V.is_bfloat16(a.dtype):
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _scale(grad: torch.Tensor, grad_output: torch.Tensor, per_row: bool):
    """grad * grad_output, in place on a buffer nobody else holds."""
    if per_row:
        # grad_output has the leading (per-sample) shape; grad has one more axis.
        return grad.mul_(grad_output.unsqueeze(-1))
    # loss.backward() passes 1: reading it costs less than a multiplication,
    # even of a small gradient
    if grad_output.item() == 1.0:
        return grad
    return grad.mul_(grad_output)


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
        # fresh NumPy views of the tensors, made read-only in place (the
        # kernels' one signature reads read-only inputs; no second view)
        x_np = x.numpy()
        x_np.setflags(write=False)
        y_np = target.numpy()
        y_np.setflags(write=False)
        buf = g_np = None
        if need_grad:
            if pooled and x.numel() * x.element_size() >= _GradientPool.MIN_BYTES:
                buf = _POOL.take(x)
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
            res = _O.ce_hard_checked(x_np, y_np, w, ignore_index, label_smoothing,
                                     reduction, g_np)  # fmt: skip
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


def _ce_reference(x, target, weight, ignore_index, reduction, label_smoothing,
                  z=0.0, cap=None):  # fmt: skip
    """PyTorch's cross-entropy, with z-loss and soft-capping by their formulas
    (class dim 1; the extras need class-index targets)."""
    kw = dict(weight=weight, ignore_index=ignore_index,
              label_smoothing=label_smoothing)  # fmt: skip
    if not z and cap is None:
        return F.cross_entropy(x, target, reduction=reduction, **kw)
    _V.check_hard_only(not target.is_floating_point(), z, 0.0 if cap is None else 1.0,
                       False)  # fmt: skip
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
