"""Turn a results dict (``results.json``) into tables, report.md and a plot.

Tables come from tabulate when it is installed (aligned columns in the
terminal and in the Markdown source) and from a plain Markdown writer when it
is not; the plot needs matplotlib, and without it the report says so.
"""

from __future__ import annotations

import math

from ._peers import FLOOR, PEERS, REFERENCE

__all__ = ["add_ratios", "format_ratio", "format_seconds", "markdown_report", "plot",
           "readme_table", "table", "text_tables"]  # fmt: skip

_OP_TITLES = {
    "ce": "cross_entropy, loss + gradient",
    "ce_fwd": "cross_entropy, loss only (forward)",
    "bce": "binary_cross_entropy_with_logits, loss + gradient",
    "bce_fwd": "binary_cross_entropy_with_logits, loss only (forward)",
}


def add_ratios(entry: dict, stat: str) -> None:
    """Fill ``seconds``, ``reference``, ``ratio_to_copy``, ``ratio_to_numxent``,
    ``copy_gbps`` and the copy floor's ``floor`` (the faster parallel copy),
    ``floor_seconds``, ``ratio_to_floor`` and ``floor_gbps`` of one grid
    entry from its ``times``."""
    seconds = {p: s[stat] for p, s in entry.get("times", {}).items()}
    copy = seconds.get("copyto")
    ref_id = REFERENCE.get(entry["op"])
    ref = seconds.get(ref_id)
    entry["seconds"] = seconds
    entry["reference"] = ref_id
    entry["ratio_to_copy"] = {p: t / copy for p, t in seconds.items()} if copy else {}
    entry["ratio_to_numxent"] = {p: t / ref for p, t in seconds.items()} if ref else {}
    entry["copy_gbps"] = entry["copy_bytes"] / copy / 1e9 if copy else None
    floors = [p for p in FLOOR if p in seconds]
    floor_id = min(floors, key=seconds.__getitem__) if floors else None
    floor = seconds[floor_id] if floor_id else None
    entry["floor"] = floor_id
    entry["floor_seconds"] = floor
    entry["ratio_to_floor"] = (
        {p: t / floor for p, t in seconds.items()} if floor else {}
    )
    entry["floor_gbps"] = entry["copy_bytes"] / floor / 1e9 if floor else None


def format_ratio(x: float | None) -> str:
    """Two or three significant digits and a ×.

    >>> format_ratio(1.234), format_ratio(44.4), format_ratio(123.4)
    ('1.23×', '44.4×', '123×')
    """
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


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


def table(headers: list[str], rows: list[list[str]], align: str = "", *,
          markdown: bool = True) -> str:  # fmt: skip
    """A Markdown pipe table (``markdown=False``: a plain one for the terminal);
    ``align`` is ``l`` or ``r`` per column, ``r`` where it runs out.

    >>> lines = table(["a", "b"], [["1", "22"]], "lr").splitlines()
    >>> [cell.strip() for cell in lines[2].strip("|").split("|")]
    ['1', '22']
    >>> lines[1].startswith("|:-") and lines[1].endswith("-:|")
    True
    """
    align = align.ljust(len(headers), "r")
    try:
        from tabulate import tabulate
    except ImportError:
        sep = "".join("|:--" if a == "l" else "|--:" for a in align) + "|"
        lines = ["| " + " | ".join(r) + " |" for r in [headers, *rows]]
        return "\n".join([lines[0], sep, *lines[1:]])
    return tabulate(
        rows, headers, tablefmt="pipe" if markdown else "simple",
        colalign=["left" if a == "l" else "right" for a in align],
        disable_numparse=True,
    )  # fmt: skip


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
    timed = {p for e in entries for p in e.get("times", {})}
    op = entries[0]["op"]
    return [p for p in PEERS if p != "copyto" and p in timed and op in PEERS[p].ops]


def _has_floor(entries: list[dict]) -> bool:
    return any(e.get("floor_seconds") for e in entries)


def _ratio_table(entries: list[dict], key: str, markdown: bool) -> str:
    """Rows of shapes; columns: np.copyto's time and bandwidth, then ratios.

    For ``ratio_to_numxent`` the copy columns give way to np.copyto's own
    ratio (the fraction of the roofline numxent reaches) and numxent's column
    (1.00× by definition) is left out. For ``ratio_to_floor`` they are the
    copy floor's time and bandwidth, np.copyto's ratio to it first.
    """
    columns = _columns(entries)
    to_nx = key == "ratio_to_numxent"
    to_floor = key == "ratio_to_floor"
    if to_nx:
        columns = ["copyto", *(p for p in columns if p != entries[0]["reference"])]
    if to_floor:
        columns = ["copyto", *columns]
    headers = ["N × C"]
    if to_floor:
        headers += ["copy floor", "floor GB/s"]
    elif not to_nx:
        headers += ["np.copyto", "copy GB/s"]
    headers += [PEERS[p].label for p in columns]
    rows = []
    for e in entries:
        row = [_shape_label(e)]
        if not to_nx:
            t, gbps = (
                (e.get("floor_seconds"), e.get("floor_gbps"))
                if to_floor
                else (e["seconds"].get("copyto"), e.get("copy_gbps"))
            )
            row += [format_seconds(t), f"{gbps:.1f}" if gbps else "—"]
        rows.append(row + [format_ratio(e.get(key, {}).get(p)) for p in columns])
    return table(headers, rows, "l", markdown=markdown)


def _floor_name(results: dict) -> str:
    """The copy floor's name, with the run's thread count in it."""
    return f"{results['settings'].get('threads', '?')}-thread copy floor"


def _time_table(entries: list[dict]) -> str:
    columns = ["copyto", *_columns(entries)]
    rows = [
        [_shape_label(e), *(format_seconds(e["seconds"].get(p)) for p in columns)]
        for e in entries
    ]
    return table(["N × C"] + [PEERS[p].label for p in columns], rows, "l")


def _startup_rows(st: dict) -> list[tuple[str, dict]]:
    return [(kind, st[kind]) for kind in ("warm", "cold") if st.get(kind)]


def text_tables(results: dict) -> str:
    """The terminal summary: per op and dtype, each peer's time ÷ np.copyto's,
    then ÷ numxent's; start-up and the scenario sections' summaries if run."""
    stat = results["settings"]["stat"]
    parts: list[str] = []
    for key in ("ratio_to_copy", "ratio_to_floor", "ratio_to_numxent"):
        for op, dtype, entries in _groups(results):
            title = {
                "ratio_to_copy": f"{_OP_TITLES.get(op, op)} — {stat} time ÷ "
                "np.copyto time",
                "ratio_to_floor": f"{stat} time ÷ {_floor_name(results)} time",
                "ratio_to_numxent": f"{stat} time ÷ "
                f"{PEERS[entries[0]['reference']].label} time (> 1×: numxent faster)",
            }[key]
            if key != "ratio_to_floor" or _has_floor(entries):
                table_ = _ratio_table(entries, key, markdown=False)
                parts += [f"{op} {dtype}: {title}", table_, ""]
    compiles = _compile_rows(results)
    if compiles:
        parts.append("compile time (first call, left out of the timings):")
        parts += [f"  {r[0]} {r[1]}: {r[2]}" for r in compiles] + [""]
    st = results.get("startup")
    if st:
        fc = st["first_call"]
        what = f"cross_entropy {fc['n']}x{fc['c']} {fc['dtype']}, return_grad=True"
        parts.append(f"start-up: import numxent + first call ({what}), fresh process")
        parts += [
            f"  {kind} cache: {s['total_s']:.2f} s (import {s['import_s']:.2f} s"
            f" + first call {s['first_call_s']:.2f} s; whole process "
            f"{s['process_s']:.2f} s; best of {s['runs']})"
            for kind, s in _startup_rows(st)
        ]
    for sec in (results.get("sections") or {}).values():
        parts += [f"{sec['title']}:", *(f"  {x}" for x in sec["summary"]), ""]
    return "\n".join(parts).rstrip() + "\n"


def _compile_rows(results: dict) -> list[list[str]]:
    """(workload, peer, first-call seconds, timed call) of the peers whose
    first call compiled (``compile_s`` in their times)."""
    stat = results["settings"]["stat"]
    return [
        [
            f"{e['op']} {_shape_label(e)} {e['dtype']}",
            PEERS[pid].label,
            format_seconds(t["compile_s"]),
            format_seconds(t.get(stat)),
        ]  # fmt: skip
        for e in results.get("results", [])
        for pid, t in e.get("times", {}).items()
        if t.get("compile_s") is not None
    ]


def _startup_md(st: dict) -> str:
    fc = st["first_call"]
    rows = [
        [f"{kind} on-disk cache"]
        + [
            f"{s[k]:.2f} s"
            for k in ("total_s", "import_s", "first_call_s", "process_s")
        ]
        + [str(s["runs"])]
        for kind, s in _startup_rows(st)
    ]
    headers = ["cache", "import + first call", "import", "first call",
               "whole process", "runs (best of)"]  # fmt: skip
    return (
        f"First call: `cross_entropy` on {fc['n']}×{fc['c']} {fc['dtype']} "
        "with int64 labels, `return_grad=True`, in a fresh Python process. "
        '"Cold" is an empty `NUMBA_CACHE_DIR` (the kernels compile), "warm" '
        'the directory the cold run filled. "Whole process" adds interpreter '
        "start-up and exit.\n\n" + table(headers, rows, "l")
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
        ["versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)],
    ]
    missing = ", ".join(k for k, val in v.items() if not val)
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


def _md_ratio_sections(results: dict) -> list[tuple[str, str, str]]:
    """(ratio key, title, intro) of the report's three ratio views."""
    return [
        ("ratio_to_copy", "Time ÷ `np.copyto` time",
         "1.00× is the memory roofline; lower is faster. The `np.copyto` "
         "column is its time per call, and the bandwidth that is."),
        ("ratio_to_floor", f"Time ÷ {_floor_name(results)} time",
         "`np.copyto` is one thread. The copy floor is the same copy "
         "on every thread the kernels use, the faster of the ordinary-"
         "store and the non-temporal-store parallel copy: what the cores "
         "together can move, the bound a fused pass can at best reach. "
         "The `np.copyto` column is its ratio to the floor."),
        ("ratio_to_numxent", "Time ÷ numxent time",
         "How many times longer each peer takes than numxent (`out=` for "
         "the loss+gradient ops, the forward call for the forward ops): "
         "above 1× numxent is faster. The `np.copyto` column is the "
         "fraction of the roofline numxent reaches."),
    ]  # fmt: skip


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
        table(["", ""], _machine_rows(m), "ll"),
        "",
    ]
    groups = _groups(results)
    for key, title, intro in _md_ratio_sections(results):
        chosen = [g for g in groups if key != "ratio_to_floor" or _has_floor(g[2])]
        if chosen:
            out += [f"## {title}", "", intro, ""]
        for op, dtype, entries in chosen:
            ref = PEERS[entries[0]["reference"]].label
            heading = {
                "ratio_to_copy": f"{op} — {_OP_TITLES.get(op, op)}, {dtype}",
                "ratio_to_floor": f"{op}, {dtype} (÷ copy floor)",
                "ratio_to_numxent": f"{op}, {dtype} (÷ {ref})",
            }[key]
            out += [f"### {heading}", "", _ratio_table(entries, key, True), ""]
    if groups:
        out += [f"## Time per call ({stat})", ""]
        for op, dtype, entries in groups:
            out += [f"### {op}, {dtype}", "", _time_table(entries), ""]
    compiles = _compile_rows(results)
    if compiles:
        out += [
            "## Compile time",
            "",
            "Peers that compile on their first call (JAX jit, torch.compile) "
            "make that call before the warm-up; its time is here and in none "
            f"of the tables above (which time the compiled call, {stat}).",
            "",
            table(
                ["workload", "peer", "first call (compiles)", "compiled call"],
                compiles,
                "ll",
            ),  # fmt: skip
            "",
        ]
    if results.get("startup"):
        out += ["## Start-up", "", _startup_md(results["startup"]), ""]
    for sec in (results.get("sections") or {}).values():
        out += [f"## {sec['title']}", "", sec["intro"], "", sec["markdown"]]
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
    used = {p for e in results.get("results", []) for p in [*e["times"], *e["skipped"]]}
    out += [
        f"- **{peer.label}** (`{pid}`): {peer.description}."
        for pid, peer in PEERS.items()
        if pid in used
    ]
    out.append("")
    tw = results.get("thp_worker")
    if tw:
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


_GRAD_COLUMNS = ["copy_par", "copy_par_nt", "numxent_out", "numxent_alloc",
                 "torch_fwd_bwd", "torch_thp_fwd_bwd", "jax_jit", "torch_compile",
                 "numpy_ref", "sklearn"]  # fmt: skip
_FWD_COLUMNS = ["copy_par", "copy_par_nt", "numxent_fwd", "torch_fwd",
                "torch_thp_fwd", "jax_jit_fwd", "torch_compile_fwd",
                "numpy_ref_fwd"]  # fmt: skip


def _readme_columns(op: str) -> list[str]:
    return _FWD_COLUMNS if op.endswith("_fwd") else _GRAD_COLUMNS


def readme_table(results: dict) -> str:
    """The README's benchmark section: ratio tables, then machine and command."""
    out = []
    for op, dtype, entries in _groups(results):
        timed = {p for e in entries for p in e.get("times", {})}
        columns = [p for p in _readme_columns(op) if p in timed]
        headers = ["N × C", "np.copyto"] + [PEERS[p].label for p in columns]
        rows = [
            [_shape_label(e), format_seconds(e["seconds"].get("copyto"))]
            + [format_ratio(e["ratio_to_copy"].get(p)) for p in columns]
            for e in entries
        ]
        out += [
            f"**{_OP_TITLES.get(op, op)}, {dtype}** — time ÷ `np.copyto` time "
            "(1.00× is the memory roofline; lower is faster):",
            "",
            table(headers, rows, "l"),
            "",
        ]
    st = results.get("startup")
    if st:
        fc = st["first_call"]
        bits = [f"{s['total_s']:.2f} s with a {kind} on-disk cache"
                for kind, s in _startup_rows(st)]  # fmt: skip
        out += [
            f"Start-up, `import numxent` + first call ({fc['n']}×{fc['c']} "
            f"{fc['dtype']}, loss and gradient) in a fresh process: "
            + ", ".join(bits) + ".",
            "",
        ]  # fmt: skip
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
    s = results["settings"]
    out.append(
        f"Measured on {m.get('cpu')} ({cores}, {m.get('memory_gib')} GiB), "
        f"{m.get('threads')} threads for numba and torch, numba threading layer "
        f"{m.get('numba_threading_layer')}; {vers}; {m.get('date')}; "
        f"{s['stat']} of {s['repeat']} repeats. Made with `{m.get('command')}`."
    )
    missing: dict[str, list[str]] = {}
    for e in results.get("results", []):
        for pid, why in e.get("skipped", {}).items():
            if pid in _readme_columns(e["op"]):
                missing.setdefault(PEERS[pid].label, why)
    if missing:
        why = "; ".join(f"{k} ({v})" for k, v in missing.items())
        out += ["", f"Not measured: {why}."]
    return "\n".join(out) + "\n"


_COLOURS = {
    "numxent": ("tab:blue", "o"),
    "numpy": ("tab:green", "^"),
    "torch": ("tab:red", "v"),
    "torch_thp": ("tab:orange", "v"),
    "sklearn": ("tab:purple", "D"),
    "torch_compile": ("tab:pink", "P"),
    "jax": ("tab:brown", "x"),
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
        by_c = {e["c"]: e for e in sorted(entries, key=lambda e: e["elements"])}
        pts = [by_c[c] for c in sorted(by_c)]
        for pid in ["copyto", *_columns(entries)]:
            xy = [(e["c"], e["seconds"][pid] / e["elements"] * 1e9)
                  for e in pts if pid in e["seconds"]]  # fmt: skip
            if not xy:
                continue
            xs, ys = zip(*xy, strict=True)
            if pid == "copyto":
                ax.plot(xs, ys, "k--", lw=2.5, label="np.copyto (roofline)", zorder=5)
            elif pid in FLOOR:
                ax.plot(xs, ys, "k:" if pid == "copy_par_nt" else "k-.", lw=1.5,
                        label=PEERS[pid].label, zorder=4)  # fmt: skip
            else:
                colour, marker = _COLOURS.get(PEERS[pid].library, ("gray", "."))
                ls, marker = ("--", "s") if pid == "numxent_alloc" else ("-", marker)
                ax.plot(xs, ys, color=colour, ls=ls, marker=marker,
                        label=PEERS[pid].label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks([e["c"] for e in pts])
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
