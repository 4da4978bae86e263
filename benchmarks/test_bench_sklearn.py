"""fit: CrossEntropyClassifier vs LogisticRegression(lbfgs), group
``fit|NxFxK|dtype`` (K classes), on make_classification data.

Each fit takes seconds to minutes, so each is timed once (one round, after a
warm-up fit that compiles numxent's kernels). The size is
``NUMXENT_BENCH_SKLEARN_SAMPLES`` (default 20,000; the report's is 200,000)::

    NUMXENT_BENCH_SKLEARN_SAMPLES=200000 pytest benchmarks/test_bench_sklearn.py \\
        -m benchmark --benchmark-only

Iterations and test accuracy go to ``extra_info``. ``scenarios/sklearn_fit.py``
runs the same comparison without pytest.
"""

import os

import pytest

pytest.importorskip("sklearn")

from scenarios.sklearn_fit import make_problem, time_fit, warm_up  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

N_SAMPLES = int(os.environ.get("NUMXENT_BENCH_SKLEARN_SAMPLES", "20000"))
N_FEATURES, N_CLASSES = 100, 50


@pytest.fixture(scope="module")
def problem():
    return make_problem(N_SAMPLES, N_FEATURES, N_CLASSES)


@pytest.mark.benchmark
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model", ["numxent", "sklearn"])
def test_fit(benchmark, problem, model, dtype, threads):
    benchmark.group = f"fit|{N_SAMPLES}x{N_FEATURES}x{N_CLASSES}|{dtype}"
    warm_up(dtype)
    results = []
    with threadpool_limits(limits=threads, user_api="blas"):
        benchmark.pedantic(
            lambda: results.append(time_fit(model, problem, dtype)),
            rounds=1,
            iterations=1,
        )
    benchmark.extra_info.update(results[-1], threads=threads)
