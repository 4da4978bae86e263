"""Sparse x dense products for the estimator's objective on CSR data.

Two serial kernels, each called by one of the objective's worker threads on
its own range of rows or columns (``nogil``: the threads run at once). They
replace SciPy's ``csr_matvecs`` / ``csc_matvecs`` because those hold the GIL:
two Python threads each calling one ran no faster than one thread calling
both (2 threads: 0.85-1.25 s of wall time and as much CPU time, against
0.89-1.0 s for one thread, 40 products of 20,000 rows x 30,000 features by
20 columns). On one thread they take about as long as SciPy's.

- :func:`csr_logits`: ``z = X[lo:hi] @ wt + b`` for a block of rows of a CSR
  matrix (``wt`` = ``W.T``, one row per feature);
- :func:`csc_gather`: ``out[j] = X[:, j].T @ g`` for a range of columns of
  the same matrix held as CSC, in float64 -- ``G.T @ X`` one feature at a
  time, each a sum over that column's entries in storage order, so the
  result does not depend on how the columns are shared out among threads.

Both read one row of a dense matrix per stored entry, at the entry's index:
rows scattered over a matrix larger than the caches (30,000 features x 20
classes in float64: 4.8 MB), with a chain of additions into ``acc`` that
keeps few of those reads in flight. The rows that the entry
:data:`PREFETCH_AHEAD` entries further on will read are prefetched: on the
benchmark's text-like matrix (40,000 x 30,000, 2.3 M entries, 20 classes,
thread CPU time, medians of 11, a loaded 2-core machine) the float64
logits took 28-32 ms instead of 38-62 ms (SciPy's ``X @ W.T``: 37-63 ms)
and the gradient 27-32 ms instead of 49-89 ms (SciPy's ``X.T @ G``: 49
ms); float32 21-23 ms instead of 25-38 ms (SciPy: 21-29 ms).

Nothing is allocated: ``acc`` is a scratch row of ``k`` elements.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._config import cached
from ._intrinsics import JIT, prefetch

#: Stored entries between the entry whose dense row is prefetched and the
#: entry being added (8 and 32 measured slower than 16 in float64).
PREFETCH_AHEAD = 16


@njit(inline="always")
def _prefetch_row(a, i, k, step):
    """Prefetch the cache lines of row ``i`` of the C-contiguous 2-D ``a``
    (``k`` elements a row, ``step`` elements a cache line)."""
    start = i * k
    for e in range(start, start + k, step):
        prefetch(a, e)
    prefetch(a, start + k - 1)


@cached
@njit(**JIT)
def csr_logits(indptr, indices, data, wt, b, lo, hi, z, acc):
    """``z[i - lo] = b + sum_p data[p] * wt[indices[p]]`` over the stored
    entries ``p`` of each row ``i`` in ``[lo, hi)``, in ``z``'s dtype."""
    k = wt.shape[1]
    step = max(1, 64 // wt.itemsize)
    end = indptr[hi]
    for i in range(lo, hi):
        for c in range(k):
            acc[c] = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            if p + PREFETCH_AHEAD < end:
                _prefetch_row(wt, indices[p + PREFETCH_AHEAD], k, step)
            v = data[p]
            j = indices[p]
            for c in range(k):
                acc[c] += v * wt[j, c]
        r = i - lo
        for c in range(k):
            z[r, c] = acc[c] + b[c]


@cached
@njit(**JIT)
def csc_gather(indptr, indices, data, g, lo, hi, out, acc):
    """``out[j] = sum_p data[p] * g[indices[p]]`` in float64 over the stored
    entries ``p`` of each column ``j`` in ``[lo, hi)`` of a CSC matrix."""
    k = g.shape[1]
    step = max(1, 64 // g.itemsize)
    end = indptr[hi]
    for j in range(lo, hi):
        for c in range(k):
            acc[c] = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            if p + PREFETCH_AHEAD < end:
                _prefetch_row(g, indices[p + PREFETCH_AHEAD], k, step)
            v = np.float64(data[p])
            i = indices[p]
            for c in range(k):
                acc[c] += v * g[i, c]
        for c in range(k):
            out[j, c] = acc[c]
