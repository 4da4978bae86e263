"""bfloat16 and float16 logits through numxent.torch.

Served with class-index targets: the kernels read the 16-bit logits in place
and compute in float32, so loss and gradient must equal PyTorch's float32
computation on the upcast logits to within the 16-bit format's rounding
(one unit in the last place: PyTorch's float32 values and numxent's differ
by a few float32 ulps, which can move a rounding tie). The gradient comes
back in the logits' dtype. Under CPU autocast the loss is float32, as
PyTorch's is.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")
F = torch.nn.functional
nt = pytest.importorskip("numxent.torch")

LOWP = [torch.bfloat16, torch.float16]
ULP = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}  # relative, at 1.0
TINY = {torch.bfloat16: 1e-30, torch.float16: 2.0**-24}  # smallest step near 0
CE_NODE = "_CrossEntropyFunctionBackward"


def _within_rounding(got, want, dtype, what):
    """|got - want| <= one ulp of want in ``dtype`` (plus the format's
    smallest step, for values that round to subnormals or zero)."""
    assert got.dtype == dtype, what
    err = (got.double() - want.double()).abs()
    bound = ULP[dtype] * want.double().abs() + TINY[dtype]
    worst = (err - bound).max().item()
    assert worst <= 0, f"{what}: off by {err.max().item():.3g} > one ulp"


@pytest.mark.parametrize("dtype", LOWP, ids=["bf16", "f16"])
@pytest.mark.parametrize("shape", [(37, 5), (9, 300), (3, 6, 4)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", ["plain", "weight", "smooth"])
def test_16bit_logits_match_pytorch_float32(dtype, shape, reduction, options):
    gen = torch.Generator().manual_seed(7)
    x32 = torch.randn(shape, generator=gen) * 4
    lead = shape[:1] + shape[2:]
    y = torch.randint(0, shape[1], lead, generator=gen)
    y.view(-1)[::5] = -100
    kw = {}
    if options == "weight":
        kw["weight"] = (torch.rand(shape[1], generator=gen) + 0.5).to(dtype)
    if options == "smooth":
        kw["label_smoothing"] = 0.1
    x = x32.to(dtype).requires_grad_(True)
    loss = nt.cross_entropy(x, y, reduction=reduction, **kw)
    assert type(loss.grad_fn).__name__ == CE_NODE
    up = torch.rand(lead, generator=gen).to(dtype) if reduction == "none" else None
    loss.backward(torch.ones_like(loss) if up is None else up)

    xf = x.detach().float().requires_grad_(True)
    kwf = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kw.items()}
    ref = F.cross_entropy(xf, y, reduction=reduction, **kwf)
    ref.backward(torch.ones_like(ref) if up is None else up.float())
    _within_rounding(loss.detach(), ref.detach(), dtype, "loss")
    _within_rounding(x.grad, xf.grad, dtype, "grad")


@pytest.mark.parametrize("dtype", LOWP, ids=["bf16", "f16"])
def test_16bit_soft_targets_and_bce_go_to_pytorch(dtype):
    x = torch.randn(6, 4).to(dtype).requires_grad_(True)
    t = torch.rand(6, 4).softmax(1).to(dtype)
    loss = nt.cross_entropy(x, t)
    assert type(loss.grad_fn).__name__ != CE_NODE
    torch.testing.assert_close(loss, F.cross_entropy(x, t))
    b = nt.binary_cross_entropy_with_logits(x, t)
    torch.testing.assert_close(b, F.binary_cross_entropy_with_logits(x, t))


def test_autocast_training_loop_runs_on_the_bridge():
    """A bf16-autocast MLP trains with numxent's loss as with PyTorch's: the
    logits' gradients are the same float32 values rounded to bfloat16."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 16, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    runs = {}
    for name, loss_fn in [("numxent", nt.cross_entropy), ("pytorch", F.cross_entropy)]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
                assert logits.dtype == torch.bfloat16
                loss = loss_fn(logits, y)
            assert loss.dtype == torch.float32
            if name == "numxent":
                (node,) = loss.grad_fn.next_functions
                assert type(node[0]).__name__ == CE_NODE
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs[name] = losses, [p.detach().clone() for p in model.parameters()]
    (nl, np_), (tl, tp) = runs["numxent"], runs["pytorch"]
    assert nl == pytest.approx(tl, rel=2.0**-7)  # the loss rounded to bfloat16
    for a, b in zip(np_, tp, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_compiled_bf16_is_eager_bf16():
    torch._dynamo.reset()
    x = (torch.randn(8, 50) * 2).to(torch.bfloat16)
    y = torch.randint(0, 50, (8,))

    def run(fn):
        xx = x.clone().requires_grad_(True)
        loss = fn(xx, y)
        loss.backward()
        return loss.detach(), xx.grad

    compiled = torch.compile(nt.cross_entropy, backend="aot_eager", fullgraph=True)
    for got, want in zip(run(compiled), run(nt.cross_entropy), strict=True):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch._dynamo.reset()
