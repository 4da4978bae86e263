"""The PyTorch entry of the fused linear cross-entropy
(``numxent.torch.linear_cross_entropy`` and its module) and the bridge's
z-loss / soft-capping: finite differences (gradcheck), PyTorch's own
``linear_cross_entropy``, and the float64 reference in naive.py. Every
served call is checked by its autograd node."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nxt = pytest.importorskip("numxent.torch")

from naive import cross_entropy_ref  # noqa: E402

LINEAR_NODE = "_LinearCEFunctionBackward"
CE_NODE = "_CrossEntropyFunctionBackward"


def _node(loss) -> str:
    return type(loss.grad_fn).__name__


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

    assert _node(f(*args)) == LINEAR_NODE
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
    assert _node(loss) == LINEAR_NODE
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
    assert _node(loss) == LINEAR_NODE
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


def test_torch_cross_entropy_extras():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 30, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 30, (12,), generator=g)
    y[2] = -100
    w = torch.rand(30, dtype=torch.float64, generator=g)
    kw = dict(weight=w, lse_square_scale=0.01, softcap=4.0)
    r_loss, r_grad = cross_entropy_ref(
        x.detach().numpy(), y.numpy(), weight=w.numpy(), lse_square_scale=0.01,
        softcap=4.0,
    )  # fmt: skip
    loss = nxt.cross_entropy(x, y, **kw)
    assert _node(loss) == CE_NODE
    loss.backward()
    np.testing.assert_allclose(loss.item(), r_loss, rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), r_grad, rtol=1e-9, atol=1e-12)
    mod = nxt.CrossEntropyLoss(**kw)
    np.testing.assert_allclose(mod(x, y).item(), r_loss, rtol=1e-10)
    assert torch.autograd.gradcheck(lambda x: nxt.cross_entropy(x, y, **kw), (x,))
