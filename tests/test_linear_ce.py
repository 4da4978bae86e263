"""z-loss, soft-capping and the fused linear cross-entropy, against PyTorch's
materialised-logits computation in float64 (autograd on the formulas)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import numxent as nx
import numxent.torch as nxt


def _ce_ref(x, y, z, cap, w=None, eps=0.0, red="mean", sw=None):
    """(loss, z_loss, grad) by PyTorch autograd in float64 on the formulas."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    xx = cap * torch.tanh(xt / cap) if cap else xt
    yt = torch.tensor(y)
    wt = None if w is None else torch.tensor(w)
    ce = F.cross_entropy(xx, yt, weight=wt, reduction="none", label_smoothing=eps)
    keep = (yt != -100).double()
    ones = torch.ones(len(y), dtype=torch.float64)
    wy = (wt[yt.clamp(min=0)] if wt is not None else ones) * keep
    zl = z * wy * torch.logsumexp(xx, -1) ** 2 if z else torch.zeros_like(ce)
    rows = ce + zl
    if sw is not None:
        s = torch.tensor(sw)
        rows, zl, wy = rows * s, zl * s, wy * s
    if red == "mean":
        loss, zloss = rows.sum() / wy.sum(), zl.sum() / wy.sum()
    elif red == "sum":
        loss, zloss = rows.sum(), zl.sum()
    else:
        loss, zloss = rows, zl
    loss.sum().backward()
    return loss.detach().numpy(), zloss.detach().numpy(), xt.grad.numpy()


# narrow (tile) and wide (row) kernels, serial and parallel sizes
SHAPES = [(50, 7), (50, 300), (400, 100), (200, 1000)]
OPTIONS = [(1e-2, None), (0.0, 3.0), (1e-3, 5.0)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("z,cap", OPTIONS)
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_extras_match_reference(dtype, shape, z, cap, red, weighted):
    rng = np.random.default_rng(hash((shape, z, red, weighted)) % 2**32)
    n, c = shape
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n)
    y[3] = -100
    w = rng.random(c) if weighted else None
    sw = rng.random(n) if weighted else None
    eps = 0.1 if weighted else 0.0
    kw = dict(weight=w, sample_weight=sw, label_smoothing=eps, reduction=red,
              lse_square_scale=z, softcap=cap)  # fmt: skip
    loss, zl, grad = nx.cross_entropy(x, y, return_z_loss=True, return_grad=True, **kw)
    r_loss, r_z, r_grad = _ce_ref(x, y, z, cap, w, eps, red, sw)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(loss, r_loss, rtol=tol, atol=tol)
    np.testing.assert_allclose(zl, r_z, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, r_grad, rtol=10 * tol, atol=tol)
    assert grad.dtype == dtype
    xx = x.copy()  # out=logits: the capped logits and the gradient in place
    _, g2 = nx.cross_entropy(xx, y, return_grad=True, out=xx, **kw)
    assert g2 is xx
    np.testing.assert_allclose(g2, r_grad, rtol=10 * tol, atol=tol)
    np.testing.assert_allclose(nx.cross_entropy(x, y, **kw), r_loss, rtol=tol, atol=tol)


def test_extras_off_is_plain_and_z_loss_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 9))
    y = rng.integers(0, 9, 20)
    plain, g = nx.cross_entropy(x, y, return_grad=True)
    loss, zl, g2 = nx.cross_entropy(x, y, return_z_loss=True, return_grad=True)
    assert loss == plain and zl == 0.0 and np.array_equal(g, g2)


def test_extras_errors_and_bad_label_leaves_out_untouched():
    x = np.zeros((3, 4))
    y = np.array([0, 1, 2])
    with pytest.raises(nx.InvalidValueError, match="lse_square_scale"):
        nx.cross_entropy(x, y, lse_square_scale=-1.0)
    with pytest.raises(nx.InvalidValueError, match="softcap"):
        nx.cross_entropy(x, y, softcap=0.0)
    with pytest.raises(nx.InvalidTypeError, match="softcap"):
        nx.cross_entropy(x, y, softcap="a")
    with pytest.raises(nx.InvalidValueError, match="class-index"):
        nx.cross_entropy(x, np.full((3, 4), 0.25), softcap=2.0)
    out = np.full((3, 4), 7.0)
    with pytest.raises(nx.LabelIndexError):
        nx.cross_entropy(x, np.array([0, 9, 1]), softcap=2.0, return_grad=True,
                         out=out)  # fmt: skip
    assert np.all(out == 7.0)


def _lin_ref(h, W, b, y, w, sw, eps, red, z, cap):
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    Wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    bt = None if b is None else torch.tensor(b, dtype=torch.float64, requires_grad=True)
    x = F.linear(ht, Wt, bt)
    if cap:
        x = cap * torch.tanh(x / cap)
    x2 = x.reshape(-1, W.shape[0])
    yt = torch.tensor(y.reshape(-1))
    wt = None if w is None else torch.tensor(w)
    ce = F.cross_entropy(x2, yt, weight=wt, reduction="none", label_smoothing=eps)
    keep = (yt != -100).double()
    ones = torch.ones(len(yt), dtype=torch.float64)
    wy = (wt[yt.clamp(min=0)] if wt is not None else ones) * keep
    rows = ce + (z * wy * torch.logsumexp(x2, -1) ** 2 if z else 0)
    if sw is not None:
        s = torch.tensor(sw.reshape(-1))
        rows, wy = rows * s, wy * s
    if red == "mean":
        loss = rows.sum() / wy.sum()
    else:
        loss = rows.sum() if red == "sum" else rows.reshape(y.shape)
    loss.sum().backward()
    gb = None if bt is None else bt.grad.numpy()
    return loss.detach().numpy(), ht.grad.numpy(), Wt.grad.numpy(), gb


@pytest.mark.parametrize("lead", [(37,), (5, 7), ()])
@pytest.mark.parametrize("n_classes,hidden", [(50, 8), (300, 16)])
@pytest.mark.parametrize("chunk", [None, 1, 4, 10, 37, 1000])
@pytest.mark.parametrize("opt", range(4))
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_linear_cross_entropy_matches_materialised(lead, n_classes, hidden, chunk,
                                                   opt, red):  # fmt: skip
    rng = np.random.default_rng(opt + 7 * len(lead))
    h = rng.standard_normal(lead + (hidden,))
    W = rng.standard_normal((n_classes, hidden)) * 0.5
    y = rng.integers(0, n_classes, lead)
    if y.size > 12:
        y.reshape(-1)[4:12] = -100  # with chunk=4: a chunk of ignored rows only
    b = rng.standard_normal(n_classes) if opt % 2 else None
    w = rng.random(n_classes) if opt >= 2 else None
    sw = rng.random(lead) if opt == 3 else None
    eps, z, cap = 0.1 * (opt == 2), 1e-3 * (opt >= 1), (4.0 if opt == 3 else None)
    kw = dict(linear_bias=b, weight=w, sample_weight=sw, label_smoothing=eps,
              reduction=red, lse_square_scale=z, softcap=cap,
              chunk_size=chunk)  # fmt: skip
    loss, (gh, gW, gb) = nx.linear_cross_entropy(h, W, y, return_grad=True, **kw)
    r_loss, r_h, r_W, r_b = _lin_ref(h, W, b, y, w, sw, eps, red, z, cap)
    np.testing.assert_allclose(loss, r_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gh, r_h, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gW, r_W, rtol=1e-9, atol=1e-12)
    assert gh.shape == h.shape and gW.shape == W.shape
    if b is None:
        assert gb is None
    else:
        np.testing.assert_allclose(gb, r_b, rtol=1e-9, atol=1e-12)
    l32 = nx.linear_cross_entropy(h.astype(np.float32), W.astype(np.float32), y, **kw)
    np.testing.assert_allclose(l32, r_loss, rtol=1e-4, atol=1e-5)


def test_linear_z_loss_and_all_ignored_mean():
    rng = np.random.default_rng(3)
    h, W = rng.standard_normal((9, 4)), rng.standard_normal((6, 4))
    y = rng.integers(0, 6, 9)
    loss, zl = nx.linear_cross_entropy(h, W, y, lse_square_scale=0.01,
                                       return_z_loss=True, chunk_size=2)  # fmt: skip
    ref_loss, ref_z = nx.cross_entropy(h @ W.T, y, lse_square_scale=0.01,
                                       return_z_loss=True)  # fmt: skip
    np.testing.assert_allclose([loss, zl], [ref_loss, ref_z], rtol=1e-12)
    loss, (gh, gW, gb) = nx.linear_cross_entropy(
        h, W, np.full(9, -100), return_grad=True, chunk_size=4
    )
    assert np.isnan(loss) and not gh.any() and not gW.any() and gb is None


def test_linear_errors_name_arguments():
    h, W, y = np.zeros((3, 4)), np.zeros((5, 4)), np.array([0, 1, 2])
    with pytest.raises(nx.InvalidValueError, match="linear_weight"):
        nx.linear_cross_entropy(h, np.zeros((5, 3)), y)
    with pytest.raises(nx.InvalidValueError, match="linear_bias"):
        nx.linear_cross_entropy(h, W, y, linear_bias=np.zeros(4))
    with pytest.raises(nx.InvalidValueError, match="target"):
        nx.linear_cross_entropy(h, W, np.array([0, 1]))
    with pytest.raises(nx.InvalidTypeError, match="target"):
        nx.linear_cross_entropy(h, W, np.zeros(3))
    with pytest.raises(nx.LabelIndexError):
        nx.linear_cross_entropy(h, W, np.array([0, 5, 1]))
    with pytest.raises(nx.InvalidValueError, match="chunk_size"):
        nx.linear_cross_entropy(h, W, y, chunk_size=0)
    with pytest.raises(nx.InvalidValueError, match="weight"):
        nx.linear_cross_entropy(h, W, y, weight=np.ones(4))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("extras", [{}, {"lse_square_scale": 0.01, "softcap": 3.0}])
def test_torch_linear_cross_entropy_gradcheck(bias, extras):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=bias)
    y = torch.tensor([0, 3, -100, 10, 2, 2, 7])
    args = (h, W, b) if bias else (h, W)

    def f(h, W, b=None):
        return nxt.linear_cross_entropy(h, W, y, linear_bias=b, chunk_bytes=64,
                                        **extras)  # fmt: skip

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("red", ["mean", "sum"])
def test_torch_linear_matches_pytorch_and_module(red):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 6, 8, generator=g, requires_grad=True)
    W = torch.randn(40, 8, generator=g, requires_grad=True)
    b = torch.randn(40, generator=g, requires_grad=True)
    w = torch.rand(40, generator=g)
    y = torch.randint(0, 40, (2, 6), generator=g)
    y[0, 1] = -100
    kw = dict(weight=w, reduction=red, label_smoothing=0.05)
    loss = nxt.linear_cross_entropy(h, W, y, linear_bias=b, **kw)
    (loss * 3).backward()
    grads = [t.grad.clone() for t in (h, W, b)]
    for t in (h, W, b):
        t.grad = None
    ref = F.linear_cross_entropy(
        h.reshape(-1, 8), W, y.reshape(-1), linear_bias=b, **kw
    )
    (ref * 3).backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for a, t in zip(grads, (h, W, b), strict=True):
        torch.testing.assert_close(a, t.grad, rtol=1e-4, atol=1e-6)
    mod = nxt.LinearCrossEntropyLoss(**kw)
    torch.testing.assert_close(mod(h, W, y, b), loss)


def test_torch_cross_entropy_extras():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 30, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 30, (12,), generator=g)
    y[2] = -100
    w = torch.rand(30, dtype=torch.float64, generator=g)
    r_loss, _, r_grad = _ce_ref(x.detach().numpy(), y.numpy(), 0.01, 4.0,
                                w.numpy())  # fmt: skip
    loss = nxt.cross_entropy(x, y, weight=w, lse_square_scale=0.01, softcap=4.0)
    loss.backward()
    np.testing.assert_allclose(loss.item(), r_loss, rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), r_grad, rtol=1e-9, atol=1e-12)
    mod = nxt.CrossEntropyLoss(weight=w, lse_square_scale=0.01, softcap=4.0)
    np.testing.assert_allclose(mod(x, y).item(), r_loss, rtol=1e-10)
    assert torch.autograd.gradcheck(
        lambda x: nxt.cross_entropy(x, y, weight=w, lse_square_scale=0.01,
                                    softcap=4.0), (x,))  # fmt: skip


def test_torch_linear_gradients_adopted_and_second_backward(monkeypatch):
    # The first backward hands its weight gradient to AccumulateGrad with no
    # other reference, so .grad is that buffer (no weight-sized copy); a
    # second backward (retain_graph=True) computes the gradients again.
    from numxent import _torch_linear

    made = []
    real = _torch_linear._linear_ce

    def spy(*args):
        res = real(*args)
        if args[12]:  # return_grad
            made.append(res[1][1].ctypes.data)
        return res

    monkeypatch.setattr(_torch_linear, "_linear_ce", spy)
    g = torch.Generator().manual_seed(3)
    h = torch.randn(9, 6, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(20, 6, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 20, (9,), generator=g)
    loss = nxt.linear_cross_entropy(h, W, y, chunk_bytes=64)
    loss.backward(retain_graph=True)
    assert W.grad.data_ptr() == made[0]
    first = (h.grad.clone(), W.grad.clone())
    loss.backward()  # accumulates the recomputed gradients
    assert len(made) == 2
    ref_h, ref_W = torch.autograd.grad(F.cross_entropy(h @ W.T, y), (h, W))
    torch.testing.assert_close(first[0], ref_h)
    torch.testing.assert_close(first[1], ref_W)
    torch.testing.assert_close(h.grad, 2 * ref_h)
    torch.testing.assert_close(W.grad, 2 * ref_W)
