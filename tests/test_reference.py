"""The references in naive.py agree with PyTorch (float64).

The finite-difference gradient checks, which need only NumPy, are in
test_gradcheck.py."""

from __future__ import annotations

import numpy as np
import pytest

from _checks import (
    dense_soft_target,
    from_torch_layout,
    hard_target_ignoring,
    to_torch_layout,
)
from naive import (
    bce_with_logits_ref,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["none", "mean", "sum"]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def torch_ce(logits, target, upstream=None, **kwargs):
    """PyTorch float64 cross-entropy loss and input gradient, class axis last."""
    x = torch.tensor(to_torch_layout(np.asarray(logits, np.float64)))
    x.requires_grad_(True)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer):
        t = torch.tensor(target.astype(np.int64))
    else:
        t = torch.tensor(to_torch_layout(target.astype(np.float64)))
    if kwargs.get("weight") is not None:
        kwargs["weight"] = torch.tensor(np.asarray(kwargs["weight"], np.float64))
    loss = F.cross_entropy(x, t, **kwargs)
    if upstream is None:
        loss.backward(torch.ones_like(loss))
    else:
        loss.backward(torch.tensor(np.asarray(upstream, np.float64)))
    return loss.detach().numpy(), from_torch_layout(x.grad.numpy())


def torch_bce(logits, target, upstream=None, weight=None, pos_weight=None, **kw):
    x = torch.tensor(np.asarray(logits, np.float64), requires_grad=True)
    t = torch.tensor(np.asarray(target, np.float64))
    if weight is not None:
        weight = torch.tensor(np.asarray(weight, np.float64))
    if pos_weight is not None:
        pos_weight = torch.tensor(np.asarray(pos_weight, np.float64))
    loss = F.binary_cross_entropy_with_logits(
        x, t, weight=weight, pos_weight=pos_weight, **kw
    )
    if upstream is None:
        loss.backward(torch.ones_like(loss))
    else:
        loss.backward(torch.tensor(np.asarray(upstream, np.float64)))
    return loss.detach().numpy(), x.grad.numpy()


def _close64(actual, expected, scale=1.0):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14 * scale)


# --------------------------------------------------------------------------
# naive.py vs PyTorch float64
# --------------------------------------------------------------------------
CE_REF_CASES = [
    dict(),
    dict(weight=True),
    dict(label_smoothing=0.3),
    dict(ignore_index=2, n_ignored=2),
    dict(weight=True, label_smoothing=0.1, ignore_index=0, n_ignored=1),
    dict(weight=True, label_smoothing=1.0),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CE_REF_CASES, ids=str)
@pytest.mark.parametrize("lead", [(6,), (2, 3)], ids=str)
def test_naive_cross_entropy_hard_matches_torch(reduction, case, lead):
    rng = np.random.default_rng(0)
    C = 5
    x = rng.normal(scale=2.0, size=lead + (C,))
    ignore_index = case.get("ignore_index", -100)
    y = hard_target_ignoring(rng, lead, C, ignore_index, case.get("n_ignored", 0))
    w = rng.random(C) + 0.1 if case.get("weight") else None
    eps = case.get("label_smoothing", 0.0)
    g = rng.normal(size=lead) if reduction == "none" else None

    loss, grad = cross_entropy_ref(
        x,
        y,
        weight=w,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=eps,
    )
    t_loss, t_grad = torch_ce(
        x,
        y,
        upstream=g,
        weight=w,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=eps,
    )
    _close64(loss, t_loss)
    if reduction == "none":
        grad = grad * g[..., None]
    _close64(grad, t_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_naive_cross_entropy_soft_matches_torch(reduction, weighted, eps):
    rng = np.random.default_rng(1)
    lead, C = (2, 3), 4
    x = rng.normal(scale=2.0, size=lead + (C,))
    t = dense_soft_target(rng, lead + (C,))
    w = rng.random(C) + 0.1 if weighted else None
    g = rng.normal(size=lead) if reduction == "none" else None
    loss, grad = cross_entropy_ref(
        x, t, weight=w, reduction=reduction, label_smoothing=eps
    )
    t_loss, t_grad = torch_ce(
        x, t, upstream=g, weight=w, reduction=reduction, label_smoothing=eps
    )
    _close64(loss, t_loss)
    if reduction == "none":
        grad = grad * g[..., None]
    _close64(grad, t_grad)


@pytest.mark.parametrize("soft", [False, True])
def test_naive_cross_entropy_sample_weight_from_torch_pieces(soft):
    """sample_weight has no PyTorch counterpart: build it from the 'none' loss."""
    rng = np.random.default_rng(2)
    N, C = 7, 4
    x = rng.normal(size=(N, C))
    w = rng.random(C) + 0.1
    s = rng.random(N) * 3
    if soft:
        t = dense_soft_target(rng, (N, C))
        kept = np.ones(N, bool)
        denom = s.sum()
    else:
        t = hard_target_ignoring(rng, (N,), C, ignore_index=1, n_ignored=2)
        kept = t != 1
        denom = np.sum(s[kept] * w[t[kept]])
    kw = dict(weight=w, label_smoothing=0.1)
    if not soft:
        kw["ignore_index"] = 1
    per_row, row_grad = torch_ce(x, t, upstream=s, reduction="none", **kw)

    loss, grad = cross_entropy_ref(x, t, sample_weight=s, reduction="none", **kw)
    _close64(loss, s * per_row)
    _close64(grad, row_grad)
    loss, grad = cross_entropy_ref(x, t, sample_weight=s, reduction="sum", **kw)
    _close64(loss, np.sum(s * per_row), scale=10)
    _close64(grad, row_grad)
    loss, grad = cross_entropy_ref(x, t, sample_weight=s, reduction="mean", **kw)
    _close64(loss, np.sum(s * per_row) / denom)
    _close64(grad, row_grad / denom)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3)], ids=str)
def test_naive_bce_matches_torch(reduction, weighted, pos_weighted, shape):
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3.0, size=shape)
    t = rng.random(shape)
    w = rng.random(shape[-1:]) + 0.1 if weighted else None
    pw = rng.random(shape[-1:]) * 3 if pos_weighted else None
    g = rng.normal(size=shape) if reduction == "none" else None
    loss, grad = bce_with_logits_ref(x, t, weight=w, pos_weight=pw, reduction=reduction)
    t_loss, t_grad = torch_bce(
        x, t, upstream=g, weight=w, pos_weight=pw, reduction=reduction
    )
    _close64(loss, t_loss)
    if reduction == "none":
        grad = grad * g
    _close64(grad, t_grad)


def test_naive_bce_sample_weight_is_np_average():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3))
    t = rng.random((4, 3))
    s = rng.random(4)
    per_elem = torch_bce(x, t, reduction="none")[0]
    loss, _ = bce_with_logits_ref(x, t, sample_weight=s)
    expected = np.average(per_elem, weights=np.broadcast_to(s[:, None], x.shape))
    _close64(loss, expected)
    # 1-D logits: one weight per element
    s1 = rng.random(3)
    per_elem = torch_bce(x[0], t[0], reduction="none")[0]
    loss, _ = bce_with_logits_ref(x[0], t[0], sample_weight=s1)
    _close64(loss, np.average(per_elem, weights=s1))


@pytest.mark.parametrize(
    "case", ["empty", "all_ignored", "zero_class_weight", "soft_empty"]
)
def test_naive_mean_over_nothing_is_nan_like_torch(case):
    """A "mean" whose denominator is 0: NaN in both (the reference's gradient
    is then all zeros, numxent's convention: test_naive_reference.py)."""
    x = np.random.default_rng(7).normal(size=(4, 3))
    y = np.array([0, 1, 1, 0])
    kw = {}
    if case == "empty":
        x, y = x[:0], y[:0]
    elif case == "all_ignored":
        y = np.full(4, -100)
    elif case == "zero_class_weight":
        kw["weight"] = np.array([0.0, 0.0, 1.0])
    else:
        x, y = x[:0], np.zeros((0, 3))
    loss, _ = cross_entropy_ref(x, y, **kw)
    t_loss, _ = torch_ce(x, y, **kw)
    assert np.isnan(loss) and np.isnan(t_loss)


def _torch_extras(x, y, w, sw, eps, reduction, z, cap):
    """z-loss and soft-capping written with PyTorch's float64 ops (its
    cross_entropy on the capped logits plus ``z w_y lse**2``), gradient by
    autograd: (loss, z_loss, grad)."""
    xt = torch.tensor(x, requires_grad=True)
    xx = cap * torch.tanh(xt / cap) if cap else xt
    yt = torch.tensor(y)
    wt = None if w is None else torch.tensor(w)
    ce = F.cross_entropy(xx, yt, weight=wt, reduction="none", label_smoothing=eps)
    keep = (yt != -100).double()
    ones = torch.ones(len(y), dtype=torch.float64)
    wy = (wt[yt.clamp(min=0)] if wt is not None else ones) * keep
    zl = z * wy * torch.logsumexp(xx, -1) ** 2
    rows = ce + zl
    if sw is not None:
        s = torch.tensor(sw)
        rows, zl, wy = rows * s, zl * s, wy * s
    if reduction == "mean":
        loss, zloss = rows.sum() / wy.sum(), zl.sum() / wy.sum()
    elif reduction == "sum":
        loss, zloss = rows.sum(), zl.sum()
    else:
        loss, zloss = rows, zl
    loss.sum().backward()
    return loss.detach().numpy(), zloss.detach().numpy(), xt.grad.numpy()


EXTRAS_CASES = [
    dict(z=1e-2, cap=None),
    dict(z=0.0, cap=3.0),
    dict(z=1e-3, cap=5.0, weighted=True),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", EXTRAS_CASES, ids=str)
def test_naive_extras_match_torch_formula(reduction, case):
    """naive.py's z-loss and soft-capping (hard labels)."""
    rng = np.random.default_rng(6)
    N, C = 12, 30
    x = rng.normal(scale=4.0, size=(N, C))
    y = rng.integers(0, C, N)
    y[2] = -100
    weighted = case.get("weighted", False)
    w = rng.random(C) if weighted else None
    sw = rng.random(N) if weighted else None
    eps = 0.1 if weighted else 0.0
    z, cap = case["z"], case["cap"]
    loss, z_loss, grad = cross_entropy_ref(
        x, y, weight=w, sample_weight=sw, label_smoothing=eps, reduction=reduction,
        lse_square_scale=z, softcap=cap, return_z_loss=True,
    )  # fmt: skip
    t_loss, t_z, t_grad = _torch_extras(x, y, w, sw, eps, reduction, z, cap)
    scale = float(np.max(np.abs(t_loss)))
    _close64(loss, t_loss, scale)
    _close64(z_loss, t_z, scale)
    _close64(grad, t_grad)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_naive_logsumexp_family_matches_torch(axis):
    rng = np.random.default_rng(5)
    x = rng.normal(scale=5.0, size=(3, 4, 5))
    x[0, 1, 2] = -np.inf
    xt = torch.tensor(x)
    _close64(logsumexp_ref(x, axis=axis), torch.logsumexp(xt, dim=axis).numpy())
    _close64(log_softmax_ref(x, axis=axis), torch.log_softmax(xt, dim=axis).numpy())
    _close64(softmax_ref(x, axis=axis), torch.softmax(xt, dim=axis).numpy())
