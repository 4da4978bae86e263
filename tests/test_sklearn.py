"""numxent.sklearn.CrossEntropyClassifier: scikit-learn's estimator checks and
agreement with LogisticRegression (the independent reference)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from scipy.special import expit, log_softmax  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_breast_cancer,
    load_digits,
    load_iris,
    make_multilabel_classification,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import numxent._objective as objective  # noqa: E402
from naive import penalised_objective_ref  # noqa: E402
from numxent.sklearn import CrossEntropyClassifier  # noqa: E402

TIGHT = dict(tol=1e-10, max_iter=10_000)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # The matrices here are small: multi-threaded BLAS only adds contention
    # (it made each fit ~100x slower on a busy 2-core machine).
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def assert_same_solution(ours, ref, rtol=1e-4):
    """coef_/intercept_ within rtol of the reference, relative to its scale."""
    scale = np.max(np.abs(ref.coef_))
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(
        ours.intercept_, ref.intercept_, rtol=rtol, atol=rtol * scale
    )


# -- scikit-learn's own estimator checks ------------------------------------


@parametrize_with_checks([CrossEntropyClassifier()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_import_numxent_does_not_import_sklearn():
    code = (
        "import sys, numxent; "
        "bad = [m for m in ('sklearn', 'numxent.sklearn') "
        "if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the same problem as LogisticRegression ------------------------------------


@pytest.mark.parametrize("C", [0.1, 1.0])
def test_matches_logistic_regression_digits(digits, C):
    X, y = digits
    ref = LogisticRegression(C=C, **TIGHT).fit(X, y)
    ours = CrossEntropyClassifier(C=C, **TIGHT).fit(X, y)
    assert ours.coef_.shape == ref.coef_.shape == (10, 64)
    assert_same_solution(ours, ref)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(
        ours.predict_proba(X), ref.predict_proba(X), rtol=1e-4, atol=1e-6
    )
    assert ours.score(X, y) == ref.score(X, y)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_matches_logistic_regression_binary(cancer, fit_intercept):
    X, y = cancer
    ref = LogisticRegression(C=0.5, fit_intercept=fit_intercept, **TIGHT).fit(X, y)
    ours = CrossEntropyClassifier(C=0.5, fit_intercept=fit_intercept, **TIGHT)
    ours.fit(X, y)
    assert ours.coef_.shape == (1, X.shape[1])
    assert ours.intercept_.shape == (1,)
    assert_same_solution(ours, ref)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.decision_function(X).shape == (X.shape[0],)
    np.testing.assert_allclose(
        ours.decision_function(X), ref.decision_function(X), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        ours.predict_proba(X), ref.predict_proba(X), rtol=1e-4, atol=1e-8
    )
    np.testing.assert_allclose(
        ours.predict_log_proba(X), ref.predict_log_proba(X), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("dataset", ["cancer", "iris"])
def test_matches_logistic_regression_weights(dataset, cancer):
    if dataset == "cancer":
        X, y = cancer
    else:
        X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.1, 3.0, size=len(y))
    kw = dict(C=2.0, class_weight="balanced", **TIGHT)
    ref = LogisticRegression(**kw).fit(X, y, sample_weight=sw)
    ours = CrossEntropyClassifier(**kw).fit(X, y, sample_weight=sw)
    assert_same_solution(ours, ref)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_unpenalised_matches_logistic_regression(cancer):
    X, y = cancer
    X = X[:, :5]  # separable with all 30 features; C=inf then has no minimum
    ref = LogisticRegression(C=np.inf, **TIGHT).fit(X, y)
    ours = CrossEntropyClassifier(C=np.inf, **TIGHT).fit(X, y)
    assert_same_solution(ours, ref)


# -- fit behaviour -----------------------------------------------------------


def test_sample_weight_equals_repeated_rows(digits):
    X, y = digits
    X, y = X[:400], y[:400]
    reps = np.random.default_rng(1).integers(0, 4, size=len(y))
    weighted = CrossEntropyClassifier(**TIGHT).fit(X, y, sample_weight=reps)
    repeated = CrossEntropyClassifier(**TIGHT).fit(
        np.repeat(X, reps, axis=0), np.repeat(y, reps)
    )
    # L-BFGS stops at a ~1e-8 gradient on this problem (ftol), both fits within
    # ~1e-4 of the optimum; ignoring the weights would move coef_ by O(1).
    assert_same_solution(weighted, repeated, rtol=3e-4)


def test_convergence_warning_at_max_iter(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        clf = CrossEntropyClassifier(max_iter=2).fit(X, y)
    assert clf.n_iter_.tolist() == [2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = CrossEntropyClassifier(max_iter=1000).fit(X, y)
    assert 2 < clf.n_iter_[0] < 1000


def test_warm_start_starts_from_previous_solution(digits):
    X, y = digits
    cold = CrossEntropyClassifier(tol=1e-6, max_iter=1000).fit(X, y)
    warm = CrossEntropyClassifier(tol=1e-6, max_iter=1000, warm_start=True)
    warm.fit(X, y)
    assert warm.n_iter_[0] == cold.n_iter_[0]
    warm.fit(X, y)  # already at the optimum
    assert warm.n_iter_[0] <= 2 < cold.n_iter_[0]
    np.testing.assert_allclose(warm.coef_, cold.coef_, rtol=1e-3, atol=1e-4)


def test_float32_trains_in_float32(digits, monkeypatch):
    X, y = digits
    seen = []
    real = objective.cross_entropy

    def spy(logits, target, **kw):
        seen.append((logits.dtype, kw["out"].dtype))
        return real(logits, target, **kw)

    monkeypatch.setattr(objective, "cross_entropy", spy)
    X32 = X.astype(np.float32)
    c32 = CrossEntropyClassifier(C=0.1, tol=1e-6, max_iter=1000).fit(X32, y)
    assert seen and set(seen) == {(np.dtype(np.float32), np.dtype(np.float32))}
    assert c32.coef_.dtype == c32.intercept_.dtype == np.float32
    assert c32.decision_function(X32).dtype == np.float32
    assert c32.predict_proba(X32).dtype == np.float32

    seen.clear()
    c64 = CrossEntropyClassifier(C=0.1, tol=1e-6, max_iter=1000).fit(X, y)
    assert set(seen) == {(np.dtype(np.float64), np.dtype(np.float64))}
    assert c64.coef_.dtype == np.float64
    np.testing.assert_allclose(c32.coef_, c64.coef_, rtol=1e-3, atol=1e-3)


def test_float32_binary_and_multilabel_stay_float32(cancer, monkeypatch):
    X, y = cancer
    seen = []
    real = objective.binary_cross_entropy_with_logits

    def spy(logits, target, **kw):
        seen.append(logits.dtype)
        return real(logits, target, **kw)

    monkeypatch.setattr(objective, "binary_cross_entropy_with_logits", spy)
    X32 = X.astype(np.float32)
    clf = CrossEntropyClassifier().fit(X32, y)
    Y = np.column_stack([y, 1 - y, X[:, 0] > 0])
    mlc = CrossEntropyClassifier().fit(X32, Y)
    assert seen and set(seen) == {np.dtype(np.float32)}
    for m in (clf, mlc):
        assert m.coef_.dtype == np.float32
        assert m.decision_function(X32).dtype == np.float32


def test_n_threads_is_restored_and_gives_the_same_fit(digits):
    X, y = digits
    before = numba.get_num_threads()
    one = CrossEntropyClassifier(n_threads=1, **TIGHT).fit(X, y)
    assert numba.get_num_threads() == before
    default = CrossEntropyClassifier(**TIGHT).fit(X, y)
    two = CrossEntropyClassifier(n_threads=2, **TIGHT).fit(X, y)
    # fixed row blocks summed in order: the same bits for any thread count
    np.testing.assert_array_equal(one.coef_, default.coef_)
    np.testing.assert_array_equal(one.coef_, two.coef_)
    np.testing.assert_array_equal(one.intercept_, two.intercept_)
    with pytest.raises(ValueError, match="n_threads"):
        CrossEntropyClassifier(n_threads=numba.config.NUMBA_NUM_THREADS + 1).fit(X, y)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
def test_blocked_objective_matches_naive_for_any_threads(kind, monkeypatch):
    rng = np.random.default_rng(11)
    n, f, k = 700, 9, 6
    X = rng.standard_normal((n, f))
    sw = rng.random(n) * 3
    if kind == "multiclass":
        y, k_out = rng.integers(0, k, n), k
    elif kind == "binary":
        y, k_out = rng.integers(0, 2, n).astype(float), 1
    else:
        y, k_out = (rng.random((n, k)) < 0.3).astype(float), k
    theta = rng.standard_normal(k_out * f + k_out)
    ref = penalised_objective_ref(
        X, y, sw, kind, theta, 0.01, 0.1 if kind == "multiclass" else 0
    )
    monkeypatch.setattr(objective, "BLOCK_ELEMENTS", 64)  # 44 blocks of 4 rows
    got = {}
    for threads in (1, 2, 3):
        with objective.fit_threads(threads) as pool:
            obj = objective.Objective(
                X,
                y,
                sw,
                kind,
                k_out,
                True,
                0.01,
                0.1 if kind == "multiclass" else 0,
                pool,
                threads,
            )
            assert len(obj.bounds) > 40
            got[threads] = obj(theta)
    np.testing.assert_allclose(got[1][0], ref[0], rtol=1e-13)
    np.testing.assert_allclose(got[1][1], ref[1], rtol=1e-12, atol=1e-15)
    for threads in (2, 3):
        assert got[threads][0] == got[1][0]
        np.testing.assert_array_equal(got[threads][1], got[1][1])


# -- multi-label ----------------------------------------------------------------


def test_multilabel_equals_one_logistic_regression_per_label():
    X, Y = make_multilabel_classification(
        n_samples=300, n_features=8, n_classes=4, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    sw = np.random.default_rng(2).uniform(0.5, 2.0, size=len(X))
    clf = CrossEntropyClassifier(C=0.3, **TIGHT).fit(X, Y, sample_weight=sw)
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    assert clf.coef_.shape == (4, 8)
    for k in range(4):
        ref = LogisticRegression(C=0.3, **TIGHT).fit(X, Y[:, k], sample_weight=sw)
        scale = np.max(np.abs(ref.coef_))
        np.testing.assert_allclose(clf.coef_[k], ref.coef_[0], atol=1e-4 * scale)
        np.testing.assert_allclose(
            clf.intercept_[k], ref.intercept_[0], atol=1e-4 * scale
        )
        np.testing.assert_array_equal(clf.predict(X)[:, k], ref.predict(X))
        np.testing.assert_allclose(
            clf.predict_proba(X)[:, k], ref.predict_proba(X)[:, 1], atol=1e-6
        )
    pred = clf.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    assert clf.predict_log_proba(X).shape == Y.shape


# -- label smoothing: the gradient of a NumPy objective vanishes at the fit ----


def _smoothed_objective_grad(clf, X, y, eps):
    """Gradient (W, b) of the label-smoothed objective, plain NumPy."""
    n, C = len(y), clf.C
    classes = clf.classes_
    Z = X @ clf.coef_.T + clf.intercept_
    if len(classes) == 2:
        t = (y == classes[1]).astype(float) * (1 - eps) + eps / 2
        G = (expit(Z[:, 0]) - t)[:, None] / n
    else:
        onehot = (y[:, None] == classes[None, :]).astype(float)
        q = onehot * (1 - eps) + eps / len(classes)
        G = (np.exp(log_softmax(Z, axis=1)) - q) / n
    return G.T @ X + clf.coef_ / (C * n), G.sum(axis=0)


@pytest.mark.parametrize("dataset", ["iris", "cancer"])
def test_label_smoothing_solves_the_smoothed_problem(dataset, cancer):
    X, y = load_iris(return_X_y=True) if dataset == "iris" else cancer
    eps = 0.2
    clf = CrossEntropyClassifier(label_smoothing=eps, **TIGHT).fit(X, y)
    gW, gb = _smoothed_objective_grad(clf, X, y, eps)
    assert np.max(np.abs(gW)) < 1e-6 and np.max(np.abs(gb)) < 1e-6
    # ... and it is not the unsmoothed solution
    plain = CrossEntropyClassifier(**TIGHT).fit(X, y)
    gW, _ = _smoothed_objective_grad(plain, X, y, eps)
    assert np.max(np.abs(gW)) > 1e-4


# -- integration -------------------------------------------------------------


def test_pipeline_grid_search_cross_val_score():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), CrossEntropyClassifier(max_iter=200))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    grid = GridSearchCV(
        pipe, {"crossentropyclassifier__C": [0.01, 1.0]}, cv=3, error_score="raise"
    ).fit(X, y)
    assert grid.best_params_["crossentropyclassifier__C"] == 1.0
    assert grid.score(X, y) > 0.9


def test_pickle_round_trip(digits):
    X, y = digits
    clf = CrossEntropyClassifier(C=0.1, max_iter=300).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.coef_, clf.coef_)
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


# -- errors -------------------------------------------------------------------------


def test_bad_targets_and_options_raise(digits):
    X, y = digits
    with pytest.raises(ValueError, match="at least 2 classes"):
        CrossEntropyClassifier().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="multiclass-multioutput"):
        CrossEntropyClassifier().fit(X, np.column_stack([y, y]))
    Y = np.column_stack([y % 2, y > 4])
    with pytest.raises(ValueError, match="class_weight"):
        CrossEntropyClassifier(class_weight="balanced").fit(X, Y)
    for bad in [dict(C=0), dict(max_iter=0), dict(label_smoothing=1.0)]:
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            CrossEntropyClassifier(**bad).fit(X, y)
    with pytest.raises(ValueError, match="non-negative"):
        CrossEntropyClassifier().fit(X, y, sample_weight=-np.ones(len(y)))
