"""Fit time: numxent's CrossEntropyClassifier vs LogisticRegression(lbfgs).

The benchmark lives in :mod:`numxent.bench.sklearn_fit` (also run by
``numxent-bench --sklearn-fit``); this script is its command line::

    python benchmarks/sklearn_fit.py                          # 200,000 samples
    python benchmarks/sklearn_fit.py --n-samples 20000 --threads 2
"""

from numxent.bench.sklearn_fit import main

if __name__ == "__main__":
    main()
