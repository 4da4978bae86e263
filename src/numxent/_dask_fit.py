"""``CrossEntropyClassifier`` on dask arrays: fit, scores and predictions.

``fit`` persists the row blocks of ``X`` (with the targets and sample
weights split alike) and hands L-BFGS an objective whose every evaluation is
one pass over those blocks: per block ``Z = X_b @ W.T + b``, the fused
numxent loss overwriting ``Z`` with its gradient, ``G_b.T @ X_b`` -- the
in-memory estimator's own evaluation (``_Objective``) run on the block, on
one thread -- then the blocks' float64 partial sums ``(loss, dW, db)`` added
by a fixed tree (:data:`SPLIT_EVERY` consecutive blocks per node, in block
order) on the workers. Per evaluation the coefficients travel once to each
worker (one small key of the graph) and one ``(loss, dW, db)`` comes back;
the data stay where they are. The tree fixes every addition, so a fit is the
same bits under any scheduler, on any number of workers, whatever their
timing, for a given chunking of ``X``.
"""

from __future__ import annotations

import numbers
import warnings

import dask
import dask.array as da
import numpy as np
from sklearn.utils import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from threadpoolctl import threadpool_limits

from . import _validation as V
from ._objective import Objective, one_numba_thread, penalised, smoothed, target_kind
from .dask import SPLIT_EVERY, RechunkWarning, tree

__all__ = ["fit_dask", "predict_dask", "scores_dask", "DaskObjective"]


def _as_features(X, name: str = "X", n_features: int | None = None) -> da.Array:
    """``X`` as a 2-D float32/float64 dask array chunked by rows only."""
    if not isinstance(X, da.Array):
        if V.is_dask_collection(X):
            X = X.to_dask_array(lengths=True)
        else:
            V.check_dense_blocks(X, name)
            X = da.asarray(np.asarray(X))
    V.check_dense_blocks(X._meta, name)
    V.check_features(X.shape, name, None)
    V.check_known_chunks(X.chunks[:1], name)
    V.check_features(X.shape, name, n_features)
    if X.dtype not in (np.float32, np.float64):
        V.check_numeric(X.dtype, name)
        X = X.astype(np.float64)
    if len(X.chunks[1]) > 1:
        warnings.warn(
            f"{name} is split into {len(X.chunks[1])} chunks along its features; "
            "the estimator needs whole rows and rechunks it (a copy through the "
            f"scheduler). Chunk {name} by rows only, e.g. {name}.rechunk({{1: -1}}).",
            RechunkWarning,
            stacklevel=4,
        )
        X = X.rechunk({1: -1})
    return X


def _like_rows(a, chunks, name: str) -> da.Array:
    """A NumPy or dask array with ``chunks`` along its first axis."""
    if not isinstance(a, da.Array):
        a = da.from_array(np.asarray(a), chunks=-1)
    V.check_same_samples(a.shape[0], sum(chunks), name)
    return a.rechunk({0: chunks, **{i: -1 for i in range(1, a.ndim)}})


def _sample_weight(sample_weight, n: int, chunks) -> da.Array | None:
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Real):
        return da.full(n, float(sample_weight), chunks=(chunks,))
    sw = _like_rows(sample_weight, chunks, "sample_weight").astype(np.float64)
    return V.check_sample_weight_vector(sw, n)


def _aligned(b: np.ndarray) -> np.ndarray:
    """``b``, or an aligned copy of it. A block that reached a worker through
    distributed's serialisation can start at any byte (seen: 3 bytes past an
    8-byte boundary), and BLAS and the kernels then ran 5x slower on it."""
    return b if b.flags.aligned else np.require(b, requirements="A")


def _block_sums(Xb, tb, sb, coef, kind, n_out, fit_intercept, eps):
    """One block's float64 ``(loss total, dW, db)`` at ``coef`` (on one
    Numba thread: the parallelism is the scheduler's)."""
    n_coef = n_out * Xb.shape[1]
    W = coef[:n_coef].reshape(n_out, -1)
    with one_numba_thread():
        obj = Objective(Xb, tb, sb, kind, n_out, fit_intercept, 0.0, eps, None, 1)
        return obj.sums(W, coef[n_coef:])


def _add_sums(*parts):
    """The partial sums added in order (one node of the tree)."""
    loss, gW, gb = parts[0][0], parts[0][1].copy(), parts[0][2].copy()
    for p in parts[1:]:
        loss += p[0]
        gW += p[1]
        gb += p[2]
    return loss, gW, gb


class DaskObjective:
    """The penalised objective over persisted blocks (L-BFGS's callable).

    Each call builds a small graph -- the coefficients (one key), one
    ``_block_sums`` task per row block, the tree of ``_add_sums`` -- and
    computes it with the current scheduler (a ``distributed.Client`` when
    one is the default).
    """

    def __init__(self, X, target, sw, kind, n_out, fit_intercept, l2, eps, S):
        n_blocks = X.numblocks[0]
        self.X_blocks = list(X.to_delayed(optimize_graph=False).ravel())
        t = target.to_delayed(optimize_graph=False)
        self.t_blocks = list(t.ravel())
        self.sw_blocks = (
            [None] * n_blocks
            if sw is None
            else list(sw.to_delayed(optimize_graph=False).ravel())
        )
        self.kind, self.n_out, self.fit_intercept = kind, n_out, fit_intercept
        self.l2, self.eps, self.S = l2, eps, S
        self.dtype = X.dtype
        self.n_coef = n_out * X.shape[1]
        self.n_evals = 0

    def sums(self, theta) -> list:
        """Delayed partial sums ``(loss, dW, db)``, at most
        :data:`SPLIT_EVERY` of them, each over consecutive blocks, in order."""
        coef = np.asarray(theta, dtype=self.dtype)  # a small argument of each task
        # pure=False: fresh keys every evaluation (L-BFGS may evaluate the same
        # theta twice in a row, and a key that the last compute is releasing
        # cannot be asked for again at once)
        block = dask.delayed(_block_sums, pure=False)
        blocks = zip(self.X_blocks, self.t_blocks, self.sw_blocks, strict=True)
        parts = [
            block(
                Xb, tb, sb, coef, self.kind, self.n_out, self.fit_intercept, self.eps
            )  # fmt: skip
            for Xb, tb, sb in blocks
        ]
        return tree(parts, _add_sums, pure=False, until=SPLIT_EVERY)

    def __call__(self, theta):
        # the tree's last node runs here: one small transfer per part, and
        # no worker-to-worker hop on the way
        loss, gW, gb = _add_sums(*dask.compute(*self.sums(theta)))
        self.n_evals += 1
        return penalised(theta, self.n_coef, self.n_out, loss, gW, gb, self.S,
                         self.l2, self.fit_intercept)  # fmt: skip


def _local_scheduler() -> bool:
    """Whether tasks run in this process (threads or synchronous)."""
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):
        return True
    return dask.config.get("scheduler", None) in ("threads", "sync", "synchronous")


def fit_dask(est, X, y, sample_weight):
    """``est.fit(X, y, sample_weight)`` with dask arrays; returns ``est``."""
    X = _as_features(X)
    n, n_features = X.shape
    dtype = X.dtype
    chunks = X.chunks[0]
    y = _like_rows(y, chunks, "y")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    V.check_ndim_at_most(y, 2, "y")
    if y.ndim == 2:
        V.check_indicator(np.unique(da.unique(y).compute()))
        classes, y_type = np.arange(y.shape[1]), "multilabel-indicator"
    else:
        classes = np.unique(da.unique(y).compute())
        check_classification_targets(classes)
        y_type = type_of_target(classes, input_name="y")
    kind, n_out = target_kind(y_type, classes, est.class_weight, type(est).__name__,
                              classes.size)  # fmt: skip
    y_idx = None
    if kind == "multilabel":
        target = y.astype(dtype)
    else:
        y_idx = y.map_blocks(lambda b: np.searchsorted(classes, b), dtype=np.intp)
        target = y_idx.astype(dtype) if kind == "binary" else y_idx

    sw = _sample_weight(sample_weight, n, chunks)
    if sw is not None:
        ok, = dask.compute(da.all(da.isfinite(sw) & (sw >= 0)))  # fmt: skip
        V.check_weights_ok(ok, "sample_weight")
    if est.class_weight is not None:
        counts = None
        if est.class_weight == "balanced":
            ones = da.ones(n, chunks=(chunks,)) if sw is None else sw
            counts = da.bincount(y_idx, weights=ones, minlength=classes.size)
            counts = counts.compute()
        cw = compute_class_weight(est.class_weight, classes=classes, y=classes,
                                  sample_weight=counts)  # fmt: skip
        base = da.ones(n, chunks=(chunks,)) if sw is None else sw
        sw = base * y_idx.map_blocks(lambda i: cw[i], dtype=np.float64)

    eps = float(est.label_smoothing)
    target = smoothed(target, kind, eps, dtype)
    # aligned copies of the blocks that arrived unaligned (the others are
    # kept as they are, not copied), persisted for the evaluations
    X, target, sw = (
        None if a is None else a.map_blocks(_aligned, dtype=a.dtype)
        for a in (X, target, sw)
    )
    X, target, sw = dask.persist(X, target, sw)
    sw_sum = V.check_weight_sum(float(n if sw is None else sw.sum().compute()))

    est.classes_ = classes
    est._kind = kind
    est.n_features_in_ = n_features
    if hasattr(est, "feature_names_in_"):
        del est.feature_names_in_
    l2 = 0.0 if np.isinf(est.C) else 1.0 / (est.C * sw_sum)
    objective = DaskObjective(X, target, sw, kind, n_out, bool(est.fit_intercept),
                              l2, eps, sw_sum)  # fmt: skip
    if _local_scheduler():
        # tasks run on this process's threads: one BLAS thread each
        with threadpool_limits(limits=1, user_api="blas"):
            est._solve(objective, n_out, n_features, dtype)
    else:
        est._solve(objective, n_out, n_features, dtype)
    return est


def scores_dask(est, X) -> da.Array:
    """``X @ coef_.T + intercept_`` block by block, lazily."""
    X = _as_features(X, n_features=est.n_features_in_)
    coef = est.coef_.astype(X.dtype, copy=False)
    b = est.intercept_.astype(X.dtype, copy=False)
    return X.map_blocks(
        lambda Xb: Xb @ coef.T + b,
        chunks=(X.chunks[0], (coef.shape[0],)),
        dtype=X.dtype,
    )


def predict_dask(est, scores: da.Array) -> da.Array:
    """Class labels from lazy scores (binary and multiclass)."""
    classes = est.classes_
    if est._kind == "binary":

        def pick(s):
            return classes[(s[:, 0] > 0).astype(np.intp)]
    else:

        def pick(s):
            return classes[np.argmax(s, axis=1)]

    return scores.map_blocks(pick, drop_axis=1, dtype=classes.dtype)
