"""Fit time: numxent's CrossEntropyClassifier vs LogisticRegression(lbfgs).

The problem: ``make_classification(n_samples, n_features=100,
n_informative=60, n_classes=50, n_clusters_per_class=1)``, ``C=1,
tol=1e-4``, float64 and float32, a 75/25 train/test split. Prints fit time,
L-BFGS iterations and test accuracy for each model and dtype (a Markdown
table)::

    python -m numxent.bench.sklearn_fit                   # 200,000 samples
    python benchmarks/sklearn_fit.py --n-samples 20000 --threads 2
    numxent-bench --sklearn-fit ...                       # a report section

Numba's compilation is kept out of the timings by a small warm-up fit per
dtype. ``--threads`` sets Numba's threads and BLAS's (threadpoolctl) for both
models; scikit-learn's loss itself runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings

import numba
import numpy as np
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from numxent.sklearn import CrossEntropyClassifier

MODELS = ("numxent", "sklearn")


def make_problem(n_samples: int, n_features: int, n_classes: int, seed: int = 0):
    """(X_train, X_test, y_train, y_test) in float64."""
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
    X, _, y, _ = make_problem(2000, 20, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        CrossEntropyClassifier(max_iter=5).fit(X.astype(dtype), y)


def time_fit(model: str, data, dtype, C=1.0, tol=1e-4, max_iter=1000) -> dict:
    """Fit ``model`` ("numxent" or "sklearn") on ``data`` as ``dtype``, timed."""
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


def run_fits(
    n_samples=200_000,
    n_features=100,
    n_classes=50,
    dtypes=("float64", "float32"),
    models=MODELS,
    threads=None,
    C=1.0,
    tol=1e-4,
    max_iter=1000,
    on_step=None,
) -> list[dict]:
    """Time each model's fit per dtype; one row each (same data and split).

    ``threads`` sets Numba's thread count and BLAS's (threadpoolctl) for both
    models (default: Numba's current count); ``on_step(message)`` is called
    after each fit.
    """
    threads = threads or numba.get_num_threads()
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        data = make_problem(n_samples, n_features, n_classes)
        params = dict(C=C, tol=tol, max_iter=max_iter)
        rows = []
        with threadpool_limits(limits=threads, user_api="blas"):
            for dtype in dtypes:
                warm_up(dtype)
                for model in models:
                    r = time_fit(model, data, dtype, **params)
                    r.update(n_samples=n_samples, n_features=n_features,
                             n_classes=n_classes, threads=threads)  # fmt: skip
                    rows.append(r)
                    if on_step:
                        on_step(f"{model} {dtype}")
    finally:
        numba.set_num_threads(before)
    return rows


def summary(rows) -> list[str]:
    """One line per dtype where both models ran: speed-up, iterations, accuracy."""
    by = {(r["model"], r["dtype"]): r for r in rows}
    return [
        f"{n['dtype']}: fit {s['fit_s'] / n['fit_s']:.2f}× faster with numxent "
        f"({n['fit_s']:.2f} s vs {s['fit_s']:.2f} s, {n['n_iter']} vs {s['n_iter']} "
        f"iterations, test accuracy {n['test_accuracy']:.4f} vs "
        f"{s['test_accuracy']:.4f})"
        for dtype in dict.fromkeys(r["dtype"] for r in rows)
        if (n := by.get(("numxent", dtype))) and (s := by.get(("sklearn", dtype)))
    ]


def markdown(rows) -> str:
    """The rows as a Markdown table plus the per-dtype comparison lines."""
    from ._report import table

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
    out += [f"- {line}" for line in summary(rows)]
    return "\n".join(out) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=200_000)
    p.add_argument("--n-features", type=int, default=100)
    p.add_argument("--n-classes", type=int, default=50)
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None, help="numba + BLAS threads")
    p.add_argument("--json", default=None, help="write the results here")
    opts = vars(p.parse_args(argv))  # the names of run_fits' parameters
    out = opts.pop("json")
    opts["dtypes"], opts["models"] = (
        opts["dtypes"].split(","),
        opts["models"].split(","),
    )
    results = run_fits(
        on_step=lambda m: print(f"  done: {m}", file=sys.stderr, flush=True), **opts
    )
    print(markdown(results))
    cpu = platform.processor() or platform.machine()
    print(f"C={opts['C']}, tol={opts['tol']}, {cpu}")
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
