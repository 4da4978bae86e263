"""The PyTorch bridge in real models: ``nn.Module``s whose weights are
``nn.Parameter``s, buffers, tied weights, optimizers.

Every test checks that the bridge served the call (its autograd node), so a
hand-off to PyTorch cannot pass for parity, and compares the result with
PyTorch's own loss on an identical model.
"""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
nt = pytest.importorskip("numxent.torch")

LINEAR_NODE = "_LinearCEFunctionBackward"
CE_NODE = "_CrossEntropyFunctionBackward"


def _node(loss) -> str:
    return type(loss.grad_fn).__name__


def _close(a, b, dtype=torch.float64):
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_head_parameters_served(bias, dtype):
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(16, 50, bias=bias, dtype=dtype)
    ref = copy.deepcopy(head)
    h = torch.randn(24, 16, dtype=dtype, generator=gen)
    y = torch.randint(0, 50, (24,), generator=gen)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()

    loss = nt.linear_cross_entropy(h1, head.weight, y, linear_bias=head.bias)
    assert _node(loss) == LINEAR_NODE
    loss.backward()
    expect = F.cross_entropy(ref(h2), y)
    expect.backward()
    _close(loss, expect, dtype)
    _close(h1.grad, h2.grad, dtype)
    _close(head.weight.grad, ref.weight.grad, dtype)
    if bias:
        _close(head.bias.grad, ref.bias.grad, dtype)


def test_linear_loss_module_with_parameters_served():
    head = nn.Linear(8, 30, dtype=torch.float64)
    loss_fn = nt.LinearCrossEntropyLoss(label_smoothing=0.1)
    h = torch.randn(10, 8, dtype=torch.float64)
    y = torch.randint(0, 30, (10,))
    loss = loss_fn(h, head.weight, y, head.bias)
    assert _node(loss) == LINEAR_NODE
    _close(loss, F.cross_entropy(head(h), y, label_smoothing=0.1))


class _TiedLM(nn.Module):
    """An embedding, one hidden layer, and an output layer tied to the
    embedding: the same Parameter takes gradients from both uses."""

    def __init__(self, vocab: int, width: int, numxent_loss: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab, width, dtype=torch.float64)
        self.hidden = nn.Linear(width, width, dtype=torch.float64)
        self.numxent_loss = numxent_loss

    def forward(self, tokens, labels):
        h = torch.tanh(self.hidden(self.embed(tokens)))
        if self.numxent_loss:
            return nt.linear_cross_entropy(h, self.embed.weight, labels)
        return F.cross_entropy(h @ self.embed.weight.T, labels)


def test_tied_head_gradients_add_up():
    torch.manual_seed(1)
    ours = _TiedLM(40, 12, numxent_loss=True)
    ref = copy.deepcopy(ours)
    ref.numxent_loss = False
    tokens = torch.randint(0, 40, (32,))
    labels = torch.randint(0, 40, (32,))
    loss = ours(tokens, labels)
    assert _node(loss) == LINEAR_NODE
    loss.backward()
    expect = ref(tokens, labels)
    expect.backward()
    _close(loss, expect)
    # the embedding's gradient holds both the lookup's and the head's parts
    g_head_only = torch.zeros_like(ref.embed.weight.grad)
    assert not torch.equal(ref.embed.weight.grad, g_head_only)
    _close(ours.embed.weight.grad, ref.embed.weight.grad)
    _close(ours.hidden.weight.grad, ref.hidden.weight.grad)


class _Classifier(nn.Module):
    """An MLP whose loss holds its class weights as a registered buffer."""

    def __init__(self, loss_cls, n_classes: int = 7):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16, dtype=torch.float64),
            nn.ReLU(),
            nn.Linear(16, n_classes, dtype=torch.float64),
        )
        w = torch.linspace(0.5, 2.0, n_classes, dtype=torch.float64)
        self.loss = loss_cls(weight=w, label_smoothing=0.05)

    def forward(self, x, y):
        return self.loss(self.body(x), y)


def test_class_weight_buffer_and_optimizer_steps():
    torch.manual_seed(2)
    ours = _Classifier(nt.CrossEntropyLoss)
    ref = _Classifier(nn.CrossEntropyLoss)
    ref.load_state_dict(ours.state_dict())
    assert "loss.weight" in dict(ours.named_buffers())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(5):
        x = torch.randn(20, 6, dtype=torch.float64)
        y = torch.randint(0, 7, (20,))
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            loss = model(x, y)
            loss.backward()
            opt.step()
            if model is ours:
                assert _node(loss) == CE_NODE, step
                got = loss.detach()
            else:
                _close(got, loss.detach())
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)


def test_parameter_logits_served():
    x = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    y = torch.tensor([0, 3, 1, 2, 3])
    loss = nt.cross_entropy(x, y)
    assert _node(loss) == CE_NODE
    loss.backward()
    x2 = x.detach().clone().requires_grad_()
    F.cross_entropy(x2, y).backward()
    _close(x.grad, x2.grad)


class _Logged(torch.Tensor):
    """A subclass with a ``__torch_function__`` of its own: PyTorch's ops
    must run so that it sees them."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def test_subclass_with_torch_function_goes_to_pytorch():
    x = torch.randn(4, 3, dtype=torch.float64).as_subclass(_Logged)
    y = torch.tensor([0, 1, 2, 0])
    _Logged.calls = 0
    with pytest.warns(nt.FallbackWarning, match="_Logged"):
        loss = nt.cross_entropy(x, y)
    assert _Logged.calls > 0
    _close(
        loss.as_subclass(torch.Tensor), F.cross_entropy(x.as_subclass(torch.Tensor), y)
    )


# --------------------------------------------------------------------------
# reduction="none" of linear_cross_entropy, served
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_linear_none_served_with_upstream_factors(bias):
    torch.manual_seed(3)
    head = nn.Linear(12, 40, bias=bias, dtype=torch.float64)
    ref = copy.deepcopy(head)
    h = torch.randn(3, 9, 12, dtype=torch.float64)
    y = torch.randint(0, 40, (3, 9))
    y[0, :4] = -100
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    loss = nt.linear_cross_entropy(
        h1, head.weight, y, linear_bias=head.bias, reduction="none", chunk_bytes=3000
    )
    assert _node(loss) == LINEAR_NODE and loss.shape == y.shape
    upstream = torch.rand(y.shape, dtype=torch.float64)
    loss.backward(upstream)
    expect = F.cross_entropy(ref(h2).movedim(-1, 1), y, reduction="none")
    expect.backward(upstream)
    _close(loss, expect)
    _close(h1.grad, h2.grad)
    _close(head.weight.grad, ref.weight.grad)
    if bias:
        _close(head.bias.grad, ref.bias.grad)


# --------------------------------------------------------------------------
# FallbackWarning: every hand-off says why, served calls say nothing
# --------------------------------------------------------------------------
def _fallbacks(fn):
    import warnings

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in rec if issubclass(w.category, nt.FallbackWarning)]


def test_served_calls_warn_nothing():
    x = torch.randn(6, 5, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    head = nn.Linear(4, 5)
    assert _fallbacks(lambda: nt.cross_entropy(x, y).backward()) == []
    t = torch.rand(6, 5)
    assert _fallbacks(lambda: nt.binary_cross_entropy_with_logits(x, t)) == []
    h = torch.randn(6, 4)
    assert _fallbacks(lambda: nt.linear_cross_entropy(h, head.weight, y)) == []


def test_each_hand_off_warns_with_its_reason():
    assert issubclass(nt.FallbackWarning, UserWarning)
    x = torch.randn(6, 5, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    head = nn.Linear(4, 5)
    h = torch.randn(6, 4)
    cases = {
        "is a _Logged": lambda: nt.cross_entropy(x.as_subclass(_Logged), y),
        "target requires grad": lambda: nt.cross_entropy(
            x, torch.rand(6, 5, requires_grad=True)
        ),
        "double backward": lambda: torch.autograd.grad(
            nt.cross_entropy(x, y), x, create_graph=True
        ),
        "reduction='batchmean'": lambda: nt.binary_cross_entropy_with_logits(
            x, torch.rand(6, 5), reduction="batchmean"
        ),
        "input torch.float32 and linear_weight torch.float64": lambda: (
            nt.linear_cross_entropy(h, head.weight.double(), y)
        ),
    }
    # PyTorch's own error where it rejects the call too
    raises = {"reduction='batchmean'": ValueError}
    raises["input torch.float32 and linear_weight torch.float64"] = RuntimeError
    for why, call in cases.items():
        if why in raises:
            msgs = _fallbacks(lambda c=call, e=raises[why]: pytest.raises(e, c))
        else:
            msgs = _fallbacks(call)
        assert len(msgs) == 1 and why in msgs[0], (why, msgs)
    # a label numxent rejects: PyTorch then raises its own error
    bad = torch.tensor([0, 1, 2, 3, 4, 9])
    msgs = _fallbacks(lambda: pytest.raises(IndexError, nt.cross_entropy, x, bad))
    assert len(msgs) == 1 and "LabelIndexError" in msgs[0], msgs


def test_fallback_warning_as_error_stops_a_hand_off():
    import warnings

    x = torch.randn(6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nt.FallbackWarning)
        nt.cross_entropy(x, torch.randint(0, 5, (6,)))  # served: no error
        with pytest.raises(nt.FallbackWarning, match="_Logged"):
            nt.cross_entropy(x.as_subclass(_Logged), torch.randint(0, 5, (6,)))


def test_default_filter_shows_each_reason_once():
    import subprocess
    import sys

    code = (
        "import torch, numxent.torch as nt\n"
        "x = torch.randn(4, 3, dtype=torch.float64)\n"
        "for _ in range(3):\n"
        "    nt.cross_entropy(x, torch.rand(4, 3, requires_grad=True))\n"
        "    nt.cross_entropy(x, torch.tensor([0, 1, 2, 2]))\n"
    )
    # (the kernels uncompiled: this is about the warning filter, and a cold
    # cache would make the child compile one for seconds)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    err = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env=env,
    ).stderr  # fmt: skip
    assert err.count("FallbackWarning") == 1, err


# --------------------------------------------------------------------------
# 16-bit binary cross-entropy, served in float32 arithmetic
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bce_16bit_served_close_to_float64(dtype):
    gen = torch.Generator().manual_seed(4)
    x64 = torch.randn(40, 7, dtype=torch.float64, generator=gen) * 4
    t64 = (torch.rand(40, 7, dtype=torch.float64, generator=gen) > 0.5).double()
    x = x64.to(dtype).requires_grad_()
    t = t64.to(dtype)
    loss = nt.binary_cross_entropy_with_logits(x, t, reduction="sum")
    assert type(loss.grad_fn).__name__ == "_BCEWithLogitsFunctionBackward"
    loss.backward()
    xr = x.detach().double().requires_grad_()
    ref = F.binary_cross_entropy_with_logits(xr, t.double(), reduction="sum")
    ref.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    # float32 arithmetic rounded once to the 16-bit format: within half an ulp
    # of the float64 gradient (bfloat16: 2**-8 relative), up to float32's error
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(
        x.grad.double(), xr.grad.to(dtype).double(), rtol=eps, atol=1e-7
    )
    torch.testing.assert_close(loss.double(), ref, rtol=2 * eps, atol=0)


# --------------------------------------------------------------------------
# a compiled model with Parameters and the linear head
# --------------------------------------------------------------------------
def test_compiled_model_with_linear_head_matches_eager():
    torch.manual_seed(5)
    model = _TiedLM(30, 8, numxent_loss=True)
    ref = copy.deepcopy(model)
    ref.numxent_loss = False
    compiled = torch.compile(model, backend="eager")
    tokens = torch.randint(0, 30, (16,))
    labels = torch.randint(0, 30, (16,))
    loss = compiled(tokens, labels)
    loss.backward()
    expect = ref(tokens, labels)
    expect.backward()
    _close(loss, expect)
    _close(model.embed.weight.grad, ref.embed.weight.grad)
