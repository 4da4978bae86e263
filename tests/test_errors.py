"""Bad input gets a clear error, and nothing is changed (SPEC §2).

Every bad input of SPEC §2 raises the stated exception, the message names the
offending argument, and no array handed to numxent -- ``out`` and in-place
``logits`` included -- is modified by a call, whether it raises or not.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import numxent as nx

VT = (ValueError, TypeError)
CE = nx.cross_entropy
BCE = nx.binary_cross_entropy_with_logits


def _word(name: str) -> str:
    """A regex matching ``name`` as a whole identifier.

    ``weight`` must not be satisfied by ``sample_weight`` or ``pos_weight``.
    """
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _x(shape, dtype=np.float64, seed=0):
    return _rng(seed).standard_normal(shape).astype(dtype)


def _y(leading, c, seed=1, dtype=np.int64):
    return _rng(seed).integers(0, c, size=leading).astype(dtype)


def _soft(shape, seed=2, dtype=np.float64):
    p = _rng(seed).random(shape) + 0.1
    return (p / p.sum(axis=-1, keepdims=True)).astype(dtype)


def _bin(shape, seed=3, dtype=np.float64):
    return _rng(seed).random(shape).astype(dtype)


class _Snapshot:
    """Bytes, dtype, shape, strides and writeability of every array in a call."""

    def __init__(self, *objs):
        self.items = []
        for obj in objs:
            values = obj.values() if isinstance(obj, dict) else obj
            for a in values:
                if isinstance(a, np.ndarray):
                    self.items.append(
                        (a, a.tobytes(), a.dtype, a.shape, a.strides, a.flags.writeable)
                    )

    def assert_unchanged(self):
        for a, data, dtype, shape, strides, writeable in self.items:
            assert a.dtype == dtype
            assert a.shape == shape
            assert a.strides == strides
            assert a.flags.writeable == writeable
            assert a.tobytes() == data, "an input array was modified"


# ---------------------------------------------------------------------------
# The table of bad calls: id -> builder returning (fn, args, kwargs, exc, name).
# Builders make fresh arrays on every call, so a test may write into them.
# ---------------------------------------------------------------------------


def _ce(x, y, exc, name, **kw):
    return CE, (x, y), kw, exc, name


def _bce(x, t, exc, name, **kw):
    return BCE, (x, t), kw, exc, name


def _fortran(shape, dtype=np.float64):
    return np.asfortranarray(np.zeros(shape, dtype))


def _strided(shape, dtype=np.float64):
    big = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
    return big[..., ::2]


def _readonly(shape, dtype=np.float64):
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


CE_BAD = {
    # shapes of target
    "ce-target-short": lambda: _ce(_x((6, 4)), _y(5, 4), VT, "target"),
    "ce-target-long": lambda: _ce(_x((6, 4)), _y(7, 4), VT, "target"),
    "ce-target-int-full-shape": lambda: _ce(_x((6, 4)), _y((6, 4), 4), VT, "target"),
    "ce-target-leading-swapped": lambda: _ce(
        _x((2, 3, 4)), _y((3, 2), 4), VT, "target"
    ),
    "ce-target-flattened-3d": lambda: _ce(_x((2, 3, 4)), _y(6, 4), VT, "target"),
    "ce-target-2d-for-unbatched": lambda: _ce(_x(4), _y((1,), 4), VT, "target"),
    "ce-soft-target-fewer-classes": lambda: _ce(
        _x((6, 4)), _soft((6, 3)), VT, "target"
    ),
    "ce-soft-target-more-classes": lambda: _ce(_x((6, 4)), _soft((6, 5)), VT, "target"),
    "ce-soft-target-wrong-rows": lambda: _ce(_x((6, 4)), _soft((5, 4)), VT, "target"),
    # floating "hard" targets of the leading shape
    "ce-float64-hard-target": lambda: _ce(
        _x((4, 3)), _y(4, 3).astype(np.float64), VT, "target"
    ),
    "ce-float32-hard-target": lambda: _ce(
        _x((4, 3), np.float32), _y(4, 3).astype(np.float32), VT, "target"
    ),
    "ce-float-hard-target-3d": lambda: _ce(
        _x((2, 3, 4)), _y((2, 3), 4).astype(np.float64), VT, "target"
    ),
    # class weights
    "ce-weight-short": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "weight", weight=np.ones(3)
    ),
    "ce-weight-long": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "weight", weight=np.ones(5)
    ),
    "ce-weight-2d": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "weight", weight=np.ones((1, 4))
    ),
    "ce-weight-negative": lambda: _ce(
        _x((6, 4)), _y(6, 4), ValueError, "weight", weight=np.array([1.0, -0.5, 1, 1])
    ),
    "ce-weight-nan": lambda: _ce(
        _x((6, 4)), _y(6, 4), ValueError, "weight", weight=np.array([1.0, np.nan, 1, 1])
    ),
    "ce-weight-inf": lambda: _ce(
        _x((6, 4)), _y(6, 4), ValueError, "weight", weight=np.array([1.0, 1, np.inf, 1])
    ),
    "ce-weight-neg-inf": lambda: _ce(
        _x((6, 4)), _y(6, 4), ValueError, "weight", weight=np.array([1, 1, 1, -np.inf])
    ),
    "ce-weight-negative-soft": lambda: _ce(
        _x((6, 4)),
        _soft((6, 4)),
        ValueError,
        "weight",
        weight=np.array([1.0, -1.0, 1, 1]),
    ),
    # sample weights
    "ce-sample-weight-short": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "sample_weight", sample_weight=np.ones(5)
    ),
    "ce-sample-weight-long": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "sample_weight", sample_weight=np.ones(7)
    ),
    "ce-sample-weight-logits-shape": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "sample_weight", sample_weight=np.ones((6, 4))
    ),
    "ce-sample-weight-3d-partial": lambda: _ce(
        _x((2, 3, 4)), _y((2, 3), 4), VT, "sample_weight", sample_weight=np.ones(2)
    ),
    "ce-sample-weight-soft-short": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), VT, "sample_weight", sample_weight=np.ones(4)
    ),
    "ce-sample-weight-negative": lambda: _ce(
        _x((6, 4)),
        _y(6, 4),
        ValueError,
        "sample_weight",
        sample_weight=np.array([1.0, 1, 1, -1e-3, 1, 1]),
    ),
    "ce-sample-weight-nan": lambda: _ce(
        _x((6, 4)),
        _y(6, 4),
        ValueError,
        "sample_weight",
        sample_weight=np.array([1.0, 1, 1, np.nan, 1, 1]),
    ),
    "ce-sample-weight-inf": lambda: _ce(
        _x((6, 4)),
        _y(6, 4),
        ValueError,
        "sample_weight",
        sample_weight=np.array([1.0, 1, 1, 1, 1, np.inf]),
    ),
    "ce-sample-weight-nan-soft": lambda: _ce(
        _x((6, 4)),
        _soft((6, 4)),
        ValueError,
        "sample_weight",
        sample_weight=np.array([np.nan, 1, 1, 1, 1, 1]),
    ),
    # dimensionality, class count, dtype of logits
    "ce-0d-logits": lambda: _ce(np.array(1.5), np.array(0), VT, "logits"),
    "ce-zero-classes": lambda: _ce(
        np.zeros((4, 0)), np.zeros(4, np.int64), VT, "logits"
    ),
    "ce-zero-classes-soft": lambda: _ce(
        np.zeros((4, 0)), np.zeros((4, 0)), VT, "logits"
    ),
    "ce-zero-classes-empty-batch": lambda: _ce(
        np.zeros((0, 0)), np.zeros(0, np.int64), VT, "logits"
    ),
    "ce-int64-logits": lambda: _ce(
        np.arange(12, dtype=np.int64).reshape(4, 3), _y(4, 3), TypeError, "logits"
    ),
    "ce-int32-logits": lambda: _ce(
        np.arange(12, dtype=np.int32).reshape(4, 3), _y(4, 3), TypeError, "logits"
    ),
    "ce-bool-logits": lambda: _ce(np.ones((4, 3), bool), _y(4, 3), TypeError, "logits"),
    "ce-complex-logits": lambda: _ce(
        _x((4, 3)).astype(np.complex128), _y(4, 3), TypeError, "logits"
    ),
    "ce-complex64-logits-soft": lambda: _ce(
        _x((4, 3)).astype(np.complex64), _soft((4, 3)), TypeError, "logits"
    ),
    # reduction, label smoothing
    "ce-reduction-avg": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "reduction", reduction="avg"
    ),
    "ce-reduction-batchmean": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "reduction", reduction="batchmean"
    ),
    "ce-reduction-none-object": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "reduction", reduction=None
    ),
    "ce-ignore-index-float": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "ignore_index", ignore_index=1.5
    ),
    "ce-weight-0d": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "weight", weight=np.array(1.0)
    ),
    "ce-reduction-empty": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "reduction", reduction=""
    ),
    "ce-reduction-soft": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), VT, "reduction", reduction="elementwise_mean"
    ),
    "ce-smoothing-negative": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "label_smoothing", label_smoothing=-0.1
    ),
    "ce-smoothing-above-one": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "label_smoothing", label_smoothing=1.5
    ),
    "ce-smoothing-nan": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "label_smoothing", label_smoothing=float("nan")
    ),
    "ce-smoothing-inf": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "label_smoothing", label_smoothing=float("inf")
    ),
    "ce-smoothing-nan-soft": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), VT, "label_smoothing", label_smoothing=float("nan")
    ),
    # ignore_index with soft labels
    "ce-soft-ignore-index-0": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), ValueError, "ignore_index", ignore_index=0
    ),
    "ce-soft-ignore-index-3": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), ValueError, "ignore_index", ignore_index=3
    ),
    "ce-soft-ignore-index-255": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), ValueError, "ignore_index", ignore_index=255
    ),
    # out
    "ce-out-without-return-grad": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", out=np.zeros((6, 4))
    ),
    "ce-out-without-return-grad-soft": lambda: _ce(
        _x((6, 4)), _soft((6, 4)), VT, "out", out=np.zeros((6, 4)), reduction="none"
    ),
    "ce-out-wrong-shape": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", return_grad=True, out=np.zeros((6, 3))
    ),
    "ce-out-transposed-shape": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", return_grad=True, out=np.zeros((4, 6))
    ),
    "ce-out-flat": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", return_grad=True, out=np.zeros(24)
    ),
    "ce-out-3d-flattened": lambda: _ce(
        _x((2, 3, 4)), _y((2, 3), 4), VT, "out", return_grad=True, out=np.zeros((6, 4))
    ),
    "ce-out-float32-for-float64": lambda: _ce(
        _x((6, 4)),
        _y(6, 4),
        VT,
        "out",
        return_grad=True,
        out=np.zeros((6, 4), np.float32),
    ),
    "ce-out-float64-for-float32": lambda: _ce(
        _x((6, 4), np.float32),
        _y(6, 4),
        VT,
        "out",
        return_grad=True,
        out=np.zeros((6, 4)),
    ),
    "ce-out-float32-for-float16": lambda: _ce(
        _x((6, 4), np.float16),
        _y(6, 4),
        VT,
        "out",
        return_grad=True,
        out=np.zeros((6, 4), np.float32),
    ),
    "ce-out-int": lambda: _ce(
        _x((6, 4)),
        _y(6, 4),
        VT,
        "out",
        return_grad=True,
        out=np.zeros((6, 4), np.int64),
    ),
    "ce-out-byteswapped": lambda: _ce(
        _x((6, 4)),
        _y(6, 4),
        VT,
        "out",
        return_grad=True,
        out=np.zeros((6, 4), np.dtype(np.float64).newbyteorder()),
    ),
    "ce-out-fortran": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", return_grad=True, out=_fortran((6, 4))
    ),
    "ce-out-strided": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", return_grad=True, out=_strided((6, 4))
    ),
    "ce-out-readonly": lambda: _ce(
        _x((6, 4)), _y(6, 4), VT, "out", return_grad=True, out=_readonly((6, 4))
    ),
    "ce-out-readonly-soft": lambda: _ce(
        _x((6, 4)),
        _soft((6, 4)),
        VT,
        "out",
        return_grad=True,
        reduction="sum",
        out=_readonly((6, 4)),
    ),
    "ce-out-list": lambda: _ce(
        _x((2, 2)), _y(2, 2), VT, "out", return_grad=True, out=[[0.0, 0.0], [0.0, 0.0]]
    ),
}


def _bce_x():
    return _x((6, 4))


BCE_BAD = {
    "bce-target-fewer-columns": lambda: _bce(_bce_x(), _bin((6, 3)), VT, "target"),
    "bce-target-transposed": lambda: _bce(_bce_x(), _bin((4, 6)), VT, "target"),
    "bce-target-leading-only": lambda: _bce(_bce_x(), _bin(6), VT, "target"),
    "bce-target-flat": lambda: _bce(_bce_x(), _bin(24), VT, "target"),
    "bce-target-1d-long": lambda: _bce(_x(5), _bin(6), VT, "target"),
    "bce-target-complex": lambda: _bce(
        _bce_x(), _bin((6, 4)).astype(np.complex128), VT, "target"
    ),
    "bce-int-logits": lambda: _bce(
        np.arange(24, dtype=np.int64).reshape(6, 4), _bin((6, 4)), TypeError, "logits"
    ),
    "bce-bool-logits": lambda: _bce(
        np.ones((6, 4), bool), _bin((6, 4)), TypeError, "logits"
    ),
    "bce-complex-logits": lambda: _bce(
        _bce_x().astype(np.complex128), _bin((6, 4)), TypeError, "logits"
    ),
    "bce-weight-not-broadcastable": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "weight", weight=np.ones(3)
    ),
    "bce-weight-leading-length": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "weight", weight=np.ones(6)
    ),
    "bce-weight-wrong-rows": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "weight", weight=np.ones((5, 4))
    ),
    "bce-weight-negative": lambda: _bce(
        _bce_x(), _bin((6, 4)), ValueError, "weight", weight=np.array([1.0, 1, -2, 1])
    ),
    "bce-weight-nan": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "weight",
        weight=np.array([1.0, np.nan, 1, 1]),
    ),
    "bce-weight-inf-full": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "weight",
        weight=np.where(np.eye(6, 4) > 0, np.inf, 1.0),
    ),
    "bce-pos-weight-short": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "pos_weight", pos_weight=np.ones(3)
    ),
    "bce-pos-weight-leading-length": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "pos_weight", pos_weight=np.ones(6)
    ),
    "bce-pos-weight-negative": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "pos_weight",
        pos_weight=np.array([1.0, 1, 1, -1]),
    ),
    "bce-pos-weight-nan": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "pos_weight",
        pos_weight=np.array([np.nan, 1, 1, 1]),
    ),
    "bce-pos-weight-inf": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "pos_weight",
        pos_weight=np.array([1, np.inf, 1, 1]),
    ),
    "bce-sample-weight-short": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "sample_weight", sample_weight=np.ones(5)
    ),
    "bce-sample-weight-class-length": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "sample_weight", sample_weight=np.ones(4)
    ),
    "bce-sample-weight-1d-logits": lambda: _bce(
        _x(5), _bin(5), VT, "sample_weight", sample_weight=np.ones(4)
    ),
    "bce-sample-weight-negative": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "sample_weight",
        sample_weight=np.array([1.0, 1, 1, 1, 1, -1]),
    ),
    "bce-sample-weight-nan": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "sample_weight",
        sample_weight=np.array([1.0, np.nan, 1, 1, 1, 1]),
    ),
    "bce-sample-weight-inf": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        ValueError,
        "sample_weight",
        sample_weight=np.array([1.0, 1, 1, 1, np.inf, 1]),
    ),
    "bce-reduction": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "reduction", reduction="batchmean"
    ),
    "bce-out-without-return-grad": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "out", out=np.zeros((6, 4))
    ),
    "bce-out-wrong-shape": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "out", return_grad=True, out=np.zeros((6, 3))
    ),
    "bce-out-wrong-dtype": lambda: _bce(
        _bce_x(),
        _bin((6, 4)),
        VT,
        "out",
        return_grad=True,
        out=np.zeros((6, 4), np.float32),
    ),
    "bce-out-fortran": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "out", return_grad=True, out=_fortran((6, 4))
    ),
    "bce-out-strided": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "out", return_grad=True, out=_strided((6, 4))
    ),
    "bce-out-readonly": lambda: _bce(
        _bce_x(), _bin((6, 4)), VT, "out", return_grad=True, out=_readonly((6, 4))
    ),
}


def _bad_label(shape, pos, value, dtype=np.int64, xdtype=np.float64):
    y = _y(shape[:-1], shape[-1], dtype=dtype)
    y[pos] = value
    return _x(shape, xdtype), y


LABEL_BAD = {
    "ce-label-negative": lambda: _ce(*_bad_label((6, 4), 3, -1), IndexError, "target"),
    "ce-label-equal-c-f32": lambda: _ce(
        *_bad_label((6, 4), 5, 4, xdtype=np.float32), IndexError, "target"
    ),
    "ce-label-3d": lambda: _ce(*_bad_label((2, 3, 4), (1, 1), 9), IndexError, "target"),
    "ce-label-uint64-wraps-to-ignore": lambda: _ce(
        *_bad_label((6, 4), 2, 2**64 - 100, np.uint64), IndexError, "target"
    ),
    "ce-label-smoothing-weighted": lambda: _ce(
        *_bad_label((6, 4), 0, -2),
        IndexError,
        "target",
        label_smoothing=0.1,
        weight=np.ones(4),
        sample_weight=np.ones(6),
    ),
    "ce-label-none": lambda: _ce(
        *_bad_label((6, 4), 5, 7), IndexError, "target", reduction="none"
    ),
    "ce-label-float16": lambda: _ce(
        *_bad_label((6, 4), 1, 4, xdtype=np.float16), IndexError, "target"
    ),
    # big enough for the parallel kernels; the bad label is in the last row
    "ce-label-large-batch": lambda: _ce(
        *_bad_label((40_000, 3), 39_999, 3), IndexError, "target"
    ),
    "ce-label-large-batch-sum": lambda: _ce(
        *_bad_label((40_000, 3), 20_000, -5, xdtype=np.float32),
        IndexError,
        "target",
        reduction="sum",
    ),
    "ce-unbatched-label": lambda: _ce(_x(4), np.array(4), IndexError, "target"),
}

BAD = {**CE_BAD, **LABEL_BAD, **BCE_BAD}


def _raises(exc, name):
    return pytest.raises(exc, match=_word(name))


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_raises_naming_argument(case):
    fn, args, kwargs, exc, name = BAD[case]()
    snap = _Snapshot(args, kwargs)
    with _raises(exc, name):
        fn(*args, **kwargs)
    snap.assert_unchanged()


def _can_take_out(args, kwargs):
    x = args[0]
    return (
        "out" not in kwargs
        and isinstance(x, np.ndarray)
        and x.ndim >= 1
        and x.dtype.kind == "f"
    )


OUT_CASES = [c for c in BAD if _can_take_out(*BAD[c]()[1:3])]


@pytest.mark.parametrize("case", OUT_CASES, ids=OUT_CASES)
def test_bad_input_leaves_out_untouched(case):
    """All checks run before anything is written to ``out``."""
    fn, args, kwargs, exc, _ = BAD[case]()
    out = np.full(args[0].shape, 7.25, args[0].dtype)
    kwargs = {**kwargs, "return_grad": True, "out": out}
    snap = _Snapshot(args, kwargs)
    with pytest.raises(exc):
        fn(*args, **kwargs)
    snap.assert_unchanged()
    assert np.all(out == 7.25)


@pytest.mark.parametrize("case", OUT_CASES, ids=OUT_CASES)
def test_bad_input_leaves_inplace_logits_untouched(case):
    """``out=logits`` and a failing check: the logits keep every bit."""
    fn, args, kwargs, exc, _ = BAD[case]()
    x = args[0]
    kwargs = {**kwargs, "return_grad": True, "out": x}
    snap = _Snapshot(args, kwargs)
    with pytest.raises(exc):
        fn(*args, **kwargs)
    snap.assert_unchanged()


def _filled_fortran():
    return np.asfortranarray(_x((6, 4)))


def _filled_readonly():
    a = _x((6, 4))
    a.flags.writeable = False
    return a


def _filled_strided():
    a = _strided((6, 4))
    a[...] = _x((6, 4))
    return a


@pytest.mark.parametrize("fn", [CE, BCE], ids=["ce", "bce"])
@pytest.mark.parametrize(
    "make_logits",
    [_filled_fortran, _filled_readonly, _filled_strided],
    ids=["fortran", "readonly", "strided"],
)
def test_unusable_inplace_logits_rejected_untouched(fn, make_logits):
    """``out=logits`` where the logits cannot take the gradient is an error."""
    x = make_logits()
    t = _y(6, 4) if fn is CE else _bin((6, 4))
    snap = _Snapshot([x, t])
    with _raises(VT, "out"):
        fn(x, t, return_grad=True, out=x)
    snap.assert_unchanged()


# ---------------------------------------------------------------------------
# Hard labels outside [0, C)
# ---------------------------------------------------------------------------


def _assert_index_error(x, y, value, position, **kwargs):
    """IndexError naming ``target``, the bad value and its position."""
    snap = _Snapshot([x, y], kwargs)
    with pytest.raises(IndexError) as info:
        CE(x, y, **kwargs)
    msg = str(info.value)
    assert re.search(_word("target"), msg), msg
    assert re.search(rf"(?<![0-9]){re.escape(str(value))}(?![0-9])", msg), msg
    if isinstance(position, tuple):
        inner = r",\s*".join(str(p) for p in position)
        assert re.search(rf"[\(\[]{inner}[\)\]]", msg), msg
    else:
        assert re.search(rf"(?<![0-9]){position}(?![0-9])", msg), msg
    snap.assert_unchanged()


@pytest.mark.parametrize("bad", [-1, -2, -101, -99, 5, 6, 1000, 2**40])
def test_label_out_of_range(bad):
    x = _x((20, 5))
    y = _y(20, 5)
    y[13] = bad
    _assert_index_error(x, y, bad, 13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight": np.array([1.0, 2.0, 0.5, 1.0, 3.0])},
        {"sample_weight": np.linspace(0.5, 2.0, 20)},
        {"label_smoothing": 0.2},
        {"ignore_index": 2},
    ],
    ids=["plain", "weight", "sample_weight", "smoothing", "ignore2"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_out_of_range_every_path(reduction, return_grad, options, dtype):
    x = _x((20, 5), dtype)
    y = _y(20, 5)
    y[17] = -3
    _assert_index_error(
        x, y, -3, 17, reduction=reduction, return_grad=return_grad, **options
    )


def test_label_equal_to_num_classes():
    x = _x((10, 7))
    y = _y(10, 7)
    y[4] = 7
    _assert_index_error(x, y, 7, 4)


def test_label_position_in_leading_shape():
    x = _x((2, 3, 5))
    y = _y((2, 3), 5)
    y[1, 2] = -7
    _assert_index_error(x, y, -7, (1, 2))


def test_first_bad_label_is_named():
    x = _x((30, 5))
    y = _y(30, 5)
    y[11] = 71
    y[23] = 93
    _assert_index_error(x, y, 71, 11)


def test_first_bad_label_is_named_large_batch():
    """The parallel path reports the first bad label too, not any bad one."""
    x = np.zeros((40_000, 3))
    y = _y(40_000, 3)
    y[39_000] = 55
    y[30_001] = 77
    y[20_003] = -9
    _assert_index_error(x, y, -9, 20_003)


def test_label_error_3d_first_position():
    x = _x((3, 4, 6))
    y = _y((3, 4), 6)
    y[2, 3] = 6
    y[1, 0] = 9
    _assert_index_error(x, y, 9, (1, 0))


def test_unbatched_label_out_of_range():
    x = _x(5)
    snap = _Snapshot([x])
    with pytest.raises(IndexError, match=r"(?<![0-9])5(?![0-9])"):
        CE(x, np.array(5))
    with pytest.raises(IndexError, match=r"-1"):
        CE(x, np.array(-1), return_grad=True)
    snap.assert_unchanged()


@pytest.mark.parametrize(
    "value", [2**63, 2**63 + 5, 2**64 - 1], ids=["2**63", "2**63+5", "2**64-1"]
)
def test_uint64_labels_above_int64_range(value):
    x = _x((8, 4))
    y = _y(8, 4, dtype=np.uint64)
    y[6] = value
    _assert_index_error(x, y, value, 6)


def test_uint64_label_that_wraps_to_ignore_index():
    """2**64 - 100 is not -100: it is a bad label, not an ignored one."""
    x = _x((8, 4))
    y = _y(8, 4, dtype=np.uint64)
    y[5] = 2**64 - 100
    _assert_index_error(x, y, 2**64 - 100, 5)


def test_uint8_label_that_wraps_to_ignore_index():
    """-100 as uint8 is 156; a uint8 label 156 is out of range, not ignored."""
    x = _x((8, 4))
    y = _y(8, 4, dtype=np.uint8)
    y[2] = 156
    _assert_index_error(x, y, 156, 2)


def test_default_ignore_value_invalid_with_custom_ignore_index():
    x = _x((8, 4))
    y = _y(8, 4)
    y[3] = -100
    _assert_index_error(x, y, -100, 3, ignore_index=255)


def test_ignore_index_out_of_label_dtype_range_matches_nothing():
    """ignore_index=300 with uint8 labels: 300 % 256 == 44 is still a bad label."""
    x = _x((8, 4))
    y = _y(8, 4, dtype=np.uint8)
    y[1] = 44
    _assert_index_error(x, y, 44, 1, ignore_index=300)


@pytest.mark.parametrize(
    ("label_dtype", "ignore_index"),
    [
        (np.uint8, 255),
        (np.int8, -100),
        (np.int64, -100),
        (np.int16, -1),
        (np.int32, 4),
        (np.uint16, 1000),
        (np.uint64, 9),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_label_equal_to_ignore_index_is_fine(label_dtype, ignore_index, reduction):
    x = _x((9, 4))
    y = _y(9, 4).astype(label_dtype)
    ignored = np.array([1, 4, 5])
    y[ignored] = ignore_index
    keep = np.setdiff1d(np.arange(9), ignored)
    snap = _Snapshot([x, y])
    loss, grad = CE(
        x, y, ignore_index=ignore_index, reduction=reduction, return_grad=True
    )
    snap.assert_unchanged()
    ref_loss, ref_grad = CE(
        x[keep], y[keep].astype(np.int64), reduction=reduction, return_grad=True
    )
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad[keep], ref_grad, rtol=1e-12, atol=1e-15)
    assert np.all(grad[ignored] == 0)


@pytest.mark.parametrize("ignore_index", [-100, -1, -5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_labels_accept_negative_ignore_index(ignore_index, reduction):
    x = _x((6, 4))
    p = _soft((6, 4))
    snap = _Snapshot([x, p])
    loss, grad = CE(
        x, p, ignore_index=ignore_index, reduction=reduction, return_grad=True
    )
    ref_loss, ref_grad = CE(x, p, reduction=reduction, return_grad=True)
    snap.assert_unchanged()
    np.testing.assert_array_equal(loss, ref_loss)
    np.testing.assert_array_equal(grad, ref_grad)


# ---------------------------------------------------------------------------
# Calls that succeed do not modify their inputs either.
# ---------------------------------------------------------------------------


def _with_nan(a):
    a = a.copy()
    a.flat[3] = np.nan
    a.flat[7] = np.inf
    a.flat[8] = -np.inf
    return a


GOOD = {
    "ce-hard": lambda: (CE, (_x((6, 4)), _y(6, 4)), {}),
    "ce-hard-all-options": lambda: (
        CE,
        (_x((6, 4), np.float32), _y(6, 4, dtype=np.int32)),
        {
            "weight": np.array([1.0, 0.5, 2.0, 0.0]),
            "sample_weight": np.linspace(0, 1, 6),
            "label_smoothing": 0.3,
            "reduction": "sum",
            "return_grad": True,
        },
    ),
    "ce-hard-ignored-garbage-rows": lambda: (
        CE,
        (_with_nan(_x((6, 4))), np.array([0, -100, -100, 3, 2, 1])),
        {"return_grad": True},
    ),
    "ce-hard-3d-none": lambda: (
        CE,
        (_x((2, 3, 4)), _y((2, 3), 4, dtype=np.uint8)),
        {"reduction": "none", "return_grad": True},
    ),
    "ce-soft": lambda: (
        CE,
        (_x((6, 4)), _soft((6, 4))),
        {"return_grad": True, "label_smoothing": 0.1},
    ),
    "ce-soft-nan-logits": lambda: (
        CE,
        (_with_nan(_x((6, 4))), _soft((6, 4))),
        {"return_grad": True, "reduction": "none"},
    ),
    "ce-float16": lambda: (
        CE,
        (_x((6, 4), np.float16), _y(6, 4)),
        {"return_grad": True},
    ),
    "ce-unbatched": lambda: (CE, (_x(4), np.array(2)), {"return_grad": True}),
    "ce-out": lambda: (
        CE,
        (_x((6, 4)), _y(6, 4)),
        {"return_grad": True, "out": np.empty((6, 4))},
    ),
    "ce-big": lambda: (
        CE,
        (_x((5000, 10), np.float32), _y(5000, 10)),
        {"return_grad": True, "weight": np.arange(1.0, 11.0)},
    ),
    "bce": lambda: (
        BCE,
        (_x((6, 4)), _bin((6, 4))),
        {
            "weight": np.linspace(0.1, 1, 4),
            "pos_weight": np.array([1.0, 2, 3, 4]),
            "sample_weight": np.linspace(1, 2, 6),
            "return_grad": True,
        },
    ),
    "bce-int-target": lambda: (
        BCE,
        (_x((6, 4), np.float32), (_bin((6, 4)) > 0.5).astype(np.int64)),
        {"return_grad": True, "reduction": "none"},
    ),
    "bce-bool-target-nan": lambda: (
        BCE,
        (_with_nan(_x((6, 4))), _bin((6, 4)) > 0.5),
        {"return_grad": True, "reduction": "sum"},
    ),
    "bce-big": lambda: (
        BCE,
        (_x((500, 100)), _bin((500, 100))),
        {"return_grad": True},
    ),
    "logsumexp": lambda: (nx.logsumexp, (_with_nan(_x((6, 4))),), {}),
    "log_softmax": lambda: (nx.log_softmax, (_x((6, 4)),), {}),
    "softmax": lambda: (nx.softmax, (_x((3, 4, 5), np.float32),), {}),
    "softmax-axis0": lambda: (nx.softmax, (_x((6, 4)),), {"axis": 0}),
    "softmax-big": lambda: (nx.softmax, (_x((500, 100)),), {}),
}


@pytest.mark.parametrize("case", list(GOOD), ids=list(GOOD))
def test_successful_call_leaves_inputs_unchanged(case):
    fn, args, kwargs = GOOD[case]()
    inputs = {k: v for k, v in kwargs.items() if k != "out"}
    snap = _Snapshot(args, inputs)
    fn(*args, **kwargs)
    snap.assert_unchanged()
