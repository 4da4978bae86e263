"""numxent.torch under torch.compile and torch.export.

Compiled graphs call the bridge's ``torch.library`` custom ops
(``numxent::cross_entropy``, ``numxent::binary_cross_entropy_with_logits``).
Each test checks that the op is really in the graph (or, for the calls
handed to PyTorch, that it is not) and compares results with the eager
bridge (same kernel: same bits) and with PyTorch's own loss.

Most tests compile with the ``aot_eager`` backend (AOTAutograd with the
registered autograd formula, no code generation: quick); one training loop
uses the default inductor backend with ``fullgraph=True``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nt = pytest.importorskip("numxent.torch")

CE_OP = "numxent.cross_entropy"
BCE_OP = "numxent.binary_cross_entropy_with_logits"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _graphs(fn, *args):
    """Dynamo's FX graphs of fn(*args) (as code) and its graph-break count."""
    explained = torch._dynamo.explain(fn)(*args)
    return [g.code for g in explained.graphs], explained.graph_break_count


def _loss_and_grad(fn, x, *args, upstream=None):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, *args)
    loss.backward(torch.ones_like(loss) if upstream is None else upstream)
    return loss.detach(), x.grad


def _ce_case(shape, soft, gen):
    x = torch.randn(shape, generator=gen) * 3
    lead = shape[:1] + shape[2:]
    if soft:
        return x, torch.rand(shape, generator=gen).softmax(1)
    t = torch.randint(0, shape[1], lead, generator=gen)
    t[torch.rand(lead, generator=gen) < 0.2] = -100
    return x, t


# (shape, soft labels, reduction, class weights): each value of each on,
# each reduction with both kinds of target. The options are the op's
# arguments; their numbers are the eager bridge's (test_torch_bridge.py).
CE_COMPILED = {
    "2d-hard-mean-weight": ((6, 5), False, "mean", True),
    "3d-hard-none": ((3, 5, 4), False, "none", False),
    "2d-hard-sum": ((6, 5), False, "sum", False),
    "2d-soft-none-weight": ((6, 5), True, "none", True),
    "3d-soft-mean": ((3, 5, 4), True, "mean", False),
    "3d-soft-sum-weight": ((3, 5, 4), True, "sum", True),
}


@pytest.mark.parametrize("case", list(CE_COMPILED))
def test_compiled_cross_entropy_is_eager_bridge(case):
    shape, soft, reduction, use_weight = CE_COMPILED[case]
    gen = torch.Generator().manual_seed(1)
    x, t = _ce_case(shape, soft, gen)
    w = torch.rand(shape[1], generator=gen) + 0.5 if use_weight else None

    def loss(x, t):
        return nt.cross_entropy(
            x, t, weight=w, reduction=reduction, label_smoothing=0.1
        )

    up = None
    if reduction == "none":
        up = torch.randn(shape[:1] + shape[2:], generator=gen)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    got_loss, got_grad = _loss_and_grad(compiled, x, t, upstream=up)
    want_loss, want_grad = _loss_and_grad(loss, x, t, upstream=up)
    torch.testing.assert_close(got_loss, want_loss, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)

    def torch_loss(x, t):
        return F.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=0.1)

    ref_loss, ref_grad = _loss_and_grad(torch_loss, x, t, upstream=up)
    torch.testing.assert_close(got_loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-5, atol=1e-6)

    codes, breaks = _graphs(loss, x.requires_grad_(True), t)
    assert breaks == 0
    assert any(CE_OP in c for c in codes)


@pytest.mark.parametrize(
    ("reduction", "weighted"),
    [("mean", True), ("sum", False), ("none", True)],
    ids=["mean-weights", "sum", "none-weights"],
)
def test_compiled_bce_is_eager_bridge(reduction, weighted):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, generator=gen) * 4
    t = torch.rand(5, 3, generator=gen)
    w = torch.rand(5, 1, generator=gen) if weighted else None
    pw = torch.rand(3, generator=gen) * 2 if weighted else None
    module = nt.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction=reduction)
    reference = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction=reduction)
    up = torch.randn(5, 3, generator=gen) if reduction == "none" else None
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    got = _loss_and_grad(compiled, x, t, upstream=up)
    want = _loss_and_grad(module, x, t, upstream=up)
    ref = _loss_and_grad(reference, x, t, upstream=up)
    for g, e, r in zip(got, want, ref, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    codes, breaks = _graphs(module, x.requires_grad_(True), t)
    assert breaks == 0
    assert any(BCE_OP in c for c in codes)


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )


def test_inductor_fullgraph_training_matches_eager_and_pytorch():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 8, generator=gen)
    y = torch.randint(0, 4, (12,), generator=gen)
    runs = {}
    for name, loss_cls, compile_it in [
        ("compiled", nt.CrossEntropyLoss, True),
        ("eager", nt.CrossEntropyLoss, False),
        ("pytorch", torch.nn.CrossEntropyLoss, False),
    ]:
        model, loss_fn = _mlp(0), loss_cls(label_smoothing=0.05)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)

        def forward(x, y, model=model, loss_fn=loss_fn):
            return loss_fn(model(x), y)

        fwd = torch.compile(forward, fullgraph=True) if compile_it else forward
        losses = []
        for _ in range(4):
            opt.zero_grad()
            loss = fwd(x, y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs[name] = (losses, [p.detach().clone() for p in model.parameters()])
    for other in ("eager", "pytorch"):
        assert runs["compiled"][0] == pytest.approx(runs[other][0], rel=1e-6)
        for a, b in zip(runs["compiled"][1], runs[other][1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_inference_without_grad():
    x, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    compiled = torch.compile(nt.cross_entropy, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        got = compiled(x, y)
    torch.testing.assert_close(got, F.cross_entropy(x, y), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# what goes to PyTorch, compiled
# --------------------------------------------------------------------------
def test_compiled_unserved_call_traces_pytorch():
    x = torch.randn(4, 3, dtype=torch.float16)
    y = torch.rand(4, 3).softmax(1).half()  # 16-bit probability targets
    codes, breaks = _graphs(nt.cross_entropy, x, y)
    assert breaks == 0 and not any(CE_OP in c for c in codes)
    compiled = torch.compile(nt.cross_entropy, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, y), F.cross_entropy(x, y))


def test_compiled_rejected_values_get_pytorch_results():
    """Checks that depend on values run inside the op: PyTorch's answer."""
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 2, 1, 0])
    w = torch.tensor([1.0, -2.0, 0.5])  # numxent rejects negative weights

    def loss(x, y):
        return nt.cross_entropy(x, y, weight=w, reduction="sum")

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    # (the op's run-time hand-off says why; Dynamo's trace says nothing)
    with pytest.warns(nt.FallbackWarning, match="weight must be non"):
        got = _loss_and_grad(compiled, x, y)
    want = _loss_and_grad(
        lambda x, y: F.cross_entropy(x, y, weight=w, reduction="sum"), x, y
    )
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e)
    bad = torch.tensor([0, 3, 1, 0])  # out of range: PyTorch's error
    with (
        pytest.warns(nt.FallbackWarning, match="LabelIndexError"),
        pytest.raises(IndexError),
    ):
        torch.compile(nt.cross_entropy, backend="aot_eager")(x, bad)


# --------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------
class _Net(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.body = _mlp(0)
        self.loss = loss

    def forward(self, x, y):
        return self.loss(self.body(x), y)


@pytest.mark.parametrize("kind", ["ce", "bce"])
def test_export_module_returning_the_loss(kind):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 8, generator=gen)
    if kind == "ce":
        net, op = _Net(nt.CrossEntropyLoss()), CE_OP
        y = torch.randint(0, 4, (6,), generator=gen)
        ref = F.cross_entropy
    else:
        net, op = _Net(nt.BCEWithLogitsLoss()), BCE_OP
        y = torch.rand(6, 4, generator=gen)
        ref = F.binary_cross_entropy_with_logits
    ep = torch.export.export(net, (x, y))
    assert op in ep.graph_module.code
    got = ep.module()(x, y)
    torch.testing.assert_close(got, net(x, y), rtol=0, atol=0)
    torch.testing.assert_close(got, ref(net.body(x), y), rtol=1e-6, atol=1e-7)
