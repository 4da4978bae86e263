"""Start-up: ``import numxent`` + a first call in a fresh process.

Timed around the whole child process (interpreter start and exit included);
the child's own split (import / first call) is kept in ``extra_info``. "cold"
gives each round an empty ``NUMBA_CACHE_DIR`` (the kernels compile), "warm"
reuses one that a first run filled.
"""

import itertools

import pytest

from numxent.bench._startup import FIRST_CALL, run_child


@pytest.mark.benchmark
@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_startup(benchmark, cache, tmp_path, threads):
    benchmark.group = "startup|import numxent + first call"
    benchmark.extra_info["first_call"] = FIRST_CALL
    runs = []

    def child(cache_dir):
        runs.append(run_child(cache_dir, threads))

    if cache == "warm":
        warm_dir = tmp_path / "warm"
        warm_dir.mkdir()
        run_child(str(warm_dir), threads)  # fills the cache
        benchmark.pedantic(child, args=(str(warm_dir),), rounds=3, iterations=1)
    else:
        count = itertools.count()

        def fresh_dir():
            d = tmp_path / f"cold{next(count)}"
            d.mkdir()
            return (str(d),), {}

        benchmark.pedantic(child, setup=fresh_dir, rounds=3, iterations=1)
    for key in ("import_s", "first_call_s", "total_s"):
        benchmark.extra_info[key] = min(r[key] for r in runs)
