"""The parallel-copy floor: the logits copied by every thread at once.

``np.copyto`` is one thread (glibc ``memcpy``, non-temporal stores for large
arrays). A fused pass on ``threads`` cores can do better than that, down to
what the cores together can move: these two copies of the same arrays, one
Numba ``prange`` task per 64 KiB, measure it -- :func:`copy_plain` with
ordinary stores (each destination line is read before it is written), and
:func:`copy_stream` with non-temporal stores (``numxent._kernels._vecmath.
stream_copy``, no read-for-ownership). The faster of the two is the report's
"copy floor".

Compiled on first use (a few seconds) into numxent's on-disk kernel cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import cached
from .._kernels._intrinsics import JIT, nt_fence
from .._kernels._vecmath import stream_copy

__all__ = ["copy_plain", "copy_stream"]

_TASK_BYTES = 1 << 16


@cached
@njit(parallel=True, **JIT)
def _copy_plain(src, dst, block):
    n = src.shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        for i in range(lo, min(lo + block, n)):
            dst[i] = src[i]


@cached
@njit(parallel=True, **JIT)
def _copy_stream(src, dst, block):
    n = src.shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        stream_copy(dst, lo, src, lo, min(block, n - lo))
        nt_fence()


def _flat(src: np.ndarray, dst: np.ndarray):
    if src.shape != dst.shape or src.dtype != dst.dtype:
        raise ValueError("src and dst must have the same shape and dtype")
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("src and dst must be C-contiguous")
    return src.reshape(-1), dst.reshape(-1), _TASK_BYTES // src.itemsize


def copy_plain(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = src`` on all of Numba's threads, ordinary stores.

    >>> a = np.arange(12.0).reshape(3, 4); b = np.empty_like(a)
    >>> copy_plain(a, b); bool((a == b).all())
    True
    """
    _copy_plain(*_flat(src, dst))


def copy_stream(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = src`` on all of Numba's threads, non-temporal stores.

    >>> a = np.arange(40, dtype=np.float32)[1:]; b = np.empty_like(a)
    >>> copy_stream(a, b); bool((a == b).all())
    True
    """
    _copy_stream(*_flat(src, dst))
