"""The estimator's objective on a SciPy sparse ``X``: the loss and gradient of
:class:`numxent._objective.Objective`, evaluated on CSR row blocks.

One evaluation runs in two phases on the fit's worker threads:

1. **row blocks** of the CSR matrix (a fixed size, as on dense data): the
   block's logits ``Z_b = X_b @ W.T + b`` (:func:`csr_logits`), the fused
   ``reduction="sum"`` loss overwriting them with their gradient ``G_b``
   (``out=Z_b``), the block's loss and ``sum_i G_b[i]`` (the intercept's
   gradient) kept per block;
2. **column ranges** of the same matrix held as CSC: ``G.T @ X`` one feature
   at a time (:func:`csc_gather`), each feature's sum over its own entries in
   storage order.

Every sum has a fixed order -- per block, then the blocks in order; per
feature, its entries in order -- so the result does not depend on the number
of threads. Accumulating ``G_b.T @ X_b`` block by block instead, as on dense
data, needs one partial gradient of ``n_classes x n_features`` float64 per
group of blocks, zeroed and added up every evaluation; here the gradient is
written once. The cost: a CSC copy of ``X`` (built once per fit) and the
gradient of every row kept until phase 2 (``n_samples x n_classes`` in X's
dtype, where the dense objective keeps one block per thread).

The products are numxent kernels rather than SciPy's because SciPy's sparse
products hold the GIL: two threads each calling one ran no faster than one
thread calling both.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import nullcontext

import numpy as np

from ._kernels.sparse import csc_gather, csr_logits
from ._objective import BLOCK_ELEMENTS, Objective, one_numba_thread
from .functional import binary_cross_entropy_with_logits, cross_entropy

#: Column ranges per worker in phase 2, cut to hold equal numbers of entries
#: (the result does not depend on the cut).
RANGES_PER_WORKER = 8


def as_csr_csc(X):
    """``X`` (CSR or CSC, float32 or float64) as a CSR and a CSC matrix with
    one index dtype each: one of them is ``X`` itself, the other a copy."""
    X = X.tocsr() if X.format not in ("csr", "csc") else X
    csr = X if X.format == "csr" else X.tocsr()
    csc = X if X.format == "csc" else X.tocsc()
    return csr, csc


def _index_arrays(A):
    """``(indptr, indices, data)`` of a compressed matrix, the index arrays
    sharing one dtype (SciPy may give them different ones)."""
    dt = np.promote_types(A.indptr.dtype, A.indices.dtype)
    return (A.indptr.astype(dt, copy=False), A.indices.astype(dt, copy=False),
            A.data)  # fmt: skip


class _Tasks:
    """Tasks ``0 .. n - 1`` handed out in order to whichever thread asks."""

    def __init__(self, task, n: int):
        self.task, self.n = task, n
        self.taken = self.done = 0
        self.failed: Future = Future()  # holds the first task's exception
        self.cond = threading.Condition()

    def work(self, worker: int) -> None:
        while True:
            with self.cond:
                t = self.taken
                if t >= self.n or self.failed.done():
                    return
                self.taken += 1
            try:
                self.task(worker, t)
            except BaseException as exc:  # raised again by wait()
                with self.cond:
                    if not self.failed.done():
                        self.failed.set_exception(exc)
            with self.cond:
                self.done += 1
                self.cond.notify_all()

    def wait(self) -> None:
        """Until every task taken is done (one not yet taken never will be:
        this thread ran out of tasks); raises a task's exception."""
        with self.cond:
            self.cond.wait_for(lambda: self.done == self.taken)
        if self.failed.done():
            self.failed.result()


class SparseObjective(Objective):
    """``Objective`` for a SciPy sparse ``X``: the same ``theta``, the same
    value and gradient (up to rounding), the same call (inherited: only the
    unscaled sums, ``sums``, are its own)."""

    def __init__(
        self, X, target, sw, kind, n_out, fit_intercept, l2, eps, pool, n_threads
    ):
        csr, csc = as_csr_csc(X)
        self.csr, self.csc = _index_arrays(csr), _index_arrays(csc)
        self.target, self.sw, self.kind = target, sw, kind
        self.n_out, self.fit_intercept = n_out, fit_intercept
        self.l2, self.eps = l2, eps
        n, f = X.shape
        dtype = csr.data.dtype
        self.n_coef = n_out * f
        self.S = float(n if sw is None else np.sum(sw))
        per_row = csr.nnz / max(n, 1)
        rows = max(16, int(BLOCK_ELEMENTS // (per_row + n_out)))
        self.bounds = list(range(0, n, rows)) + [n]
        n_blocks = len(self.bounds) - 1
        n_workers = max(1, min(n_threads, n_blocks))
        self.pool = pool if n_workers > 1 else None
        self.n_workers = n_workers
        # phase 2: column ranges of equal numbers of entries
        indptr = self.csc[0]
        n_ranges = min(f, RANGES_PER_WORKER * n_workers) if f else 0
        cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], n_ranges + 1))
        cuts[0], cuts[-1] = 0, f
        self.cuts = np.maximum.accumulate(np.minimum(cuts, f))
        self.G = np.empty((n, n_out), dtype=dtype)
        self.WT = np.empty((f, n_out), dtype=dtype)
        self.b = np.zeros(n_out, dtype=dtype)
        self.gWT = np.empty((f, n_out))
        self.acc = [np.empty(n_out, dtype=dtype) for _ in range(n_workers)]
        self.acc64 = [np.empty(n_out) for _ in range(n_workers)]
        self.gb_parts = np.zeros((n_blocks, n_out))
        self.loss_parts = np.empty(n_blocks)
        self.n_evals = 0

    def _block(self, worker: int, k: int) -> None:
        """Phase 1 on row block ``k``."""
        indptr, indices, data = self.csr
        lo, hi = self.bounds[k], self.bounds[k + 1]
        Z = self.G[lo:hi]
        csr_logits(indptr, indices, data, self.WT, self.b, lo, hi, Z,
                   self.acc[worker])  # fmt: skip
        sw = None if self.sw is None else self.sw[lo:hi]
        if self.kind == "multiclass":
            loss, _ = cross_entropy(Z, self.target[lo:hi], sample_weight=sw,
                                    label_smoothing=self.eps, reduction="sum",
                                    return_grad=True, out=Z)  # fmt: skip
        else:
            z = Z.reshape(-1) if self.kind == "binary" else Z
            loss, _ = binary_cross_entropy_with_logits(
                z, self.target[lo:hi], sample_weight=sw, reduction="sum",
                return_grad=True, out=z,
            )  # fmt: skip
        self.loss_parts[k] = loss
        if self.fit_intercept:
            np.sum(Z, axis=0, dtype=np.float64, out=self.gb_parts[k])

    def _column_range(self, worker: int, r: int) -> None:
        """Phase 2 on column range ``r``."""
        indptr, indices, data = self.csc
        csc_gather(indptr, indices, data, self.G, self.cuts[r], self.cuts[r + 1],
                   self.gWT, self.acc64[worker])  # fmt: skip

    def _run(self, task, n_tasks: int) -> None:
        """``task(worker, t)`` for every ``t`` in ``range(n_tasks)``: this
        thread and the pool's take the next task as they finish one, so a
        pool thread that the machine's load keeps waiting to be scheduled
        delays nothing (this thread does its share). Every task writes its
        own outputs: who ran it changes nothing."""
        if self.pool is None:
            for t in range(n_tasks):
                task(0, t)
            return
        tasks = _Tasks(task, n_tasks)
        for w in range(1, self.n_workers):
            self.pool.submit(tasks.work, w)
        tasks.work(0)
        tasks.wait()

    def sums(self, W, b):
        """``(sum_i s_i loss_i, its gradient w.r.t. W, w.r.t. b)`` at ``W, b``
        (float64, unscaled, no penalty)."""
        np.copyto(self.WT, W.T, casting="unsafe")
        if self.fit_intercept:
            self.b[...] = b
        # this thread works too, on one Numba thread like the pool's (set
        # before the pool's threads wake: Numba's calls wait for the GIL)
        with one_numba_thread() if self.pool is not None else nullcontext():
            self._run(self._block, len(self.bounds) - 1)
            self._run(self._column_range, len(self.cuts) - 1)
        gb = np.add.reduce(self.gb_parts, axis=0)
        return float(np.sum(self.loss_parts)), self.gWT.T, gb
