"""The PyTorch bridge in real models: ``nn.Module``s whose weights are
``nn.Parameter``s, buffers, tied weights, optimizers.

Every test checks that the bridge served the call (its autograd node), so a
hand-off to PyTorch cannot pass for parity, and compares the result with
PyTorch's own loss on an identical model.
"""

from __future__ import annotations

import copy

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
    loss = nt.cross_entropy(x, y)
    assert _Logged.calls > 0
    _close(
        loss.as_subclass(torch.Tensor), F.cross_entropy(x.as_subclass(torch.Tensor), y)
    )
