"""A row of all -inf logits has no finite max: every kernel shape gives the
NaN loss and gradient PyTorch gives (log_softmax of the row is NaN), and the
same bits on every call -- the wide hard-label rows once left such a row's
loss unwritten."""

from __future__ import annotations

import numpy as np
import pytest

import numxent as nx

# narrow (tile) and wide rows, both dtypes, serial and parallel sizes
SHAPES = [(6, 4), (6, 101), (6, 300), (400, 101), (400, 300)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", ["grad", "forward", "in place"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_hard_labels_all_neg_inf_row_is_nan(dtype, shape, mode, eps):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    x[3] = -np.inf
    y = rng.integers(0, shape[1], shape[0])
    kw = dict(reduction="none", label_smoothing=eps)
    if mode == "forward":
        loss = nx.cross_entropy(x, y, **kw)
    elif mode == "grad":
        loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    else:
        grad = x.copy()
        loss, _ = nx.cross_entropy(grad, y, return_grad=True, out=grad, **kw)
    assert np.isnan(loss[3])
    finite = np.r_[0:3, 4 : shape[0]]
    assert np.isfinite(loss[finite]).all()
    if mode != "forward":
        assert np.isnan(grad[3]).all()
        assert np.isfinite(grad[finite]).all()
    again = nx.cross_entropy(x, y, **kw)
    assert again.tobytes() == nx.cross_entropy(x, y, **kw).tobytes()
    np.testing.assert_array_equal(again, loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 4), (6, 300)], ids=str)
def test_soft_labels_and_rowwise_all_neg_inf_row(dtype, shape):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(dtype)
    x[3] = -np.inf
    t = np.full(shape, 1.0 / shape[1], dtype)
    loss, grad = nx.cross_entropy(x, t, reduction="none", return_grad=True)
    assert np.isnan(loss[3]) and np.isnan(grad[3]).all()
    assert np.isfinite(loss[[0, 1, 2, 4, 5]]).all()
    assert nx.logsumexp(x)[3] == -np.inf
    assert np.isnan(nx.log_softmax(x)[3]).all()
    assert np.isnan(nx.softmax(x)[3]).all()
