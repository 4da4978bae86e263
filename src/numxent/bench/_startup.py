"""Start-up cost: ``import numxent``, a first call, and the first call of each
common family, in fresh processes.

Numba compiles each kernel signature on its first call and caches the machine
code on disk. A fresh interpreter therefore pays either the compilation
("cold": an empty ``NUMBA_CACHE_DIR``) or the cache load ("warm": the
directory the first cold run filled). Both are measured in a new process
each time, against private cache directories, so the user's own cache is
neither used nor touched. Each child reports wall-clock seconds and the CPU
seconds of its own process (``time.process_time``: steadier than the wall
clock on a machine that others share), whether the import brought
``scipy.linalg`` and how many kernel signatures it compiled.

A child can also time a list of first calls one after another (``calls`` and
``make`` of :func:`run_child`): ``benchmarks/startup.py`` in the repository
uses it for the first call of each common family.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ._machine import child_env

__all__ = ["FIRST_CALL", "MAKE_CE", "error_summary", "measure_startup", "run_child"]

#: The first call a training script makes: float32 hard labels, loss + gradient.
FIRST_CALL = {"op": "ce", "n": 4096, "c": 100, "dtype": "float32"}

# Times itself from before ``import numxent`` (which imports numpy and Numba)
# onwards. argv[1]: JSON list of (name, op, n, c, dtype) calls to time;
# argv[2]: the source of make(op, n, c, dtype), which makes the data and
# returns the call (MAKE_CE by default).
_CHILD = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import numxent as nx
t1, c1 = time.perf_counter(), time.process_time()
import json, sys
import numpy as np
scipy_linalg = "scipy.linalg" in sys.modules
rng = np.random.default_rng(0)

exec(sys.argv[2])  # defines make(op, n, c, dtype): the call to time
calls = {}
for name, op, n, c, dtype in json.loads(sys.argv[1]):
    fn = make(op, n, c, dtype)
    t2, c2 = time.perf_counter(), time.process_time()
    fn()
    calls[name] = (time.perf_counter() - t2, time.process_time() - c2)
from numxent import _config
compiled = sum(sum(k.stats.cache_misses.values()) for k in _config.cached_kernels())
first = next(iter(calls.values()))
print(json.dumps({"import_s": t1 - t0, "import_cpu_s": c1 - c0,
                  "first_call_s": first[0], "first_call_cpu_s": first[1],
                  "total_s": (t1 - t0) + first[0],
                  "total_cpu_s": (c1 - c0) + first[1],
                  "calls": calls, "compiled": compiled,
                  "scipy_linalg": scipy_linalg,
                  "threading_layer": nx.threading_layer()}))
"""

MAKE_CE = """
def make(op, n, c, dtype):
    x = rng.standard_normal((n, c)).astype(dtype)
    y = rng.integers(0, c, size=n)
    return lambda: nx.cross_entropy(x, y, return_grad=True)
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


def error_summary(text: str, limit: int = 300) -> str:
    """The exception line of a traceback (colour codes removed), shortened.

    >>> error_summary("Traceback ...\\n  x\\nValueError: bad\\n")
    'ValueError: bad'
    """
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if _EXC_LINE.match(lines[i]):
            out = " ".join(lines[i : i + 2])
            break
    else:
        out = " | ".join(lines[-2:])
    return out if len(out) <= limit else out[: limit - 1] + "…"


def run_child(
    cache_dir: str,
    threads: int | None = None,
    timeout: float = 300,
    calls: list | None = None,
    make: str = MAKE_CE,
) -> dict:
    """One fresh process: import numxent, make the data, make the first call
    (or ``calls``: ``[(name, op, n, c, dtype), ...]``, timed one by one, their
    data and call made by the function ``make``'s source defines)."""
    env = {"NUMBA_CACHE_DIR": cache_dir}
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    if calls is None:
        calls = [("first", *(FIRST_CALL[k] for k in ("op", "n", "c", "dtype")))]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(calls), make],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"start-up child exited with {proc.returncode}: "
            + error_summary(proc.stderr or proc.stdout)
        )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


_KEYS = ["import_s", "import_cpu_s", "first_call_s", "first_call_cpu_s", "total_s",
         "total_cpu_s", "process_s"]  # fmt: skip


def _summary(runs: list[dict]) -> dict:
    return {
        "runs": len(runs),
        **{k: min(r[k] for r in runs) for k in _KEYS},
        "median": {k: statistics.median(r[k] for r in runs) for k in _KEYS},
        "compiled": max(r["compiled"] for r in runs),
        "scipy_linalg": any(r["scipy_linalg"] for r in runs),
        "threading_layer": runs[-1].get("threading_layer"),
        "all": runs,
    }


def measure_startup(
    warm_repeat: int = 3,
    cold_repeat: int = 1,
    threads: int | None = None,
    on_step=None,
) -> dict:
    """``{"warm": {...}, "cold": {...}, "first_call": FIRST_CALL}``.

    Each of warm and cold holds the best (min) ``import_s``,
    ``first_call_s``, ``total_s`` (import + first call, timed inside the
    child), ``process_s`` (the whole child process, interpreter start and exit
    included) and their CPU-second twins (``*_cpu_s``) over its runs, the
    medians under ``"median"``, the most kernel signatures a run compiled
    (``"compiled"``: 0 when warm), whether ``scipy.linalg`` was imported,
    and every run under ``"all"``. At least one cold run is made: the warm
    runs reuse the cache the first one wrote.
    """
    step = on_step or (lambda message, advance: None)
    dirs: list[str] = []
    cold_runs, warm_runs = [], []
    try:
        for i in range(max(1, cold_repeat)):
            dirs.append(tempfile.mkdtemp(prefix="numxent-bench-cache-"))
            cold_runs.append(run_child(dirs[-1], threads))
            step(f"cold start {i + 1}/{max(1, cold_repeat)}", 1.0)
        for i in range(warm_repeat):
            warm_runs.append(run_child(dirs[0], threads))
            step(f"warm start {i + 1}/{warm_repeat}", 1.0)
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    result = {"first_call": dict(FIRST_CALL), "cold": _summary(cold_runs)}
    if warm_runs:
        result["warm"] = _summary(warm_runs)
    return result
