"""Checks shared by the numxent-vs-reference test modules (NumPy only)."""

from __future__ import annotations

import numpy as np


def assert_close(actual, expected, dtype, *, rtol=None, atol=None, err_msg=""):
    """rtol 1e-12 (float64) / 1e-5 (float32); atol scaled by the magnitude.

    NaN and inf must sit in the same places (``equal_nan``). ``err_msg`` names
    the case (for tests that loop over option combinations).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
    if dtype == np.float64:
        rtol = 1e-12 if rtol is None else rtol
        atol = 1e-14 * scale if atol is None else atol
    else:
        rtol = 1e-5 if rtol is None else rtol
        atol = 1e-6 * scale if atol is None else atol
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=err_msg
    )


def check_result(loss, grad, logits, reduction, lead):
    """numxent's return types: a scalar / an array of ``lead`` in logits' dtype."""
    dtype = np.asarray(logits).dtype
    if reduction == "none":
        assert isinstance(loss, np.ndarray)
        assert loss.shape == lead
    else:
        assert np.ndim(loss) == 0
    assert loss.dtype == dtype
    assert isinstance(grad, np.ndarray)
    assert grad.shape == np.shape(logits)
    assert grad.dtype == dtype


def hard_target(rng, lead, C, ignore_index=None, ignored=()):
    y = rng.integers(0, C, size=lead)
    flat = y.reshape(-1)
    for i in ignored:
        if i < flat.size:
            flat[i] = ignore_index
    return flat.reshape(lead)


def soft_target(rng, shape):
    t = rng.random(shape)
    t[t < 0.15] = 0.0  # some exact zeros
    return t / np.maximum(t.sum(axis=-1, keepdims=True), 1e-300)


def dense_soft_target(rng, shape):
    """Class probabilities with no exact zeros."""
    t = rng.random(shape)
    return t / t.sum(axis=-1, keepdims=True)


def hard_target_ignoring(rng, lead, C, ignore_index=None, n_ignored=0):
    """Class indices with ``n_ignored`` random positions set to ignore_index."""
    y = rng.integers(0, C, size=lead)
    if n_ignored:
        flat = y.reshape(-1)
        flat[rng.choice(flat.size, size=n_ignored, replace=False)] = ignore_index
    return y


BCE_SHAPES = [(6,), (4, 3), (2, 3, 4)]


def bce_weight(rng, kind, shape, dtype):
    """A BCE weight of the logits' shape ("full"), the last axis ("last") or
    the leading axes ("lead"); None for no weight."""
    if kind is None:
        return None
    wshape = {"full": shape, "last": shape[-1:], "lead": shape[:-1] + (1,)}[kind]
    return (rng.random(wshape) + 0.1).astype(dtype)


def to_torch_layout(a: np.ndarray) -> np.ndarray:
    """Class axis last (numxent) -> class axis 1 (PyTorch)."""
    return np.moveaxis(a, -1, 1) if a.ndim >= 2 else a


def from_torch_layout(a: np.ndarray) -> np.ndarray:
    """Class axis 1 (PyTorch) -> class axis last (numxent)."""
    return np.moveaxis(a, 1, -1) if a.ndim >= 2 else a


def ce_nonfinite_logits():
    """Eight rows of four classes, each with a non-finite case, and their
    hard labels."""
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [0.5, -1.0, 2.0, 0.1],  # finite
            [nan, 0.0, 1.0, 2.0],  # NaN elsewhere than the target
            [0.0, 1.0, inf, 2.0],  # +inf elsewhere than the target
            [0.0, inf, 1.0, 2.0],  # +inf at the target
            [0.0, -inf, 1.0, 2.0],  # -inf at the target
            [-inf, 1.0, 0.5, 2.0],  # -inf elsewhere
            [-inf, -inf, -inf, -inf],  # all -inf
            [1.0, 2.0, nan, nan],  # NaN at the target
        ]
    )
    y = np.array([2, 2, 1, 1, 1, 2, 0, 3])
    return x, y
