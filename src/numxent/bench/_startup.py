"""Start-up cost: ``import numxent`` plus a first call, in a fresh process.

Numba compiles each kernel signature on its first call and caches the machine
code on disk (``cache=True``). A fresh interpreter therefore pays either the
compilation ("cold": an empty ``NUMBA_CACHE_DIR``) or the cache load ("warm":
the directory the first cold run filled). Both are measured in a new process
each time, against private cache directories, so the user's own cache is
neither used nor touched.
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

__all__ = ["FIRST_CALL", "error_summary", "measure_startup", "run_child"]

#: The first call a training script makes: float32 hard labels, loss + gradient.
FIRST_CALL = {"op": "ce", "n": 4096, "c": 100, "dtype": "float32"}

# Times itself from before ``import numpy`` (which numxent imports) onwards.
_CHILD = """
import time
t0 = time.perf_counter()
import numxent as nx
t1 = time.perf_counter()
import json, sys
import numpy as np
n, c, dtype = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = rng.standard_normal((n, c), dtype=dtype)
y = rng.integers(0, c, size=n)
t2 = time.perf_counter()
nx.cross_entropy(x, y, return_grad=True)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2,
                  "total_s": (t1 - t0) + (t3 - t2),
                  "threading_layer": nx.threading_layer()}))
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


def run_child(cache_dir: str, threads: int | None = None, timeout: float = 300) -> dict:
    """One fresh process: import numxent, make the data, make the first call."""
    env = {"NUMBA_CACHE_DIR": cache_dir}
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    shape = [str(FIRST_CALL[k]) for k in ("n", "c", "dtype")]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *shape],
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


def _summary(runs: list[dict]) -> dict:
    keys = ["import_s", "first_call_s", "total_s", "process_s"]
    return {
        "runs": len(runs),
        **{k: min(r[k] for r in runs) for k in keys},
        "median_total_s": statistics.median(r["total_s"] for r in runs),
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

    Each entry holds the best (min) ``import_s``, ``first_call_s``,
    ``total_s`` (import + first call, timed inside the child) and
    ``process_s`` (the whole child process, interpreter start and exit
    included) over its runs, plus every run under ``"all"``. At least one
    cold run is made: the warm runs reuse the cache the first one wrote.
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
