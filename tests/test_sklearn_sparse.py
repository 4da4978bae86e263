"""CrossEntropyClassifier on SciPy sparse X: the fit equals the fit on the
same data densified (every format, container, dtype and target kind, with
sample and class weights and warm starts), the sparse objective equals a
float64 NumPy formula and does not depend on the thread count, scikit-learn's
sparse estimator checks pass, and dask arrays of sparse blocks are refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
sp = pytest.importorskip("scipy.sparse")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.utils import estimator_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import numxent._objective as objective  # noqa: E402
import numxent._sparse_objective as sparse_objective  # noqa: E402
from naive import penalised_objective_ref  # noqa: E402
from numxent.errors import InvalidTypeError  # noqa: E402
from numxent.sklearn import CrossEntropyClassifier  # noqa: E402

TIGHT = dict(tol=1e-10, max_iter=10_000)
KINDS = ["binary", "multiclass", "multilabel"]
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def make_problem(kind: str, n: int = 240, f: int = 30, density: float = 0.25,
                 seed: int = 0):  # fmt: skip
    """(X as CSR float64, y): sparse rows, a planted linear signal, rows
    without entries included."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, f, density=density, format="csr", random_state=seed,
                  data_rvs=rng.standard_normal)  # fmt: skip
    X = sp.csr_matrix(X.multiply(np.arange(n)[:, None] % 17 != 0))  # empty rows
    k = {"binary": 2, "multiclass": 4, "multilabel": 3}[kind]
    Z = X @ rng.standard_normal((f, k)) + 0.3 * rng.standard_normal((n, k))
    if kind == "multilabel":
        return X, (Z > 0.2).astype(np.int64)
    return X, np.argmax(Z, axis=1) if kind == "multiclass" else (Z[:, 0] > 0) * 1


def as_format(X, fmt: str, container: str, dtype):
    X = X.astype(dtype).asformat(fmt)
    if container == "array":
        X = sp.csr_array(X).asformat(fmt)
    return X


def assert_same_solution(ours, ref, rtol):
    scale = np.max(np.abs(ref.coef_))
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(
        ours.intercept_, ref.intercept_, rtol=rtol, atol=rtol * scale
    )


def fit_quietly(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


#: float64: to the solver's tolerance. float32 cannot converge to tol=1e-10:
#: both fits stop after the same few iterations, from the same start, and
#: agree as far as float32 rounding lets the two iterations agree.
FIT = {np.float64: (TIGHT, 1e-7), np.float32: (dict(tol=0.0, max_iter=6), 1e-4)}


# -- the fit on sparse X is the fit on X densified ---------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("container", ["matrix", "array"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil"])
def test_sparse_fit_equals_dense_fit(fmt, container, dtype, kind):
    X, y = make_problem(kind)
    Xs = as_format(X, fmt, container, dtype)
    Xd = X.toarray().astype(dtype)
    params, rtol = FIT[dtype]
    ours = fit_quietly(CrossEntropyClassifier(**params), Xs, y)
    dense = fit_quietly(CrossEntropyClassifier(**params), Xd, y)
    assert ours.coef_.dtype == ours.intercept_.dtype == dtype
    assert ours.n_iter_[0] == dense.n_iter_[0]
    assert_same_solution(ours, dense, rtol)
    # every prediction method takes the sparse matrix and gives what it gives
    # on the dense one
    close = dict(rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours.predict(Xs), ours.predict(Xd))
    for method in ("decision_function", "predict_proba", "predict_log_proba"):
        got, want = getattr(ours, method)(Xs), getattr(ours, method)(Xd)
        assert type(got) is np.ndarray and got.dtype == dtype
        np.testing.assert_allclose(got, want, **close)
    assert ours.score(Xs, y) == ours.score(Xd, y)


@pytest.mark.parametrize("option", ["sample_weight", "balanced", "class_dict"])
@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_weights_are_applied_as_on_dense_data(option, kind):
    X, y = make_problem(kind, seed=3)
    rng = np.random.default_rng(4)
    kw = {}
    params = dict(TIGHT, C=2.0)
    if option == "sample_weight":
        kw["sample_weight"] = rng.uniform(0.0, 3.0, size=len(y))
    elif option == "balanced":
        params["class_weight"] = "balanced"
        kw["sample_weight"] = rng.uniform(0.5, 1.5, size=len(y))
    else:
        params["class_weight"] = {c: 1.0 + c for c in np.unique(y)}
    ours = CrossEntropyClassifier(**params).fit(X, y, **kw)
    dense = CrossEntropyClassifier(**params).fit(X.toarray(), y, **kw)
    plain = CrossEntropyClassifier(**TIGHT, C=2.0).fit(X, y)
    assert_same_solution(ours, dense, 1e-7)
    # the weights change the solution: the check above could not pass unheard
    assert np.max(np.abs(ours.coef_ - plain.coef_)) > 1e-2 * np.max(np.abs(plain.coef_))


def test_multilabel_sample_weight_as_on_dense_data():
    X, Y = make_problem("multilabel", seed=5)
    sw = np.random.default_rng(6).uniform(0.0, 2.0, size=X.shape[0])
    ours = CrossEntropyClassifier(**TIGHT).fit(X.tocsc(), Y, sample_weight=sw)
    dense = CrossEntropyClassifier(**TIGHT).fit(X.toarray(), Y, sample_weight=sw)
    assert_same_solution(ours, dense, 1e-7)
    np.testing.assert_array_equal(ours.predict(X), dense.predict(X.toarray()))


def test_warm_start_on_sparse_data():
    X, y = make_problem("multiclass", seed=7)
    dense = CrossEntropyClassifier(tol=1e-8, max_iter=1000).fit(X.toarray(), y)
    warm = CrossEntropyClassifier(tol=1e-8, max_iter=1000, warm_start=True)
    warm.fit(X, y)
    cold_iters = warm.n_iter_[0]
    assert_same_solution(warm, dense, 1e-6)
    warm.fit(X.tocsc(), y)  # from the previous solution: nothing left to do
    assert warm.n_iter_[0] <= 2 < cold_iters
    assert_same_solution(warm, dense, 1e-6)
    # a dense fit's coefficients start a sparse fit, and the other way round
    from_dense = CrossEntropyClassifier(tol=1e-8, max_iter=1000, warm_start=True)
    from_dense.fit(X.toarray(), y).fit(X, y)
    assert from_dense.n_iter_[0] <= 2


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_matches_logistic_regression_on_sparse_data(kind):
    """An independent reference: scikit-learn's own fit of the same sparse
    matrix."""
    X, y = make_problem(kind, n=300, f=40, seed=8)
    ref = LogisticRegression(C=0.5, **TIGHT).fit(X, y)
    ours = CrossEntropyClassifier(C=0.5, **TIGHT).fit(X, y)
    assert_same_solution(ours, ref, 1e-4)
    np.testing.assert_allclose(
        ours.predict_proba(X), ref.predict_proba(X), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_index_dtypes_and_non_canonical_matrices():
    X, y = make_problem("multiclass", seed=9)
    ref = CrossEntropyClassifier(**TIGHT).fit(X, y)
    wide = X.copy()
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    np.testing.assert_array_equal(CrossEntropyClassifier(**TIGHT).fit(wide, y).coef_,
                                  ref.coef_)  # fmt: skip
    # each entry split in two halves, the entries of a row in random order:
    # the same matrix, not in SciPy's canonical format
    coo = X.tocoo()
    order = np.random.default_rng(10).permutation(2 * coo.nnz)
    rows = np.concatenate([coo.row, coo.row])[order]
    cols = np.concatenate([coo.col, coo.col])[order]
    vals = np.concatenate([coo.data / 2, coo.data / 2])[order]
    by_row = np.argsort(rows, kind="stable")
    indptr = np.searchsorted(rows[by_row], np.arange(X.shape[0] + 1))
    messy = sp.csr_matrix((vals[by_row], cols[by_row], indptr), shape=X.shape)
    assert not messy.has_canonical_format
    assert abs(messy - X).max() < 1e-15
    split = CrossEntropyClassifier(**TIGHT).fit(messy, y)
    assert_same_solution(split, ref, 1e-7)


def test_float32_sparse_trains_in_float32(monkeypatch):
    X, y = make_problem("multiclass", seed=11)
    seen = []
    real = sparse_objective.cross_entropy

    def spy(logits, target, **kw):
        seen.append((logits.dtype, kw["out"].dtype))
        return real(logits, target, **kw)

    monkeypatch.setattr(sparse_objective, "cross_entropy", spy)
    clf = CrossEntropyClassifier(tol=1e-5, max_iter=1000).fit(X.astype(np.float32), y)
    assert seen and set(seen) == {(np.dtype(np.float32), np.dtype(np.float32))}
    assert clf.coef_.dtype == np.float32
    ref = CrossEntropyClassifier(**TIGHT).fit(X, y)
    np.testing.assert_allclose(clf.coef_, ref.coef_, rtol=1e-3, atol=1e-3)


# -- the objective -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_objective_matches_naive_for_any_threads(kind, fmt, monkeypatch):
    rng = np.random.default_rng(12)
    n, f, k = 700, 40, 6
    X = sp.random(n, f, density=0.2, format=fmt, random_state=13,
                  data_rvs=rng.standard_normal)  # fmt: skip
    sw = rng.random(n) * 3
    if kind == "multiclass":
        y, k_out = rng.integers(0, k, n), k
    elif kind == "binary":
        y, k_out = rng.integers(0, 2, n).astype(float), 1
    else:
        y, k_out = (rng.random((n, k)) < 0.3).astype(float), k
    eps = 0.1 if kind == "multiclass" else 0.0
    theta = rng.standard_normal(k_out * f + k_out)
    ref = penalised_objective_ref(X.toarray(), y, sw, kind, theta, 0.01, eps)
    monkeypatch.setattr(sparse_objective, "BLOCK_ELEMENTS", 96)  # 16-row blocks
    got = {}
    for threads in (1, 2, 3):
        with objective.fit_threads(threads) as pool:
            obj = sparse_objective.SparseObjective(
                X, y, sw, kind, k_out, True, 0.01, eps, pool, threads
            )
            assert len(obj.bounds) > 40
            got[threads] = obj(theta)
    np.testing.assert_allclose(got[1][0], ref[0], rtol=1e-13)
    np.testing.assert_allclose(got[1][1], ref[1], rtol=1e-12, atol=1e-15)
    for threads in (2, 3):
        assert got[threads][0] == got[1][0]
        np.testing.assert_array_equal(got[threads][1], got[1][1])


@pytest.mark.parametrize("kind", KINDS)
def test_float32_sparse_objective_matches_dense_objective(kind):
    """float32 on both sides: the sparse and dense evaluations agree to
    float32 rounding (the dense one is BLAS's)."""
    rng = np.random.default_rng(14)
    n, f, k = 500, 30, 5
    X = sp.random(n, f, density=0.3, format="csr", random_state=15, dtype=np.float32,
                  data_rvs=rng.standard_normal)  # fmt: skip
    if kind == "multiclass":
        y, k_out = rng.integers(0, k, n), k
    elif kind == "binary":
        y, k_out = rng.integers(0, 2, n).astype(np.float32), 1
    else:
        y, k_out = (rng.random((n, k)) < 0.3).astype(np.float32), k
    theta = rng.standard_normal(k_out * f + k_out)
    args = (y, None, kind, k_out, True, 1e-3, 0.0, None, 1)
    with objective.one_numba_thread():
        vs, gs = sparse_objective.SparseObjective(X, *args)(theta)
        vd, gd = objective.Objective(X.toarray(), *args)(theta)
    np.testing.assert_allclose(vs, vd, rtol=1e-6)
    np.testing.assert_allclose(gs, gd, rtol=1e-4, atol=1e-6 * np.abs(gd).max())


# -- scikit-learn's checks --------------------------------------------------------


def test_sparse_tag_is_set():
    assert CrossEntropyClassifier().__sklearn_tags__().input_tags.sparse is True


@pytest.mark.parametrize(
    "check",
    [
        "check_estimator_sparse_tag",
        "check_estimator_sparse_array",
        "check_estimator_sparse_matrix",
        "check_sample_weight_equivalence_on_sparse_data",
    ],
)
def test_sklearn_sparse_checks(check):
    """scikit-learn's sparse checks by name (tests/test_sklearn.py runs the
    whole ``check_estimator`` suite, these among them now that the tag is
    set)."""
    getattr(estimator_checks, check)("CrossEntropyClassifier", CrossEntropyClassifier())


# -- dask ---------------------------------------------------------------------------


def test_dask_arrays_of_sparse_blocks_are_refused():
    da = pytest.importorskip("dask.array")
    X, y = make_problem("multiclass", n=100, seed=16)
    blocks = da.from_array(X, chunks=(50, X.shape[1]), asarray=False)
    assert sp.issparse(blocks._meta)
    with pytest.raises(InvalidTypeError, match="sparse .* in memory only"):
        CrossEntropyClassifier().fit(blocks, y)
    with pytest.raises(TypeError, match="sparse"):
        CrossEntropyClassifier().fit(blocks, da.from_array(y, chunks=50))
    # an in-memory sparse X that dask targets send to the Dask fit
    with pytest.raises(InvalidTypeError, match="sparse"):
        CrossEntropyClassifier().fit(X, da.from_array(y, chunks=50))
    clf = CrossEntropyClassifier().fit(X, y)
    with pytest.raises(InvalidTypeError, match="map_blocks"):
        clf.predict(blocks)


# -- the benchmark's sparse workload -----------------------------------------------


def test_benchmark_sparse_workload_runs_and_compares(monkeypatch):
    """The report's sparse workload at a toy size: the text-like matrix is
    what it says, both models solve the same problem, the rows and the
    targets are made (the timings are not checked)."""
    import pathlib

    bench = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    import check_targets
    from scenarios import sklearn_fit

    X, X_test, y, y_test = sklearn_fit.make_text_problem(1000, 600, 4, tokens=20)
    assert sp.isspmatrix_csr(X) and X.shape == (800, 600) and X_test.shape[0] == 200
    np.testing.assert_allclose(sp.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    assert 15 < X.nnz / X.shape[0] <= 20  # repeated tokens share an entry
    opts = {k: d for k, (d, _) in sklearn_fit.OPTIONS.items()}
    opts.update(workloads="sparse", dtypes="float64", models="numxent,sklearn",
                sparse_n_samples=1000, sparse_n_features=600, sparse_n_classes=4,
                sparse_tokens=20, repeat=2)  # fmt: skip
    rows = sklearn_fit.run(opts, 1)["rows"]
    assert [(r["workload"], r["model"]) for r in rows] == [
        ("sparse", "numxent"),
        ("sparse", "sklearn"),
    ]
    n, s = rows
    assert len(n["fit_s_all"]) == 2 and n["fit_s"] > 0
    assert n["test_accuracy"] == s["test_accuracy"] > 0.5
    np.testing.assert_allclose(n["objective"], s["objective"], rtol=1e-6)
    assert "sparse float64: fit" in sklearn_fit.markdown({"rows": rows})
    found = check_targets.targets({"sections": {"sklearn_fit": {"rows": rows}}})
    assert [t["target"] for t in found] == [
        "LogisticRegression fit ÷ CrossEntropyClassifier fit ≥",
        "test accuracy difference ≤",
        "objective ÷ LogisticRegression's - 1 ≤",
    ]
