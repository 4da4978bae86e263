"""numxent: fused cross-entropy loss-and-gradient kernels for CPUs.

>>> import numpy as np, numxent as nx
>>> logits = np.array([[3.0, 1.0, 0.2], [0.5, 2.0, 0.3]])
>>> loss, grad = nx.cross_entropy(logits, np.array([0, 1]), return_grad=True)
>>> round(float(loss), 7)
0.2598602
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # imported on first use (below): it brings SciPy's BLAS
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

# Names imported on first access (PEP 562), so that ``import numxent`` stays
# light: name -> (module relative to this package, attribute or None for the
# module itself). ``numxent.linear`` was an attribute once the package had
# imported it; it still is, on first use.
_LAZY = {
    "linear_cross_entropy": (".linear", "linear_cross_entropy"),
    "linear": (".linear", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later accesses skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
