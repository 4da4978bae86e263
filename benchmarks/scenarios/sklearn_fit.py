"""Fit time: numxent's CrossEntropyClassifier vs LogisticRegression(lbfgs).

The report's ``--sklearn-fit`` section. The problem:
``make_classification(n_samples, n_features=100, n_informative=60,
n_classes=50, n_clusters_per_class=1)``, ``C=1, tol=1e-4``, float32 and
float64, a 75/25 train/test split; fit time, L-BFGS iterations and test
accuracy for each model and dtype::

    python benchmarks/report.py --ops none --sklearn-fit              # 200,000 samples
    python benchmarks/report.py --ops none --sklearn-fit --threads 1 \\
        --sklearn-fit-n-samples 20000 --out fit/

Numba's compilation is kept out of the timings by a small warm-up fit per
dtype. The report's ``--threads`` sets Numba's threads and BLAS's
(threadpoolctl) for both models; scikit-learn's loss itself runs on one
thread. The pytest-benchmark suite times the same fits
(``benchmarks/test_bench_sklearn.py``).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ._section import Section

MODELS = ("numxent", "sklearn")


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


def warm_up(dtype) -> None:
    """Compile numxent's kernels for ``dtype`` outside the timings."""
    from sklearn.exceptions import ConvergenceWarning

    from numxent.sklearn import CrossEntropyClassifier

    X, _, y, _ = make_problem(2000, 20, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        CrossEntropyClassifier(max_iter=5).fit(X.astype(dtype), y)


def time_fit(model: str, data, dtype, C=1.0, tol=1e-4, max_iter=1000) -> dict:
    """Fit ``model`` ("numxent" or "sklearn") on ``data`` as ``dtype``, timed."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from numxent.sklearn import CrossEntropyClassifier

    X_train, X_test, y_train, y_test = data
    X_train = np.ascontiguousarray(X_train, dtype=dtype)
    X_test = np.ascontiguousarray(X_test, dtype=dtype)
    if model == "numxent":
        est = CrossEntropyClassifier(C=C, tol=tol, max_iter=max_iter)
    else:
        est = LogisticRegression(C=C, tol=tol, max_iter=max_iter, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X_train, y_train)
        fit_s = time.perf_counter() - t0
    return {
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


OPTIONS = {
    "n_samples": (200_000, "samples (a quarter of them held out)"),
    "n_features": (100, "features"),
    "n_classes": (50, "classes"),
    "dtypes": ("float32,float64", "comma list of dtypes"),
    "models": (",".join(MODELS), "comma list of numxent, sklearn"),
    "C": (1.0, "inverse regularisation strength"),
    "tol": (1e-4, "L-BFGS tolerance"),
    "max_iter": (1000, "L-BFGS iterations at most"),
}
QUICK = {"n_samples": 20_000, "dtypes": "float32"}


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """Time each model's fit per dtype; one row each (same data and split).

    ``threads`` are Numba's and BLAS's (threadpoolctl) for both models;
    ``on_step(message)`` is called after each fit.
    """
    import numba
    from threadpoolctl import threadpool_limits

    o = opts
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        data = make_problem(o["n_samples"], o["n_features"], o["n_classes"])
        params = dict(C=o["C"], tol=o["tol"], max_iter=o["max_iter"])
        rows = []
        with threadpool_limits(limits=threads, user_api="blas"):
            for dtype in o["dtypes"].split(","):
                warm_up(dtype)
                for model in o["models"].split(","):
                    r = time_fit(model, data, dtype, **params)
                    r.update(n_samples=o["n_samples"], n_features=o["n_features"],
                             n_classes=o["n_classes"], threads=threads)  # fmt: skip
                    rows.append(r)
                    on_step(f"{model} {dtype}")
    finally:
        numba.set_num_threads(before)
    return {"rows": rows}


def steps(opts: dict) -> int:
    return len(opts["dtypes"].split(",")) * len(opts["models"].split(","))


def summary(result: dict) -> list[str]:
    """One line per dtype where both models ran: speed-up, iterations, accuracy."""
    rows = result["rows"]
    by = {(r["model"], r["dtype"]): r for r in rows}
    return [
        f"{n['dtype']}: fit {s['fit_s'] / n['fit_s']:.2f}× faster with numxent "
        f"({n['fit_s']:.2f} s vs {s['fit_s']:.2f} s, {n['n_iter']} vs {s['n_iter']} "
        f"iterations, test accuracy {n['test_accuracy']:.4f} vs "
        f"{s['test_accuracy']:.4f})"
        for dtype in dict.fromkeys(r["dtype"] for r in rows)
        if (n := by.get(("numxent", dtype))) and (s := by.get(("sklearn", dtype)))
    ]


def markdown(result: dict) -> str:
    """The rows as a Markdown table plus the per-dtype comparison lines."""
    from numxent.bench._report import table

    rows = result["rows"]
    r0 = rows[0]
    cells = [
        ["CrossEntropyClassifier" if r["model"] == "numxent" else "LogisticRegression",
         r["dtype"], f"{r['fit_s']:.2f}", str(r["n_iter"]),
         f"{r['test_accuracy']:.4f}", "yes" if r["converged"] else "no"]
        for r in rows
    ]  # fmt: skip
    headers = ["model", "dtype", "fit s", "L-BFGS iterations", "test accuracy",
               "converged"]  # fmt: skip
    out = [
        f"`make_classification({r0['n_samples']:,}, {r0['n_features']} features, "
        f"{r0['n_classes']} classes)`, 75/25 split, C=1, tol=1e-4, "
        f"{r0['threads']} thread(s) for Numba and BLAS.",
        "",
        table(headers, cells, "llrrrl"),
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
    "the same split, each fit timed once after a warm-up fit that compiles "
    "numxent's kernels.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("sklearn",),
    steps=steps,
)
