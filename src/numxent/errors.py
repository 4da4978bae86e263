"""The exceptions numxent raises for bad input.

Every error a public function raises because of its arguments is an instance
of :class:`NumxentError` and also of the built-in exception a caller would
expect (``ValueError``, ``TypeError`` or ``IndexError``), so both
``except ValueError`` and ``except numxent.NumxentError`` work. Anything else
that escapes a call -- ``MemoryError``, ``KeyboardInterrupt``, a bug -- is not
a ``NumxentError``, which lets a caller (the PyTorch bridge, for one) catch
exactly "the input was bad" and nothing more.

>>> import numpy as np, numxent as nx
>>> try:
...     nx.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
... except nx.LabelIndexError as exc:
...     isinstance(exc, IndexError)
True
"""

from __future__ import annotations

__all__ = ["NumxentError", "InvalidValueError", "InvalidTypeError", "LabelIndexError"]


class NumxentError(Exception):
    """Base class: the input was bad, and nothing was written.

    A call that raises it leaves ``out`` (and in-place logits) untouched.
    """


class InvalidValueError(NumxentError, ValueError):
    """An argument has the right type but a wrong value: a shape that does not
    match, an unknown ``reduction``, a ``label_smoothing`` outside [0, 1], a
    negative or non-finite weight, an ``axis`` out of range, an ``out`` that
    is not C-contiguous or not writeable."""


class InvalidTypeError(NumxentError, TypeError):
    """An argument has the wrong type or dtype: non-floating logits, a
    non-integer ``ignore_index`` or ``axis``, floating class indices, an
    ``out`` that is not an ndarray of the logits' dtype."""


class LabelIndexError(NumxentError, IndexError):
    """A hard label lies outside ``[0, n_classes)`` and is not
    ``ignore_index``; the message gives its value and position."""
