"""fit: CrossEntropyClassifier vs LogisticRegression(lbfgs), group
``fit|NxFxK|dtype`` (K classes), on make_classification data.

The report's ``--sklearn-fit`` section's problem and fit
(``scenarios/sklearn_fit.py``), at its size (its ``--quick`` size with
``--nx-quick``; ``--nx-fit-samples`` overrides both). Each fit takes seconds
to minutes, so each is timed once, after a warm-up fit that compiles
numxent's kernels::

    pytest benchmarks/test_bench_sklearn.py -m benchmark --benchmark-only \\
        --nx-fit-samples 20000

Iterations and test accuracy go to ``extra_info``.
"""

import pytest

pytest.importorskip("sklearn")

from scenarios import sklearn_fit  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


def options(config) -> dict:
    """The section's options, --quick's with --nx-quick, --nx-fit-samples."""
    opts = {name: default for name, (default, _) in sklearn_fit.OPTIONS.items()}
    if config.getoption("--nx-quick"):
        opts.update(sklearn_fit.QUICK)
    samples = config.getoption("--nx-fit-samples")
    return {**opts, "n_samples": int(samples)} if samples else opts


def pytest_generate_tests(metafunc):
    """One test per model and dtype of the section's options."""
    o = options(metafunc.config)
    metafunc.parametrize("dtype", o["dtypes"].split(","))
    metafunc.parametrize("model", o["models"].split(","))


@pytest.fixture(scope="module")
def fit_options(request):
    return options(request.config)


@pytest.fixture(scope="module")
def problem(fit_options):
    o = fit_options
    return sklearn_fit.make_problem(o["n_samples"], o["n_features"], o["n_classes"])


@pytest.mark.benchmark
def test_fit(benchmark, problem, fit_options, model, dtype, threads):
    o = fit_options
    benchmark.group = f"fit|{o['n_samples']}x{o['n_features']}x{o['n_classes']}|{dtype}"
    sklearn_fit.warm_up(dtype)
    params = {k: o[k] for k in ("C", "tol", "max_iter")}
    results = []
    with threadpool_limits(limits=threads, user_api="blas"):
        benchmark.pedantic(
            lambda: results.append(
                sklearn_fit.time_fit(model, problem, dtype, **params)
            ),
            rounds=1,
            iterations=1,
        )
    benchmark.extra_info.update(results[-1], threads=threads)
