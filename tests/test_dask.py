"""numxent.dask and CrossEntropyClassifier on dask arrays: agreement with the
float64 NumPy references and the in-memory estimator, the same bits under
every scheduler (synchronous, threads, a 2-process distributed cluster),
routing from the NumPy API, and a worker killed during a fit."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import _paths  # noqa: E402
import numxent as nx  # noqa: E402
import numxent.dask as nxd  # noqa: E402
from naive import (  # noqa: E402
    bce_with_logits_ref,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

RTOL = 1e-12


@pytest.fixture(scope="module")
def client():
    """A 2-worker LocalCluster (processes, one thread each), not the default
    scheduler: tests pick it explicitly."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close(timeout=60)
    cluster.close(timeout=60)


def _bits(*arrays):
    return [np.asarray(a).tobytes() for a in arrays]


def _all_schedulers(client, *collections):
    """The results under the synchronous, threaded and distributed schedulers."""
    return [
        dask.compute(*collections, scheduler="synchronous"),
        dask.compute(*collections, scheduler="threads", num_workers=3),
        client.gather(client.compute(list(collections))),
    ]


# --------------------------------------------------------------------------
# the functional API against the references
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"weight": True},
        {"sample_weight": True},
        {"label_smoothing": 0.2, "ignore_index": 2, "weight": True},
    ],
    ids=["plain", "weight", "sample_weight", "smoothing+ignore+weight"],
)
def test_cross_entropy_hard_matches_reference(rng, reduction, kw):
    x = rng.standard_normal((203, 6))
    y = rng.integers(0, 6, 203)
    args = dict(kw)
    if args.pop("weight", False):
        args["weight"] = rng.random(6) + 0.1
    sw = rng.random(203) if args.pop("sample_weight", False) else None
    xd = da.from_array(x, chunks=(50, 6))
    swd = None if sw is None else da.from_array(sw, chunks=70)  # other chunks
    loss, grad = nxd.cross_entropy(xd, y, sample_weight=swd, reduction=reduction,
                                   return_grad=True, **args)  # fmt: skip
    assert isinstance(loss, da.Array) and grad.chunks == xd.chunks
    lc, gc = dask.compute(loss, grad, scheduler="threads")
    ref_l, ref_g = cross_entropy_ref(x, y, sample_weight=sw, reduction=reduction,
                                     **args)  # fmt: skip
    np.testing.assert_allclose(lc, ref_l, rtol=RTOL)
    np.testing.assert_allclose(gc, ref_g, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_soft_3d_matches_reference(rng, reduction):
    x = rng.standard_normal((7, 11, 5))
    t = rng.random((7, 11, 5))
    t /= t.sum(-1, keepdims=True)
    sw = rng.random((7, 11))
    xd = da.from_array(x, chunks=(3, 4, 5))
    loss, grad = nx.cross_entropy(xd, da.from_array(t, chunks=(7, 11, 5)),
                                  sample_weight=sw, reduction=reduction,
                                  return_grad=True)  # fmt: skip
    lc, gc = dask.compute(loss, grad, scheduler="sync")
    ref_l, ref_g = cross_entropy_ref(x, t, sample_weight=sw, reduction=reduction)
    np.testing.assert_allclose(lc, ref_l, rtol=RTOL)
    np.testing.assert_allclose(gc, ref_g, rtol=1e-10, atol=1e-15)
    assert grad.chunks == xd.chunks


def test_cross_entropy_float32_and_zero_denominator(rng):
    x = rng.standard_normal((100, 4)).astype(np.float32)
    y = np.full(100, -100)
    loss, grad = nxd.cross_entropy(da.from_array(x, chunks=25), y, return_grad=True)
    lc, gc = dask.compute(loss, grad)
    assert lc.dtype == np.float32 and np.isnan(lc)
    assert gc.dtype == np.float32 and not gc.any()
    y = rng.integers(0, 4, 100)
    lc = nxd.cross_entropy(da.from_array(x, chunks=25), y).compute()
    ref, _ = cross_entropy_ref(x, y)
    assert lc.dtype == np.float32
    np.testing.assert_allclose(lc, ref, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_16bit_class_indices(rng, fmt, reduction):
    """16-bit logits with class indices: read in place per block, as by the
    NumPy API (once a KeyError at compute: the 16-bit call reached the
    float32 kernel's dispatcher)."""
    if fmt == "float16":
        dtype = np.dtype(np.float16)
    else:
        dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    x = (rng.standard_normal((90, 7)) * 3).astype(dtype)
    y = rng.integers(0, 7, 90)
    y[::11] = -100
    xd = da.from_array(x, chunks=(25, 7))
    loss, grad = nxd.cross_entropy(xd, y, reduction=reduction, return_grad=True)
    lc, gc = dask.compute(loss, grad)
    ref, ref_g = cross_entropy_ref(x.astype(np.float64), y, reduction=reduction)
    assert lc.dtype == x.dtype and gc.dtype == x.dtype
    np.testing.assert_allclose(np.asarray(lc, np.float64), ref, rtol=1e-2)
    # each block's rows are the NumPy API's rows, bit for bit
    _, g_np = nx.cross_entropy(x, y, reduction="none", return_grad=True)
    if reduction == "none":
        np.testing.assert_array_equal(gc.view(np.uint16), g_np.view(np.uint16))
    np.testing.assert_allclose(np.asarray(gc, np.float64), ref_g, atol=2e-2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", ["none", "per_class", "per_sample", "all"])
def test_bce_matches_reference(rng, reduction, weights):
    x = rng.standard_normal((150, 4)) * 3
    t = rng.random((150, 4))
    kw = {}
    if weights in ("per_class", "all"):
        kw["pos_weight"] = rng.random(4) + 0.5
    if weights in ("per_sample", "all"):
        kw["weight"] = rng.random((150, 1))  # varies along the samples
        kw["sample_weight"] = rng.random(150)
    xd = da.from_array(x, chunks=(40, 4))
    loss, grad = nx.binary_cross_entropy_with_logits(
        xd, t, reduction=reduction, return_grad=True, **kw
    )
    lc, gc = dask.compute(loss, grad)
    ref_l, ref_g = bce_with_logits_ref(x, t, reduction=reduction, **kw)
    np.testing.assert_allclose(lc, ref_l, rtol=RTOL)
    np.testing.assert_allclose(gc, ref_g, rtol=1e-10, atol=1e-15)
    assert grad.chunks == xd.chunks


def test_bce_1d(rng):
    x, t, sw = rng.standard_normal(99), rng.random(99), rng.random(99)
    loss = nxd.binary_cross_entropy_with_logits(
        da.from_array(x, chunks=20), t, sample_weight=sw
    )
    ref, _ = bce_with_logits_ref(x, t, sample_weight=sw)
    np.testing.assert_allclose(loss.compute(), ref, rtol=RTOL)


@pytest.mark.parametrize("axis", [-1, 0])
def test_rowwise_match_references(rng, axis):
    x = rng.standard_normal((40, 9))
    chunks = (10, 9) if axis == -1 else (40, 3)
    xd = da.from_array(x, chunks=chunks)
    np.testing.assert_allclose(
        nx.logsumexp(xd, axis=axis).compute(), logsumexp_ref(x, axis), rtol=RTOL
    )
    np.testing.assert_allclose(
        nx.log_softmax(xd, axis=axis).compute(), log_softmax_ref(x, axis), rtol=RTOL
    )
    sm = nx.softmax(xd, axis=axis)
    assert sm.chunks == xd.chunks
    np.testing.assert_allclose(sm.compute(), softmax_ref(x, axis), rtol=RTOL)


# --------------------------------------------------------------------------
# layout, routing, errors
# --------------------------------------------------------------------------


def test_numpy_api_routes_dask_inputs_without_computing(rng):
    calls = []

    def block(b):
        calls.append(1)
        return b

    x = da.from_array(rng.standard_normal((60, 5)), chunks=(20, 5))
    x = x.map_blocks(block, dtype=x.dtype, meta=np.empty((0, 0)))
    y = da.from_array(rng.integers(0, 5, 60), chunks=20)
    loss, grad = nx.cross_entropy(x, y, return_grad=True)
    bce = nx.binary_cross_entropy_with_logits(x, da.zeros((60, 5), chunks=(20, 5)))
    lse = nx.logsumexp(x)
    assert all(isinstance(r, da.Array) for r in (loss, grad, bce, lse))
    assert calls == []  # nothing computed yet
    # a dask target alone routes too (it would otherwise be computed)
    loss2 = nx.cross_entropy(rng.standard_normal((60, 5)), y)
    assert isinstance(loss2, da.Array)


def test_chunked_class_axis_is_rechunked_with_warning(rng):
    x = rng.standard_normal((30, 8))
    y = rng.integers(0, 8, 30)
    with pytest.warns(nxd.RechunkWarning, match="axis 1 \\(classes\\) is split"):
        loss, grad = nxd.cross_entropy(
            da.from_array(x, chunks=(10, 4)), y, return_grad=True
        )
    assert grad.chunks == ((10, 10, 10), (8,))
    np.testing.assert_allclose(loss.compute(), cross_entropy_ref(x, y)[0], rtol=RTOL)


def test_errors_are_eager_and_clear(rng):
    xd = da.zeros((10, 3), chunks=(5, 3))
    with pytest.raises(nx.InvalidValueError, match="reduction"):
        nxd.cross_entropy(xd, np.zeros(10, int), reduction="avg")
    with pytest.raises(nx.InvalidValueError, match="leading shape"):
        nxd.cross_entropy(xd, np.zeros(9, int))
    with pytest.raises(nx.InvalidTypeError, match="looks like class indices"):
        nxd.cross_entropy(xd, np.zeros(10))
    with pytest.raises(nx.InvalidValueError, match="weight must have shape"):
        nxd.cross_entropy(xd, np.zeros(10, int), weight=np.ones(4))
    with pytest.raises(nx.InvalidValueError, match="sample_weight must have shape"):
        nxd.cross_entropy(xd, np.zeros(10, int), sample_weight=np.ones(4))
    with pytest.raises(nx.InvalidValueError, match="out= is not supported"):
        nx.cross_entropy(xd, np.zeros(10, int), return_grad=True, out=np.zeros((10, 3)))
    with pytest.raises(nx.InvalidTypeError, match="floating"):
        nxd.logsumexp(da.zeros((4, 2), dtype=int, chunks=2))
    with pytest.raises(nx.InvalidValueError, match="pos_weight"):
        nxd.binary_cross_entropy_with_logits(xd, xd, pos_weight=np.ones(4))
    # the labels' range is checked by the kernels: at compute time
    loss = nxd.cross_entropy(xd, np.array([0, 1, 2, 0, 1, 2, 3, 0, 1, 2]))
    with pytest.raises(nx.LabelIndexError, match="class index 3"):
        loss.compute(scheduler="sync")


# --------------------------------------------------------------------------
# the same bits under every scheduler
# --------------------------------------------------------------------------


def test_same_bits_under_every_scheduler(rng, client):
    x = da.from_array(rng.standard_normal((4000, 17)), chunks=(150, 17))  # 27 blocks
    y = da.from_array(rng.integers(0, 17, 4000), chunks=400)
    sw = da.from_array(rng.random(4000), chunks=1000)
    ce = nx.cross_entropy(x, y, sample_weight=sw, label_smoothing=0.1,
                          return_grad=True)  # fmt: skip
    x32 = x.astype(np.float32)
    bce = nx.binary_cross_entropy_with_logits(
        x32, (x32 > 0).astype(np.float32), reduction="sum", return_grad=True
    )
    results = _all_schedulers(client, *ce, *bce)
    first = _bits(*results[0])
    for r in results[1:]:
        assert _bits(*r) == first
    ref, _ = cross_entropy_ref(x.compute(), y.compute(), sample_weight=sw.compute(),
                               label_smoothing=0.1)  # fmt: skip
    np.testing.assert_allclose(results[0][0], ref, rtol=RTOL)


# --------------------------------------------------------------------------
# CrossEntropyClassifier on dask arrays
# --------------------------------------------------------------------------

# scikit-learn is the estimator's own extra: without it only these tests skip
CrossEntropyClassifier = None


@pytest.fixture(scope="module", autouse=False)
def sk():
    """scikit-learn's datasets module; binds CrossEntropyClassifier."""
    global CrossEntropyClassifier
    pytest.importorskip("sklearn")
    import sklearn.datasets

    from numxent.sklearn import CrossEntropyClassifier as cls

    CrossEntropyClassifier = cls
    return sklearn.datasets


TIGHT = dict(tol=1e-10, max_iter=10_000)
#: The cluster fits: a few L-BFGS iterations (each evaluation is a scheduler
#: round trip); the same bits are expected whatever the count.
SHORT = dict(tol=1e-10, max_iter=12)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def multiclass(sk):
    X, y = sk.make_classification(3000, 12, n_informative=8, n_classes=4,
                               random_state=0)  # fmt: skip
    sw = np.random.default_rng(1).random(3000) + 0.5
    return X, y, sw


@pytest.mark.parametrize(
    "case", ["multinomial", "binary", "sample_weight", "class_weight", "float32"]
)
def test_fit_matches_in_memory_fit(multiclass, case):
    X, y, sw = multiclass
    est_kw, fit_kw = dict(TIGHT), {}
    if case == "binary":
        y = (y > 1).astype(int)
    if case == "sample_weight":
        fit_kw["sample_weight"] = sw
    if case == "class_weight":
        est_kw["class_weight"] = "balanced"
        fit_kw["sample_weight"] = sw
    if case == "float32":
        X = X.astype(np.float32)
        est_kw = {"tol": 1e-4}
    ref = CrossEntropyClassifier(**est_kw).fit(X, y, **fit_kw)
    Xd = da.from_array(X, chunks=(400, 12))
    dkw = {k: da.from_array(v, chunks=700) for k, v in fit_kw.items()}
    with dask.config.set(scheduler="threads"):
        est = CrossEntropyClassifier(**est_kw).fit(Xd, da.from_array(y, chunks=400),
                                                   **dkw)  # fmt: skip
    assert est.coef_.dtype == X.dtype
    np.testing.assert_array_equal(est.classes_, ref.classes_)
    if case == "float32":  # float32 gradients: L-BFGS paths part by rounding
        assert _rel(est.coef_, ref.coef_) < 1e-3
    else:
        assert _rel(est.coef_, ref.coef_) < 1e-8
        assert _rel(est.intercept_, ref.intercept_) < 1e-8
    # predictions stay lazy and match the in-memory ones of the same model
    pred, proba = est.predict(Xd), est.predict_proba(Xd)
    scores = est.decision_function(Xd)
    assert all(isinstance(a, da.Array) for a in (pred, proba, scores))
    np.testing.assert_array_equal(pred.compute(), est.predict(X))
    np.testing.assert_allclose(proba.compute(), est.predict_proba(X), rtol=1e-6)
    np.testing.assert_allclose(scores.compute(), est.decision_function(X), rtol=1e-6)


def test_fit_multilabel(sk):
    X, Y = sk.make_multilabel_classification(1500, 10, n_classes=4, random_state=0)
    ref = CrossEntropyClassifier(**TIGHT).fit(X, Y)
    est = CrossEntropyClassifier(**TIGHT).fit(da.from_array(X, chunks=(300, 10)), Y)
    assert _rel(est.coef_, ref.coef_) < 1e-5
    pred = est.predict(da.from_array(X, chunks=(300, 10)))
    np.testing.assert_array_equal(pred.compute(), est.predict(X))
    with pytest.raises(ValueError, match="class_weight is not supported"):
        CrossEntropyClassifier(class_weight="balanced").fit(da.from_array(X), Y)


def test_fit_checks_its_input(sk):
    X = da.zeros((20, 3), chunks=(10, 3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        CrossEntropyClassifier().fit(X, np.zeros(20, int))
    with pytest.raises(ValueError, match="samples"):
        CrossEntropyClassifier().fit(X, np.zeros(19, int))
    with pytest.raises(ValueError, match="non-negative"):
        CrossEntropyClassifier().fit(X, np.arange(20) % 2, sample_weight=-np.ones(20))
    with pytest.warns(nxd.RechunkWarning, match="along its features"):
        est = CrossEntropyClassifier(max_iter=3).fit(
            da.ones((20, 4), chunks=(10, 2)), np.arange(20) % 2
        )
    with pytest.raises(ValueError, match="expecting 4 features"):
        est.predict(da.ones((5, 3)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_on_cluster_same_bits_as_threads(multiclass, client):
    X, y, sw = multiclass
    Xd, yd = da.from_array(X, chunks=(250, 12)), da.from_array(y, chunks=250)
    with dask.config.set(scheduler="threads"):
        ref = CrossEntropyClassifier(**SHORT).fit(Xd, yd, sample_weight=sw)
    with client.as_current(), dask.config.set(scheduler=client.get):
        est = CrossEntropyClassifier(**SHORT).fit(Xd, yd, sample_weight=sw)
    assert est.coef_.tobytes() == ref.coef_.tobytes()
    assert est.intercept_.tobytes() == ref.intercept_.tobytes()
    assert est.n_iter_[0] == ref.n_iter_[0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_worker_killed_during_fit(multiclass, client, monkeypatch):
    """SIGKILL a worker (its persisted blocks are lost) during the third
    L-BFGS evaluation: the fit recomputes the lost blocks and returns the
    undisturbed fit's coefficients, bit for bit."""
    X, y, _ = multiclass
    Xd, yd = da.from_array(X, chunks=(250, 12)), da.from_array(y, chunks=250)
    with dask.config.set(scheduler="threads"):
        ref = CrossEntropyClassifier(**SHORT).fit(Xd, yd)
    objective = _paths.dask_objective()
    call = objective.__call__
    n_calls = [0]
    pids_before = client.run(os.getpid)

    def killing_call(self, theta):
        n_calls[0] += 1
        if n_calls[0] == 3:
            pid = next(iter(client.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
        return call(self, theta)

    monkeypatch.setattr(objective, "__call__", killing_call)
    with client.as_current(), dask.config.set(scheduler=client.get):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the nanny's restart messages
            est = CrossEntropyClassifier(**SHORT).fit(Xd, yd)
    assert n_calls[0] > 3
    # the killed worker is gone (its nanny may or may not have restarted it)
    assert set(client.run(os.getpid).values()) != set(pids_before.values())
    assert est.coef_.tobytes() == ref.coef_.tobytes()


def test_unaligned_blocks_are_copied_aligned_and_aligned_ones_kept():
    # A block deserialised on a worker may start at any byte: the fit works on
    # aligned copies of such blocks (BLAS and the kernels were 5x slower).
    from numxent._dask_fit import _aligned

    raw = np.zeros(8 * 100 + 3, dtype=np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float64, count=100, offset=3)
    assert not unaligned.flags.aligned
    fixed = _aligned(unaligned)
    assert fixed.flags.aligned and fixed.ctypes.data % 8 == 0
    np.testing.assert_array_equal(fixed, unaligned)
    ok = np.arange(12.0).reshape(3, 4)
    assert _aligned(ok) is ok
