"""The dtype x layout matrix, ``out=``, shapes and return types (SPEC §2).

Every layout of the same values runs the same kernel on the same numbers, so
results are compared for exact (bitwise) equality with the plain C-contiguous,
native-byte-order call.
"""

from __future__ import annotations

import numpy as np
import pytest

import numxent as nx

CE = nx.cross_entropy
BCE = nx.binary_cross_entropy_with_logits
REDUCTIONS = ["mean", "sum", "none"]
N, C = 7, 5


def _rng(seed):
    return np.random.default_rng(seed)


def _logits(shape, dtype, seed=0):
    return (3 * _rng(seed).standard_normal(shape)).astype(dtype)


def _labels(leading, c=C, seed=1, dtype=np.int64):
    return _rng(seed).integers(0, c, size=leading).astype(dtype)


def _probs(shape, dtype, seed=2):
    p = _rng(seed).random(shape) + 0.05
    return (p / p.sum(axis=-1, keepdims=True)).astype(dtype)


# --------------------------------------------------------------------------
# Layout variants: the same values in a different memory arrangement.
# --------------------------------------------------------------------------


def _readonly(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _strided_first(a):
    big = np.zeros((3 * a.shape[0],) + a.shape[1:], a.dtype)
    big[::3] = a
    return big[::3]


def _strided_last(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _reversed(a):
    return np.ascontiguousarray(a[::-1])[::-1]


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder())


def _fortran(a):
    return np.asfortranarray(a)


def _fortran_readonly_byteswapped(a):
    return _readonly(np.asfortranarray(_byteswapped(a)))


VARIANTS = {
    "fortran": _fortran,
    "readonly": _readonly,
    "strided-first": _strided_first,
    "strided-last": _strided_last,
    "reversed": _reversed,
    "byteswapped": _byteswapped,
    "fortran-readonly-byteswapped": _fortran_readonly_byteswapped,
}


def _variant(name, a):
    b = VARIANTS[name](a)
    np.testing.assert_array_equal(b, a)  # same values, different layout
    if name != "readonly" and a.ndim >= 1 and a.size > 1:
        if name.startswith("fortran") and a.ndim < 2:
            return b
        # the variant really is not the plain layout
        assert (
            not b.flags.c_contiguous
            or not b.flags.writeable
            or not b.dtype.isnative
            or b.base is not None
        )
    return b


def _assert_same(got, ref):
    assert type(got) is type(ref)
    if isinstance(ref, tuple):
        for g, r in zip(got, ref, strict=True):
            _assert_same(g, r)
        return
    assert np.asarray(got).dtype == np.asarray(ref).dtype
    assert np.shape(got) == np.shape(ref)
    np.testing.assert_array_equal(got, ref)


def _ce_hard_inputs(dtype, shape=(N, C)):
    x = _logits(shape, dtype)
    y = _labels(shape[:-1])
    y.flat[1] = 2  # a row with the ignored label
    return {
        "logits": x,
        "target": y,
        "weight": np.linspace(0.5, 2.0, shape[-1]).astype(dtype),
        "sample_weight": _rng(3).random(shape[:-1]).astype(dtype),
    }


def _ce_soft_inputs(dtype, shape=(N, C)):
    return {
        "logits": _logits(shape, dtype),
        "target": _probs(shape, dtype),
        "weight": np.linspace(0.5, 2.0, shape[-1]).astype(dtype),
        "sample_weight": _rng(3).random(shape[:-1]).astype(dtype),
    }


def _bce_inputs(dtype, shape=(N, C)):
    return {
        "logits": _logits(shape, dtype),
        "target": _rng(4).random(shape).astype(dtype),
        "weight": _rng(5).random(shape).astype(dtype),
        "pos_weight": np.linspace(0.5, 3.0, shape[-1]).astype(dtype),
        "sample_weight": _rng(6).random(shape[:-1]).astype(dtype),
    }


def _call_ce(inputs, reduction, **extra):
    return CE(
        inputs["logits"],
        inputs["target"],
        weight=inputs["weight"],
        sample_weight=inputs["sample_weight"],
        reduction=reduction,
        return_grad=True,
        **extra,
    )


def _call_ce_hard(inputs, reduction):
    return _call_ce(inputs, reduction, ignore_index=2, label_smoothing=0.1)


def _call_ce_soft(inputs, reduction):
    return _call_ce(inputs, reduction, label_smoothing=0.1)


def _call_bce(inputs, reduction):
    return BCE(
        inputs["logits"],
        inputs["target"],
        weight=inputs["weight"],
        pos_weight=inputs["pos_weight"],
        sample_weight=inputs["sample_weight"],
        reduction=reduction,
        return_grad=True,
    )


PROBLEMS = {
    "ce-hard": (_ce_hard_inputs, _call_ce_hard),
    "ce-soft": (_ce_soft_inputs, _call_ce_soft),
    "bce": (_bce_inputs, _call_bce),
}

MATRIX = [
    (problem, arg, variant)
    for problem, (make, _) in PROBLEMS.items()
    for arg in make(np.float64)
    for variant in VARIANTS
]

DTYPES = [np.float32, np.float64, np.float16]


@pytest.mark.parametrize("shape", [(N, C), (2, 4, C)], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("problem", "arg", "variant"), MATRIX, ids=["-".join(m) for m in MATRIX]
)
def test_layout_matrix(problem, arg, variant, dtype, shape):
    make, call = PROBLEMS[problem]
    plain = make(dtype, shape)
    changed = dict(plain)
    changed[arg] = _variant(variant, plain[arg])
    kept = {k: v.copy() for k, v in changed.items()}
    for reduction in REDUCTIONS:
        _assert_same(call(changed, reduction), call(plain, reduction))
    for k in changed:  # the variant inputs are untouched too
        np.testing.assert_array_equal(changed[k], kept[k])


LABEL_DTYPES = [
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.intp,
    np.uintp,
]


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_label_dtypes(label_dtype, dtype):
    x = _logits((N, C), dtype)
    y = _labels(N)
    y[3] = 2
    for reduction in REDUCTIONS:
        ref = CE(x, y, reduction=reduction, ignore_index=2, return_grad=True)
        for yy in (y.astype(label_dtype), _byteswapped(y.astype(label_dtype))):
            got = CE(x, yy, reduction=reduction, ignore_index=2, return_grad=True)
            _assert_same(got, ref)


@pytest.mark.parametrize("fn", ["logsumexp", "log_softmax", "softmax"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_layout_softmax_family(fn, variant, dtype):
    f = getattr(nx, fn)
    x = _logits((N, C), dtype)
    ref = f(x)
    _assert_same(f(_variant(variant, x)), ref)
    # another axis is the same as moving that axis last
    ref0 = f(np.ascontiguousarray(x.T))
    got0 = f(x, axis=0)
    if fn != "logsumexp":
        got0 = got0.T
    np.testing.assert_array_equal(got0, ref0)


# --------------------------------------------------------------------------
# float16: computed in float32, returned as float16.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float16_computed_in_float32(problem, reduction):
    make, call = PROBLEMS[problem]
    x16 = make(np.float16)
    x32 = {
        k: (v.astype(np.float32) if v.dtype == np.float16 else v)
        for k, v in x16.items()
    }
    loss16, grad16 = call(x16, reduction)
    loss32, grad32 = call(x32, reduction)
    assert np.asarray(loss16).dtype == np.float16
    assert grad16.dtype == np.float16
    assert grad16.shape == x16["logits"].shape
    np.testing.assert_array_max_ulp(
        np.asarray(loss16), np.asarray(loss32).astype(np.float16), maxulp=1
    )
    np.testing.assert_array_max_ulp(grad16, grad32.astype(np.float16), maxulp=1)


# --------------------------------------------------------------------------
# out= is really used; out=logits works in place.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("shape", [(N, C), (2, 3, C), (40, 1000)], ids=str)
def test_out_is_used(problem, dtype, reduction, shape):
    make, call = PROBLEMS[problem]
    inputs = make(dtype, shape)
    ref_loss, ref_grad = call(inputs, reduction)
    buf = np.full(shape, np.nan, dtype)
    loss, grad = _with_out(problem, inputs, reduction, buf)
    assert grad is buf or np.shares_memory(grad, buf)
    assert grad.shape == shape and grad.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(buf, ref_grad)
    _assert_same(loss, ref_loss)


def _with_out(problem, inputs, reduction, out):
    if problem == "bce":
        return BCE(
            inputs["logits"],
            inputs["target"],
            weight=inputs["weight"],
            pos_weight=inputs["pos_weight"],
            sample_weight=inputs["sample_weight"],
            reduction=reduction,
            return_grad=True,
            out=out,
        )
    extra = {"ignore_index": 2} if problem == "ce-hard" else {}
    return _call_ce(inputs, reduction, label_smoothing=0.1, out=out, **extra)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("shape", [(N, C), (2, 3, C), (40, 1000)], ids=str)
def test_out_is_logits_in_place(problem, dtype, reduction, shape):
    make, call = PROBLEMS[problem]
    inputs = make(dtype, shape)
    ref_loss, ref_grad = call({k: v.copy() for k, v in inputs.items()}, reduction)
    x = inputs["logits"]
    loss, grad = _with_out(problem, inputs, reduction, x)
    assert np.shares_memory(grad, x)
    np.testing.assert_array_equal(x, ref_grad)
    np.testing.assert_array_equal(grad, ref_grad)
    _assert_same(loss, ref_loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_reused_across_calls(dtype):
    x1, x2 = _logits((N, C), dtype, seed=10), _logits((N, C), dtype, seed=11)
    y = _labels(N)
    buf = np.empty((N, C), dtype)
    _, g1 = CE(x1, y, return_grad=True, out=buf)
    g1 = g1.copy()
    _, g2 = CE(x2, y, return_grad=True, out=buf)
    np.testing.assert_array_equal(buf, CE(x2, y, return_grad=True)[1])
    assert not np.array_equal(g1, buf)
    assert np.shares_memory(g2, buf)


# --------------------------------------------------------------------------
# Shapes: several leading axes, unbatched input, empty batches.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_leading_axes_equal_flattened(problem, dtype, reduction):
    make, call = PROBLEMS[problem]
    a, b = 3, 4
    nd = make(dtype, (a, b, C))
    flat = {}
    for k, v in nd.items():
        if k in ("weight", "pos_weight") and v.ndim == 1:
            flat[k] = v
        elif v.shape == (a, b):
            flat[k] = v.reshape(a * b)
        else:
            flat[k] = v.reshape((a * b,) + v.shape[2:])
    loss_nd, grad_nd = call(nd, reduction)
    loss_flat, grad_flat = call(flat, reduction)
    assert grad_nd.shape == (a, b, C)
    np.testing.assert_array_equal(grad_nd.reshape(a * b, C), grad_flat)
    if reduction == "none":
        lead = (a, b) if problem != "bce" else (a, b, C)
        assert loss_nd.shape == lead
        np.testing.assert_array_equal(loss_nd.reshape(loss_flat.shape), loss_flat)
    else:
        _assert_same(loss_nd, loss_flat)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unbatched_equals_batch_of_one(dtype, label_smoothing):
    x = _logits(C, dtype)
    w = np.linspace(0.5, 2.0, C).astype(dtype)
    kw = {"weight": w, "label_smoothing": label_smoothing, "return_grad": True}
    for k in range(C):
        loss, grad = CE(x, np.array(k), reduction="none", **kw)
        ref_loss, ref_grad = CE(x[None], np.array([k]), reduction="none", **kw)
        assert np.ndim(loss) == 0
        assert np.asarray(loss).dtype == np.dtype(dtype)
        assert grad.shape == (C,)
        np.testing.assert_array_equal(loss, ref_loss[0])
        np.testing.assert_array_equal(grad, ref_grad[0])
        for reduction in ("mean", "sum"):
            loss, grad = CE(x, np.array(k), reduction=reduction, **kw)
            ref_loss, ref_grad = CE(x[None], np.array([k]), reduction=reduction, **kw)
            _assert_same(loss, ref_loss)
            np.testing.assert_array_equal(grad, ref_grad[0])
    # unbatched soft labels
    p = _probs(C, dtype)
    loss, grad = CE(x, p, reduction="none", **kw)
    ref_loss, ref_grad = CE(x[None], p[None], reduction="none", **kw)
    assert np.ndim(loss) == 0
    np.testing.assert_array_equal(loss, ref_loss[0])
    np.testing.assert_array_equal(grad, ref_grad[0])


@pytest.mark.parametrize("shape", [(0, C), (2, 0, C)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_empty_batch(problem, dtype, shape):
    x = np.zeros(shape, dtype)
    t_hard = np.zeros(shape[:-1], np.int64)
    t_full = np.zeros(shape, dtype)
    fn = BCE if problem == "bce" else CE
    t = t_hard if problem == "ce-hard" else t_full

    loss, grad = fn(x, t, return_grad=True)
    assert np.ndim(loss) == 0 and np.isnan(loss)
    assert np.asarray(loss).dtype == np.dtype(dtype)
    assert grad.shape == shape and grad.dtype == np.dtype(dtype)

    loss = fn(x, t, reduction="sum")
    assert np.ndim(loss) == 0 and loss == 0
    assert np.asarray(loss).dtype == np.dtype(dtype)
    loss, grad = fn(x, t, reduction="sum", return_grad=True)
    assert loss == 0 and grad.shape == shape

    loss = fn(x, t, reduction="none")
    assert loss.shape == (shape if problem == "bce" else shape[:-1])
    assert loss.dtype == np.dtype(dtype)


def _zero_denominator_cases(dtype):
    x = _logits((N, C), dtype)
    y = _labels(N)
    garbage = x.copy()
    garbage[0] = np.nan
    garbage[1, 2] = np.inf
    garbage[2, 0] = -np.inf
    yield "all-ignored", CE, (x, np.full(N, -100)), {}
    yield "all-ignored-garbage", CE, (garbage, np.full(N, -100)), {}
    yield "all-ignored-custom", CE, (x, np.full(N, 3, np.uint8)), {"ignore_index": 3}
    yield (
        "all-ignored-smoothing",
        CE,
        (x, np.full(N, -100)),
        {"label_smoothing": 0.3, "weight": np.ones(C, dtype)},
    )
    yield "zero-sample-weight", CE, (x, y), {"sample_weight": np.zeros(N, dtype)}
    yield (
        "zero-sample-weight-soft",
        CE,
        (x, _probs((N, C), dtype)),
        {"sample_weight": np.zeros(N, dtype)},
    )
    w = np.ones(C, dtype)
    w[np.unique(y)] = 0
    yield "zero-class-weights", CE, (x, y), {"weight": w}
    y2 = y.copy()
    y2[::2] = -100
    w2 = np.ones(C, dtype)
    w2[np.unique(y2[y2 >= 0])] = 0
    yield "zero-class-weights-rest-ignored", CE, (x, y2), {"weight": w2}
    yield (
        "zero-sample-weight-and-ignored",
        CE,
        (x, y2),
        {"sample_weight": np.where(y2 >= 0, 0.0, 1.0).astype(dtype)},
    )
    yield (
        "bce-zero-sample-weight",
        BCE,
        (x, _rng(4).random((N, C)).astype(dtype)),
        {"sample_weight": np.zeros(N, dtype)},
    )


ZERO_IDS = [c[0] for c in _zero_denominator_cases(np.float64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ZERO_IDS)
def test_zero_mean_denominator(case, dtype):
    """Mean over nothing: NaN loss (0/0), gradient all zeros (SPEC §2)."""
    cases = {c[0]: c[1:] for c in _zero_denominator_cases(dtype)}
    fn, args, kwargs = cases[case]
    loss, grad = fn(*args, return_grad=True, **kwargs)
    assert np.ndim(loss) == 0 and np.isnan(loss)
    assert np.asarray(loss).dtype == np.dtype(dtype)
    assert grad.dtype == np.dtype(dtype)
    assert np.all(grad == 0), grad
    assert np.isnan(fn(*args, **kwargs))
    loss, grad = fn(*args, return_grad=True, reduction="sum", **kwargs)
    assert loss == 0
    assert np.all(grad == 0)


# --------------------------------------------------------------------------
# Return types.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("shape", [(N, C), (2, 3, C)], ids=str)
def test_return_types(problem, dtype, return_grad, shape):
    make, _ = PROBLEMS[problem]
    inputs = make(dtype, shape)
    fn = BCE if problem == "bce" else CE
    args = (inputs["logits"], inputs["target"])
    for reduction in REDUCTIONS:
        res = fn(*args, reduction=reduction, return_grad=return_grad)
        if return_grad:
            assert isinstance(res, tuple) and len(res) == 2
            loss, grad = res
            assert isinstance(grad, np.ndarray)
            assert grad.shape == shape and grad.dtype == np.dtype(dtype)
        else:
            loss = res
        if reduction == "none":
            lead = shape if problem == "bce" else shape[:-1]
            assert isinstance(loss, np.ndarray)
            assert loss.shape == lead and loss.dtype == np.dtype(dtype)
        else:
            assert isinstance(loss, np.generic), type(loss)
            assert np.ndim(loss) == 0
            assert loss.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_return_types_softmax_family(dtype):
    x = _logits((2, 3, C), dtype)
    for fn in (nx.softmax, nx.log_softmax):
        r = fn(x)
        assert isinstance(r, np.ndarray)
        assert r.shape == x.shape and r.dtype == np.dtype(dtype)
    r = nx.logsumexp(x)
    assert r.shape == x.shape[:-1] and r.dtype == np.dtype(dtype)


# --------------------------------------------------------------------------
# The common call's lean path gives the general path's bits.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(64, 10), (0, 5), (7, 300), (1, 1)], ids=str)
def test_common_call_equals_the_general_path(dtype, shape):
    from _paths import general_path_only

    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    if shape[0] > 2:
        y[2] = -100
    calls = [
        dict(reduction=r, label_smoothing=eps, return_grad=g)
        for r in REDUCTIONS
        for eps in (0.0, 0.25)
        for g in (False, True)
    ]
    for kw in calls:
        lean = CE(x, y, **kw)
        lean_out = CE(x, y, out=np.empty_like(x), **kw) if kw["return_grad"] else None
        with general_path_only():
            ref = CE(x, y, **kw)
        for got in (lean, lean_out):
            if got is None:
                continue
            got = got if kw["return_grad"] else (got,)
            want = ref if kw["return_grad"] else (ref,)
            for a, b in zip(got, want, strict=True):
                assert type(a) is type(b) and np.asarray(a).dtype == np.asarray(b).dtype
                np.testing.assert_array_equal(a, b, err_msg=str(kw))


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "general"])
def test_labels_held_in_outs_memory_are_read_before_it_is_written(lean):
    """Labels viewing ``out``'s buffer: the gradient must not overwrite them
    while the kernel still reads them (they are copied first)."""
    from _paths import general_path_only

    n, c = 300, 4
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c))
    out = np.empty((n, c))
    y = out.reshape(-1)[:n].view(np.int64)  # contiguous labels in out's memory
    y[:] = rng.integers(0, c, n)
    want_loss, want_grad = CE(x, y.copy(), return_grad=True)
    if lean:
        loss, grad = CE(x, y, return_grad=True, out=out)
    else:
        with general_path_only():
            loss, grad = CE(x, y, return_grad=True, out=out)
    assert grad is out
    assert loss == want_loss
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_weights_of_any_layout_share_one_kernel_signature(monkeypatch, dtype):
    """Weights the kernel reads as periodic patterns (none, scalar, (C,),
    per-row sample weights; C- or F-ordered) and weights it gathers (varying
    along rows: C- or F-ordered, strided, reversed, broadcast) reach it as
    one argument type: Numba compiles a kernel per type, so each layout would
    otherwise cost a compilation of its own."""
    import numba

    from numxent import _kernels as K

    seen: list[tuple] = []
    kernel = K.bce_ser

    def spy(*args):
        seen.append(tuple(numba.typeof(a) for a in args))
        return kernel(*args)

    monkeypatch.setattr(K, "bce_ser", spy)
    rng = np.random.default_rng(0)

    def call(shape, **kw):
        x = rng.standard_normal(shape).astype(dtype)
        t = (rng.random(shape) < 0.5).astype(dtype)
        return x, t, nx.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)

    w5 = rng.random(5) + 0.5
    calls = [
        ((6, 5), {}),
        ((6, 5), {"weight": 2.0}),
        ((6, 5), {"weight": w5}),
        ((6, 5), {"pos_weight": np.asfortranarray(w5[np.newaxis, :])}),
        ((6, 5), {"weight": w5, "pos_weight": w5[::-1]}),
        ((6, 5), {"sample_weight": rng.random(6) + 0.5}),
        ((6, 5), {"sample_weight": rng.random(6) + 0.5, "weight": w5}),
        ((5,), {"weight": w5}),  # one row: (1, 5) views, contiguous
        ((1, 5), {"pos_weight": w5}),
        ((6, 1), {"sample_weight": rng.random(6) + 0.5}),  # (6, 1): contiguous
        ((2, 3, 5), {"weight": w5, "sample_weight": np.ones((2, 3))}),
        ((), {"weight": 3.0}),
    ]
    full = rng.random((12, 10))
    gathered = [
        ((6, 5), {"weight": full[:6, :5].copy()}),
        ((6, 5), {"weight": np.asfortranarray(full[:6, :5])}),
        ((6, 5), {"pos_weight": full[::2, 1::2]}),
        ((6, 5), {"sample_weight": full[:6, 0], "pos_weight": full[6:, :5]}),
        ((6, 5), {"weight": full[:6, :5][::-1, ::-1], "pos_weight": w5}),
        ((6, 5), {"weight": full[:6, :1]}),  # (6, 1): broadcast along rows
        ((2, 3, 5), {"pos_weight": full[:6, :5].reshape(2, 3, 5)}),
    ]
    for shape, kw in calls:
        call(shape, **kw)
    for shape, kw in gathered:
        x, t, (loss, grad) = call(shape, **kw)
        # the same bits as with the weights in new C-ordered arrays
        dense = {
            k: np.ascontiguousarray(
                np.broadcast_to(v, shape[: x.ndim - 1 + (k != "sample_weight")])
            )
            for k, v in kw.items()
        }
        want = nx.binary_cross_entropy_with_logits(x, t, return_grad=True, **dense)
        assert loss == want[0]
        np.testing.assert_array_equal(grad, want[1])
    assert len(seen) == len(calls) + 2 * len(gathered)
    assert len(set(seen)) == 1, set(seen)


@pytest.mark.parametrize("n_classes", [10, 30, 300], ids=["lanes", "narrow", "wide"])
def test_every_hard_label_path_hands_the_kernels_read_only_logits(
    monkeypatch, n_classes
):
    """The hard-label kernels get the logits as a read-only array on every
    path (the common call, the general one, ``out=`` the logits,
    soft-capping, the linear function's chunks): Numba compiles a kernel per
    argument type, and a writable array would compile the same kernel
    again. (At 10 classes the soft-capped calls take the tile kernel.)"""
    import numba

    from numxent import _kernels as K

    names = {10: ["ce_lanes_ser", "ce_narrow_ser"], 30: ["ce_narrow_ser"]}
    seen: list = []

    def spy_on(kernel):
        def spy(*args):
            seen.append(numba.typeof(args[0]))
            return kernel(*args)

        return spy

    for name in names.get(n_classes, ["ce_hard_ser"]):
        monkeypatch.setattr(K, name, spy_on(getattr(K, name)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, n_classes)).astype(np.float32)
    y = rng.integers(0, n_classes, 6)
    h = rng.standard_normal((6, 4)).astype(np.float32)
    W = rng.standard_normal((n_classes, 4)).astype(np.float32)
    CE(x, y, return_grad=True)
    CE(x, y, label_smoothing=0.1, weight=np.ones(n_classes), return_grad=True)
    xi = x.copy()
    CE(xi, y, return_grad=True, out=xi)
    CE(x, y, softcap=5.0, return_grad=True)
    CE(x, y, softcap=5.0)
    nx.linear_cross_entropy(h, W, y, return_grad=True)
    nx.linear_cross_entropy(h, W, y, softcap=5.0)
    nx.linear_cross_entropy(h, W, y, softcap=5.0, return_grad=True)
    assert len(seen) == 8
    assert all(t.dtype == numba.float32 and not t.mutable for t in seen), seen
