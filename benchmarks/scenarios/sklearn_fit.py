"""Fit time: numxent's CrossEntropyClassifier vs LogisticRegression(lbfgs).

The report's ``--sklearn-fit`` section, two workloads (``--sklearn-fit-workloads``):

- ``dense`` (the default): ``make_classification(n_samples, n_features=100,
  n_informative=60, n_classes=50, n_clusters_per_class=1)``, ``C=1,
  tol=1e-4``, a 75/25 train/test split;
- ``sparse``: a TF-IDF-like CSR matrix (:func:`make_text_problem`: 50,000
  documents of about 60 tokens over 30,000 features, 20 classes, each class
  with its own topic words; rows of unit norm), ``C=10, tol=1e-6``, the last
  10,000 rows held out.

Fit time (the median over ``--sklearn-fit-repeat`` fits, the models
interleaved), L-BFGS iterations, the objective at the fitted coefficients
(:func:`objective`, one float64 formula for every model) and test accuracy
for each model and dtype::

    python benchmarks/report.py --ops none --sklearn-fit              # 200,000 samples
    python benchmarks/report.py --ops none --sklearn-fit --threads 1 \\
        --sklearn-fit-n-samples 20000 --out fit/
    python benchmarks/report.py --ops none --threads 2 --sklearn-fit \\
        --sklearn-fit-workloads sparse --sklearn-fit-dtypes float64 \\
        --sklearn-fit-models numxent,sklearn,sklearn_blas1 \\
        --sklearn-fit-repeat 3 --out fit-sparse/

Models: ``numxent``, ``sklearn`` (``LogisticRegression``, BLAS on the
report's ``--threads``), ``sklearn_blas1`` (the same with BLAS held to one
thread during its fit: on a busy 2-core machine OpenBLAS's spinning threads
made scikit-learn's L-BFGS steps several times slower) and ``sklearnex``
(scikit-learn-intelex's ``LogisticRegression``, in the default list only
where it is installed).

Numba's compilation is kept out of the timings by a small warm-up fit per
dtype. The report's ``--threads`` sets Numba's threads and BLAS's
(threadpoolctl) for both models; scikit-learn's loss itself runs on one
thread. The pytest-benchmark suite times the same fits
(``benchmarks/test_bench_sklearn.py``).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
import warnings

import numpy as np

from ._section import Section

MODELS = ("numxent", "sklearn", "sklearn_blas1", "sklearnex")
#: The default models: scikit-learn-intelex's only where it is installed.
DEFAULT_MODELS = ("numxent", "sklearn") + (
    ("sklearnex",) if importlib.util.find_spec("sklearnex") else ()
)
WORKLOADS = ("dense", "sparse")


def make_problem(n_samples: int, n_features: int, n_classes: int, seed: int = 0):
    """(X_train, X_test, y_train, y_test) in float64."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=min(60, n_features - 2),
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return train_test_split(X, y, test_size=0.25, random_state=seed)


def make_text_problem(n_samples: int, n_features: int, n_classes: int,
                      tokens: int = 60, seed: int = 0, topic: float = 0.08,
                      topic_words: int = 500):  # fmt: skip
    """(X_train, X_test, y_train, y_test): TF-IDF-like CSR rows, float64, the
    last fifth held out.

    Each row is a document of ``tokens`` tokens: drawn from a Zipf background
    over the features (frequency ~ 1 / (rank + 10)), and with probability
    ``topic`` from its class's own ``topic_words`` words (Zipf too; none of
    the 100 most frequent background words; fewer words where the features
    are too few for that). Entries are ``(1 + log tf) *
    idf``, rows scaled to unit norm, columns shuffled; repeated tokens make
    slightly fewer than ``tokens`` entries a row. A linear model can learn
    the classes from the topic words, and the background words are noise.
    """
    from scipy import sparse

    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(n_features) + 10.0)
    y = rng.integers(0, n_classes, n_samples)
    rows = np.repeat(np.arange(n_samples), tokens)
    tok = rng.choice(n_features, size=rows.size, p=p / p.sum())
    common = min(100, n_features // 2)
    topic_words = max(1, min(topic_words, (n_features - common) // n_classes))
    words = common + rng.permutation(n_features - common)[: n_classes * topic_words]
    q = 1.0 / (np.arange(topic_words) + 5.0)
    is_topic = rng.random(rows.size) < topic
    pick = rng.choice(topic_words, size=int(is_topic.sum()), p=q / q.sum())
    tok[is_topic] = words.reshape(n_classes, topic_words)[y[rows[is_topic]], pick]
    X = sparse.csr_matrix((np.ones(rows.size), (rows, tok)),
                          shape=(n_samples, n_features))  # fmt: skip
    X.sum_duplicates()  # term counts
    df = np.bincount(X.indices, minlength=n_features)
    X.data = (1.0 + np.log(X.data)) * (np.log((1 + n_samples) / (1 + df)) + 1.0)[
        X.indices
    ]
    norms = np.sqrt(np.bincount(np.repeat(np.arange(n_samples), np.diff(X.indptr)),
                                weights=X.data**2, minlength=n_samples))  # fmt: skip
    X.data /= np.repeat(norms, np.diff(X.indptr))
    X = X[:, rng.permutation(n_features)].tocsr()
    n_train = n_samples - n_samples // 5
    return X[:n_train], X[n_train:], y[:n_train], y[n_train:]


def warm_up(dtype, sparse: bool = False) -> None:
    """Compile numxent's kernels for ``dtype`` outside the timings (with
    ``sparse``: the sparse objective's kernels too)."""
    from sklearn.exceptions import ConvergenceWarning

    from numxent.sklearn import CrossEntropyClassifier

    if sparse:
        X, _, y, _ = make_text_problem(2000, 300, 5, tokens=10)
    else:
        X, _, y, _ = make_problem(2000, 20, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        CrossEntropyClassifier(max_iter=5).fit(X.astype(dtype), y)


def objective(est, X, y, C: float) -> float:
    """``LogisticRegression``'s objective in float64 at ``est``'s fit:
    ``mean_i loss_i + ||W||^2 / (2 C n)`` (no sample weights), whatever
    the model."""
    from scipy.special import logsumexp

    coef = np.asarray(est.coef_, dtype=np.float64)
    Z = np.asarray(X.astype(np.float64) @ coef.T) + est.intercept_.astype(np.float64)
    if Z.shape[1] == 1:  # binary: the log-odds of classes_[1]
        Z = np.hstack([np.zeros_like(Z), Z])
    idx = np.searchsorted(est.classes_, y)
    n = Z.shape[0]
    loss = float(np.mean(logsumexp(Z, axis=1) - Z[np.arange(n), idx]))
    return loss + float(np.sum(coef**2)) / (2.0 * C * n)


def _estimator(model: str, C: float, tol: float, max_iter: int):
    if model == "numxent":
        from numxent.sklearn import CrossEntropyClassifier

        return CrossEntropyClassifier(C=C, tol=tol, max_iter=max_iter)
    if model == "sklearnex":
        from sklearnex.linear_model import LogisticRegression as Intelex

        return Intelex(C=C, tol=tol, max_iter=max_iter, solver="lbfgs")
    if model not in ("sklearn", "sklearn_blas1"):
        raise ValueError(f"unknown model {model!r}; pick from {', '.join(MODELS)}")
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, tol=tol, max_iter=max_iter, solver="lbfgs")


def _as_dtype(X, dtype):
    return X.astype(dtype) if hasattr(X, "tocsr") else np.ascontiguousarray(X, dtype)


def time_fit(model: str, data, dtype, C=1.0, tol=1e-4, max_iter=1000,
             with_objective: bool = False) -> dict:  # fmt: skip
    """Fit ``model`` (one of :data:`MODELS`) on ``data`` as ``dtype``, timed;
    ``with_objective``: also :func:`objective` on the training data."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    X_train, X_test, y_train, y_test = data
    X_train, X_test = _as_dtype(X_train, dtype), _as_dtype(X_test, dtype)
    est = _estimator(model, C, tol, max_iter)
    blas = 1 if model == "sklearn_blas1" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        with threadpool_limits(limits=blas, user_api="blas"):
            t0 = time.perf_counter()
            est.fit(X_train, y_train)
            fit_s = time.perf_counter() - t0
    row = {
        "model": model,
        "dtype": np.dtype(dtype).name,
        "fit_s": fit_s,
        "n_iter": int(np.max(est.n_iter_)),
        "converged": not any(
            issubclass(w.category, ConvergenceWarning) for w in caught
        ),
        "test_accuracy": float(est.score(X_test, y_test)),
        "coef_dtype": est.coef_.dtype.name,
    }
    if with_objective:
        row["objective"] = objective(est, X_train, y_train, C)
    return row


OPTIONS = {
    "workloads": ("dense", f"comma list of {', '.join(WORKLOADS)}"),
    "n_samples": (200_000, "samples (a quarter of them held out)"),
    "n_features": (100, "features"),
    "n_classes": (50, "classes"),
    "dtypes": ("float32,float64", "comma list of dtypes"),
    "models": (",".join(DEFAULT_MODELS), f"comma list of {', '.join(MODELS)}"),
    "C": (1.0, "inverse regularisation strength"),
    "tol": (1e-4, "L-BFGS tolerance"),
    "max_iter": (1000, "L-BFGS iterations at most"),
    "repeat": (1, "fits of each model and dtype, the models interleaved"),
    "sparse_n_samples": (50_000, "sparse workload: documents (a fifth held out)"),
    "sparse_n_features": (30_000, "sparse workload: features"),
    "sparse_n_classes": (20, "sparse workload: classes"),
    "sparse_tokens": (60, "sparse workload: tokens a document"),
    "sparse_C": (10.0, "sparse workload: C"),
    "sparse_tol": (1e-6, "sparse workload: L-BFGS tolerance"),
}
QUICK = {"n_samples": 20_000, "dtypes": "float32", "sparse_n_samples": 10_000,
         "sparse_n_features": 5_000}  # fmt: skip


def _workload(o: dict, workload: str):
    """(data, problem fields of the rows, fit parameters) of a workload."""
    if workload == "dense":
        data = make_problem(o["n_samples"], o["n_features"], o["n_classes"])
        sizes = (o["n_samples"], o["n_features"], o["n_classes"])
        params = dict(C=o["C"], tol=o["tol"], max_iter=o["max_iter"])
    elif workload == "sparse":
        sizes = (o["sparse_n_samples"], o["sparse_n_features"], o["sparse_n_classes"])
        data = make_text_problem(*sizes, tokens=o["sparse_tokens"])
        params = dict(C=o["sparse_C"], tol=o["sparse_tol"], max_iter=o["max_iter"])
    else:
        raise ValueError(f"unknown workload {workload!r}; pick from dense, sparse")
    fields = dict(workload=workload, n_samples=sizes[0], n_features=sizes[1],
                  n_classes=sizes[2], C=params["C"], tol=params["tol"])  # fmt: skip
    if workload == "sparse":
        fields.update(nnz_per_row=data[0].nnz / data[0].shape[0],
                      n_train=data[0].shape[0])  # fmt: skip
    return data, fields, params


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """Time each model's fit per workload and dtype; one row each (same data
    and split), with the median of ``repeat`` fits.

    ``threads`` are Numba's and BLAS's (threadpoolctl) for every model (BLAS:
    one thread for ``sklearn_blas1``); ``on_step(message)`` is called after
    each fit.
    """
    import numba
    from threadpoolctl import threadpool_limits

    o = opts
    models = [m for m in o["models"].split(",") if m]
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    rows = []
    try:
        for wl in o["workloads"].split(","):
            data, fields, params = _workload(o, wl)
            with threadpool_limits(limits=threads, user_api="blas"):
                for dtype in o["dtypes"].split(","):
                    warm_up(dtype, sparse=wl == "sparse")
                    fits = _interleaved(models, int(o["repeat"]), data, dtype,
                                        params, on_step, wl)  # fmt: skip
                    for model in models:
                        row = dict(fits[model][-1])
                        times = [f["fit_s"] for f in fits[model]]
                        row.update(fit_s=statistics.median(times), fit_s_all=times,
                                   **fields, threads=threads)  # fmt: skip
                        rows.append(row)
    finally:
        numba.set_num_threads(before)
    return {"rows": rows}


def _interleaved(models, repeat: int, data, dtype, params, on_step, wl) -> dict:
    """``repeat`` fits of each model, round after round, each round starting
    one model further on: a change in the machine's load falls on all."""
    fits: dict[str, list[dict]] = {m: [] for m in models}
    for r in range(max(1, repeat)):
        k = r % len(models)
        for model in models[k:] + models[:k]:
            fits[model].append(time_fit(model, data, dtype, **params,
                                        with_objective=True))  # fmt: skip
            on_step(f"{wl} {model} {dtype}")
    return fits


def steps(opts: dict) -> int:
    return (
        len(opts["workloads"].split(","))
        * len(opts["dtypes"].split(","))
        * len(opts["models"].split(","))
        * max(1, int(opts["repeat"]))
    )


#: How the rows name each model.
LABELS = {
    "numxent": "CrossEntropyClassifier",
    "sklearn": "LogisticRegression",
    "sklearn_blas1": "LogisticRegression, BLAS on 1 thread",
    "sklearnex": "LogisticRegression (scikit-learn-intelex)",
}


def workload(row: dict) -> str:
    """A row's workload (rows written before the sparse workload: dense)."""
    return row.get("workload", "dense")


def summary(result: dict) -> list[str]:
    """One line per workload, dtype and model that numxent's fit can be set
    against: speed-up, iterations, objective, accuracy."""
    rows = result["rows"]
    by = {(workload(r), r["model"], r["dtype"]): r for r in rows}
    lines = []
    for wl, dtype in dict.fromkeys((workload(r), r["dtype"]) for r in rows):
        n = by.get((wl, "numxent", dtype))
        for peer in MODELS[1:]:
            s = by.get((wl, peer, dtype))
            if not (n and s):
                continue
            where = dtype if wl == "dense" else f"{wl} {dtype}"
            vs = "" if peer == "sklearn" else f" than {LABELS[peer]}"
            objective = (
                f", objective {n['objective']:.8g} vs {s['objective']:.8g}"
                if "objective" in n and "objective" in s
                else ""
            )
            lines.append(
                f"{where}: fit {s['fit_s'] / n['fit_s']:.2f}× faster with numxent"
                f"{vs} ({n['fit_s']:.2f} s vs {s['fit_s']:.2f} s, {n['n_iter']} vs "
                f"{s['n_iter']} iterations{objective}, test accuracy "
                f"{n['test_accuracy']:.4f} vs {s['test_accuracy']:.4f})"
            )
    return lines


def _problem(r: dict) -> str:
    if workload(r) == "sparse":
        return (
            f"Sparse: `make_text_problem({r['n_samples']:,}, {r['n_features']:,} "
            f"features, {r['n_classes']} classes)` (CSR, "
            f"{r.get('nnz_per_row', 0):.1f} entries a row, rows of unit norm), "
            f"{r.get('n_train', 0):,} training rows, C={r['C']:g}, tol={r['tol']:g}"
        )
    return (
        f"`make_classification({r['n_samples']:,}, {r['n_features']} features, "
        f"{r['n_classes']} classes)`, 75/25 split, C={r.get('C', 1.0):g}, "
        f"tol={r.get('tol', 1e-4):g}"
    )


def markdown(result: dict) -> str:
    """The rows as a Markdown table per workload plus the comparison lines."""
    from numxent.bench._report import table

    rows = result["rows"]
    out = []
    for wl in dict.fromkeys(workload(r) for r in rows):
        mine = [r for r in rows if workload(r) == wl]
        r0 = mine[0]
        cells = [
            [LABELS.get(r["model"], r["model"]), r["dtype"], f"{r['fit_s']:.2f}",
             " ".join(f"{t:.2f}" for t in r.get("fit_s_all", [r["fit_s"]])),
             str(r["n_iter"]),
             f"{r['objective']:.8f}" if "objective" in r else "—",
             f"{r['test_accuracy']:.4f}", "yes" if r["converged"] else "no"]
            for r in mine
        ]  # fmt: skip
        headers = ["model", "dtype", "fit s (median)", "each fit s",
                   "L-BFGS iterations", "objective", "test accuracy",
                   "converged"]  # fmt: skip
        out += [
            f"{_problem(r0)}, {r0['threads']} thread(s) for Numba and BLAS.",
            "",
            table(headers, cells, "llrrrrrl"),
            "",
        ]
    out += [f"- {line}" for line in summary(result)]
    return "\n".join(out) + "\n"


SECTION = Section(
    key="sklearn_fit",
    flag="sklearn-fit",
    help="estimator fits, CrossEntropyClassifier vs LogisticRegression (needs "
    "scikit-learn)",
    title="scikit-learn estimator fit",
    intro='`CrossEntropyClassifier` vs `LogisticRegression(solver="lbfgs")` on '
    "the same split, each fit timed after a warm-up fit that compiles "
    "numxent's kernels (the median of the repeats, the models interleaved); "
    "the objective is `LogisticRegression`'s, in float64, at each model's "
    "coefficients.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("sklearn",),
    steps=steps,
)
