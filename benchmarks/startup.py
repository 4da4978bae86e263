"""Start-up figures in fresh processes: ``import numxent``, the first call
with a warm and with an empty kernel cache (``numxent.bench._startup``, the
report's start-up section), and the first call of each common family one
after another in one process with an empty cache (:data:`FAMILIES`): what a
script pays the first time it uses each.

    python benchmarks/startup.py [--warm 5] [--cold 3] [--families 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile

from numxent.bench._startup import measure_startup, run_child

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

#: The families' data and calls, run in the child (``rng``, ``nx``, ``np``
#: are the child's).
MAKE = """
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
"""


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
            runs.append(run_child(cache, threads, timeout=1800, calls=calls, make=MAKE))
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
        prog="benchmarks/startup.py",
        description="Start-up figures: import, warm and cold first call, families.",
    )
    p.add_argument("--warm", type=int, default=5, help="warm runs (default 5)")
    p.add_argument("--cold", type=int, default=3, help="cold runs (default 3)")
    p.add_argument("--families", type=int, default=1,
                   help="families runs (default 1; 0: none)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="NUMBA_NUM_THREADS")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    result = measure_startup(a.warm, a.cold, a.threads)
    if a.families > 0:
        result["families"] = measure_families(a.families, a.threads)
    print(format_startup(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
