"""A scikit-learn classifier trained on numxent's fused loss and gradient.

``import numxent.sklearn`` needs scikit-learn and scipy (the ``sklearn`` extra);
``import numxent`` never imports them.
"""

from __future__ import annotations

import numbers
import warnings

import numba
import numpy as np
from scipy import sparse
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, column_or_1d, compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validation as V
from ._lbfgs import minimize_lbfgs
from ._objective import Objective, fit_threads, smoothed, target_kind
from ._sparse_objective import SparseObjective
from .functional import log_softmax

__all__ = ["CrossEntropyClassifier"]


def _dask_fit_needed(*args) -> bool:
    """Whether any argument is a dask collection (no dask import)."""
    return any(V.is_dask_collection(a) for a in args)


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

    ``X`` may be a SciPy sparse matrix or array of any format (CSR and CSC
    are used as they are, others converted to CSR once), in ``fit`` and every
    prediction method: the same objective, evaluated on CSR row blocks for
    the logits and one feature at a time (from a CSC copy of ``X``) for
    ``G.T @ X``, again independent of ``n_threads``. A fit on a sparse ``X``
    gives the coefficients of the fit on ``X`` densified, up to rounding.

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
        (scipy's ``gtol``, as in ``LogisticRegression``). The solver takes
        SciPy's L-BFGS-B steps, stopping rules and line search (unbounded,
        10 pairs) with fewer passes over its memory (``numxent._lbfgs``).
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
        afterwards), and that run L-BFGS's products over its memory. None:
        Numba's thread count (``numba.get_num_threads()``, all cores by
        default). The fit does not depend on it: blocks have a fixed size
        and every sum has a fixed order.

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
        tags.input_tags.sparse = True
        return tags

    # -- parameters ---------------------------------------------------------

    def _check_params(self):
        def bad(name, want):
            V.raise_bad_param(self, name, want)

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
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data, float32 or float64 (other dtypes become float64).
            SciPy sparse matrices and arrays of any format are fitted as CSR
            (with a CSC copy for the gradient); CSR and CSC are used as they
            are, other formats are converted once.
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
            accept_sparse=["csr", "csc"],
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
            classes = np.arange(y.shape[1])
        else:
            classes, y_idx = np.unique(y, return_inverse=True)
        kind, n_out = target_kind(y_type, classes, self.class_weight,
                                  type(self).__name__, classes.size)  # fmt: skip
        if kind == "multilabel":
            target = np.ascontiguousarray(y, dtype=dtype)
        elif kind == "binary":
            target = y_idx.astype(dtype)
        else:
            target = y_idx.astype(np.intp)

        sw = self._sample_weight(sample_weight, n_samples)
        if self.class_weight is not None:
            cw = compute_class_weight(
                self.class_weight, classes=classes, y=y, sample_weight=sw
            )
            sw = (np.ones(n_samples) if sw is None else sw) * cw[y_idx]
        sw_sum = V.check_weight_sum(float(n_samples if sw is None else np.sum(sw)))
        eps = float(self.label_smoothing)
        target = smoothed(target, kind, eps, dtype)

        self.classes_ = classes
        self._kind = kind
        l2 = 0.0 if np.isinf(self.C) else 1.0 / (self.C * sw_sum)
        n_threads = (
            numba.get_num_threads() if self.n_threads is None else self.n_threads
        )
        with fit_threads(int(n_threads)) as pool:
            make = SparseObjective if sparse.issparse(X) else Objective
            objective = make(
                X, target, sw, kind, n_out, bool(self.fit_intercept), l2, eps,
                pool, int(n_threads),
            )  # fmt: skip
            self._solve(objective, n_out, n_features, dtype, int(n_threads))
        return self

    def _solve(self, objective, n_out, n_features, dtype, n_threads=None) -> None:
        """Run L-BFGS on ``objective(theta) -> (value, grad)``, its products
        over the pairs on ``n_threads`` of Numba's threads (None: the calling
        thread's count); store the fit."""
        theta0 = self._initial_theta(n_out, n_features)
        every = max(1, 10 // int(self.verbose)) if self.verbose else 0
        n_calls = [0]

        def callback(intermediate_result):
            n_calls[0] += 1
            if every and n_calls[0] % every == 0:
                print(f"iter {n_calls[0]:5d}  objective {intermediate_result.fun:.8g}")

        res = minimize_lbfgs(
            objective,
            theta0,
            maxiter=int(self.max_iter),
            gtol=float(self.tol),
            ftol=64 * np.finfo(float).eps,
            maxls=50,
            callback=callback,
            n_threads=n_threads,
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
        V.check_sample_weight_vector(sw, n_samples)
        return V.check_nonneg_sample_weight(sw)

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
        X = validate_data(self, X, accept_sparse=["csr", "csc"],
                          dtype=[np.float64, np.float32], reset=False)  # fmt: skip
        coef = self.coef_.astype(X.dtype, copy=False)
        return np.asarray(X @ coef.T) + self.intercept_.astype(X.dtype, copy=False)

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

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
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

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
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

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
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

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
