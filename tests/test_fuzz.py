"""Fuzzing every kernel path against the float64 references in naive.py.

Each test is parametrized by a *path* (kernel and side of its serial/parallel
switch, see ``_cases``) and dtype; hypothesis draws sizes on that side of the
switch (derived from the dispatch constants), the options (class and sample
weights, ignored rows, label smoothing, reductions, forward-only, ``out=``,
in place), the memory layout of the logits (C, F, strided, read-only,
byte-swapped) and occasional non-finite rows. ``record_kernels`` checks that
the intended kernel ran.

Default runs use the ``numxent`` hypothesis profile (tests/conftest.py); the
``*_slow`` twins (``pytest -m slow``) run many more examples, and
``--hypothesis-profile=slow`` raises the budget of the default tests too.

Where naive.py and numxent deliberately differ, the expectation is patched
and says so: a kept row holding +inf gives PyTorch's all-NaN loss and
gradient (the reference's ``inf - inf`` leaves finite entries), and the
same for softmax / log_softmax rows holding +inf.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numxent as nx
from _cases import (
    BCE_LAYOUTS,
    BCE_PATHS,
    BFLOAT16,
    FLOATS,
    HARD_PATHS,
    HARD_PATHS_16,
    LAYOUTS,
    NONFINITE,
    REDUCTIONS,
    ROWWISE_PATHS,
    SOFT_PATHS,
    as_layout,
    assert_matches,
    bce_shapes,
    bce_weights,
    hard_path_cases,
    hard_sizes,
    logits,
    poison_rows,
    rows_sizes,
    weights,
)
from _paths import record_kernels
from naive import (
    bce_with_logits_ref,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

SLOW_EXAMPLES = 300


def _fuzz_tests(check, cases, ids):
    """A default test and a ``slow``-marked twin with SLOW_EXAMPLES."""

    @pytest.mark.parametrize("case", cases, ids=ids)
    @given(data=st.data())
    def default(case, data):
        check(data, *case)

    @pytest.mark.slow
    @pytest.mark.parametrize("case", cases, ids=ids)
    @settings(max_examples=SLOW_EXAMPLES)
    @given(data=st.data())
    def slow(case, data):
        check(data, *case)

    return default, slow


def _name(dtype):
    return np.dtype(dtype).name


def _nonfinite_kinds(data, allowed=NONFINITE):
    return data.draw(
        st.one_of(
            st.just([]),
            st.just([]),
            st.lists(st.sampled_from(allowed), min_size=1, max_size=3),
        ),
        label="nonfinite",
    )


def _call_variants(fn, x_view, args, kw, data, dtype, label):
    """Run ``fn`` with the gradient (into a fresh array, ``out=`` or in place)
    and, if drawn, forward-only; check ``out`` is really used, the inputs
    are left alone and forward-only gives the same loss bits."""
    out_mode = data.draw(st.sampled_from([None, "out", "inplace"]), label="out")
    forward_only = data.draw(st.booleans(), label="forward_only")
    before = np.array(x_view, copy=True)
    shape, res_dtype = x_view.shape, np.dtype(dtype)
    if out_mode == "inplace":
        xin = np.array(x_view, dtype=res_dtype, order="C")
        loss, grad = fn(xin, *args, return_grad=True, out=xin, **kw)
        assert grad is xin
    elif out_mode == "out":
        buf = np.full(shape, 7, dtype=res_dtype)
        loss, grad = fn(x_view, *args, return_grad=True, out=buf, **kw)
        assert grad is buf
    else:
        loss, grad = fn(x_view, *args, return_grad=True, **kw)
    assert grad.dtype == res_dtype and grad.shape == shape, label
    assert np.asarray(loss).dtype == res_dtype, label
    if forward_only:
        loss_only = fn(x_view, *args, **kw)
        np.testing.assert_array_equal(loss_only, loss)
    np.testing.assert_array_equal(x_view, before)  # inputs never written
    return loss, grad


def _expect_kernel(calls, kernel, may_skip):
    """Every launch was ``kernel``; none at all only when ``may_skip`` (a
    parallel 'mean' with a zero denominator returns before launching)."""
    names = {name for name, _ in calls}
    assert names <= {kernel}, (names, kernel)
    assert names or may_skip, f"{kernel} did not run"


# --------------------------------------------------------------------------
# cross-entropy, hard labels: tile / row-at-a-time, serial / parallel
# --------------------------------------------------------------------------
def check_hard(data, path, dtype):
    n, c = data.draw(hard_sizes(path, dtype), label="rows, classes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = data.draw(st.sampled_from([1.0, 4.0, 30.0]), label="scale")
    x = logits(rng, (n, c), dtype, scale)
    kinds = _nonfinite_kinds(data)
    poisoned = poison_rows(rng, x, kinds, n)
    ignore_index = data.draw(st.sampled_from([-100, -1, 0, c - 1]), label="ignore")
    label_dtype = data.draw(st.sampled_from([np.int64, np.int32, np.int16]))
    if c > np.iinfo(label_dtype).max:
        label_dtype = np.int64
    y = rng.integers(0, c, n)
    frac = data.draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]), label="ignored")
    y[rng.random(n) < frac] = ignore_index
    kw = {"reduction": data.draw(st.sampled_from(REDUCTIONS), label="reduction")}
    zeros = data.draw(st.booleans(), label="zero weights")
    if data.draw(st.booleans(), label="weight"):
        kw["weight"] = weights(rng, (c,), zeros)
    lead = (n,)
    if n % 2 == 0 and n > 0 and data.draw(st.booleans(), label="3-d"):
        lead = (2, n // 2)
    elif n == 1 and data.draw(st.booleans(), label="unbatched"):
        lead = ()
    if data.draw(st.booleans(), label="sample_weight"):
        kw["sample_weight"] = weights(rng, lead, zeros)
    kw["label_smoothing"] = data.draw(
        st.one_of(st.sampled_from([0.0, 0.0, 0.1, 1.0]), st.floats(0.0, 1.0))
    )
    kw["ignore_index"] = ignore_index
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    xs = x.reshape(lead + (c,))
    yt = y.reshape(lead).astype(label_dtype)
    x_view = as_layout(xs, layout, rng)

    with record_kernels() as calls:
        loss, grad = _call_variants(nx.cross_entropy, x_view, (yt,), kw, data, dtype,
                                    path)  # fmt: skip

    with np.errstate(all="ignore"):
        r_loss, r_grad = cross_entropy_ref(xs.astype(np.float64), yt, **kw)
    kept = y != ignore_index
    sw = kw.get("sample_weight", np.ones(lead)).reshape(-1)
    w = kw.get("weight", np.ones(c))
    denom = float(np.sum(sw[kept] * w[y[kept]])) if kw["reduction"] == "mean" else 1.0
    # PyTorch's pattern for kept rows holding +inf: loss and gradient all NaN
    inf_rows = [i for i, k in poisoned.items() if k == "+inf" and kept[i]]
    if inf_rows:
        r_grad = r_grad.reshape(n, c).copy()
        if denom != 0.0:
            r_grad[inf_rows] = np.nan
        r_grad = r_grad.reshape(xs.shape)
        if kw["reduction"] == "none":
            r_loss = np.array(r_loss, dtype=np.float64).reshape(-1)
            r_loss[inf_rows] = np.nan
            r_loss = r_loss.reshape(lead)
        else:
            r_loss = np.nan
    assert_matches(loss, r_loss, dtype)
    assert_matches(grad, r_grad, dtype)
    kernels = HARD_PATHS_16 if np.dtype(dtype).itemsize == 2 else HARD_PATHS
    _expect_kernel(calls, kernels[path], path.endswith("parallel") and denom == 0)


HARD_CASES = hard_path_cases()
test_hard_labels, test_hard_labels_slow = _fuzz_tests(
    check_hard, HARD_CASES, [f"{p}-{_name(d)}" for p, d in HARD_CASES]
)


# --------------------------------------------------------------------------
# cross-entropy, soft labels
# --------------------------------------------------------------------------
def check_soft(data, path, dtype):
    n, c = data.draw(rows_sizes(path), label="rows, classes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = data.draw(st.sampled_from([1.0, 4.0, 30.0]), label="scale")
    x = logits(rng, (n, c), dtype, scale)
    poisoned = poison_rows(rng, x, _nonfinite_kinds(data), n)
    t = rng.random((n, c))
    t[t < data.draw(st.sampled_from([0.0, 0.3]))] = 0.0  # exact zeros
    t = (t / np.maximum(t.sum(axis=1, keepdims=True), 1e-300)).astype(dtype)
    kw = {"reduction": data.draw(st.sampled_from(REDUCTIONS), label="reduction")}
    zeros = data.draw(st.booleans(), label="zero weights")
    if data.draw(st.booleans(), label="weight"):
        kw["weight"] = weights(rng, (c,), zeros)
    if data.draw(st.booleans(), label="sample_weight"):
        kw["sample_weight"] = weights(rng, (n,), zeros)
    kw["label_smoothing"] = data.draw(
        st.one_of(st.sampled_from([0.0, 0.0, 0.1, 1.0]), st.floats(0.0, 1.0))
    )
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    x_view = as_layout(x, layout, rng)
    t_view = as_layout(t, data.draw(st.sampled_from(LAYOUTS)), rng)

    with record_kernels() as calls:
        loss, grad = _call_variants(nx.cross_entropy, x_view, (t_view,), kw, data,
                                    dtype, path)  # fmt: skip

    with np.errstate(all="ignore"):
        r_loss, r_grad = cross_entropy_ref(x.astype(np.float64), t, **kw)
    sw = kw.get("sample_weight", np.ones(n))
    denom = float(np.sum(sw)) if kw["reduction"] == "mean" else 1.0
    inf_rows = [i for i, k in poisoned.items() if k == "+inf"]
    if inf_rows:  # PyTorch's pattern (see the module docstring)
        r_grad = r_grad.copy()
        if denom != 0.0:
            r_grad[inf_rows] = np.nan
        if kw["reduction"] == "none":
            r_loss = r_loss.copy()
            r_loss[inf_rows] = np.nan
        else:
            r_loss = np.nan
    assert_matches(loss, r_loss, dtype)
    assert_matches(grad, r_grad, dtype)
    _expect_kernel(calls, SOFT_PATHS[path], denom == 0)


SOFT_CASES = [(p, d) for p in SOFT_PATHS for d in FLOATS]
test_soft_labels, test_soft_labels_slow = _fuzz_tests(
    check_soft, SOFT_CASES, [f"{p}-{_name(d)}" for p, d in SOFT_CASES]
)


# --------------------------------------------------------------------------
# binary cross-entropy: serial / parallel x the four weight layouts
# --------------------------------------------------------------------------
def check_bce(data, path, layout, dtype):
    shape = data.draw(bce_shapes(path, layout), label="shape")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = data.draw(st.sampled_from([1.0, 5.0, 40.0]), label="scale")
    x = logits(rng, shape, dtype, scale)
    t = rng.random(shape)
    t[rng.random(shape) < 0.2] = 0.0
    t[rng.random(shape) < 0.2] = 1.0
    t = t.astype(dtype)
    flat = x.reshape(-1)
    for kind in _nonfinite_kinds(data, ("nan", "+inf", "-inf")):
        if flat.size:
            flat[rng.integers(0, flat.size)] = {"nan": np.nan, "+inf": np.inf,
                                                "-inf": -np.inf}[kind]  # fmt: skip
    kw = bce_weights(rng, shape, layout, data.draw)
    kw["reduction"] = data.draw(st.sampled_from(REDUCTIONS), label="reduction")
    x_view = as_layout(x, data.draw(st.sampled_from(LAYOUTS), label="layout"), rng)

    with record_kernels() as calls:
        loss, grad = _call_variants(nx.binary_cross_entropy_with_logits, x_view, (t,),
                                    kw, data, dtype, path)  # fmt: skip

    with np.errstate(all="ignore"):
        r_loss, r_grad = bce_with_logits_ref(x.astype(np.float64), t, **kw)
    assert_matches(loss, r_loss, dtype)
    assert_matches(grad, r_grad, dtype)
    expected = BCE_PATHS[path]
    n_cols = shape[-1] if shape else 1
    if layout == "period-C" and n_cols == 1:
        layout = "period-1"  # a period of one element is the constant layout
    mean_of_nothing = kw["reduction"] == "mean" and (
        x.size == 0 or float(np.sum(kw.get("sample_weight", 1.0))) == 0.0
    )
    _expect_kernel(calls, expected, mean_of_nothing)
    for _, got in calls:
        if x.size:  # an empty call has no weights to lay out
            assert got == layout, (got, layout, shape, sorted(kw))


BCE_CASES = [(p, lay, d) for p in BCE_PATHS for lay in BCE_LAYOUTS for d in FLOATS]
test_bce, test_bce_slow = _fuzz_tests(
    check_bce, BCE_CASES, [f"{p}-{lay}-{_name(d)}" for p, lay, d in BCE_CASES]
)


# --------------------------------------------------------------------------
# logsumexp / log_softmax / softmax
# --------------------------------------------------------------------------
ROWWISE = {
    "logsumexp": (nx.logsumexp, logsumexp_ref),
    "log_softmax": (nx.log_softmax, log_softmax_ref),
    "softmax": (nx.softmax, softmax_ref),
}


def check_rowwise(data, path, dtype):
    n, c = data.draw(rows_sizes(path, max_classes=600), label="rows, classes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = logits(rng, (n, c), dtype, data.draw(st.sampled_from([1.0, 10.0, 300.0])))
    poisoned = poison_rows(rng, x, _nonfinite_kinds(data), n)
    name = data.draw(st.sampled_from(sorted(ROWWISE)), label="op")
    fn, ref = ROWWISE[name]
    # the class axis anywhere: (n, c) -> (2, n/2, c) -> class axis moved
    xs, axis = x, -1
    if n % 2 == 0 and n > 0 and data.draw(st.booleans(), label="3-d"):
        xs = x.reshape(2, n // 2, c)
        axis = data.draw(st.sampled_from([0, 1, 2, -1]), label="axis")
        xs = np.moveaxis(xs, -1, axis)
    x_view = as_layout(xs, data.draw(st.sampled_from(LAYOUTS), label="layout"), rng)
    before = np.array(x_view, copy=True)
    with record_kernels() as calls:
        res = fn(x_view, axis=axis)
    np.testing.assert_array_equal(x_view, before)
    assert np.asarray(res).dtype == np.dtype(dtype)
    with np.errstate(all="ignore"):
        expected = np.asarray(ref(xs.astype(np.float64), axis=axis))
    inf_rows = [i for i, k in poisoned.items() if k == "+inf"]
    if inf_rows and name != "logsumexp":  # PyTorch's all-NaN rows
        e2 = np.moveaxis(expected, axis, -1).reshape(n, c).copy()
        e2[inf_rows] = np.nan
        moved = np.moveaxis(expected, axis, -1).shape
        expected = np.moveaxis(e2.reshape(moved), -1, axis)
    assert_matches(res, expected, dtype)
    _expect_kernel(calls, ROWWISE_PATHS[path], False)


ROWWISE_CASES = [(p, d) for p in ROWWISE_PATHS for d in FLOATS]
test_rowwise, test_rowwise_slow = _fuzz_tests(
    check_rowwise, ROWWISE_CASES, [f"{p}-{_name(d)}" for p, d in ROWWISE_CASES]
)


# --------------------------------------------------------------------------
# float16 (computed in float32): every op once, on drawn paths; bfloat16 hard
# labels
# --------------------------------------------------------------------------
def check_float16(data, kind):
    if kind == "hard-bfloat16":
        path = data.draw(st.sampled_from(sorted(HARD_PATHS)))
        check_hard(data, path, BFLOAT16)
    elif kind == "hard":
        check_hard(data, data.draw(st.sampled_from(sorted(HARD_PATHS))), np.float16)
    elif kind == "soft":
        check_soft(data, data.draw(st.sampled_from(sorted(SOFT_PATHS))), np.float16)
    elif kind == "bce":
        path = data.draw(st.sampled_from(sorted(BCE_PATHS)))
        check_bce(data, path, data.draw(st.sampled_from(BCE_LAYOUTS)), np.float16)
    else:
        path = data.draw(st.sampled_from(sorted(ROWWISE_PATHS)))
        check_rowwise(data, path, np.float16)


F16_CASES = [("hard",), ("hard-bfloat16",), ("soft",), ("bce",), ("rowwise",)]
if BFLOAT16 is None:  # bfloat16 arrays need ml_dtypes (the torch extra)
    F16_CASES.remove(("hard-bfloat16",))
test_float16, test_float16_slow = _fuzz_tests(
    check_float16, F16_CASES, [k for (k,) in F16_CASES]
)
