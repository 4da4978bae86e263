"""Accuracy against PyTorch float64 (the issue's figures), and float32
binary cross-entropy in its tails against float64 NumPy (no PyTorch needed).

The full-size run (65,536 x 1,000) is opt-in (``pytest -m slow``); the default
run checks the same bounds on a smaller problem.
"""

import numpy as np
import pytest

import numxent as nx


def _torch_f64(x, y, **kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).requires_grad_()
    loss = F.cross_entropy(xt, torch.from_numpy(y.astype(np.int64)), **kw)
    loss.backward()
    return loss.item(), xt.grad.numpy()


def _check(n, c, seed):
    rng = np.random.default_rng(seed)
    x64 = rng.standard_normal((n, c)) * 3.0
    y = rng.integers(0, c, n)
    ref_loss, ref_grad = _torch_f64(x64, y, label_smoothing=0.1)

    loss64, grad64 = nx.cross_entropy(x64, y, label_smoothing=0.1, return_grad=True)
    assert abs(loss64 - ref_loss) <= 1e-12 * abs(ref_loss)
    np.testing.assert_allclose(grad64, ref_grad, rtol=1e-12, atol=1e-18)

    # float32: same values rounded to float32, reference from those values.
    x32 = x64.astype(np.float32)
    ref_loss32, ref_grad32 = _torch_f64(x32, y, label_smoothing=0.1)
    loss32, grad32 = nx.cross_entropy(x32, y, label_smoothing=0.1, return_grad=True)
    assert loss32.dtype == np.float32 and grad32.dtype == np.float32
    assert abs(float(loss32) - ref_loss32) <= 1e-6 * abs(ref_loss32)
    assert np.max(np.abs(grad32.astype(np.float64) - ref_grad32)) <= 1e-7
    # Relative to the gradient's scale: a few float32 ulps (exp values are
    # parked in the float32 gradient row between the passes).
    scale = np.max(np.abs(ref_grad32))
    assert np.max(np.abs(grad32.astype(np.float64) - ref_grad32)) <= 4e-7 * scale


def test_accuracy_small():
    _check(2048, 300, 0)


@pytest.mark.slow
def test_accuracy_65536x1000():
    _check(65536, 1000, 1)


def test_bce_tail_float32():
    x = np.array([-20.0, -40.0, 30.0, -88.0], dtype=np.float32)
    t = np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32)
    loss = nx.binary_cross_entropy_with_logits(x, t, reduction="none")
    exact = np.log1p(np.exp(-np.abs(x.astype(np.float64))))
    np.testing.assert_allclose(loss.astype(np.float64), exact, rtol=1e-6)
    assert loss[0] > 2.06e-9  # PyTorch float32 returns 0.0 here


@pytest.mark.parametrize("tv", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_bce_float32_elementwise_ulps(tv, pos_weight):
    """float32 BCE is computed in float32 arithmetic: a few ulp against a
    float64 NumPy evaluation of the same inputs, from the far tails (results
    down to float32's subnormals) to the centre.

    (PyTorch float64 is no reference in the tails: it returns 0.0 for
    log1p(exp(-33)) = 3.6e-15.)
    """
    x = np.linspace(-110, 110, 200_001).astype(np.float32)
    x = np.concatenate([x, np.float32([-1e-30, 1e-30, -0.0, 0.0])])
    t = np.full_like(x, tv)
    pwv = 1.0 if pos_weight is None else pos_weight
    pw = None if pos_weight is None else np.float32([pos_weight])
    loss, grad = nx.binary_cross_entropy_with_logits(
        x, t, pos_weight=pw, reduction="sum", return_grad=True
    )
    elem = nx.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
    x64 = x.astype(np.float64)
    ref_l = (
        (1 - tv) * np.maximum(x64, 0)
        + pwv * tv * np.maximum(-x64, 0)
        + (1 + (pwv - 1) * tv) * np.log1p(np.exp(-np.abs(x64)))
    )
    sig_pos = 1 / (1 + np.exp(-x64))
    sig_neg = 1 / (1 + np.exp(x64))
    ref_g = (1 - tv) * sig_pos - pwv * tv * sig_neg

    def ulp(v):
        return np.spacing(np.abs(v).astype(np.float32)).astype(np.float64)

    tiny = 2.0**-149  # float32's smallest subnormal: the tails' granularity
    err_l = np.abs(elem.astype(np.float64) - ref_l)
    assert np.all(err_l <= 4 * ulp(ref_l) + 2 * pwv * tiny)
    assert abs(float(loss) - ref_l.sum()) <= 1e-6 * ref_l.sum()
    # The gradient's two terms cancel where they meet (soft targets): there
    # the bound is a few ulp of the larger term, as for any float32
    # evaluation (PyTorch's included).
    term = np.maximum((1 - tv) * sig_pos, pwv * tv * sig_neg)
    err_g = np.abs(grad.astype(np.float64) - ref_g)
    assert np.all(err_g <= 4 * np.maximum(ulp(ref_g), ulp(term)) + 2 * pwv * tiny)
