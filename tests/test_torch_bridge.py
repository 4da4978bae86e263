"""numxent.torch against torch.nn.functional / torch.nn on the same tensors.

Every test computes the same thing with PyTorch's own loss and with the
bridge, and compares loss and ``input.grad`` (upstream gradient of ones for
reduced losses, random for reduction="none"). Tests of served calls also
check that the bridge really served them (its autograd node), so a silent
fall-back to PyTorch cannot pass for parity.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nt = pytest.importorskip("numxent.torch")
FallbackWarning = nt.FallbackWarning
serve = pytest.importorskip("numxent._torch_serve")

REDUCTIONS = ["mean", "sum", "none"]
DTYPES = [torch.float32, torch.float64]
# (loss atol/rtol, grad atol/rtol) per dtype
TOL = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-12, 1e-14)}
SHAPES = {  # input shape, class dim size = 5
    "unbatched": (5,),
    "2d": (7, 5),
    "3d": (3, 5, 4),
    "4d": (2, 5, 3, 2),
}
F_BCE = F.binary_cross_entropy_with_logits
NT_BCE = nt.binary_cross_entropy_with_logits
CE_NODE = "_CrossEntropyFunctionBackward"
BCE_NODE = "_BCEWithLogitsFunctionBackward"


def _close(a, b, dtype, what):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(
        a, b, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )


def _lead(shape):
    return shape[:1] + shape[2:] if len(shape) >= 2 else ()


def _run(fn, x, *args, upstream=None, **kw):
    """(loss, input.grad, grad_fn name) of fn(x, ...) with backward(upstream)."""
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kw)
    g = torch.ones_like(loss) if upstream is None else upstream
    loss.backward(g)
    return loss.detach(), x.grad, type(loss.grad_fn).__name__


def _ce_inputs(shape, dtype, soft, ignore_index, gen):
    x = torch.randn(shape, dtype=dtype, generator=gen) * 3
    cdim = 1 if len(shape) >= 2 else 0
    if soft:
        t = torch.rand(shape, dtype=dtype, generator=gen).softmax(cdim)
        return x, t
    t = torch.randint(0, shape[cdim], _lead(shape), generator=gen)
    if t.dim() > 0:  # some rows carry the ignore label
        mask = torch.rand(t.shape, generator=gen) < 0.25
        t[mask] = ignore_index
    return x, t


# --------------------------------------------------------------------------
# cross-entropy: the layouts the bridge moves (class dim 1, K-dim inputs) and
# the dtypes it serves, on a handful of option combinations. Every option
# combination is checked once, against the float64 reference, in
# test_naive_reference.py; here the concern is what the bridge adds.
# --------------------------------------------------------------------------
CE_COMBOS = {  # (soft, weight, reduction, label_smoothing, ignore_index)
    "hard-mean": (False, False, "mean", 0.0, -100),
    "hard-none-weight-smooth-ignore2": (False, True, "none", 0.2, 2),
    "hard-sum-weight-ignore2": (False, True, "sum", 0.0, 2),
    "soft-sum-weight-smooth": (True, True, "sum", 0.2, -100),
    "soft-none": (True, False, "none", 0.0, -100),
    "soft-mean-smooth": (True, False, "mean", 0.2, -100),
}


@pytest.mark.parametrize("combo", list(CE_COMBOS))
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_parity(dtype, shape, combo):
    """Served (the bridge's autograd node), PyTorch's loss and input.grad
    (a random upstream gradient for "none"), the module gives the
    functional's numbers and has torch's state_dict keys."""
    soft, use_weight, reduction, label_smoothing, ignore_index = CE_COMBOS[combo]
    shape = SHAPES[shape]
    gen = torch.Generator().manual_seed(100 * len(shape) + list(CE_COMBOS).index(combo))
    x, t = _ce_inputs(shape, dtype, soft, ignore_index, gen)
    w = torch.rand(5, dtype=dtype, generator=gen) + 0.1 if use_weight else None
    kw = dict(
        weight=w,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    up = None
    if reduction == "none":
        up = torch.rand(_lead(shape), dtype=dtype, generator=gen)
    ref_loss, ref_grad, _ = _run(F.cross_entropy, x, t, upstream=up, **kw)
    loss, grad, node = _run(nt.cross_entropy, x, t, upstream=up, **kw)
    assert node == CE_NODE
    assert loss.dtype == ref_loss.dtype and loss.shape == ref_loss.shape
    _close(loss, ref_loss, dtype, "loss")
    _close(grad, ref_grad, dtype, "input.grad")
    # the module gives the functional's numbers
    mod = nt.CrossEntropyLoss(**kw)
    ref_mod = torch.nn.CrossEntropyLoss(**kw)
    m_loss, m_grad, m_node = _run(mod, x, t, upstream=up)
    assert m_node == CE_NODE
    _close(m_loss, ref_loss, dtype, "module loss")
    _close(m_grad, ref_grad, dtype, "module grad")
    assert mod.state_dict().keys() == ref_mod.state_dict().keys()


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_soft_labels_with_nonnegative_ignore_index_refused_like_torch(shape):
    """PyTorch refuses probability targets with ignore_index >= 0; so must
    the bridge, with PyTorch's message."""
    shape = SHAPES[shape]
    gen = torch.Generator().manual_seed(11)
    x, t = _ce_inputs(shape, torch.float64, True, 2, gen)
    for reduction in REDUCTIONS:
        kw = dict(ignore_index=2, reduction=reduction)
        with pytest.raises(RuntimeError) as ref:
            F.cross_entropy(x, t, **kw)
        with (
            pytest.warns(FallbackWarning, match="ignore_index=2"),
            pytest.raises(RuntimeError, match=re.escape(str(ref.value))),
        ):
            nt.cross_entropy(x, t, **kw)


def test_uint8_labels_and_no_grad():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=gen)
    t = torch.randint(0, 4, (6,), generator=gen)
    ref = F.cross_entropy(x, t)
    u8 = nt.cross_entropy(x.clone().requires_grad_(True), t.to(torch.uint8))
    assert type(u8.grad_fn).__name__ == CE_NODE
    _close(u8.detach(), ref, torch.float32, "uint8")
    with torch.no_grad():  # loss only, no gradient buffer
        xr = x.clone().requires_grad_(True)
        out = nt.cross_entropy(xr, t)
    assert out.grad_fn is None and not out.requires_grad
    _close(out, ref, torch.float32, "no_grad")


def test_deprecated_size_average_reduce_translated_like_torch():
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(5, 3, generator=gen), torch.randint(0, 3, (5,), generator=gen)
    for sa, rd in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning):
            ref = F.cross_entropy(x, t, size_average=sa, reduce=rd)
        with pytest.warns(UserWarning):
            got = nt.cross_entropy(x, t, size_average=sa, reduce=rd)
        _close(got, ref, torch.float32, f"size_average={sa} reduce={rd}")


# --------------------------------------------------------------------------
# binary cross-entropy with logits
# --------------------------------------------------------------------------
BCE_SHAPES = {"1d": (6,), "2d": (4, 5), "3d": (2, 3, 5)}


BCE_COMBOS = {  # (weight, pos_weight, reduction)
    "mean": (None, False, "mean"),
    "none-last-pos": ("last", True, "none"),
    "sum-full-pos": ("full", True, "sum"),
    "none-full": ("full", False, "none"),
}


@pytest.mark.parametrize("combo", list(BCE_COMBOS))
@pytest.mark.parametrize("shape", list(BCE_SHAPES), ids=list(BCE_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_parity(dtype, shape, combo):
    weight, use_pos, reduction = BCE_COMBOS[combo]
    shape = BCE_SHAPES[shape]
    gen = torch.Generator().manual_seed(
        100 * len(shape) + list(BCE_COMBOS).index(combo)
    )
    x = torch.randn(shape, dtype=dtype, generator=gen) * 4
    t = torch.rand(shape, dtype=dtype, generator=gen)
    w = None
    if weight == "last":
        w = torch.rand(shape[-1:], dtype=dtype, generator=gen)
    elif weight == "full":
        w = torch.rand(shape, dtype=dtype, generator=gen)
    pw = torch.rand(shape[-1:], dtype=dtype, generator=gen) * 3 if use_pos else None
    kw = dict(weight=w, pos_weight=pw, reduction=reduction)
    up = torch.rand(shape, dtype=dtype, generator=gen) if reduction == "none" else None
    ref_loss, ref_grad, _ = _run(
        F.binary_cross_entropy_with_logits, x, t, upstream=up, **kw
    )
    loss, grad, node = _run(
        nt.binary_cross_entropy_with_logits, x, t, upstream=up, **kw
    )
    assert node == BCE_NODE
    _close(loss, ref_loss, dtype, "loss")
    _close(grad, ref_grad, dtype, "input.grad")
    mod, ref_mod = nt.BCEWithLogitsLoss(**kw), torch.nn.BCEWithLogitsLoss(**kw)
    m_loss, m_grad, m_node = _run(mod, x, t, upstream=up)
    assert m_node == BCE_NODE
    _close(m_loss, ref_loss, dtype, "module loss")
    _close(m_grad, ref_grad, dtype, "module grad")
    assert mod.state_dict().keys() == ref_mod.state_dict().keys()


# --------------------------------------------------------------------------
# gradcheck (float64 finite differences) and double backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    hard = torch.tensor([[0, 3], [1, -100], [2, 2]])
    soft = torch.rand(3, 4, 2, dtype=torch.float64, generator=gen).softmax(1)
    w = torch.rand(4, dtype=torch.float64, generator=gen) + 0.5
    bt = torch.rand(3, 4, 2, dtype=torch.float64, generator=gen)
    pw = torch.rand(2, dtype=torch.float64, generator=gen) + 0.5

    def ce(x, t):
        return nt.cross_entropy(
            x, t, weight=w, reduction=reduction, label_smoothing=0.1
        )

    def bce(x):
        return nt.binary_cross_entropy_with_logits(
            x, bt, weight=w[:2], pos_weight=pw, reduction=reduction
        )

    # served (a hand-off to PyTorch would pass gradcheck on its own)
    assert type(ce(x, hard).grad_fn).__name__ == CE_NODE
    assert type(ce(x, soft).grad_fn).__name__ == CE_NODE
    assert type(bce(x).grad_fn).__name__ == BCE_NODE
    assert torch.autograd.gradcheck(lambda x: ce(x, hard), (x,))
    assert torch.autograd.gradcheck(lambda x: ce(x, soft), (x,))
    assert torch.autograd.gradcheck(bce, (x,))


def test_double_backward_falls_back_to_torch():
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 2, 1, 1])
    bt = torch.rand(4, 3, dtype=torch.float64, generator=gen)
    for ours, ref, tt in [
        (nt.cross_entropy, F.cross_entropy, t),
        (nt.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, bt),
    ]:
        res = []
        for fn in (ours, ref):
            x = x0.clone().requires_grad_(True)
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always", FallbackWarning)
                (g,) = torch.autograd.grad(fn(x, tt), x, create_graph=True)
                (gg,) = torch.autograd.grad((g * g).sum(), x)
            said = [str(w.message) for w in rec if w.category is FallbackWarning]
            assert len(said) == (fn is ours), said
            assert all("double backward" in m for m in said), said
            res.append((g.detach(), gg))
        torch.testing.assert_close(res[0], res[1], rtol=1e-12, atol=1e-14)
        with pytest.warns(FallbackWarning, match="double backward"):
            assert torch.autograd.gradgradcheck(
                lambda x, f=ours, tt=tt: f(x, tt), (x0.clone().requires_grad_(True),)
            )


def test_retain_graph_second_backward():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, generator=gen, requires_grad=True)
    t = torch.randint(0, 4, (6,), generator=gen)
    loss = nt.cross_entropy(x, t, reduction="sum")
    assert type(loss.grad_fn).__name__ == CE_NODE
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    g1 = g1.clone()
    (g2,) = torch.autograd.grad(loss, x, torch.tensor(2.0))
    xr = x.detach().clone().requires_grad_(True)
    F.cross_entropy(xr, t, reduction="sum").backward()
    _close(g1, xr.grad, torch.float32, "first backward")
    _close(g2, 2 * xr.grad, torch.float32, "second backward")


# --------------------------------------------------------------------------
# layouts: non-contiguous and channels-last inputs, inputs left untouched
# --------------------------------------------------------------------------
def _layouts(gen):
    base = torch.randn(4, 6, 3, 5, generator=gen)
    yield "channels_last", base.contiguous(memory_format=torch.channels_last)
    yield "sliced", torch.randn(4, 12, 3, 5, generator=gen)[:, ::2]
    yield "transposed2d", torch.randn(6, 9, generator=gen).t()
    yield "expanded2d", torch.randn(1, 6, generator=gen).expand(5, 6)


def test_layouts_cross_entropy():
    gen = torch.Generator().manual_seed(6)
    for name, x in _layouts(gen):
        t = torch.randint(0, x.shape[1], _lead(tuple(x.shape)), generator=gen)
        soft = torch.rand(x.shape, generator=gen).softmax(1)
        for tt in (t, soft):
            before = x.clone()
            up = torch.rand(
                tt.shape if tt is t else _lead(tuple(x.shape)), generator=gen
            )
            for red in ("mean", "none"):
                u = up if red == "none" else None
                ref = _run(F.cross_entropy, x, tt, upstream=u, reduction=red)
                got = _run(nt.cross_entropy, x, tt, upstream=u, reduction=red)
                assert got[2] == CE_NODE, name
                _close(got[0], ref[0], torch.float32, f"{name} loss")
                _close(got[1], ref[1], torch.float32, f"{name} grad")
                # leaf requires_grad, no clone: the bridge must not write into it
                xl = x.detach().requires_grad_(True)
                nt.cross_entropy(xl, tt, reduction=red).backward(
                    torch.ones(()) if u is None else u
                )
                assert torch.equal(x, before), name


def test_layouts_bce():
    gen = torch.Generator().manual_seed(7)
    for name, x in _layouts(gen):
        t = torch.rand(x.shape, generator=gen)
        before = x.clone()
        ref = _run(F.binary_cross_entropy_with_logits, x, t)
        got = _run(nt.binary_cross_entropy_with_logits, x, t)
        assert got[2] == BCE_NODE
        _close(got[0], ref[0], torch.float32, f"{name} loss")
        _close(got[1], ref[1], torch.float32, f"{name} grad")
        assert torch.equal(x, before)


# --------------------------------------------------------------------------
# what the bridge hands to PyTorch
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_soft_targets_fall_back(dtype):
    """16-bit cross-entropy logits are served with class-index targets only
    (see test_torch_lowp.py); probability targets go to PyTorch. (16-bit BCE
    is served: test_torch_modules.py.)"""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(8, 5, generator=gen).to(dtype)
    t = torch.rand(8, 5, generator=gen).softmax(1).to(dtype)
    ref = _run(F.cross_entropy, x, t, label_smoothing=0.1)
    with pytest.warns(FallbackWarning, match="with probability targets"):
        got = _run(nt.cross_entropy, x, t, label_smoothing=0.1)
    assert got[2] != CE_NODE
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_other_devices_fall_back():
    # "meta" stands for any non-CPU device: no data to hand to NumPy.
    x = torch.empty(8, 5, 3, device="meta", requires_grad=True)
    t = torch.empty(8, 3, dtype=torch.int64, device="meta")
    for fn, tt in [
        (nt.cross_entropy, t),
        (nt.binary_cross_entropy_with_logits, torch.empty_like(x)),
    ]:
        with pytest.warns(FallbackWarning, match="input is on meta"):
            loss = fn(x, tt, reduction="none")
        assert loss.device.type == "meta"
        assert type(loss.grad_fn).__name__ not in (CE_NODE, BCE_NODE)


def test_target_requires_grad_falls_back():
    gen = torch.Generator().manual_seed(9)
    x0 = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    t0 = torch.rand(5, 4, dtype=torch.float64, generator=gen).softmax(1)
    for ours, ref in [
        (nt.cross_entropy, F.cross_entropy),
        (nt.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
    ]:
        res = []
        for fn in (ours, ref):
            x, t = x0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
            if fn is ours:
                with pytest.warns(FallbackWarning, match="target requires grad"):
                    loss = fn(x, t)
            else:
                loss = fn(x, t)
            loss.backward()
            res.append((loss.detach(), x.grad, t.grad))
        assert res[0][2] is not None
        torch.testing.assert_close(res[0], res[1], rtol=0, atol=0)


def test_weight_requires_grad_falls_back():
    x = torch.randn(5, 4, dtype=torch.float64)
    t = torch.randint(0, 4, (5,))
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError) as ref:  # PyTorch's own refusal
        F.cross_entropy(x, t, weight=w)
    with (
        pytest.warns(FallbackWarning, match="weight of another dtype"),
        pytest.raises(RuntimeError, match="not differentiable"),
    ):
        nt.cross_entropy(x, t, weight=w)
    assert "not differentiable" in str(ref.value)
    bt = torch.rand(5, 4, dtype=torch.float64)
    pw = torch.ones(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError) as ref:
        F.binary_cross_entropy_with_logits(x, bt, pos_weight=pw)
    with (
        pytest.warns(FallbackWarning, match="pos_weight of another dtype"),
        pytest.raises(RuntimeError) as got,
    ):
        nt.binary_cross_entropy_with_logits(x, bt, pos_weight=pw)
    assert str(got.value) == str(ref.value)


@pytest.mark.parametrize(
    "case",
    [
        "label_out_of_range",
        "bad_reduction",
        "shape_mismatch",
        "int32_target",
        "smoothing_out_of_range",
        "bce_shape_mismatch",
    ],
)
def test_errors_are_torchs(case):
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0, 1, 2, 1])
    calls = {
        "label_out_of_range": lambda m: m.cross_entropy(x, torch.tensor([0, 3, 1, 1])),
        "bad_reduction": lambda m: m.cross_entropy(x, t, reduction="avg"),
        "shape_mismatch": lambda m: m.cross_entropy(x, t[:3]),
        "int32_target": lambda m: m.cross_entropy(x, t.int()),
        "smoothing_out_of_range": lambda m: m.cross_entropy(x, t, label_smoothing=1.5),
        "bce_shape_mismatch": lambda m: m.binary_cross_entropy_with_logits(
            x, torch.rand(4, 2)
        ),
    }
    with pytest.raises(Exception) as ref:
        calls[case](F)
    with (
        pytest.warns(FallbackWarning, match="handed to PyTorch"),
        pytest.raises(type(ref.value)) as got,
    ):
        calls[case](nt)
    assert str(got.value) == str(ref.value)


def test_negative_weight_is_torchs_value():
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 1])
    w = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    ref = F.cross_entropy(x, t, weight=w, reduction="sum")
    with pytest.warns(FallbackWarning, match="weight must be non"):
        got = nt.cross_entropy(x, t, weight=w, reduction="sum")
    assert torch.equal(got, ref)


def test_numxent_values_where_torch_gives_nan():
    x = torch.randn(3, 4, requires_grad=True)
    with torch.no_grad():
        x[1] = float("nan")  # an ignored padding row holding garbage
    loss = nt.cross_entropy(x, torch.tensor([0, -100, 3]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1], torch.zeros(4))
    xr = x.detach()[[0, 2]].clone().requires_grad_(True)
    ref = F.cross_entropy(xr, torch.tensor([0, 3]))
    ref.backward()
    _close(loss.detach(), ref.detach(), torch.float32, "loss without padding")
    _close(x.grad[[0, 2]], xr.grad, torch.float32, "grad without padding")
    b = torch.tensor([float("inf"), -float("inf")], requires_grad=True)
    bl = nt.binary_cross_entropy_with_logits(b, torch.tensor([1.0, 0.0]))
    bl.backward()
    assert bl.item() == 0.0 and torch.equal(b.grad, torch.zeros(2))


# --------------------------------------------------------------------------
# training, threads, processes
# --------------------------------------------------------------------------
def _train(loss_fn, steps=20):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(steps, 64, 16, generator=gen)
    teacher = torch.randn(16, 10, generator=gen)
    labels = (data @ teacher).argmax(-1)
    losses = []
    for i in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(data[i]), labels[i])
        if isinstance(loss_fn, nt.CrossEntropyLoss):  # served
            assert type(loss.grad_fn).__name__ == CE_NODE
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return [p.detach().clone() for p in model.parameters()], losses


@pytest.mark.parametrize("threads", [1, None], ids=["1thread", "default"])
def test_training_loop_matches_torch(threads):
    saved = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        ref_params, ref_losses = _train(torch.nn.CrossEntropyLoss(label_smoothing=0.05))
        params, losses = _train(nt.CrossEntropyLoss(label_smoothing=0.05))
    finally:
        torch.set_num_threads(saved)
    assert losses[-1] < losses[0] * 0.8  # it trained
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# gradient buffer pool
# --------------------------------------------------------------------------
@pytest.fixture
def pool_small(monkeypatch):
    """Pool even the tests' small buffers (by default only >= 1 MiB)."""
    monkeypatch.setattr(serve._GradientPool, "MIN_BYTES", 1)


def _pooled(shape, dtype=torch.float32):
    return list(serve._POOL._bufs.get((tuple(shape), dtype), ()))


def _nonleaf_grad(x, w, t, fn=None, **kw):
    """Gradient wrt the non-leaf logits x @ w, returned to the caller."""
    z = x @ w
    (g,) = torch.autograd.grad((fn or nt.cross_entropy)(z, t, **kw), z)
    return g


@pytest.mark.usefixtures("pool_small")
def test_pool_reuses_a_released_buffer_in_training_steps():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(33, 8, generator=gen)
    w = torch.randn(8, 13, generator=gen, requires_grad=True)
    t = torch.randint(0, 13, (33,), generator=gen)
    ptrs = set()
    for _ in range(4):
        w.grad = None
        nt.cross_entropy(x @ w, t).backward()
        (buf,) = _pooled((33, 13))
        ptrs.add(buf.data_ptr())
        del buf
        torch.testing.assert_close(
            w.grad,
            torch.autograd.grad(F.cross_entropy(x @ w, t), w)[0],
            rtol=1e-5,
            atol=1e-6,
        )
    assert len(ptrs) == 1


_HOLDERS = {  # how a caller may keep a returned gradient alive
    "tensor": lambda g: g,
    "numpy": lambda g: g.numpy(),
    "detach": lambda g: g.detach(),
    "view": lambda g: g[3:],
    "list": lambda g: [g],
}


@pytest.mark.usefixtures("pool_small")
@pytest.mark.parametrize("holder", list(_HOLDERS))
def test_pool_never_overwrites_a_gradient_still_held(holder):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(17, 6, generator=gen)
    w = torch.randn(6, 11, generator=gen, requires_grad=True)
    t = torch.randint(0, 11, (17,), generator=gen)
    g = _nonleaf_grad(x, w, t)
    expected = g.clone()
    kept = _HOLDERS[holder](g)
    del g
    for _ in range(3):  # more calls of the same shape on other data
        _nonleaf_grad(torch.randn(17, 6, generator=gen), w, t)
    got = {
        "numpy": lambda: torch.from_numpy(kept),
        "list": lambda: kept[0],
        "view": lambda: kept,
    }.get(holder, lambda: kept)()
    assert torch.equal(got, expected[3:] if holder == "view" else expected)


@pytest.mark.usefixtures("pool_small")
def test_pool_leaf_input_adopts_the_buffer_and_is_not_reused():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(9, 4, generator=gen, requires_grad=True)
    t = torch.randint(0, 4, (9,), generator=gen)
    nt.cross_entropy(x, t).backward()
    assert not any(b is x.grad for b in _pooled((9, 4)))
    kept = x.grad.clone()
    y = torch.randn(9, 4, generator=gen, requires_grad=True)
    nt.cross_entropy(y * 1.0, t).backward()  # same shape, non-leaf
    assert torch.equal(x.grad, kept)


@pytest.mark.usefixtures("pool_small")
def test_pool_same_shape_twice_in_one_graph():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(12, 7, generator=gen, requires_grad=True)
    t = torch.randint(0, 7, (12,), generator=gen)
    for _ in range(3):
        x.grad = None
        (nt.cross_entropy(x * 1.0, t) + nt.cross_entropy(x * 2.0, t)).backward()
        got = x.grad.clone()
        x.grad = None
        (F.cross_entropy(x * 1.0, t) + F.cross_entropy(x * 2.0, t)).backward()
        torch.testing.assert_close(got, x.grad, rtol=1e-5, atol=1e-6)
    assert len(_pooled((12, 7))) == 2


@pytest.mark.usefixtures("pool_small")
def test_pool_bce_and_channels_first_copy():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 5, 3, generator=gen)  # (N, C, d): copied to class-last
    w = torch.randn(3, 3, generator=gen, requires_grad=True)
    t = torch.randint(0, 5, (4, 3), generator=gen)
    p = torch.rand(4, 5, 3, generator=gen)
    for fn, target in ((nt.cross_entropy, t), (NT_BCE, p)):
        ref_fn = F.cross_entropy if fn is nt.cross_entropy else F_BCE
        for _ in range(3):
            (g,) = torch.autograd.grad(fn(x @ w, target), w)
            (r,) = torch.autograd.grad(ref_fn(x @ w, target), w)
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("pool_small")
def test_pool_concurrent_threads_never_share_a_buffer():
    gen = torch.Generator().manual_seed(9)
    w = torch.randn(16, 300, generator=gen, requires_grad=True)
    cases = [
        (
            torch.randn(128, 16, generator=gen),
            torch.randint(0, 300, (128,), generator=gen),
        )
        for _ in range(8)
    ]
    expected = [_nonleaf_grad(x, w, t).clone() for x, t in cases]

    def work(i):
        for _ in range(15):
            g = _nonleaf_grad(cases[i][0], w, cases[i][1])
            if not torch.equal(g, expected[i]):
                return False
        return True

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(work, range(8)))


_FORK_WITH_POOL_LOCK_HELD = """
import os, signal, threading, time, torch, numxent.torch as nt
import numxent._torch_serve as serve
serve._GradientPool.MIN_BYTES = 1  # the pool (and its lock) serves this small call
held = threading.Event()
def hold():
    with serve._POOL._lock:
        held.set()
        time.sleep(0.5)
t = threading.Thread(target=hold)
t.start()
held.wait()
pid = os.fork()
if pid == 0:
    x = torch.randn(8, 5)
    w = torch.randn(5, 5, requires_grad=True)
    y = torch.zeros(8, dtype=torch.long)
    (g,) = torch.autograd.grad(nt.cross_entropy(x @ w, y), w)
    os._exit(0 if torch.isfinite(g).all() else 3)
for _ in range(600):  # a deadlocked child is killed, not left behind
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise SystemExit(4)
t.join()
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_pool_usable_in_a_child_forked_while_another_thread_held_its_lock():
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_WITH_POOL_LOCK_HELD],
        timeout=120,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def test_pool_defaults_skip_small_buffers_and_leaves():
    gen = torch.Generator().manual_seed(10)
    w = torch.randn(16, 300, generator=gen, requires_grad=True)
    x = torch.randn(64, 16, generator=gen)
    t = torch.randint(0, 300, (64,), generator=gen)
    _nonleaf_grad(x, w, t)  # 64 x 300 float32: 75 KiB, from the heap
    assert _pooled((64, 300)) == []
    big_x = torch.randn(1024, 16, generator=gen)  # 1.2 MiB of logits: pooled
    _nonleaf_grad(big_x, w, torch.randint(0, 300, (1024,), generator=gen))
    assert len(_pooled((1024, 300))) == 1
    leaf = torch.randn(1024, 301, generator=gen, requires_grad=True)
    nt.cross_entropy(leaf, torch.randint(0, 301, (1024,), generator=gen)).backward()
    assert _pooled((1024, 301)) == []


@pytest.mark.usefixtures("pool_small")
def test_pool_limit():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(10, 5, generator=gen)
    w = torch.randn(5, 6, generator=gen, requires_grad=True)
    t = torch.randint(0, 6, (10,), generator=gen)
    old = nt.set_gradient_pool_bytes(0)
    try:
        assert serve._POOL._bufs == {}
        _nonleaf_grad(x, w, t)
        assert _pooled((10, 6)) == []
        nt.set_gradient_pool_bytes(10 * 6 * 4)  # room for exactly one
        _nonleaf_grad(x, w, t)
        assert len(_pooled((10, 6))) == 1
        _nonleaf_grad(torch.randn(3, 5, generator=gen), w, t[:3])
        assert _pooled((10, 6)) == []  # least recently used went
        with pytest.raises(ValueError, match="nbytes"):
            nt.set_gradient_pool_bytes(-1)
    finally:
        assert nt.set_gradient_pool_bytes(old) == 10 * 6 * 4


def _big_case(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 300, generator=gen)  # above numxent's parallel threshold
    return x, torch.randint(0, 300, (256,), generator=gen)


def _bridge_loss_grad(x, t):
    x = x.clone().requires_grad_(True)
    loss = nt.cross_entropy(x, t)
    assert type(loss.grad_fn).__name__ == CE_NODE
    loss.backward()
    return loss.detach(), x.grad


def test_concurrent_python_threads_bitwise():
    cases = [_big_case(s) for s in range(8)]
    serial = [_bridge_loss_grad(*c) for c in cases]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: _bridge_loss_grad(*c), cases))
    for (a, ga), (b, gb), c in zip(serial, threaded, cases, strict=True):
        assert torch.equal(a, b) and torch.equal(ga, gb)
        ref = F.cross_entropy(*c)
        _close(a, ref, torch.float32, "threaded loss")


class _Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return _big_case(100 + i)


def _collate(items):
    ((x, t),) = items
    with torch.no_grad():
        return x, t, nt.cross_entropy(x, t)  # the bridge inside a forked worker


def test_dataloader_fork_workers():
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    _bridge_loss_grad(*_big_case(0))  # start numxent's pool before forking
    loader = torch.utils.data.DataLoader(
        _Batches(),
        batch_size=1,
        num_workers=2,
        collate_fn=_collate,
        multiprocessing_context="fork",
    )
    seen = 0
    for x, t, worker_loss in loader:
        ref = F.cross_entropy(x, t)
        _close(worker_loss, ref, torch.float32, "worker loss")
        loss, grad = _bridge_loss_grad(x, t)  # and in the main loop
        _close(loss, ref, torch.float32, "main loss")
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(xr, t).backward()
        _close(grad, xr.grad, torch.float32, "main grad")
        seen += 1
    assert seen == 4


def test_import_numxent_does_not_import_torch():
    code = (
        "import sys, numxent; "
        "bad = [m for m in ('torch', 'numxent.torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
