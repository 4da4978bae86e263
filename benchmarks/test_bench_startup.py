"""Start-up: ``import numxent`` + a first call in a fresh process.

The report's start-up measurement (``numxent.bench._startup``), timed around
the whole child process (interpreter start and exit included); the child's
own split (import / first call) is kept in ``extra_info``. "cold" gives each
round an empty ``NUMBA_CACHE_DIR`` (the kernels compile), "warm" reuses one
that a cold run filled (the cold test's first, when it ran); rounds: the
report's ``cold_starts`` and ``warm_starts``.
"""

import pytest

from numxent.bench._startup import FIRST_CALL, run_child


class Caches:
    """Numba cache directories under ``root``: empty ones, and a filled one."""

    def __init__(self, root, threads):
        self.root, self.threads, self.dirs = root, threads, []

    def empty(self):
        d = self.root / f"cache{len(self.dirs)}"
        d.mkdir()
        self.dirs.append(str(d))
        return (self.dirs[-1],), {}

    def filled(self) -> str:
        if not self.dirs:
            run_child(self.empty()[0][0], self.threads)
        return self.dirs[0]


@pytest.fixture(scope="module")
def caches(tmp_path_factory, report_settings, threads):
    if "startup" not in report_settings["ops"]:
        pytest.skip("startup is not in --nx-ops")
    return Caches(tmp_path_factory.mktemp("numba-caches"), threads)


@pytest.mark.benchmark
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_startup(benchmark, cache, caches, threads, report_settings):
    benchmark.group = "startup|import numxent + first call"
    benchmark.extra_info["first_call"] = FIRST_CALL
    runs = []

    def child(cache_dir):
        runs.append(run_child(cache_dir, threads))

    rounds = max(1, report_settings[f"{cache}_starts"])
    if cache == "cold":
        benchmark.pedantic(child, setup=caches.empty, rounds=rounds, iterations=1)
    else:
        benchmark.pedantic(child, args=(caches.filled(),), rounds=rounds, iterations=1)
    for key in ("import_s", "first_call_s", "total_s"):
        benchmark.extra_info[key] = min(r[key] for r in runs)
