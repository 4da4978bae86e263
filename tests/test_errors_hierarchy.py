"""The exception hierarchy: every input error is a NumxentError and the
built-in a caller expects; the PyTorch bridge falls back to PyTorch on
exactly those and lets anything else (MemoryError, a bug) through."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import numxent as nx
import numxent.errors as E

SRC = pathlib.Path(nx.__file__).parent
ERRORS = {
    "InvalidValueError": ValueError,
    "InvalidTypeError": TypeError,
    "LabelIndexError": IndexError,
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_each_class_subclasses_base_and_builtin(name):
    cls = getattr(E, name)
    assert issubclass(cls, E.NumxentError)
    assert issubclass(cls, ERRORS[name])
    assert getattr(nx, name) is cls
    assert name in nx.__all__ and name in E.__all__
    assert cls.__doc__


def test_base_is_exported_and_not_a_builtin_subclass():
    assert nx.NumxentError is E.NumxentError
    assert "NumxentError" in nx.__all__
    assert not issubclass(E.NumxentError, (ValueError, TypeError, IndexError))
    assert not issubclass(MemoryError, E.NumxentError)


X = np.zeros((3, 4))
Y = np.array([0, 1, 2])
CASES = [
    (E.InvalidValueError, lambda: nx.cross_entropy(X, Y, reduction="avg")),
    (E.InvalidValueError, lambda: nx.cross_entropy(X, Y, label_smoothing=2.0)),
    (E.InvalidTypeError, lambda: nx.cross_entropy(X, Y, label_smoothing="x")),
    (E.InvalidTypeError, lambda: nx.cross_entropy(X.astype(int), Y)),
    (E.InvalidTypeError, lambda: nx.cross_entropy(X, Y.astype(float))),
    (E.InvalidTypeError, lambda: nx.cross_entropy(X, Y, ignore_index=1.5)),
    (E.InvalidValueError, lambda: nx.cross_entropy(X, Y[:2])),
    (
        E.InvalidValueError,
        lambda: nx.cross_entropy(X, np.full((3, 4), 0.25), ignore_index=0),
    ),
    (E.InvalidValueError, lambda: nx.cross_entropy(X, Y, weight=-np.ones(4))),
    (E.InvalidValueError, lambda: nx.cross_entropy(X, Y, out=np.empty((3, 4)))),
    (
        E.InvalidTypeError,
        lambda: nx.cross_entropy(
            X, Y, return_grad=True, out=np.empty((3, 4), np.float32)
        ),
    ),
    (E.LabelIndexError, lambda: nx.cross_entropy(X, np.array([0, 4, 1]))),
    (E.LabelIndexError, lambda: nx.cross_entropy(X, np.array([0, -1, 1]))),
    (
        E.LabelIndexError,
        lambda: nx.cross_entropy(X, np.array([0, 2**64 - 1, 1], dtype=np.uint64)),
    ),
    # parallel-sized calls: the label scan of the parallel drivers
    (
        E.LabelIndexError,
        lambda: nx.cross_entropy(np.zeros((20000, 4)), np.r_[np.zeros(19999, int), 9]),
    ),
    (
        E.LabelIndexError,
        lambda: nx.cross_entropy(np.zeros((200, 300)), np.r_[np.zeros(199, int), 300]),
    ),
    (E.InvalidValueError, lambda: nx.binary_cross_entropy_with_logits(X, X[:2])),
    (
        E.InvalidValueError,
        lambda: nx.binary_cross_entropy_with_logits(X, X, pos_weight=np.ones(5)),
    ),
    (
        E.InvalidTypeError,
        lambda: nx.binary_cross_entropy_with_logits(X, X.astype(complex)),
    ),
    (E.InvalidValueError, lambda: nx.softmax(X, axis=2)),
    (E.InvalidTypeError, lambda: nx.logsumexp(X, axis=0.5)),
    (E.InvalidTypeError, lambda: nx.log_softmax(np.zeros(3, dtype=np.int32))),
]


@pytest.mark.parametrize("expected, call", CASES)
def test_bad_input_raises_its_numxent_class(expected, call):
    with pytest.raises(expected) as info:
        call()
    assert isinstance(info.value, E.NumxentError)
    assert type(info.value) is expected


# --------------------------------------------------------------------------
# the torch bridge catches NumxentError and nothing else
# --------------------------------------------------------------------------


@pytest.fixture
def torch_bridge():
    torch = pytest.importorskip("torch")
    nt = pytest.importorskip("numxent.torch")
    return torch, nt


def test_bridge_hands_numxent_rejections_to_torch(torch_bridge):
    torch, nt = torch_bridge
    x = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    # numxent rejects label 4; PyTorch raises its own error for it
    with (
        pytest.warns(nt.FallbackWarning, match="LabelIndexError"),
        pytest.raises(IndexError) as info,
    ):
        nt.cross_entropy(x, torch.tensor([0, 4, 1]))
    assert not isinstance(info.value, E.NumxentError)


@pytest.mark.parametrize(
    "exc", [MemoryError("no memory"), ValueError("a bug"), KeyError("a bug")]
)
@pytest.mark.parametrize("op", ["cross_entropy", "binary_cross_entropy_with_logits"])
def test_bridge_lets_other_errors_through(torch_bridge, monkeypatch, exc, op):
    torch, nt = torch_bridge
    import numxent._ops as _ops
    import numxent.functional as functional

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise exc

    monkeypatch.setattr(functional, op, broken)
    if op == "cross_entropy":
        # the bridge's lean entry for contiguous (N, C) calls with int64 labels
        monkeypatch.setattr(_ops, "ce_hard_checked", broken)
    x = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    t = (
        torch.tensor([0, 1, 2])
        if op == "cross_entropy"
        else torch.zeros(3, 4, dtype=torch.float64)
    )
    with pytest.raises(type(exc)) as info:
        getattr(nt, op)(x, t)
    assert info.value is exc
    assert calls == [1]


def test_bridge_set_pool_bytes_rejects_negative(torch_bridge):
    _, nt = torch_bridge
    with pytest.raises(E.InvalidValueError, match="nbytes"):
        nt.set_gradient_pool_bytes(-1)
