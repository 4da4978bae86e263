"""Fit time: numxent's CrossEntropyClassifier vs LogisticRegression(lbfgs).

The issue's problem: ``make_classification(n_samples, n_features=100,
n_informative=60, n_classes=50, n_clusters_per_class=1)``, ``C=1,
tol=1e-4``, float64 and float32, a 75/25 train/test split. Prints fit time,
L-BFGS iterations and test accuracy for each model and dtype::

    python benchmarks/sklearn_fit.py                      # 200,000 samples
    python benchmarks/sklearn_fit.py --n-samples 20000 --threads 2

Numba's compilation is kept out of the timings by a small warm-up fit per
dtype. ``--threads`` sets Numba's threads and BLAS's (threadpoolctl) for both
models; scikit-learn's loss itself runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
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


def make_model(model: str, C: float = 1.0, tol: float = 1e-4, max_iter: int = 1000):
    if model == "numxent":
        return CrossEntropyClassifier(C=C, tol=tol, max_iter=max_iter)
    return LogisticRegression(C=C, tol=tol, max_iter=max_iter, solver="lbfgs")


def warm_up(dtype) -> None:
    """Compile numxent's kernels for ``dtype`` outside the timings."""
    X, _, y, _ = make_problem(2000, 20, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        CrossEntropyClassifier(max_iter=5).fit(X.astype(dtype), y)


def time_fit(model: str, data, dtype, **params) -> dict:
    X_train, X_test, y_train, y_test = data
    X_train = np.ascontiguousarray(X_train, dtype=dtype)
    X_test = np.ascontiguousarray(X_test, dtype=dtype)
    est = make_model(model, **params)
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
    args = p.parse_args(argv)

    threads = args.threads or numba.get_num_threads()
    numba.set_num_threads(threads)
    data = make_problem(args.n_samples, args.n_features, args.n_classes)
    params = dict(C=args.C, tol=args.tol, max_iter=args.max_iter)
    results = []
    print(
        f"make_classification({args.n_samples}, {args.n_features} features, "
        f"{args.n_classes} classes), train {len(data[0])}, C={args.C}, "
        f"tol={args.tol}, threads={threads}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'model':8} {'dtype':8} {'fit s':>9} {'iter':>5} {'test acc':>9}")
    with threadpool_limits(limits=threads, user_api="blas"):
        for dtype in args.dtypes.split(","):
            warm_up(dtype)
            for model in args.models.split(","):
                r = time_fit(model, data, dtype, **params)
                r.update(n_samples=args.n_samples, threads=threads)
                results.append(r)
                flag = "" if r["converged"] else "  (max_iter reached)"
                print(
                    f"{model:8} {r['dtype']:8} {r['fit_s']:9.2f} {r['n_iter']:5d} "
                    f"{r['test_accuracy']:9.4f}{flag}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
