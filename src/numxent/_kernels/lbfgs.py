"""The estimator's L-BFGS memory products, on Numba's threads.

L-BFGS holds its ``m`` pairs as one ``2m x n`` float64 matrix ``P`` (rows:
the ``s`` then the ``y`` vectors). Each iteration needs three products over
it: its rows' dot products with the gradient, the direction as a
combination of its rows, and the dot products of its rows with the new pair
(the solver, ``numxent._lbfgs``, makes the first and the last in one pass,
three vectors at once). On problems of
10^5 to 10^6 parameters ``P`` (16-160 MB for ``m = 10``) is far larger than
the caches, so the three are memory-bound, and on one thread (BLAS is held
to one thread during a fit, see ``_objective.fit_threads``) they were most
of the solver's time. Here they are split over Numba's threads by blocks of
``BLOCK`` columns, with every sum in an order that does not depend on the
number of threads:

- :func:`memory_products`: ``out[i, k] = P[i] . V[k]``; each block's dot
  products (``dot``: 32 interleaved partial sums, four vectors) are kept
  per block, then the blocks are added in order;
- :func:`memory_combination`: ``d = -(gamma g + coef @ P)``; each element a
  sum over the rows in order (rows whose coefficient is zero skipped).

On 600,020 parameters (``m = 10``; Intel Xeon, 2 threads, best of 30):
the products with one vector 2.3 ms (BLAS's matrix-vector product on one
thread: 4.0 ms), with three 3.7-5.5 ms (BLAS's product with two: 12.9 ms),
the combination 3.1 ms (4.0 ms). On one thread: 0.8-2x BLAS's time.
"""

from __future__ import annotations

from numba import njit, prange

from .._config import cached
from ._intrinsics import JIT, dot, imin, unmanaged

#: Columns a task: a row's block (32 KiB in float64) stays in L1 while it is
#: multiplied by every row of ``V``.
BLOCK = 4096


@cached
@njit(parallel=True, **JIT)
def memory_products(P, V, parts, out):
    """``out[i, k] = P[i] . V[k]`` for every row ``i`` of ``P`` (R x n) and
    ``k`` of ``V`` (K x n), both C-contiguous float64; ``parts`` is scratch
    of ``(ceil(n / BLOCK), R, K)``."""
    n = P.shape[1]
    n_blocks = parts.shape[0]
    for b in prange(n_blocks):
        lo = b * BLOCK
        hi = imin(n, lo + BLOCK)
        for i in range(P.shape[0]):
            for k in range(V.shape[0]):
                parts[b, i, k] = dot(P, i * n + lo, V, k * n + lo, hi - lo)
    for i in range(P.shape[0]):
        for k in range(V.shape[0]):
            t = 0.0
            for b in range(n_blocks):
                t += parts[b, i, k]
            out[i, k] = t


@cached
@njit(parallel=True, **JIT)
def memory_combination(P, coef, g, gamma, d):
    """``d = -(gamma * g + sum_i coef[i] * P[i])``, the rows in order, those
    with ``coef[i] == 0`` skipped (``P``: R x n C-contiguous float64)."""
    n = P.shape[1]
    n_blocks = (n + BLOCK - 1) // BLOCK
    for b in prange(n_blocks):
        lo = b * BLOCK
        hi = imin(n, lo + BLOCK)
        db = unmanaged(d[lo:hi])
        gb = unmanaged(g[lo:hi])
        for j in range(hi - lo):
            db[j] = 0.0
        for i in range(P.shape[0]):
            c = coef[i]
            if c != 0.0:
                p = unmanaged(P[i, lo:hi])
                for j in range(hi - lo):
                    db[j] += c * p[j]
        for j in range(hi - lo):
            db[j] = -(db[j] + gamma * gb[j])
