"""PyTorch bridge of :func:`numxent.linear_cross_entropy`: ``linear_cross_entropy``
(``torch.nn.functional.linear_cross_entropy``'s arguments plus z-loss and
soft-capping) and the ``LinearCrossEntropyLoss`` module.

The forward runs the chunked NumPy implementation on the tensors' memory and
computes all three gradients; the backward only multiplies them by
``grad_output``. Served: CPU float32/float64 tensors (``nn.Parameter``
weights included), int64 class indices,
(C,)-shaped bias and class weights. Anything else goes to PyTorch's
``F.linear_cross_entropy`` (the extras then by their formulas on PyTorch's
materialised logits).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn.functional as F

from ._torch_serve import (
    _ce_reference,
    fallback,
    plain_tensor,
    rejected,
    tensor_problem,
)
from ._torch_vocab import vocab_linear_cross_entropy
from .errors import NumxentError
from .linear import DEFAULT_CHUNK_BYTES, _linear_ce

__all__ = ["linear_cross_entropy", "LinearCrossEntropyLoss"]

_SERVED = (torch.float32, torch.float64)


def _has_torch_linear_ce() -> bool:
    """Whether this PyTorch has ``F.linear_cross_entropy`` with the bias
    argument (2.13); older ones get the materialised computation."""
    fn = getattr(F, "linear_cross_entropy", None)
    try:
        return fn is not None and "linear_bias" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - no signature to read
        return False


_TORCH_LINEAR_CE = _has_torch_linear_ce()


def _np(t):
    return None if t is None else t.detach().numpy()


def _torch_gemm(alpha: float, a, b, c, beta: float) -> None:
    """``c = alpha * a @ b + beta * c`` in place by PyTorch's own BLAS, on
    tensor views of the NumPy arrays (transposed views read as they are).

    The bridge's chunks use the library the model's other matrix products
    use, on its threads: PyTorch's BLAS here was faster than NumPy's on the
    same chunks (docs/large-vocabulary.md). ``beta=0`` ignores what ``c``
    held (an uninitialised buffer), as PyTorch documents for ``addmm``.
    """
    torch.from_numpy(c).addmm_(_tensor(a), _tensor(b), beta=beta, alpha=alpha)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory. numxent hands its inputs on as
    read-only views, which PyTorch warns about: a writable view of the same
    memory (the bridge's inputs are tensors, always writable underneath)
    is what PyTorch reads; nothing writes to it."""
    if not a.flags.writeable:
        v = a.view()
        try:
            v.flags.writeable = True
        except ValueError:  # memory nobody may write: PyTorch gets a copy
            v = a.copy()
        a = v
    return torch.from_numpy(a)


def _run(tensors, args, chunk_bytes, need_grad: bool, row_scale=None):
    """(loss, [grad_input, grad_linear_weight, grad_linear_bias] as tensors,
    or None without ``need_grad``) of the chunked NumPy computation on the
    tensors' memory, PyTorch's BLAS for the products. ``tensors``: input,
    linear_weight, target, linear_bias, weight; ``args``: ignore_index,
    reduction, label_smoothing, lse_square_scale, softcap; ``row_scale``: the
    per-token factors of the gradients ("none")."""
    input, linear_weight, target, linear_bias, weight = tensors
    ignore, reduction, eps, z, cap = args
    res = _linear_ce(
        _np(input), _np(linear_weight), _np(target), _np(linear_bias), _np(weight),
        None, ignore, reduction, eps, z, cap, False, need_grad, None, chunk_bytes,
        _torch_gemm, row_scale,
    )  # fmt: skip
    if not need_grad:
        return res, None
    grads = [
        None if g is None else torch.from_numpy(np.ascontiguousarray(g)) for g in res[1]
    ]
    return res[0], grads


class _LinearCEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, linear_weight, target, linear_bias, weight, reduction,
                ignore_index, label_smoothing, lse_square_scale, softcap,
                chunk_bytes):  # fmt: skip
        # "none": the backward's per-token factors are not known yet, so the
        # forward takes the loss only and the backward computes the gradients
        # with them (one more pass of logits, the same memory bound)
        need = reduction != "none" and any(ctx.needs_input_grad[i] for i in (0, 1, 3))
        tensors = (input, linear_weight, target, linear_bias, weight)
        ctx.args = (ignore_index, reduction, label_smoothing, lse_square_scale,
                    softcap)  # fmt: skip
        ctx.chunk_bytes = chunk_bytes
        loss, ctx.grads = _run(tensors, ctx.args, chunk_bytes, need)
        ctx.save_for_backward(*tensors)
        return torch.from_numpy(np.array(loss))

    @staticmethod
    def backward(ctx, grad_output):
        # The first backward takes the gradients: with no other reference
        # left, AccumulateGrad adopts them as .grad instead of copying them
        # (a second weight-sized buffer: 1 GiB at V = 128,256, H = 2,048). A
        # second backward (retain_graph=True) computes them again.
        grads, ctx.grads = ctx.grads, None
        if ctx.args[1] == "none":
            row_scale = grad_output.detach().reshape(-1).numpy()
            _, (gi, gw, gb) = _run(ctx.saved_tensors, ctx.args, ctx.chunk_bytes, True,
                                   row_scale)  # fmt: skip
            return gi, gw, None, gb, None, None, None, None, None, None, None
        if grads is None:
            _, grads = _run(ctx.saved_tensors, ctx.args, ctx.chunk_bytes, True)
        gi, gw, gb = grads
        go = grad_output
        if not (go.numel() == 1 and go.item() == 1.0):
            gi = gi * go
            gw = gw * go
            gb = None if gb is None else gb * go
        return gi, gw, None, gb, None, None, None, None, None, None, None


def _unserved(input, linear_weight, target, linear_bias, weight, reduction):
    """Why numxent cannot serve this call, or None."""
    named = [("input", input), ("linear_weight", linear_weight), ("target", target),
             ("linear_bias", linear_bias), ("weight", weight)]  # fmt: skip
    for name, t in named:
        if t is not None and not plain_tensor(t):
            return tensor_problem(t, name)
    if input.dtype not in _SERVED or linear_weight.dtype != input.dtype:
        return f"input {input.dtype} and linear_weight {linear_weight.dtype}"
    if target.dtype != torch.int64 or target.requires_grad:
        return f"target of dtype {target.dtype} (served: int64, no grad)"
    if reduction not in ("mean", "sum", "none"):
        return f"reduction={reduction!r}"
    if linear_bias is not None and (
        linear_bias.dtype != input.dtype or linear_bias.dim() != 1
    ):
        return "linear_bias of another dtype than the input's, or not 1-D"
    if weight is not None and (weight.requires_grad or weight.dtype != input.dtype):
        return "weight of another dtype than the input's, or requiring grad"
    if torch.is_grad_enabled() and input.dim() < 1:
        return "a 0-d input"
    return None


def _reference(input, linear_weight, target, linear_bias, weight, reduction,
               ignore_index, label_smoothing, lse_square_scale, softcap):  # fmt: skip
    """PyTorch's own computation (materialised logits), extras included."""
    if lse_square_scale == 0.0 and softcap is None and _TORCH_LINEAR_CE:
        return F.linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias, weight=weight,
            reduction=reduction, ignore_index=ignore_index,
            label_smoothing=label_smoothing,
        )  # fmt: skip
    x = F.linear(input, linear_weight, linear_bias)
    rows = _ce_reference(x.reshape(-1, x.shape[-1]), target.reshape(-1), weight,
                         ignore_index, reduction, label_smoothing, lse_square_scale,
                         softcap)  # fmt: skip
    return rows.reshape(target.shape) if reduction == "none" else rows


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    process_group: object | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.linear_cross_entropy`` computed by numxent's
    chunked kernel: the (N, V) logits never exist.

    Parameters
    ----------
    input : Tensor of shape (..., H)
    linear_weight : Tensor of shape (V, H)
    target : int64 Tensor of shape input.shape[:-1]
    linear_bias : Tensor of shape (V,), optional
    weight : Tensor of shape (V,), optional
        Class weights.
    reduction : {"mean", "sum", "none"}
        "none" returns the per-token losses; its backward computes the
        gradients with the upstream per-token factors (one more pass of chunk
        logits, the same memory bound as "mean").
    ignore_index : int, optional
        None means -100, as in PyTorch.
    label_smoothing : float in [0, 1]
    lse_square_scale : float >= 0
        z-loss, as in :func:`numxent.cross_entropy`.
    softcap : float > 0, optional
        Logit soft-capping, as in :func:`numxent.cross_entropy`.
    chunk_bytes : int
        Size of the chunk's logits buffer.
    process_group : torch.distributed.ProcessGroup, optional
        Vocabulary parallelism: ``linear_weight`` (and ``linear_bias``,
        ``weight``) hold this rank's contiguous shard of the V rows (ranks
        in order, uneven shards allowed); ``input`` and ``target`` are the
        same on every rank. The loss is the whole vocabulary's; the input's
        gradient is summed over the ranks (all-reduced: the full gradient on
        every rank), the weight's and bias's are this shard's. Chunked over
        tokens as without it (``chunk_bytes`` of this shard's logits; the
        ranks use the smallest chunk any of them asks for). Every rank must
        make the call and its backward. See "Vocabulary-parallel" in
        docs/large-vocabulary.md.

    Returns
    -------
    Tensor
        The loss; its backward scales the three gradients the forward
        computed.

    Examples
    --------
    >>> import torch
    >>> from numxent.torch import linear_cross_entropy
    >>> h = torch.randn(8, 4, requires_grad=True); W = torch.randn(10, 4)
    >>> y = torch.randint(0, 10, (8,))
    >>> loss = linear_cross_entropy(h, W, y)
    >>> loss.backward()
    >>> bool(torch.isclose(loss, torch.nn.functional.cross_entropy(h @ W.T, y)))
    True
    """
    if process_group is not None:  # no fall-back: PyTorch has no such loss
        return vocab_linear_cross_entropy(
            input, linear_weight, target, linear_bias, weight, reduction,
            -100 if ignore_index is None else ignore_index, label_smoothing,
            lse_square_scale, softcap, chunk_bytes, process_group,
        )  # fmt: skip
    ignore = -100 if ignore_index is None else int(ignore_index)
    args = (input, linear_weight, target, linear_bias, weight, reduction, ignore,
            float(label_smoothing), float(lse_square_scale),
            None if softcap is None else float(softcap))  # fmt: skip
    if torch.compiler.is_compiling():
        # Dynamo would trace into the NumPy code: a graph break runs the
        # served call eagerly (the rest of the model stays compiled)
        return _linear_ce_eager(args, chunk_bytes)
    return _served_or_reference(args, chunk_bytes)


def _served_or_reference(args, chunk_bytes):
    why = _unserved(*args[:6])
    if why is None:
        try:
            return _LinearCEFunction.apply(*args, chunk_bytes)
        except NumxentError as exc:  # PyTorch's path raises its own error, or agrees
            why = rejected(exc)
    fallback("linear_cross_entropy", why)
    return _reference(*args)


_EAGER: dict = {}


def _linear_ce_eager(args, chunk_bytes):
    """``_served_or_reference`` behind ``torch.compiler.disable``, made at the
    first compiled call: made at import, it would import torch._dynamo (2 s)
    with numxent.torch in every process."""
    fn = _EAGER.get("fn")
    if fn is None:
        fn = _EAGER["fn"] = torch.compiler.disable(_served_or_reference)
    return fn(args, chunk_bytes)


class LinearCrossEntropyLoss(torch.nn.Module):
    """A loss module over ``linear_cross_entropy``:
    ``forward(input, linear_weight, target, linear_bias=None)``.

    Unlike ``torch.nn.LinearCrossEntropyLoss`` it holds no parameters: the
    output layer's weight (and bias) are passed to ``forward``, so the
    model's own ``nn.Linear`` (or tied embedding) supplies them. With
    ``process_group`` they are this rank's shard of the vocabulary (see
    ``linear_cross_entropy``).

    Examples
    --------
    >>> import torch
    >>> from numxent.torch import LinearCrossEntropyLoss
    >>> head = torch.nn.Linear(4, 10)
    >>> loss_fn = LinearCrossEntropyLoss(lse_square_scale=1e-4)
    >>> h = torch.randn(8, 4); y = torch.randint(0, 10, (8,))
    >>> loss_fn(h, head.weight, y, head.bias).backward()
    >>> head.weight.grad.shape
    torch.Size([10, 4])
    """

    def __init__(
        self,
        *,
        weight: torch.Tensor | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        lse_square_scale: float = 0.0,
        softcap: float | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        process_group: object | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap
        self.chunk_bytes = chunk_bytes
        self.process_group = process_group

    def forward(
        self,
        input: torch.Tensor,
        linear_weight: torch.Tensor,
        target: torch.Tensor,
        linear_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=self.weight,  # type: ignore[arg-type]
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            lse_square_scale=self.lse_square_scale,
            softcap=self.softcap,
            chunk_bytes=self.chunk_bytes,
            process_group=getattr(self, "process_group", None),
        )
