"""numxent: fused cross-entropy loss-and-gradient kernels for CPUs.

>>> import numpy as np, numxent as nx
>>> logits = np.array([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]])
>>> loss, grad = nx.cross_entropy(logits, np.array([0, 1]), return_grad=True)
>>> round(float(loss), 7)
0.2598602
"""

from ._config import CacheWarning, threading_layer
from ._version import __version__
from .errors import InvalidTypeError, InvalidValueError, LabelIndexError, NumxentError
from .functional import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    logsumexp,
    softmax,
)
from .linear import linear_cross_entropy

__all__ = [
    "CacheWarning",
    "InvalidTypeError",
    "InvalidValueError",
    "LabelIndexError",
    "NumxentError",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "softmax",
    "threading_layer",
    "__version__",
]
