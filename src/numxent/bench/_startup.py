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

"Families" is one child with an empty cache that makes the first call of
each common family one after another (:data:`FAMILIES`): what a script pays
the first time it uses each.

``python -c "from numxent.bench._startup import main; main()"`` prints the
figures (``--help`` for the run counts).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ._machine import child_env

__all__ = [
    "FAMILIES",
    "FIRST_CALL",
    "error_summary",
    "measure_families",
    "measure_startup",
    "run_child",
]

#: The first call a training script makes: float32 hard labels, loss + gradient.
FIRST_CALL = {"op": "ce", "n": 4096, "c": 100, "dtype": "float32"}

#: The common families, first-called one after another in one process:
#: name -> (op, rows, classes, logits dtype). All with the gradient but
#: log_softmax; "small" is served by a serial kernel.
FAMILIES = {
    "f32": ("ce", 512, 100, "float32"),
    "f64": ("ce", 512, 100, "float64"),
    "soft": ("ce_soft", 512, 100, "float32"),
    "bce": ("bce", 512, 100, "float32"),
    "small": ("ce", 64, 10, "float32"),
    "log_softmax": ("log_softmax", 512, 100, "float32"),
}

# Times itself from before ``import numxent`` (which imports numpy and Numba)
# onwards. argv[1]: JSON list of (name, op, n, c, dtype) calls to time.
_CHILD = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import numxent as nx
t1, c1 = time.perf_counter(), time.process_time()
import json, sys
import numpy as np
scipy_linalg = "scipy.linalg" in sys.modules
rng = np.random.default_rng(0)

def make(op, n, c, dtype):
    x = rng.standard_normal((n, c)).astype(dtype)
    if op == "ce":
        y = rng.integers(0, c, size=n)
        return lambda: nx.cross_entropy(x, y, return_grad=True)
    if op == "ce_soft":
        t = rng.dirichlet(np.ones(c), size=n).astype(dtype)
        return lambda: nx.cross_entropy(x, t, return_grad=True)
    if op == "bce":
        t = (rng.random((n, c)) < 0.5).astype(dtype)
        return lambda: nx.binary_cross_entropy_with_logits(x, t, return_grad=True)
    if op == "log_softmax":
        return lambda: nx.log_softmax(x)
    raise ValueError(op)

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
) -> dict:
    """One fresh process: import numxent, make the data, make the first call
    (or ``calls``: ``[(name, op, n, c, dtype), ...]``, timed one by one)."""
    env = {"NUMBA_CACHE_DIR": cache_dir}
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    if calls is None:
        calls = [("first", *(FIRST_CALL[k] for k in ("op", "n", "c", "dtype")))]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(calls)],
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
        "median_total_s": statistics.median(r["total_s"] for r in runs),
        "compiled": max(r["compiled"] for r in runs),
        "scipy_linalg": any(r["scipy_linalg"] for r in runs),
        "threading_layer": runs[-1].get("threading_layer"),
        "all": runs,
    }


def measure_families(repeat: int = 1, threads: int | None = None, on_step=None) -> dict:
    """The first call of each of :data:`FAMILIES`, one after another in one
    process with an empty cache, ``repeat`` times (a process each).

    ``{"calls": FAMILIES, "runs": n, "seconds": {name: median wall s},
    "cpu_s": {name: median CPU s}, "total_s": ..., "total_cpu_s": ...,
    "all": [child results]}``.
    """
    step = on_step or (lambda message, advance: None)
    calls = [(name, *spec) for name, spec in FAMILIES.items()]
    runs = []
    for i in range(max(1, repeat)):
        cache = tempfile.mkdtemp(prefix="numxent-bench-cache-")
        try:
            runs.append(run_child(cache, threads, timeout=1800, calls=calls))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        step(f"families {i + 1}/{max(1, repeat)}", 1.0)

    def med(index: int, name: str) -> float:
        return statistics.median(r["calls"][name][index] for r in runs)

    return {
        "calls": {name: list(spec) for name, spec in FAMILIES.items()},
        "runs": len(runs),
        "seconds": {name: med(0, name) for name in FAMILIES},
        "cpu_s": {name: med(1, name) for name in FAMILIES},
        "total_s": statistics.median(
            sum(c[0] for c in r["calls"].values()) for r in runs
        ),
        "total_cpu_s": statistics.median(
            sum(c[1] for c in r["calls"].values()) for r in runs
        ),
        "all": runs,
    }


def measure_startup(
    warm_repeat: int = 3,
    cold_repeat: int = 1,
    threads: int | None = None,
    on_step=None,
    families_repeat: int = 0,
) -> dict:
    """``{"warm": {...}, "cold": {...}, "first_call": FIRST_CALL}``, plus
    ``"families"`` (:func:`measure_families`) when ``families_repeat`` > 0.

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
    if families_repeat > 0:
        result["families"] = measure_families(families_repeat, threads, step)
    return result


def format_startup(result: dict) -> str:
    """The figures of :func:`measure_startup` as plain-text lines."""
    fc = result["first_call"]
    lines = [
        f"first call: cross_entropy {fc['n']}x{fc['c']} {fc['dtype']}, "
        "return_grad=True, fresh process (wall s / CPU s, medians)"
    ]
    for kind in ("warm", "cold"):
        s = result.get(kind)
        if not s:
            continue
        m = s["median"]
        lines.append(
            f"  {kind:4s}: import {m['import_s']:.3f} / {m['import_cpu_s']:.3f}, "
            f"first call {m['first_call_s']:.3f} / {m['first_call_cpu_s']:.3f}, "
            f"import + first call {m['total_s']:.3f} / {m['total_cpu_s']:.3f} "
            f"({s['runs']} runs; {s['compiled']} signatures compiled; "
            f"scipy.linalg {'imported' if s['scipy_linalg'] else 'not imported'})"
        )
    fam = result.get("families")
    if fam:
        lines.append(
            f"families, first calls one after another, empty cache ({fam['runs']} "
            "runs, medians, wall s / CPU s):"
        )
        for name, (op, n, c, dtype) in fam["calls"].items():
            lines.append(
                f"  {name:12s} {op} {n}x{c} {dtype}: {fam['seconds'][name]:.2f} / "
                f"{fam['cpu_s'][name]:.2f}"
            )
        lines.append(f"  {'all':12s} {fam['total_s']:.2f} / {fam['total_cpu_s']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="numxent.bench._startup",
        description="Start-up figures: import, warm and cold first call, families.",
    )
    p.add_argument("--warm", type=int, default=5, help="warm runs (default 5)")
    p.add_argument("--cold", type=int, default=3, help="cold runs (default 3)")
    p.add_argument("--families", type=int, default=1,
                   help="families runs (default 1; 0: none)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="NUMBA_NUM_THREADS")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    result = measure_startup(a.warm, a.cold, a.threads, families_repeat=a.families)
    print(format_startup(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
