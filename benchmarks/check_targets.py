"""Check a benchmark report's numbers against the project's speed targets.

Reads the ``results.json`` that ``numxent-bench`` or ``benchmarks/report.py``
wrote and prints, for every target the run measured (a shape, peer or section
the run left out is not listed), the measured value, its limit and whether it
is met::

    python benchmarks/check_targets.py benchmarks/results/results.json
    python benchmarks/check_targets.py report/ --markdown   # a Markdown table
    python benchmarks/check_targets.py report/ --strict     # exit 1 on a miss

The targets are the maintainers' acceptance criteria, not part of the report
users run, so they live here rather than in ``numxent.bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

#: Large-array shapes with 100 classes or more: there a fused pass should run
#: near the memory roofline and far ahead of the peers.
WIDE = [(262_144, 100), (65_536, 1_000), (8_192, 32_000)]
#: Many samples, few classes: per-row work dominates, so the roofline is looser.
NARROW = (1_000_000, 10)
#: Small calls: the whole-call overhead (validation included) is what counts.
SMALL = [(64, 10), (256, 1_000)]

# (peer, at least this many times numxent's time) on the WIDE shapes
WIDE_PEERS = [
    ("torch_fwd_bwd", 10.0),
    ("torch_thp_fwd_bwd", 2.5),
    ("jax_jit", 4.0),
    ("torch_compile", 4.0),
]


def _rows(results: dict, key: str) -> list[dict]:
    """A scenario section's rows: under ``sections`` (``benchmarks/report.py``)
    or, in results written before the sections moved there, at the top."""
    section = (results.get("sections") or {}).get(key) or results.get(key) or {}
    return section.get("rows") or []


def targets(results: dict) -> list[dict]:
    """One row per target the run measured: target, where, value, limit, met."""
    rows: list[dict] = []
    labels = {pid: p["label"] for pid, p in results.get("peers", {}).items()}

    def check(what, where, value, limit, at_most):
        if value is None:
            return
        met = value <= limit if at_most else value >= limit
        rows.append(
            {"target": what, "where": where, "value": value, "limit": limit,
             "at_most": at_most, "met": bool(met)}
        )  # fmt: skip

    for e in results.get("results", []):
        op, shape = e["op"], (e["n"], e["c"])
        to_copy, to_nx = e.get("ratio_to_copy", {}), e.get("ratio_to_numxent", {})
        where = f"{op} {e['n']:,}×{e['c']:,} {e['dtype']}"  # no "|": a table cell
        if op == "ce":
            limit = 1.25 if shape in WIDE else 3.0 if shape == NARROW else None
            if limit:
                check("numxent out= ≤ × copy", where, to_copy.get("numxent_out"),
                      limit, True)  # fmt: skip
            if shape in WIDE:
                for peer, at_least in WIDE_PEERS:
                    check(f"{labels.get(peer, peer)} ÷ numxent ≥", where,
                          to_nx.get(peer), at_least, False)  # fmt: skip
                check("numxent alloc ÷ out= ≤", where, to_nx.get("numxent_alloc"),
                      1.5, True)  # fmt: skip
            if shape in SMALL:
                check("PyTorch ÷ numxent (small call) ≥", where,
                      to_nx.get("torch_fwd_bwd"), 4.0, False)  # fmt: skip
        elif op == "ce_fwd" and shape in WIDE:
            check("numxent fwd ≤ × copy", where, to_copy.get("numxent_fwd"), 1.0, True)
        elif op == "bce" and shape == (1_000_000, 100):
            check("numxent BCE out= ≤ × copy", where, to_copy.get("numxent_out"),
                  1.5, True)  # fmt: skip
    tr = _rows(results, "training")
    # rows come in (torch, numxent) pairs per task and thread count
    for t, n in zip(tr[0::2], tr[1::2], strict=True):
        where = (
            f"training {t['task']} {t['batch']:,}×{t['classes']:,}, "
            f"torch threads {t['threads']}"
        )
        check("PyTorch loss fwd+bwd ÷ numxent's in the step ≥", where,
              t["loss_ms"] / n["loss_ms"], 8.0, False)  # fmt: skip
        if t["task"] == "lm":
            check("PyTorch step ÷ numxent step ≥", where,
                  t["step_ms"] / n["step_ms"], 1.2, False)  # fmt: skip
    fits = _rows(results, "sklearn_fit")
    keys = [(r.get("workload", "dense"), r["model"], r["dtype"]) for r in fits]
    by = dict(zip(keys, fits, strict=True))
    for wl, dtype in dict.fromkeys((k[0], k[2]) for k in keys):
        n, sk = by.get((wl, "numxent", dtype)), by.get((wl, "sklearn", dtype))
        if n is None or sk is None:
            continue
        where = (
            f"fit {n['n_samples']:,}×{n['n_features']}, "
            f"{n['n_classes']} classes {dtype}"
        )
        if wl != "dense":
            where = f"{wl} {where}"
        check("LogisticRegression fit ÷ CrossEntropyClassifier fit ≥", where,
              sk["fit_s"] / n["fit_s"], 2.0, False)  # fmt: skip
        check("test accuracy difference ≤", where,
              abs(n["test_accuracy"] - sk["test_accuracy"]), 0.002, True)  # fmt: skip
        if wl == "sparse" and "objective" in n and "objective" in sk:
            # no worse than scikit-learn's, up to what the tolerance leaves
            check("objective ÷ LogisticRegression's - 1 ≤", where,
                  n["objective"] / sk["objective"] - 1, 1e-6, True)  # fmt: skip
    dask_rows = _rows(results, "dask_scale")
    by_task: dict = {}
    for r in dask_rows:
        if "skipped" not in r:
            by_task.setdefault(r["task"], {})[r["model"]] = r
    for task, models in by_task.items():
        d, m = models.get("numxent on dask"), models.get("numxent in memory")
        if not (d and m):
            continue
        where = f"dask {task}, {d['workers']} workers"
        if task == "loss":
            check("dask loss ns/element ÷ in-memory ≤", where,
                  d["ns_per_element"] / m["ns_per_element"], 2.0, True)  # fmt: skip
            check("workers restarted ≤", where, d["workers_restarted"], 0, True)
            continue
        check("dask fit ÷ in-memory fit ≤", where, d["fit_s"] / m["fit_s"], 1.5,
              True)  # fmt: skip
        k = models.get("dask-ml lbfgs")
        if k:
            check("dask-ml lbfgs fit ÷ dask fit ≥", where, k["fit_s"] / d["fit_s"],
                  3.0, False)  # fmt: skip
            gap = abs(d["test_accuracy"] - k["test_accuracy"])
            check("test accuracy difference ≤", where, gap, 0.002, True)
    st = results.get("startup") or {}
    for kind, limit in (("warm", 1.0), ("cold", 5.0)):
        if st.get(kind):
            check(f"import + first call, {kind} cache ≤ s", "startup",
                  st[kind]["total_s"], limit, True)  # fmt: skip
    return rows


def render(rows: list[dict], markdown: bool = False) -> str:
    """The rows as a table (Markdown with ``markdown``), then a count line."""
    from numxent.bench._report import table

    cells = [
        [r["target"], r["where"], f"{r['value']:.2f}", f"{r['limit']:g}",
         ("yes" if r["met"] else "**no**") if markdown else
         ("met" if r["met"] else "MISSED")]
        for r in rows
    ]  # fmt: skip
    headers = ["target", "workload", "measured", "limit", "met"]
    text = table(headers, cells, "llrrl", markdown=markdown)
    met = sum(r["met"] for r in rows)
    return f"{text}\n\n{met} of {len(rows)} measured targets met.\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="a results.json, or the report directory")
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.add_argument("--strict", action="store_true", help="exit 1 if one is missed")
    args = p.parse_args(argv)
    path = args.results
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path) as f:
        rows = targets(json.load(f))
    if not rows:
        print(f"{path}: the run measured none of the targets")
        return 0
    sys.stdout.write(render(rows, markdown=args.markdown))
    return 1 if args.strict and not all(r["met"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
