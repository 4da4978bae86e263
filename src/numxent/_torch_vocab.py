"""Vocabulary-parallel losses over ``torch.distributed``: what
``numxent.torch.cross_entropy`` and ``linear_cross_entropy`` run when given
``process_group=``.

Layout. Rank ``r`` of the group (in the group's rank order) holds the
contiguous block of classes ``[offset_r, offset_r + C_r)`` of a vocabulary of
``V = C_0 + ... + C_{P-1}`` classes: the ``C_r`` columns of the logits, or the
``C_r`` rows of the output layer's weight (and bias), and the ``C_r`` entries
of the class weights. ``offset_r`` is the sum of the lower ranks' ``C``; the
shards may be uneven. The target (global class indices) and, for the linear
loss, the input are the same on every rank.

Communication, per call: one ``all_gather_object`` of each rank's shard size
and a few facts (shapes, dtype, options, a CRC of the target, what it found
wrong), so that every rank raises the same error before any other collective
when any rank's input is bad or the ranks disagree. Then per chunk of rows
(the whole batch for ``cross_entropy``): an all-reduce (MAX) of the row maxima,
and one all-reduce (SUM) of a few per-row sums stacked together: the sums of
``exp(x - max)``, the target logits (the owning rank adds its value, the
others 0), the target's class weight (with ``weight``) and the rows'
(weighted) logit sums (with label smoothing). These per-row quantities are
float64 whatever the logits' dtype; the logits, their exponentials and the
gradient stay in the logits' dtype. The linear loss's input gradient is the sum
over the ranks of ``G_r @ W_r``: one all-reduce (SUM) of N x H at the end.
Nothing of size N x V exists on any rank, nor is sent.

Math, kept row ``i`` (target ``y_i``, softcap applied first to every logit)::

    m_i = max over ranks of max_k x_ik,   s_i = sum over ranks of sum_k e^(x_ik - m_i)
    lse_i = m_i + log s_i
    loss_i = (1 - eps) w_y (lse_i - x_iy) + eps/V (W lse_i - sum_k w_k x_ik)
             + z w_y lse_i^2
    grad_ik = p_ik ((1 - eps) w_y + eps W / V + 2 z w_y lse_i)
              - (1 - eps) w_y [k == y_i] - eps w_k / V

with ``W = sum_k w_k`` over the whole vocabulary and ``p_ik = e^(x_ik -
m_i) / s_i``, as :func:`numxent.cross_entropy` defines them. The loss is the
same on every rank; each rank's gradient is its own shard's.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from . import _validation as V
from .errors import NumxentError
from .linear import even_chunks

__all__ = ["vocab_cross_entropy", "vocab_linear_cross_entropy"]

_SERVED = (torch.float32, torch.float64)
_F64 = torch.float64


class _Plan(NamedTuple):
    """What every rank agreed on (the same on every rank but ``offset``)."""

    group: object
    offset: int  # this rank's first class
    n_classes: int  # V, the whole vocabulary
    rows: int  # rows per chunk
    need_grad: bool  # whether any rank needs gradients
    ignore: int
    reduction: str
    eps: float
    z: float
    cap: float  # 0.0: off
    w_sum: float  # the class weights' sum over the vocabulary (V without)


# --------------------------------------------------------------------------
# the one exchange before any other collective
# --------------------------------------------------------------------------
#: facts that must be equal on every rank, and how to say that they are not
_AGREE = {
    "options": "the options (reduction, ignore_index, label_smoothing, "
    "lse_square_scale, softcap) differ across ranks",
    "rows": "the number of rows (tokens) differs across ranks",
    "hidden": "input's hidden size differs across ranks",
    "dtype": "the logits' dtype differs across ranks",
    "target": "target differs across ranks (every rank passes the same global "
    "class indices)",
    "has_weight": "weight is given on some ranks only",
    "has_bias": "linear_bias is given on some ranks only",
}


def _problem(problems: list, exc: NumxentError) -> None:
    problems.append((isinstance(exc, TypeError), str(exc)))


def _guard(problems: list, check, *args):
    """``check(*args, problems)``, whose first result is the rank's facts. Any
    exception becomes a problem too: raised on this rank alone, it would
    leave the others waiting in the exchange."""
    try:
        return check(*args, problems)
    except Exception as exc:  # noqa: BLE001 - every rank raises after the exchange
        problems.append((isinstance(exc, TypeError), f"{type(exc).__name__}: {exc}"))
        return None


def _exchange(group, local, problems: list, what: str) -> list[dict]:
    """Every rank's facts (``local[0]``; one ``all_gather_object``). Raises on
    every rank alike when any rank found a problem or the ranks disagree: a
    rank that raised alone would leave the others waiting in the next
    collective."""
    facts = {"problems": problems} if local is None else local[0]
    facts["problems"] = problems
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, facts, group=group)
    found: dict = {}  # (is_type, message) -> ranks, in rank order
    for r, f in enumerate(everyone):
        for p in f["problems"]:
            found.setdefault(tuple(p), []).append(r)
    listed = [
        (t, f"rank{'s' * (len(r) > 1)} {', '.join(map(str, r))}: {m}")
        for (t, m), r in found.items()
    ]
    if not listed:
        for key, msg in _AGREE.items():
            values = [f.get(key) for f in everyone]
            if any(v != values[0] for v in values):
                listed.append((False, msg))
    V.check_ranks_agree(listed, what)
    return everyone


def _check_options(options: tuple, problems: list) -> tuple:
    ignore_index, reduction, label_smoothing, lse_square_scale, softcap = options
    try:
        return (
            V.check_ignore_index(ignore_index),
            V.check_reduction(reduction),
            V.check_label_smoothing(label_smoothing),
            V.check_lse_square_scale(lse_square_scale),
            V.check_softcap(softcap),
        )
    except NumxentError as exc:
        _problem(problems, exc)
        return ()


def _tensor_problem(t, name: str, dtypes=_SERVED) -> tuple | None:
    if not isinstance(t, torch.Tensor):
        return (True, f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu" or t.dtype not in dtypes:
        return (
            True,
            f"{name} is a {t.dtype} tensor on {t.device}; with process_group "
            f"numxent serves CPU tensors of dtype {', '.join(map(str, dtypes))}",
        )
    return None


def _check_target(target, lead: tuple, problems: list) -> torch.Tensor | None:
    """The flat int64 labels, or None (the problem recorded)."""
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        problems.append((False, "target of class probabilities (a floating "
                         "dtype) is not supported with process_group; pass "
                         "class indices"))  # fmt: skip
        return None
    labels = (torch.int64, torch.int32, torch.uint8)
    bad = _tensor_problem(target, "target", labels)
    if bad is None and tuple(target.shape) != lead:
        bad = (False, f"target must have shape {lead}, got {tuple(target.shape)}")
    if bad is not None:
        problems.append(bad)
        return None
    return target.reshape(-1).to(torch.int64)


def _check_weight(weight, n: int, dtype, problems: list) -> torch.Tensor | None:
    """This rank's slice of the class weights, checked (shape (C_r,), finite,
    >= 0) and in the logits' dtype."""
    if weight is None:
        return None
    bad = _tensor_problem(weight, "weight")
    if bad is None and weight.requires_grad:
        bad = (False, "a weight that requires grad is not supported with "
               "process_group")  # fmt: skip
    if bad is not None:
        problems.append(bad)
        return None
    try:
        V.check_nonneg_weights(weight.detach().numpy(), "weight (this rank's slice)",
                               (n,))  # fmt: skip
    except NumxentError as exc:
        _problem(problems, exc)
        return None
    return weight.detach().to(dtype)


def _plan(group, everyone, opts, y, lead) -> _Plan:
    """The agreed plan; raises (LabelIndexError) on every rank alike when a
    label is outside the vocabulary (every rank holds the same target: the
    exchange compared their CRCs)."""
    rank = dist.get_rank(group)
    sizes = [f["classes"] for f in everyone]
    n_classes = sum(sizes)
    ignore, reduction, eps, z, cap = opts
    bad = (y != ignore) & ((y < 0) | (y >= n_classes))
    if bool(bad.any()):
        pos = int(bad.nonzero()[0, 0])
        V.raise_bad_label(y.numpy(), pos, n_classes, lead)
    has_w = everyone[0]["has_weight"]
    return _Plan(
        group, sum(sizes[:rank]), n_classes,
        even_chunks(int(y.numel()), min(f["chunk"] for f in everyone)),
        any(f["grad"] for f in everyone), ignore, reduction, eps, z, cap,
        sum(f["w_sum"] for f in everyone) if has_w else float(n_classes),
    )  # fmt: skip


def _facts(classes, rows, dtype, opts, y, weight, need_grad, chunk, **more):
    crc = None if y is None else zlib.crc32(y.numpy().tobytes())
    w_sum = 0.0 if weight is None else float(weight.sum(dtype=_F64))
    return dict(classes=classes, rows=rows, dtype=str(dtype), options=opts,
                target=crc, has_weight=weight is not None, w_sum=w_sum,
                grad=need_grad, chunk=chunk, **more)  # fmt: skip


# --------------------------------------------------------------------------
# the rows of one chunk
# --------------------------------------------------------------------------
def _rows(x: torch.Tensor, y: torch.Tensor, w, plan: _Plan, need_grad: bool,
          scratch: bool):  # fmt: skip
    """Per-row losses and target weights (float64) of the logits shard ``x``
    (rows, C_r), and with ``need_grad`` the shard's gradient of the per-row
    losses (not divided by the mean's denominator), written over ``x`` when
    ``scratch`` allows it, else a new tensor."""
    group, c, lo, eps, z = plan.group, x.shape[1], plan.offset, plan.eps, plan.z
    th = None
    if plan.cap:  # soft-capping first: everything below sees capped logits
        th = torch.tanh(x / plan.cap)
        x, scratch = th * plan.cap, True
    m = x.amax(dim=1).to(_F64)
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    # a row without a finite maximum (all -inf, or a +inf) is shifted by 0:
    # its loss comes out NaN or inf, not numxent's single-process values
    shift = torch.where(torch.isfinite(m), m, 0.0)
    kept = y != plan.ignore
    own = kept & (y >= lo) & (y < lo + c)
    idx = torch.where(own, y - lo, 0)
    # read before ``x`` may be overwritten by its exponentials
    sums = [torch.where(own, x.gather(1, idx[:, None])[:, 0].to(_F64), 0.0)]
    if w is not None:
        sums.append(torch.where(own, w[idx].to(_F64), 0.0))
    if eps:
        sums.append(x.sum(1, dtype=_F64) if w is None else torch.mv(x, w).to(_F64))
    col = shift.to(x.dtype)[:, None]
    e = x.sub_(col) if scratch else x - col
    e.exp_()
    total = torch.stack([e.sum(1, dtype=_F64), *sums])
    dist.all_reduce(total, group=group)
    s, t = total[0], total[1]
    lse = shift + torch.log(s)
    wy = torch.where(kept, total[2] if w is not None else 1.0, 0.0)
    a = (1.0 - eps) * wy
    loss = a * (lse - t)
    if eps:
        loss += eps / plan.n_classes * (plan.w_sum * lse - total[-1])
    if z:
        loss += z * wy * lse * lse
    loss = torch.where(kept, loss, 0.0)
    if not need_grad:
        return loss, wy, None
    coef = a + kept * (eps * plan.w_sum / plan.n_classes) + 2.0 * z * wy * lse
    g = e.mul_((coef / s).to(e.dtype)[:, None])  # p_ik times the row's total
    r = own.nonzero()[:, 0]
    g.index_put_((r, idx[r]), -a[r].to(g.dtype), accumulate=True)
    if eps:
        ones = torch.ones(c, dtype=g.dtype) if w is None else w
        g.addr_(kept.to(g.dtype), ones, alpha=-eps / plan.n_classes)
    if th is not None:  # chain rule through the cap
        g.mul_(th.mul_(th).neg_().add_(1.0))
    return loss, wy, g


def _reduce(loss: torch.Tensor, wy: torch.Tensor, reduction: str):
    """(the reduced float64 loss, the gradients' factor)."""
    if reduction == "sum":
        return loss.sum(), 1.0
    if reduction == "none":
        return loss, 1.0
    denom = float(wy.sum())
    if denom == 0.0:  # no kept row: NaN, all-zero gradients (as numxent's)
        return torch.tensor(float("nan"), dtype=_F64), 0.0
    return loss.sum() / denom, 1.0 / denom


# --------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------
def _as_rows(input: torch.Tensor) -> torch.Tensor:
    """(N, C, d1, ...) or (C,) logits as (rows, C), classes last."""
    if input.dim() == 1:
        return input.reshape(1, -1)
    x = input.movedim(1, -1) if input.dim() > 2 else input
    return x.reshape(-1, input.shape[1])


def _from_rows(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) <= 2:
        return g.reshape(shape)
    return g.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],)).movedim(-1, 1)


class _VocabCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, y, w, plan, lead):
        x = _as_rows(input.detach())
        loss, wy, g = _rows(x, y, w, plan, plan.need_grad, scratch=False)
        out, scale = _reduce(loss, wy, plan.reduction)
        if g is not None and scale != 1.0:
            g.mul_(scale)
        ctx.grad, ctx.shape = g, input.shape
        ctx.none = plan.reduction == "none"
        return (out.reshape(lead) if ctx.none else out).to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        go = grad_output.reshape(-1, 1) if ctx.none else grad_output
        g = ctx.grad * go.to(ctx.grad.dtype)
        return _from_rows(g, ctx.shape), None, None, None, None


def _ce_local(input, target, weight, options, problems: list):
    """This rank's own checks: (facts, labels, class weights, leading shape,
    options), the problems found appended to ``problems``."""
    opts = _check_options(options, problems)
    bad = _tensor_problem(input, "input")
    if bad is None and input.dim() == 0:
        bad = (False, "input must have at least one dimension (classes)")
    y = w = None
    classes = rows = 0
    lead: tuple = ()
    if bad is not None:
        problems.append(bad)
    else:
        classes = input.shape[0 if input.dim() == 1 else 1]
        if input.dim() > 1:
            lead = tuple(input.shape[:1]) + tuple(input.shape[2:])
        y = _check_target(target, lead, problems)
        w = _check_weight(weight, classes, input.dtype, problems)
        rows = int(torch.Size(lead).numel())
        if classes == 0:
            problems.append((False, "input holds 0 classes on this rank"))
    need_grad = bad is None and input.requires_grad and torch.is_grad_enabled()
    facts = _facts(classes, rows, getattr(input, "dtype", None), opts, y, w,
                   need_grad, rows)  # fmt: skip
    return facts, y, w, lead, opts


def vocab_cross_entropy(input, target, weight, ignore_index, reduction,
                        label_smoothing, lse_square_scale, softcap,
                        group) -> torch.Tensor:  # fmt: skip
    """``numxent.torch.cross_entropy`` with ``process_group=group``: the logits
    are this rank's shard of the class dimension (see the module's note)."""
    problems: list = []
    options = (ignore_index, reduction, label_smoothing, lse_square_scale, softcap)
    local = _guard(problems, _ce_local, input, target, weight, options)
    everyone = _exchange(group, local, problems, "cross_entropy")
    _, y, w, lead, opts = local  # (a rank that found problems has raised)
    plan = _plan(group, everyone, opts, y, lead)
    return _VocabCE.apply(input, y, w, plan, lead)


# --------------------------------------------------------------------------
# linear_cross_entropy
# --------------------------------------------------------------------------
def _linear_run(h, lw, lb, y, w, plan: _Plan, need_grad: bool, row_scale=None):
    """Per-row losses, target weights and, with ``need_grad``, the gradients
    (input's summed over the ranks; the weight's and bias's of this shard) of
    the per-row losses (times ``row_scale``), a chunk of ``plan.rows`` rows at
    a time: the same number of chunks, hence of collectives, on every rank."""
    n = h.shape[0]
    loss = torch.zeros(n, dtype=_F64)
    wy = torch.zeros(n, dtype=_F64)
    if need_grad:
        g_in = torch.zeros_like(h)
        g_w = torch.zeros_like(lw)
        g_b = None if lb is None else torch.zeros(lw.shape[0], dtype=_F64)
    for c0 in range(0, n, plan.rows):
        c1 = min(n, c0 + plan.rows)
        hc = h[c0:c1]
        x = hc @ lw.t() if lb is None else torch.addmm(lb, hc, lw.t())
        loss[c0:c1], wy[c0:c1], g = _rows(x, y[c0:c1], w, plan, need_grad, True)
        if g is None:
            continue
        if row_scale is not None:
            g.mul_(row_scale[c0:c1, None])
        torch.mm(g, lw, out=g_in[c0:c1])
        g_w.addmm_(g.t(), hc)
        if g_b is not None:
            g_b += g.sum(0, dtype=_F64)
    if not need_grad:
        return loss, wy, None
    dist.all_reduce(g_in, group=plan.group)  # the input gradient: every shard's
    return loss, wy, [g_in, g_w, g_b]


class _VocabLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, linear_weight, linear_bias, y, w, plan):
        h = input.detach().reshape(-1, input.shape[-1])
        lw = linear_weight.detach()
        lb = None if linear_bias is None else linear_bias.detach()
        none = plan.reduction == "none"
        # "none": the per-token factors arrive with the backward, which
        # computes the gradients (every rank must run it: it communicates)
        loss, wy, grads = _linear_run(h, lw, lb, y, w, plan,
                                      plan.need_grad and not none)  # fmt: skip
        out, scale = _reduce(loss, wy, plan.reduction)
        if grads is not None and scale != 1.0:
            for g in grads:
                if g is not None:
                    g.mul_(scale)
        ctx.grads, ctx.plan, ctx.args = grads, plan, (h, lw, lb, y, w)
        ctx.shapes = (input.shape, linear_bias)
        lead = input.shape[:-1]
        return (out.reshape(lead) if none else out).to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        shape, bias = ctx.shapes
        if ctx.plan.reduction == "none":
            scale = grad_output.reshape(-1).to(ctx.args[0].dtype)
            _, _, grads = _linear_run(*ctx.args, ctx.plan, True, scale)
        else:
            grads = [None if g is None else g * grad_output.to(g.dtype)
                     for g in ctx.grads]  # fmt: skip
        gi, gw, gb = grads
        gb = None if gb is None else gb.to(bias.dtype)
        return gi.reshape(shape), gw, gb, None, None, None


def _linear_local(input, linear_weight, target, linear_bias, weight, options,
                  chunk_bytes, problems: list):  # fmt: skip
    """This rank's own checks (as ``_ce_local``)."""
    opts = _check_options(options, problems)
    named = [("input", input), ("linear_weight", linear_weight)]
    if linear_bias is not None:
        named.append(("linear_bias", linear_bias))
    bads = [b for name, t in named if (b := _tensor_problem(t, name)) is not None]
    problems += bads
    y = w = None
    classes = rows = hidden = chunk = 0
    lead: tuple = ()
    dtype = getattr(input, "dtype", None)
    if not bads:
        try:
            V.check_linear(*(None if t is None else t.detach().numpy()
                             for t in (input, linear_weight, linear_bias)))  # fmt: skip
            if linear_weight.dtype != dtype or (
                linear_bias is not None and linear_bias.dtype != dtype
            ):
                problems.append((True, "input, linear_weight and linear_bias must "
                                 "have one dtype"))  # fmt: skip
            if not isinstance(chunk_bytes, int):  # (int() of it would raise here)
                problems.append((True, f"chunk_bytes must be an int, got "
                                 f"{chunk_bytes!r}"))  # fmt: skip
                chunk_bytes = 0
            budget = V.check_nonneg_int(chunk_bytes, "chunk_bytes")
        except NumxentError as exc:
            _problem(problems, exc)
        else:
            classes, hidden = linear_weight.shape
            lead = tuple(input.shape[:-1])
            rows = int(torch.Size(lead).numel())
            y = _check_target(target, lead, problems)
            w = _check_weight(weight, classes, dtype, problems)
            chunk = max(1, budget // (classes * input.element_size()))
    need_grad = (
        not bads
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for _, t in named)
    )
    facts = _facts(classes, rows, dtype, opts, y, w, need_grad, chunk,
                   hidden=hidden, has_bias=linear_bias is not None)  # fmt: skip
    return facts, y, w, lead, opts


def vocab_linear_cross_entropy(input, linear_weight, target, linear_bias, weight,
                               reduction, ignore_index, label_smoothing,
                               lse_square_scale, softcap, chunk_bytes,
                               group) -> torch.Tensor:  # fmt: skip
    """``numxent.torch.linear_cross_entropy`` with ``process_group=group``:
    ``linear_weight`` and ``linear_bias`` are this rank's rows of the output
    layer (see the module's note); ``input`` is the same on every rank."""
    problems: list = []
    options = (ignore_index, reduction, label_smoothing, lse_square_scale, softcap)
    local = _guard(problems, _linear_local, input, linear_weight, target,
                   linear_bias, weight, options, chunk_bytes)  # fmt: skip
    everyone = _exchange(group, local, problems, "linear_cross_entropy")
    _, y, w, lead, opts = local  # (a rank that found problems has raised)
    plan = _plan(group, everyone, opts, y, lead)
    return _VocabLinearCE.apply(input, linear_weight, linear_bias, y, w, plan)
