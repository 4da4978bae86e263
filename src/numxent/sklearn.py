"""A scikit-learn classifier trained on numxent's fused loss and gradient.

``import numxent.sklearn`` needs scikit-learn and scipy (the ``sklearn`` extra);
``import numxent`` never imports them.
"""

from __future__ import annotations

import numbers
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, column_or_1d, compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .functional import binary_cross_entropy_with_logits, cross_entropy, log_softmax

__all__ = ["CrossEntropyClassifier"]


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
def _fit_threads(n_threads: int):
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
            before = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                yield None
            finally:
                numba.set_num_threads(before)
        else:
            with ThreadPoolExecutor(n_threads, initializer=numba.set_num_threads,
                                    initargs=(1,)) as pool:  # fmt: skip
                yield pool


class _Objective:
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


def _dask_fit_needed(*args) -> bool:
    """Whether any argument is a dask collection (no dask import)."""
    return any(type(a).__module__.startswith("dask.") for a in args)


class CrossEntropyClassifier(ClassifierMixin, BaseEstimator):
    r"""Linear classifier fitted by L-BFGS on numxent's fused cross-entropy.

    Minimises scikit-learn's ``LogisticRegression`` objective (L2 penalty,
    ``lbfgs`` solver) with every loss-and-gradient evaluation made by one
    fused numxent call on the logits ``X @ W.T + b`` followed by ``G.T @ X``
    in BLAS, block by block of rows on ``n_threads`` threads::

        min_{W, b}  sum_i s_i loss_i / S  +  ||W||_F^2 / (2 C S),   S = sum_i s_i

    which has the same minimiser as ``C sum_i s_i loss_i + ||W||^2 / 2``, so
    ``C`` means what it means in ``LogisticRegression`` (the intercept is not
    penalised). ``s_i`` is ``sample_weight`` times the class weight of the
    sample's class.

    - **Binary** targets (2 classes): a sigmoid model as in
      ``LogisticRegression``, ``loss_i`` the binary cross-entropy of
      ``y_i == classes_[1]``; ``coef_`` has shape (1, n_features).
    - **Multiclass** targets (3 or more classes): softmax (multinomial)
      cross-entropy; ``coef_`` has shape (n_classes, n_features).
    - **Multi-label** targets (a 2-D 0/1 indicator of shape
      (n_samples, n_labels)): one model, ``loss_i`` the sum over labels of the
      binary cross-entropies (the same solution as one
      ``LogisticRegression(C)`` per label); ``coef_`` has shape
      (n_labels, n_features) and ``predict`` returns an indicator matrix.

    float32 ``X`` is trained in float32 (the logits, gradients, ``coef_`` and
    ``intercept_`` are float32); only L-BFGS's own parameter vector is float64.

    Parameters
    ----------
    C : float > 0, default 1.0
        Inverse of the L2 regularisation strength, as in
        ``LogisticRegression``; ``np.inf`` gives an unpenalised fit.
    fit_intercept : bool, default True
        Fit an (unpenalised) intercept.
    max_iter : int >= 1, default 100
        Maximum number of L-BFGS iterations; a ``ConvergenceWarning`` is
        issued when the solver stops before converging.
    tol : float >= 0, default 1e-4
        L-BFGS stops when the largest absolute gradient entry is below ``tol``
        (scipy's ``gtol``, as in ``LogisticRegression``).
    class_weight : dict, "balanced" or None, default None
        Class weights, folded into the sample weights (as in
        ``LogisticRegression``). Not available for multi-label targets.
    warm_start : bool, default False
        Start from the previous fit's ``coef_`` and ``intercept_``.
    verbose : int, default 0
        If > 0, print the objective every ``max(1, 10 // verbose)`` iterations.
    label_smoothing : float in [0, 1), default 0.0
        Mixes the targets with the uniform distribution over classes: softmax
        targets become ``(1 - eps) onehot + eps / n_classes`` (numxent's
        ``label_smoothing``); sigmoid targets become ``(1 - eps) y + eps / 2``.
    n_threads : int or None, default None
        Threads that evaluate the objective during ``fit``, each over its own
        blocks of rows with single-threaded BLAS and numxent's serial kernel
        (BLAS's own threads are held to 1 during ``fit`` and restored
        afterwards). None: Numba's thread count (``numba.get_num_threads()``,
        all cores by default). The fit does not depend on it: blocks have a
        fixed size and are summed in order.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (for multi-label targets: ``arange(n_labels)``).
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Weights, in the training data's dtype.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercepts (zeros when ``fit_intercept=False``).
    n_iter_ : ndarray of shape (1,)
        Number of L-BFGS iterations run.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` had string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from numxent.sklearn import CrossEntropyClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = CrossEntropyClassifier(max_iter=1000).fit(X, y)
    >>> clf.coef_.shape, clf.intercept_.shape
    ((3, 4), (3,))
    >>> clf.predict(X[:3])
    array([0, 0, 0])
    >>> clf.predict_proba(X[:1]).shape
    (1, 3)
    >>> bool(clf.score(X, y) > 0.95)
    True
    """

    def __init__(
        self,
        C: float = 1.0,
        *,
        fit_intercept: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        class_weight=None,
        warm_start: bool = False,
        verbose: int = 0,
        label_smoothing: float = 0.0,
        n_threads: int | None = None,
    ):
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.verbose = verbose
        self.label_smoothing = label_smoothing
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # -- parameters ---------------------------------------------------------

    def _check_params(self):
        def bad(name, want):
            value = getattr(self, name)
            raise ValueError(
                f"The '{name}' parameter of {type(self).__name__} must be {want}. "
                f"Got {value!r} instead."
            )

        real = (numbers.Real,)
        if not isinstance(self.C, real) or isinstance(self.C, bool) or not self.C > 0:
            bad("C", "a float > 0 (np.inf for no penalty)")
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            bad("fit_intercept", "a bool")
        if (
            not isinstance(self.max_iter, numbers.Integral)
            or isinstance(self.max_iter, bool)
            or self.max_iter < 1
        ):
            bad("max_iter", "an int >= 1")
        if not isinstance(self.tol, real) or not self.tol >= 0:
            bad("tol", "a float >= 0")
        if not (
            self.class_weight is None
            or self.class_weight == "balanced"
            or isinstance(self.class_weight, dict)
        ):
            bad("class_weight", "a dict, 'balanced' or None")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            bad("warm_start", "a bool")
        if not isinstance(self.verbose, (numbers.Integral, bool)):
            bad("verbose", "an int")
        eps = self.label_smoothing
        if not isinstance(eps, real) or not 0.0 <= eps < 1.0:
            bad("label_smoothing", "a float in [0, 1)")
        n = self.n_threads
        if n is not None and (
            not isinstance(n, numbers.Integral)
            or isinstance(n, bool)
            or not 1 <= n <= numba.config.NUMBA_NUM_THREADS
        ):
            bad(
                "n_threads",
                f"None or an int in [1, {numba.config.NUMBA_NUM_THREADS}] "
                "(numba.config.NUMBA_NUM_THREADS)",
            )

    # -- fit ------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None) -> CrossEntropyClassifier:
        """Fit the model by L-BFGS.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, dense, float32 or float64 (other dtypes become
            float64; sparse matrices are not supported).
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix for multi-label problems.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative per-sample weights (unit weights when None).

        Returns
        -------
        self : CrossEntropyClassifier
        """
        self._check_params()
        if _dask_fit_needed(X, y, sample_weight):
            from ._dask_fit import fit_dask

            return fit_dask(self, X, y, sample_weight)
        X, y = validate_data(
            self,
            X,
            y,
            dtype=[np.float64, np.float32],
            order="C",
            multi_output=True,
            y_numeric=False,
        )
        n_samples, n_features = X.shape
        dtype = X.dtype

        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y")
        if y_type == "multilabel-indicator":
            kind = "multilabel"
            if self.class_weight is not None:
                raise ValueError(
                    "class_weight is not supported for multi-label targets; pass "
                    "sample_weight instead"
                )
            classes = np.arange(y.shape[1])
            target = np.ascontiguousarray(y, dtype=dtype)
            n_out = y.shape[1]
        elif y_type in ("binary", "multiclass"):
            classes, y_idx = np.unique(y, return_inverse=True)
            if classes.size < 2:
                raise ValueError(
                    "This solver needs samples of at least 2 classes in the data, "
                    f"but the data contains only one class: {classes[0]!r}"
                )
            kind = "binary" if classes.size == 2 else "multiclass"
            if kind == "binary":
                target = y_idx.astype(dtype)
                n_out = 1
            else:
                target = y_idx.astype(np.intp)
                n_out = classes.size
        else:
            raise ValueError(
                f"{type(self).__name__} supports binary, multiclass and "
                f"multi-label indicator targets; got a '{y_type}' target"
            )

        sw = self._sample_weight(sample_weight, n_samples)
        if self.class_weight is not None:
            cw = compute_class_weight(
                self.class_weight, classes=classes, y=y, sample_weight=sw
            )
            sw = (np.ones(n_samples) if sw is None else sw) * cw[y_idx]
        sw_sum = float(n_samples if sw is None else np.sum(sw))
        if not sw_sum > 0:
            raise ValueError("sample_weight (times class weights) sums to zero")

        eps = float(self.label_smoothing)
        if kind != "multiclass" and eps > 0:
            target = (target * (1.0 - eps) + eps / 2).astype(dtype)

        self.classes_ = classes
        self._kind = kind
        l2 = 0.0 if np.isinf(self.C) else 1.0 / (self.C * sw_sum)
        n_threads = (
            numba.get_num_threads() if self.n_threads is None else self.n_threads
        )
        with _fit_threads(int(n_threads)) as pool:
            objective = _Objective(
                X, target, sw, kind, n_out, bool(self.fit_intercept), l2, eps,
                pool, int(n_threads),
            )  # fmt: skip
            self._solve(objective, n_out, n_features, dtype)
        return self

    def _solve(self, objective, n_out, n_features, dtype) -> None:
        """Run L-BFGS on ``objective(theta) -> (value, grad)``; store the fit."""
        theta0 = self._initial_theta(n_out, n_features)
        every = max(1, 10 // int(self.verbose)) if self.verbose else 0
        n_calls = [0]

        def callback(intermediate_result):
            n_calls[0] += 1
            if every and n_calls[0] % every == 0:
                print(f"iter {n_calls[0]:5d}  objective {intermediate_result.fun:.8g}")

        res = optimize.minimize(
            objective,
            theta0,
            method="L-BFGS-B",
            jac=True,
            callback=callback,
            options={
                "maxiter": int(self.max_iter),
                "maxls": 50,
                "gtol": float(self.tol),
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        n_iter = min(int(res.nit), int(self.max_iter))
        if res.status != 0:
            warnings.warn(
                f"lbfgs failed to converge after {n_iter} iteration(s) "
                f"(status={res.status}): {res.message}. Increase the number of "
                "iterations (max_iter) or scale the data "
                "(sklearn.preprocessing.StandardScaler).",
                ConvergenceWarning,
                stacklevel=3,
            )
        theta = res.x
        self.coef_ = (
            theta[: n_out * n_features].reshape(n_out, n_features).astype(dtype)
        )
        if self.fit_intercept:
            self.intercept_ = theta[n_out * n_features :].astype(dtype)
        else:
            self.intercept_ = np.zeros(n_out, dtype=dtype)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)

    @staticmethod
    def _sample_weight(sample_weight, n_samples):
        if sample_weight is None:
            return None
        if isinstance(sample_weight, numbers.Number):
            sample_weight = np.full(n_samples, sample_weight, dtype=np.float64)
        sw = check_array(
            sample_weight,
            ensure_2d=False,
            dtype=np.float64,
            input_name="sample_weight",
            ensure_all_finite=True,
        )
        if sw.shape != (n_samples,):
            raise ValueError(
                f"sample_weight.shape == {sw.shape}, expected ({n_samples},)"
            )
        if np.any(sw < 0):
            raise ValueError("sample_weight must be non-negative")
        return sw

    def _initial_theta(self, n_out, n_features):
        size = n_out * n_features
        theta = np.zeros(size + (n_out if self.fit_intercept else 0))
        if (
            self.warm_start
            and getattr(self, "coef_", None) is not None
            and self.coef_.shape == (n_out, n_features)
        ):
            theta[:size] = self.coef_.ravel()
            if self.fit_intercept:
                theta[size:] = self.intercept_
        return theta

    # -- predict -----------------------------------------------------------

    def _scores(self, X):
        check_is_fitted(self)
        if _dask_fit_needed(X):
            from ._dask_fit import scores_dask

            return scores_dask(self, X)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        coef = self.coef_.astype(X.dtype, copy=False)
        return X @ coef.T + self.intercept_.astype(X.dtype, copy=False)

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            One score per sample for binary problems, else one per class, in
            ``X``'s float dtype (float32 stays float32). Binary scores are the
            log-odds of ``classes_[1]``.
        """
        scores = self._scores(X)
        return scores.ravel() if self._kind == "binary" else scores

    def predict_log_proba(self, X) -> np.ndarray:
        """Log-probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log_softmax`` of the scores (binary: of ``[0, score]``); for
            multi-label problems each label's ``log sigmoid(score)``.
        """
        scores = self._scores(X)
        if self._kind == "multilabel":
            return log_expit(scores)
        if self._kind == "binary":
            pair = [np.zeros_like(scores), scores]
            if _dask_fit_needed(scores):
                import dask.array as da

                scores = da.concatenate(pair, axis=1).rechunk({1: -1})
            else:
                scores = np.hstack(pair)
        return log_softmax(scores)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Softmax of the scores; binary problems ``[1 - p, p]`` with
            ``p = sigmoid(score)``; multi-label problems each label's
            ``sigmoid(score)`` (rows need not sum to 1).
        """
        if getattr(self, "_kind", None) == "multilabel":
            return expit(self._scores(X))
        return np.exp(self.predict_log_proba(X))

    def predict(self, X) -> np.ndarray:
        """Predicted labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_labels)
            The predicted class of each sample from ``classes_``; for
            multi-label problems a 0/1 indicator of shape
            (n_samples, n_labels).
        """
        scores = self._scores(X)
        if self._kind == "multilabel":
            return (scores > 0).astype(np.int64)
        if _dask_fit_needed(scores):
            from ._dask_fit import predict_dask

            return predict_dask(self, scores)
        if self._kind == "binary":
            return self.classes_[(scores[:, 0] > 0).astype(np.intp)]
        return self.classes_[np.argmax(scores, axis=1)]
