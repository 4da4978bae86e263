"""The estimator's objective: L-BFGS's loss and gradient of the penalised
multinomial (or binary, or multi-label) problem, evaluated over row blocks on
numxent's fused kernels, and the target preparation both fits share (in
memory: ``numxent.sklearn``; on dask arrays: ``numxent._dask_fit``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np

from . import _validation as V
from .functional import binary_cross_entropy_with_logits, cross_entropy

#: Rows of a block: its logits and its rows of X together hold about this
#: many elements, so that the block stays in cache between the GEMM that
#: makes its logits, the fused loss that overwrites them with the gradient
#: and the GEMM that reads them back.
BLOCK_ELEMENTS = 1 << 17
#: Partial sums kept per evaluation: blocks are added in order within each of
#: at most this many groups (float64, n_classes x n_features each), then the
#: groups in order -- the same sums whatever the number of threads.
MAX_GROUPS = 32


@contextmanager
def fit_threads(n_threads: int):
    """BLAS on one thread for the block: the objective's threads are ours.

    OpenBLAS's idle worker threads spin after every call, taking the cores
    that the next (Numba) kernel needs -- measured on 2 cores: the fused loss
    ran no faster on 2 threads than on 1 right after a 2-thread GEMM. The
    objective therefore runs ``n_threads`` Python threads over row blocks,
    each calling single-threaded BLAS and numxent's kernels on one thread
    (Numba's thread count is thread-local: set to 1 inside the workers).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        if n_threads == 1:
            with one_numba_thread():
                yield None
        else:
            with ThreadPoolExecutor(n_threads, initializer=numba.set_num_threads,
                                    initargs=(1,)) as pool:  # fmt: skip
                yield pool


class Objective:
    """Loss and gradient of the penalised problem, as L-BFGS wants them.

    ``theta`` (float64) holds ``W`` of shape (n_out, n_features) row-major,
    then ``b`` of shape (n_out,) when there is an intercept. The objective is
    scikit-learn's ``LinearModelLoss`` one::

        sum_i s_i loss_i / S  +  ||W||^2 / (2 C S),    S = sum_i s_i

    (``s_i`` the sample weights with class weights folded in), which has the
    same minimiser as ``LogisticRegression``'s ``C sum_i s_i loss_i +
    ||W||^2 / 2``. For multi-label problems ``loss_i`` is the sum over labels.

    Evaluated block by block of rows (:data:`BLOCK_ELEMENTS`): ``Z = X_b @
    W.T + b``, the fused ``reduction="sum"`` loss overwriting ``Z`` with its
    gradient (``out=Z``), ``G_b.T @ X_b`` -- one read of ``X`` per evaluation
    while each block is in cache. Blocks have a fixed size and are summed in a
    fixed order (:data:`MAX_GROUPS`), so the result does not depend on the
    number of threads.
    """

    def __init__(
        self, X, target, sw, kind, n_out, fit_intercept, l2, eps, pool, n_threads
    ):
        self.X, self.target, self.sw, self.kind = X, target, sw, kind
        self.n_out, self.fit_intercept = n_out, fit_intercept
        self.l2, self.eps = l2, eps
        n, f = X.shape
        self.n_coef = n_out * f
        self.S = float(n if sw is None else np.sum(sw))
        rows = max(16, BLOCK_ELEMENTS // (f + n_out))
        self.bounds = list(range(0, n, rows)) + [n]
        n_blocks = len(self.bounds) - 1
        # Blocks -> a fixed number of groups, each summed in block order into
        # its own float64 partial; workers take whole groups.
        n_groups = min(n_blocks, MAX_GROUPS)
        self.groups = np.linspace(0, n_blocks, n_groups + 1).round().astype(int)
        self.pool = pool if n_groups > 1 else None
        n_workers = 1 if self.pool is None else min(n_threads, n_groups)
        self.ranges = np.linspace(0, n_groups, n_workers + 1).round().astype(int)
        zshape = (rows,) if kind == "binary" else (rows, n_out)
        self.Z = [np.empty(zshape, dtype=X.dtype) for _ in range(n_workers)]
        self.gw_tmp = [np.empty((n_out, f), dtype=X.dtype) for _ in range(n_workers)]
        self.W = np.empty((n_out, f), dtype=X.dtype)
        self.b = np.empty(n_out, dtype=X.dtype)
        self.gw_parts = np.empty((n_groups, n_out, f))
        self.gb_parts = np.empty((n_groups, n_out))
        self.loss_parts = np.empty(n_blocks)
        self.n_evals = 0

    def _blocks(self, worker: int) -> None:
        X, W, b, Zbuf = self.X, self.W, self.b, self.Z[worker]
        tmp = self.gw_tmp[worker]
        bounds, kind = self.bounds, self.kind
        for g in range(self.ranges[worker], self.ranges[worker + 1]):
            gw, gb = self.gw_parts[g], self.gb_parts[g]
            gw[...] = 0.0
            gb[...] = 0.0
            for k in range(self.groups[g], self.groups[g + 1]):
                lo, hi = bounds[k], bounds[k + 1]
                Xb, Z = X[lo:hi], Zbuf[: hi - lo]
                sw = None if self.sw is None else self.sw[lo:hi]
                if kind == "binary":
                    np.matmul(Xb, W[0], out=Z)
                else:
                    np.matmul(Xb, W.T, out=Z)
                if self.fit_intercept:
                    Z += b if kind != "binary" else b[0]
                if kind == "multiclass":
                    loss, G = cross_entropy(Z, self.target[lo:hi], sample_weight=sw,
                                            label_smoothing=self.eps, reduction="sum",
                                            return_grad=True, out=Z)  # fmt: skip
                else:
                    loss, G = binary_cross_entropy_with_logits(
                        Z, self.target[lo:hi], sample_weight=sw, reduction="sum",
                        return_grad=True, out=Z,
                    )  # fmt: skip
                self.loss_parts[k] = loss
                if kind == "binary":
                    np.matmul(G, Xb, out=tmp[0])
                    if self.fit_intercept:
                        gb[0] += np.sum(G, dtype=np.float64)
                else:
                    np.matmul(G.T, Xb, out=tmp)
                    if self.fit_intercept:
                        gb += np.sum(G, axis=0, dtype=np.float64)
                gw += tmp

    def sums(self, W, b):
        """``(sum_i s_i loss_i, its gradient w.r.t. W, w.r.t. b)`` at ``W, b``
        (float64, unscaled, no penalty)."""
        self.W[...] = W
        if self.fit_intercept:
            self.b[...] = b
        if self.pool is None:
            self._blocks(0)
        else:
            for fut in [self.pool.submit(self._blocks, w) for w in range(len(self.Z))]:
                fut.result()
        gW = np.add.reduce(self.gw_parts, axis=0)
        gb = np.add.reduce(self.gb_parts, axis=0)
        return float(np.sum(self.loss_parts)), gW, gb

    def __call__(self, theta):
        W64 = theta[: self.n_coef].reshape(self.n_out, -1)
        loss, gW_sum, gb_sum = self.sums(W64, theta[self.n_coef :])
        self.n_evals += 1
        return penalised(theta, self.n_coef, self.n_out, loss, gW_sum, gb_sum,
                         self.S, self.l2, self.fit_intercept)  # fmt: skip


def penalised(theta, n_coef, n_out, loss, gW_sum, gb_sum, S, l2, fit_intercept):
    """The objective and its gradient from the unscaled sums of the loss."""
    W64 = theta[:n_coef].reshape(n_out, -1)
    inv_s = 1.0 / S
    grad = np.empty_like(theta)
    gW = grad[:n_coef].reshape(n_out, -1)
    np.multiply(gW_sum, inv_s, out=gW)
    gW += l2 * W64
    if fit_intercept:
        np.multiply(gb_sum, inv_s, out=grad[n_coef:])
    value = loss * inv_s
    value += 0.5 * l2 * float(W64.ravel() @ W64.ravel())
    return value, grad


@contextmanager
def numba_threads(n: int):
    """Numba's kernels on ``n`` threads inside the block (thread-local)."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def one_numba_thread():
    """Numba's kernels on one thread inside the block (thread-local)."""
    return numba_threads(1)


def target_kind(y_type: str, classes, class_weight, estimator: str, n_labels: int):
    """``(kind, n_out)`` of a classification target of type ``y_type``
    (scikit-learn's ``type_of_target``) and sorted ``classes``; raises on
    targets the estimator cannot fit."""
    if y_type == "multilabel-indicator":
        V.check_class_weight_multilabel(class_weight)
        return "multilabel", n_labels
    V.check_target_type(y_type, estimator)
    V.check_two_classes(classes)
    if classes.size == 2:
        return "binary", 1
    return "multiclass", classes.size


def smoothed(target, kind: str, eps: float, dtype):
    """Binary and multi-label targets with label smoothing applied (the
    multiclass kernel smooths by itself)."""
    if kind != "multiclass" and eps > 0:
        return (target * (1.0 - eps) + eps / 2).astype(dtype)
    return target
