"""Gradients agree with 4th-order central finite differences of the loss,
numxent's and the float64 references' (naive.py) alike. NumPy only."""

from __future__ import annotations

import numpy as np
import pytest

import numxent as nx
from _checks import dense_soft_target, hard_target_ignoring
from naive import bce_with_logits_ref, cross_entropy_ref

REDUCTIONS = ["none", "mean", "sum"]


# --------------------------------------------------------------------------
# 4th-order central finite differences
# --------------------------------------------------------------------------
H = 1e-3


def fd_gradient(f, x: np.ndarray, h: float = H) -> np.ndarray:
    """(-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h, one element at a time."""
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):

        def at(d, idx=idx):
            xx = x.copy()
            xx[idx] += d
            return float(f(xx))

        grad[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return grad


def _assert_fd_close(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


def _nx_ce(x, t, **kw):
    return nx.cross_entropy(x, t, return_grad=True, **kw)


def _ref_ce(x, t, **kw):
    return cross_entropy_ref(x, t, **kw)


def _nx_bce(x, t, **kw):
    return nx.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)


def _ref_bce(x, t, **kw):
    return bce_with_logits_ref(x, t, **kw)


IMPLS_CE = {"numxent": _nx_ce, "naive": _ref_ce}
IMPLS_BCE = {"numxent": _nx_bce, "naive": _ref_bce}

CE_FD_CASES = [
    dict(),
    dict(weight=True),
    dict(sample_weight=True),
    dict(label_smoothing=0.2),
    dict(ignore_index=2, n_ignored=2),
    dict(
        weight=True,
        sample_weight=True,
        label_smoothing=0.1,
        ignore_index=0,
        n_ignored=1,
    ),
    dict(soft=True),
    dict(soft=True, weight=True, sample_weight=True, label_smoothing=0.3),
    dict(lead=(2, 3), weight=True, label_smoothing=0.1),
    dict(lead=(2, 3), soft=True, sample_weight=True),
    dict(lead=(), weight=True, label_smoothing=0.2),
    dict(lse_square_scale=0.05),
    dict(softcap=2.0),
    dict(
        weight=True,
        sample_weight=True,
        label_smoothing=0.1,
        ignore_index=0,
        n_ignored=1,
        lse_square_scale=0.02,
        softcap=3.0,
    ),
]


def _check_fd(call, x, t, reduction, kw, rng, per_element):
    """Compare call's gradient with finite differences of its loss."""
    loss, grad = call(x, t, reduction=reduction, **kw)
    assert grad.shape == x.shape
    if reduction == "none":
        r = rng.normal(size=np.shape(loss))

        def f(xx):
            return np.sum(r * np.asarray(call(xx, t, reduction="none", **kw)[0]))

        expected_grad = grad * (r if per_element else r[..., None])
    else:

        def f(xx):
            return call(xx, t, reduction=reduction, **kw)[0]

        expected_grad = grad
    _assert_fd_close(expected_grad, fd_gradient(f, x))


@pytest.mark.parametrize("impl", list(IMPLS_CE))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CE_FD_CASES, ids=str)
def test_cross_entropy_gradient_finite_differences(impl, reduction, case):
    rng = np.random.default_rng(10)
    lead = case.get("lead", (4,))
    C = 4
    x = rng.normal(scale=2.0, size=lead + (C,))
    kw = {}
    if case.get("soft"):
        t = dense_soft_target(rng, lead + (C,))
    else:
        ignore_index = case.get("ignore_index", -100)
        t = hard_target_ignoring(rng, lead, C, ignore_index, case.get("n_ignored", 0))
        kw["ignore_index"] = ignore_index
    if case.get("weight"):
        kw["weight"] = rng.random(C) + 0.1
    if case.get("sample_weight"):
        kw["sample_weight"] = rng.random(lead) * 2
    kw["label_smoothing"] = case.get("label_smoothing", 0.0)
    for extra in ("lse_square_scale", "softcap"):  # hard labels only
        if extra in case:
            kw[extra] = case[extra]
    _check_fd(IMPLS_CE[impl], x, t, reduction, kw, rng, per_element=False)


BCE_FD_CASES = [
    dict(),
    dict(weight="full"),
    dict(weight="row"),
    dict(pos_weight=True),
    dict(sample_weight=True),
    dict(weight="row", pos_weight=True, sample_weight=True),
    dict(shape=(5,), sample_weight=True, pos_weight=True),
    dict(shape=(2, 2, 3), weight="full", pos_weight=True, sample_weight=True),
]


@pytest.mark.parametrize("impl", list(IMPLS_BCE))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", BCE_FD_CASES, ids=str)
def test_bce_gradient_finite_differences(impl, reduction, case):
    rng = np.random.default_rng(11)
    shape = case.get("shape", (3, 4))
    x = rng.normal(scale=3.0, size=shape)
    t = rng.random(shape)
    kw = {}
    if case.get("weight") == "full":
        kw["weight"] = rng.random(shape) + 0.1
    elif case.get("weight") == "row":
        kw["weight"] = rng.random(shape[-1:]) + 0.1
    if case.get("pos_weight"):
        kw["pos_weight"] = rng.random(shape[-1:]) * 3
    if case.get("sample_weight"):
        sw_shape = shape[:-1] if len(shape) >= 2 else shape
        kw["sample_weight"] = rng.random(sw_shape) * 2
    _check_fd(IMPLS_BCE[impl], x, t, reduction, kw, rng, per_element=True)
