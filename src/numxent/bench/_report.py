"""Turn a results dict (``results.json``) into tables, report.md and a plot."""

from __future__ import annotations

import math

from ._peers import PEERS, REFERENCE
from ._workloads import ISSUE_SHAPES, SMALL_SHAPES

__all__ = [
    "add_ratios",
    "format_ratio",
    "markdown_report",
    "md_table",
    "plot",
    "readme_table",
    "targets",
    "text_tables",
]

_OP_TITLES = {
    "ce": "cross_entropy, loss + gradient",
    "ce_fwd": "cross_entropy, loss only (forward)",
    "bce": "binary_cross_entropy_with_logits, loss + gradient",
    "bce_fwd": "binary_cross_entropy_with_logits, loss only (forward)",
}


# --------------------------------------------------------------------------
# numbers


def add_ratios(entry: dict, stat: str) -> None:
    """Fill ``seconds``, ``ratio_to_copy``, ``ratio_to_numxent``, ``copy_gbps``."""
    times = entry.get("times", {})
    seconds = {p: s[stat] for p, s in times.items()}
    entry["seconds"] = seconds
    copy = seconds.get("copyto")
    ref_id = REFERENCE.get(entry["op"])
    ref = seconds.get(ref_id)
    entry["reference"] = ref_id
    entry["ratio_to_copy"] = {p: t / copy for p, t in seconds.items()} if copy else {}
    entry["ratio_to_numxent"] = {p: t / ref for p, t in seconds.items()} if ref else {}
    entry["copy_gbps"] = entry["copy_bytes"] / copy / 1e9 if copy else None


def format_ratio(x: float | None) -> str:
    """Two or three significant digits and a ×.

    >>> format_ratio(1.234), format_ratio(44.4), format_ratio(123.4)
    ('1.23×', '44.4×', '123×')
    """
    if x is None or not math.isfinite(x):
        return "—"
    if x < 10:
        return f"{x:.2f}×"
    if x < 100:
        return f"{x:.1f}×"
    return f"{x:.0f}×"


def format_seconds(t: float | None) -> str:
    """Seconds in a readable unit.

    >>> format_seconds(0.0123), format_seconds(2.5e-6), format_seconds(1.5)
    ('12.3 ms', '2.50 µs', '1.50 s')
    """
    if t is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if t >= scale:
            v = t / scale
            return f"{v:.3g} {unit}" if v >= 10 else f"{v:.2f} {unit}"
    return f"{t * 1e9:.0f} ns"


def _shape_label(e: dict) -> str:
    return f"{e['n']:,} × {e['c']:,}"


def _groups(results: dict) -> list[tuple[str, str, list[dict]]]:
    """``(op, dtype, entries)`` in the order the grid ran."""
    out: dict[tuple[str, str], list[dict]] = {}
    for e in results.get("results", []):
        out.setdefault((e["op"], e["dtype"]), []).append(e)
    return [(op, dt, es) for (op, dt), es in out.items()]


def _columns(entries: list[dict]) -> list[str]:
    """Peers (not copyto) timed in at least one of the entries, in PEERS order."""
    timed = set()
    for e in entries:
        timed.update(e.get("times", {}))
    op = entries[0]["op"]
    return [p for p in PEERS if p != "copyto" and p in timed and op in PEERS[p].ops]


# --------------------------------------------------------------------------
# the speed targets (issue "Speed"), checked where the grid measured them

_BIG_C = [s for s in ISSUE_SHAPES if s[1] >= 100]


def targets(results: dict) -> list[dict]:
    """One row per target the run measured: what, where, measured, limit, met."""
    rows: list[dict] = []

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
            if shape in _BIG_C:
                limit = 1.25
            elif shape == (1_000_000, 10):
                limit = 3.0
            else:
                limit = None
            if limit:
                check("numxent out= ≤ × copy", where, to_copy.get("numxent_out"),
                      limit, True)  # fmt: skip
            if shape in _BIG_C:
                for peer, limit_ in [
                    ("torch_fwd_bwd", 10.0),
                    ("torch_thp_fwd_bwd", 2.5),
                    ("jax_jit", 4.0),
                    ("torch_compile", 4.0),
                ]:
                    check(f"{PEERS[peer].label} ÷ numxent ≥", where,
                          to_nx.get(peer), limit_, False)  # fmt: skip
                check("numxent alloc ÷ out= ≤", where, to_nx.get("numxent_alloc"),
                      1.5, True)  # fmt: skip
            if shape in SMALL_SHAPES:
                check("PyTorch ÷ numxent (small call) ≥", where,
                      to_nx.get("torch_fwd_bwd"), 4.0, False)  # fmt: skip
        elif op == "ce_fwd" and shape in _BIG_C:
            check("numxent fwd ≤ × copy", where, to_copy.get("numxent_fwd"), 1.0, True)
        elif op == "bce" and shape == (1_000_000, 100):
            check("numxent BCE out= ≤ × copy", where, to_copy.get("numxent_out"),
                  1.5, True)  # fmt: skip
    tr = (results.get("training") or {}).get("rows") or []
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
    fits = (results.get("sklearn_fit") or {}).get("rows") or []
    by = {(r["model"], r["dtype"]): r for r in fits}
    for dtype in dict.fromkeys(r["dtype"] for r in fits):
        n, sk = by.get(("numxent", dtype)), by.get(("sklearn", dtype))
        if n is None or sk is None:
            continue
        where = (
            f"fit {n['n_samples']:,}×{n['n_features']}, "
            f"{n['n_classes']} classes {dtype}"
        )
        check("LogisticRegression fit ÷ CrossEntropyClassifier fit ≥", where,
              sk["fit_s"] / n["fit_s"], 2.0, False)  # fmt: skip
        check("test accuracy difference ≤", where,
              abs(n["test_accuracy"] - sk["test_accuracy"]), 0.002, True)  # fmt: skip
    st = results.get("startup") or {}
    for kind, limit in (("warm", 1.0), ("cold", 5.0)):
        if st.get(kind):
            check(f"import + first call, {kind} cache ≤ s", "startup",
                  st[kind]["total_s"], limit, True)  # fmt: skip
    return rows


def _targets_md(rows: list[dict]) -> str:
    table = md_table(
        ["target", "workload", "measured", "limit", "met"],
        [
            [
                r["target"],
                r["where"],
                f"{r['value']:.2f}",
                f"{r['limit']:g}",
                "yes" if r["met"] else "**no**",
            ]
            for r in rows
        ],
        "ll",
    )
    met = sum(r["met"] for r in rows)
    return f"{met} of {len(rows)} measured targets met.\n\n" + table


# --------------------------------------------------------------------------
# tables


def md_table(headers: list[str], rows: list[list[str]], align: str = "") -> str:
    """A GitHub Markdown table; ``align`` is one of ``l``/``r`` per column.

    >>> print(md_table(["a", "b"], [["1", "2"]], "lr"))
    | a | b |
    |:--|--:|
    | 1 | 2 |
    """
    align = align.ljust(len(headers), "r")
    sep = ["|:--" if a == "l" else "|--:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _plain_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _ratio_table(op, dtype, entries, key, fmt):
    """Rows of shapes; columns: np.copyto's time and bandwidth, then ratios.

    For ``ratio_to_numxent`` the copy columns give way to np.copyto's own
    ratio (the fraction of the roofline numxent reaches) and numxent's column
    (1.00× by definition) is left out.
    """
    columns = _columns(entries)
    if key == "ratio_to_numxent":
        ref = entries[0].get("reference")
        columns = ["copyto", *(p for p in columns if p != ref)]
        headers = ["N × C"]
    else:
        headers = ["N × C", "np.copyto", "copy GB/s"]
    headers += [PEERS[p].label for p in columns]
    rows = []
    for e in entries:
        row = [_shape_label(e)]
        if key != "ratio_to_numxent":
            gbps = e.get("copy_gbps")
            row += [
                format_seconds(e.get("seconds", {}).get("copyto")),
                f"{gbps:.1f}" if gbps else "—",
            ]
        row += [format_ratio(e.get(key, {}).get(p)) for p in columns]
        rows.append(row)
    if fmt == "md":
        return md_table(headers, rows, "l")
    return _plain_table(headers, rows)


def text_tables(results: dict) -> str:
    """The terminal summary: per op and dtype, each peer's time ÷ np.copyto's,
    then ÷ numxent's."""
    stat = results["settings"]["stat"]
    parts = []
    for op, dtype, entries in _groups(results):
        parts.append(
            f"{op} {dtype}: {_OP_TITLES.get(op, op)} — {stat} time ÷ np.copyto time"
        )
        parts.append(_ratio_table(op, dtype, entries, "ratio_to_copy", "text"))
        parts.append("")
    for op, dtype, entries in _groups(results):
        ref = PEERS[entries[0]["reference"]].label
        parts.append(f"{op} {dtype}: {stat} time ÷ {ref} time (> 1×: numxent faster)")
        parts.append(_ratio_table(op, dtype, entries, "ratio_to_numxent", "text"))
        parts.append("")
    st = results.get("startup")
    if st:
        parts.append(_startup_text(st))
    tr = (results.get("training") or {}).get("rows")
    if tr:
        from .training import summary

        parts += ["training steps (PyTorch ÷ numxent):"]
        parts += [f"  {line}" for line in summary(tr)] + [""]
    fits = (results.get("sklearn_fit") or {}).get("rows")
    if fits:
        from .sklearn_fit import summary as fit_summary

        parts += ["scikit-learn estimator fit (LogisticRegression ÷ numxent):"]
        parts += [f"  {line}" for line in fit_summary(fits)] + [""]
    rows = targets(results)
    if rows:
        missed = [f"{r['target']} {r['limit']:g} at {r['where']} ({r['value']:.2f})"
                  for r in rows if not r["met"]]  # fmt: skip
        parts.append(
            f"speed targets: {len(rows) - len(missed)} of {len(rows)} measured met"
            + ("; missed: " + "; ".join(missed) if missed else "")
        )
    return "\n".join(parts).rstrip() + "\n"


def _startup_text(st: dict) -> str:
    fc = st["first_call"]
    what = f"cross_entropy {fc['n']}x{fc['c']} {fc['dtype']}, return_grad=True"
    lines = [f"start-up: import numxent + first call ({what}), fresh process"]
    for kind in ("warm", "cold"):
        s = st.get(kind)
        if s:
            lines.append(
                f"  {kind} cache: {s['total_s']:.2f} s (import {s['import_s']:.2f} s"
                f" + first call {s['first_call_s']:.2f} s; whole process "
                f"{s['process_s']:.2f} s; best of {s['runs']})"
            )
    return "\n".join(lines)


def _startup_md(st: dict) -> str:
    fc = st["first_call"]
    rows = []
    for kind in ("warm", "cold"):
        s = st.get(kind)
        if s:
            rows.append(
                [
                    f"{kind} on-disk cache",
                    f"{s['total_s']:.2f} s",
                    f"{s['import_s']:.2f} s",
                    f"{s['first_call_s']:.2f} s",
                    f"{s['process_s']:.2f} s",
                    str(s["runs"]),
                ]
            )
    table = md_table(
        ["cache", "import + first call", "import", "first call", "whole process",
         "runs (best of)"],
        rows,
        "l",
    )  # fmt: skip
    return (
        f"First call: `cross_entropy` on {fc['n']}×{fc['c']} {fc['dtype']} "
        "with int64 labels, `return_grad=True`, in a fresh Python process. "
        '"Cold" is an empty `NUMBA_CACHE_DIR` (the kernels compile), "warm" '
        'the directory the cold run filled. "Whole process" adds interpreter '
        "start-up and exit.\n\n" + table
    )


def _load(v) -> str:
    return " / ".join(f"{x:.2f}" for x in v) if v else "—"


def _machine_rows(m: dict) -> list[list[str]]:
    v = m.get("versions", {})
    cores = f"{m.get('logical_cpus')} logical"
    if m.get("physical_cores"):
        cores += f", {m['physical_cores']} physical"
    if m.get("usable_cpus") is not None:
        cores += f", {m['usable_cpus']} usable"
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    missing = ", ".join(k for k, val in v.items() if not val)
    rows = [
        ["CPU", str(m.get("cpu"))],
        ["SIMD", ", ".join(m.get("simd") or []) or "—"],
        ["cores", cores],
        ["memory", f"{m.get('memory_gib')} GiB"],
        ["OS", str(m.get("os"))],
        ["threads (numba = torch)", str(m.get("threads"))],
        ["numba threading layer", str(m.get("numba_threading_layer"))],
        ["numba SVML", str(m.get("numba_svml"))],
        ["transparent huge pages", str(m.get("transparent_hugepage"))],
        [
            "load average (1/5/15 min)",
            f"{_load(m.get('load_average_start'))} at start, "
            f"{_load(m.get('load_average_end'))} at end",
        ],
        ["versions", versions],
    ]
    if missing:
        rows.append(["not installed", missing])
    if m.get("THP_MEM_ALLOC_ENABLE"):
        rows.append(
            [
                "THP_MEM_ALLOC_ENABLE",
                f"{m['THP_MEM_ALLOC_ENABLE']} (set for the whole run: the "
                '"PyTorch" columns had it too)',
            ]
        )
    rows += [["date", str(m.get("date"))], ["command", f"`{m.get('command')}`"]]
    return rows


_ORDER = {
    "block": "each peer's samples back to back, so no library's spinning "
    "threads slow another's samples",
    "interleaved": "round-robin with the other peers",
}


def markdown_report(results: dict, plot_file: str | None) -> str:
    """The full report.md."""
    s = results["settings"]
    stat = s["stat"]
    m = results["machine"]
    out = [
        "# numxent benchmark report",
        "",
        f"`{m.get('command')}` — {m.get('date')}",
        "",
        "Every peer was timed in the same process and run as `np.copyto(dst, "
        "logits)` — the roofline: a fused loss+gradient pass reads the logits "
        "once and writes the gradient once, the same bytes the copy moves "
        '("PyTorch THP" ran in a subprocess of its own, see below). Each peer '
        f"was warmed up first (Numba compiles there), then timed {s['repeat']} "
        f"times ({_ORDER[s.get('order', 'block')]}), ≥ {s['min_time'] * 1e3:g} ms "
        f"per sample; the tables use the **{stat}**.",
        "",
        "## Machine",
        "",
        md_table(["", ""], _machine_rows(m), "ll"),
        "",
    ]
    groups = _groups(results)
    if groups:
        out += [
            "## Time ÷ `np.copyto` time",
            "",
            "1.00× is the memory roofline; lower is faster. The `np.copyto` "
            "column is its time per call, and the bandwidth that is.",
            "",
        ]
        for op, dtype, entries in groups:
            out += [f"### {op} — {_OP_TITLES.get(op, op)}, {dtype}", ""]
            out += [_ratio_table(op, dtype, entries, "ratio_to_copy", "md"), ""]
        out += [
            "## Time ÷ numxent time",
            "",
            "How many times longer each peer takes than numxent (`out=` for "
            "the loss+gradient ops, the forward call for the forward ops): "
            "above 1× numxent is faster. The `np.copyto` column is the "
            "fraction of the roofline numxent reaches.",
            "",
        ]
        for op, dtype, entries in groups:
            ref = PEERS[entries[0]["reference"]].label if entries else ""
            out += [f"### {op}, {dtype} (÷ {ref})", ""]
            out += [_ratio_table(op, dtype, entries, "ratio_to_numxent", "md"), ""]
        out += [f"## Time per call ({stat})", ""]
        for op, dtype, entries in groups:
            columns = _columns(entries)
            headers = ["N × C", "np.copyto"] + [PEERS[p].label for p in columns]
            rows = [
                [_shape_label(e)]
                + [format_seconds(e["seconds"].get(p)) for p in ["copyto", *columns]]
                for e in entries
            ]
            out += [f"### {op}, {dtype}", "", md_table(headers, rows, "l"), ""]
    if results.get("startup"):
        out += ["## Start-up", "", _startup_md(results["startup"]), ""]
    tr = (results.get("training") or {}).get("rows")
    if tr:
        from .training import markdown as training_md

        out += [
            "## Training step",
            "",
            "`numxent.bench.training`: the same model, data and seed trained "
            "with `torch.nn.functional.cross_entropy` and with "
            "`numxent.torch.cross_entropy`, their steps interleaved in one "
            "process per torch thread count (median of the timed steps); "
            "the loss's forward+backward timed alone on the model's output; "
            "peak memory from separate processes (extra resident MiB).",
            "",
            training_md(tr),
        ]
    fits = (results.get("sklearn_fit") or {}).get("rows")
    if fits:
        from .sklearn_fit import markdown as fit_md

        out += [
            "## scikit-learn estimator fit",
            "",
            "`numxent.bench.sklearn_fit`: `CrossEntropyClassifier` vs "
            '`LogisticRegression(solver="lbfgs")` on the same split, each fit '
            "timed once after a warm-up fit that compiles numxent's kernels.",
            "",
            fit_md(fits),
        ]
    rows = targets(results)
    if rows:
        out += [
            "## Speed targets",
            "",
            'The targets of the "Speed" issue that this run measured '
            "(shapes and peers it did not run are not listed).",
            "",
            _targets_md(rows),
            "",
        ]
    if plot_file:
        out += [
            "## Plot",
            "",
            "Time per logit vs the number of classes; the dashed black line "
            "is `np.copyto` (the roofline).",
            "",
            f"![time per element vs C]({plot_file})",
            "",
        ]
    out += ["## Peers", ""]
    used = {p for e in results.get("results", []) for p in e.get("times", {})}
    used |= {p for e in results.get("results", []) for p in e.get("skipped", {})}
    for pid, peer in PEERS.items():
        if pid in used:
            out.append(f"- **{peer.label}** (`{pid}`): {peer.description}.")
    out.append("")
    if results.get("thp_worker"):
        tw = results["thp_worker"]
        out += [
            f"PyTorch THP ran in a subprocess (torch {tw.get('torch')}, "
            f"{tw.get('torch_threads')} threads, THP_MEM_ALLOC_ENABLE="
            f"{tw.get('THP_MEM_ALLOC_ENABLE')}); its ratios divide by the main "
            "process's `np.copyto`. That process's own `np.copyto` time is kept "
            "in results.json (`thp_worker_copyto`) as a check.",
            "",
        ]
    notes = results.get("notes", [])
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------
# README table


_README_COLUMNS = {
    "ce": ["numxent_out", "numxent_alloc", "torch_fwd_bwd", "torch_thp_fwd_bwd",
           "jax_jit", "torch_compile", "numpy_ref", "sklearn"],
    "bce": ["numxent_out", "numxent_alloc", "torch_fwd_bwd", "torch_thp_fwd_bwd",
            "jax_jit", "torch_compile", "numpy_ref", "sklearn"],
    "ce_fwd": ["numxent_fwd", "torch_fwd", "torch_thp_fwd", "jax_jit_fwd",
               "torch_compile_fwd", "numpy_ref_fwd"],
    "bce_fwd": ["numxent_fwd", "torch_fwd", "torch_thp_fwd", "jax_jit_fwd",
                "torch_compile_fwd", "numpy_ref_fwd"],
}  # fmt: skip


def readme_table(results: dict) -> str:
    """The README's benchmark section: ratio tables, then machine and command."""
    out = []
    for op, dtype, entries in _groups(results):
        timed = {p for e in entries for p in e.get("times", {})}
        columns = [p for p in _README_COLUMNS.get(op, []) if p in timed]
        headers = ["N × C", "np.copyto"] + [PEERS[p].label for p in columns]
        rows = [
            [_shape_label(e), format_seconds(e.get("seconds", {}).get("copyto"))]
            + [format_ratio(e.get("ratio_to_copy", {}).get(p)) for p in columns]
            for e in entries
        ]
        out += [
            f"**{_OP_TITLES.get(op, op)}, {dtype}** — time ÷ `np.copyto` time "
            "(1.00× is the memory roofline; lower is faster):",
            "",
            md_table(headers, rows, "l"),
            "",
        ]
    st = results.get("startup")
    if st:
        bits = []
        for kind in ("warm", "cold"):
            if st.get(kind):
                bits.append(f"{st[kind]['total_s']:.2f} s with a {kind} on-disk cache")
        fc = st["first_call"]
        out += [
            f"Start-up, `import numxent` + first call ({fc['n']}×{fc['c']} "
            f"{fc['dtype']}, loss and gradient) in a fresh process: "
            + ", ".join(bits)
            + ".",
            "",
        ]
    m = results["machine"]
    v = m.get("versions", {})
    vers = ", ".join(
        f"{k} {v[k]}"
        for k in ("python", "numxent", "numpy", "numba", "torch", "sklearn", "jax")
        if v.get(k)
    )
    cores = f"{m.get('logical_cpus')} logical CPUs"
    if m.get("physical_cores"):
        cores = f"{m['physical_cores']} cores / " + cores
    stat = results["settings"]["stat"]
    out += [
        f"Measured on {m.get('cpu')} ({cores}, {m.get('memory_gib')} GiB), "
        f"{m.get('threads')} threads for numba and torch, numba threading layer "
        f"{m.get('numba_threading_layer')}; {vers}; {m.get('date')}; "
        f"{stat} of {results['settings']['repeat']} repeats. "
        f"Made with `{m.get('command')}`.",
    ]
    missing = {}
    for e in results.get("results", []):
        for pid, why in e.get("skipped", {}).items():
            if pid in _README_COLUMNS.get(e["op"], []):
                missing.setdefault(PEERS[pid].label, why)
    if missing:
        out += [
            "",
            "Not measured: "
            + "; ".join(f"{k} ({v})" for k, v in missing.items())
            + ".",
        ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# plot

_STYLE = {
    "numxent_out": ("tab:blue", "-", "o"),
    "numxent_alloc": ("tab:blue", "--", "s"),
    "numxent_fwd": ("tab:blue", "-", "o"),
    "numpy_ref": ("tab:green", "-", "^"),
    "numpy_ref_fwd": ("tab:green", "-", "^"),
    "torch_fwd_bwd": ("tab:red", "-", "v"),
    "torch_fwd": ("tab:red", "-", "v"),
    "torch_thp_fwd_bwd": ("tab:orange", "-", "v"),
    "torch_thp_fwd": ("tab:orange", "-", "v"),
    "sklearn": ("tab:purple", "-", "D"),
    "torch_compile": ("tab:pink", "-", "P"),
    "torch_compile_fwd": ("tab:pink", "-", "P"),
    "jax_jit": ("tab:brown", "-", "x"),
    "jax_jit_fwd": ("tab:brown", "-", "x"),
}


def plot(results: dict, path: str) -> str | None:
    """Write the PNG; returns None, or why no plot was written."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as exc:
        return f"matplotlib is not importable ({exc}): no plot written"
    groups = _groups(results)
    if not groups:
        return "no grid results: no plot written"
    ncols = min(2, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(6.4 * ncols, 4.4 * nrows), squeeze=False
    )
    for ax, (op, dtype, entries) in zip(axes.flat, groups, strict=False):
        # one point per C: the workload with the most elements (least overhead)
        by_c: dict[int, dict] = {}
        for e in entries:
            if e["c"] not in by_c or e["n"] * e["c"] > by_c[e["c"]]["elements"]:
                by_c[e["c"]] = e
        pts = [by_c[c] for c in sorted(by_c)]
        cs = [e["c"] for e in pts]
        for pid in ["copyto", *_columns(entries)]:
            xs, ys = [], []
            for e in pts:
                t = e.get("seconds", {}).get(pid)
                if t is not None:
                    xs.append(e["c"])
                    ys.append(t / e["elements"] * 1e9)
            if not xs:
                continue
            if pid == "copyto":
                ax.plot(xs, ys, "k--", lw=2.5, label="np.copyto (roofline)", zorder=5)
            else:
                color, ls, marker = _STYLE.get(pid, ("gray", "-", "."))
                ax.plot(xs, ys, color=color, ls=ls, marker=marker,
                        label=PEERS[pid].label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(cs)
        ax.set_xticklabels([f"{e['c']:,}\n(N={e['n']:,})" for e in pts], fontsize=7)
        ax.set_xlabel("classes C")
        ax.set_ylabel("ns per logit")
        ax.set_title(f"{op}, {dtype}: {_OP_TITLES.get(op, op)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    m = results["machine"]
    fig.suptitle(
        f"numxent vs peers — {m.get('cpu')}, {m.get('threads')} threads, "
        f"{results['settings']['stat']} time",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
