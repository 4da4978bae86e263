"""``numxent-bench`` / ``python -m numxent.bench``: run the grid, write the report."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time

from ._peers import PEERS, peers_for
from ._report import add_ratios, markdown_report, plot, readme_table, text_tables
from ._timing import time_workload
from ._torch_worker import run_worker
from ._workloads import NAMED_SHAPES, OPS, Workload, parse_shapes

__all__ = ["build_parser", "main", "run", "settings", "workloads", "write_report"]

SCHEMA = "numxent-bench/1"
ALL_OPS = [*OPS, "startup"]
DEFAULT_OPS = ["ce", "ce_fwd", "bce", "startup"]

#: settings: (full run, --quick)
_DEFAULTS = {
    "dtypes": (["float32", "float64"], ["float32"]),
    "repeat": (5, 3),
    "min_time": (0.02, 0.005),
    "budget": (15.0, 2.0),
    "warm_starts": (3, 1),
    "cold_starts": (2, 1),
    "shapes": (NAMED_SHAPES["default"], NAMED_SHAPES["quick"]),
    "bce_shapes": ([(1_000_000, 100), (64, 10)], [(16_384, 100), (64, 10)]),
}


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _shapes_text(shapes) -> str:
    return ",".join(f"{n}x{c}" for n, c in shapes)


def build_parser(prog: str = "numxent-bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time numxent's fused cross-entropy against np.copyto (the "
        "memory roofline), NumPy, PyTorch, scikit-learn and JAX; print tables and "
        "write report.md, results.json, readme_table.md and plot.png to --out.",
        epilog="Ops: "
        + "; ".join(f"{k}: {v}" for k, v in OPS.items())
        + "; startup: import numxent + first call in a fresh process. Peers: "
        + ", ".join(PEERS)
        + ".",
    )
    # fmt: off
    add = p.add_argument
    full, quick = (_shapes_text(x) for x in _DEFAULTS["shapes"])
    names = ", ".join(NAMED_SHAPES)
    add("--shapes", help=f"NxC,... or {names} (default {full}; --quick {quick})")
    full, quick = (_shapes_text(x) for x in _DEFAULTS["bce_shapes"])
    add("--bce-shapes",
        help=f"bce ops' shapes (default --shapes, else {full}; --quick {quick})")
    add("--dtypes", help="float32,float64 (--quick: float32)")
    add("--ops", default=",".join(DEFAULT_OPS),
        help=f"from {','.join(ALL_OPS)}, or none (default %(default)s)")
    add("--peers", help="peer ids to time (default all; --quick: all but the "
        "torch.compile ones); np.copyto always runs")
    add("--threads", type=int,
        help="numba, torch and scikit-learn threads (default: numba's count)")
    add("--quick", action="store_true", help="small shapes, float32, 3 repeats, "
        "one cold and one warm start: well under a minute")
    add("--repeat", type=int, help="timed samples per peer (default 5)")
    add("--min-time", type=float, help="seconds a sample lasts (default 0.02)")
    add("--budget", type=float,
        help="seconds a peer may spend sampling one workload (default 15)")
    add("--stat", choices=["median", "min"], default="median",
        help="the samples' statistic the tables use")
    add("--order", choices=["block", "interleaved"], default="block",
        help="block: each peer's samples back to back, so no library's spinning "
        "threads slow the next one's, one peer's buffers in memory at a time; "
        "interleaved: round-robin (load drift), every peer's buffers at once "
        "(large shapes need the sum of their memory)")
    add("--warm-starts", type=int, help="warm-cache start-up runs")
    add("--cold-starts", type=int, help="cold-cache start-up runs")
    add("--no-thp", action="store_true", help="no THP_MEM_ALLOC_ENABLE=1 worker")
    add("--no-plot", action="store_true", help="do not write plot.png")
    add("--seed", type=int, default=0, help="data seed (default 0)")
    add("--out", default="numxent-bench-report", help="output directory")
    add("--quiet", action="store_true", help="no progress bar")
    add("--readme-table", metavar="RESULTS_JSON", help="print the README's "
        "tables from a results.json or report directory; runs nothing")
    # fmt: on
    return p


class Progress:
    """tqdm's bar on stderr; without tqdm, one line each time the group changes."""

    def __init__(self, total: float, enabled: bool = True):
        self.enabled, self.bar = enabled, None
        self.group: str | None = None
        try:
            from tqdm import tqdm
        except ImportError:
            return
        if enabled:
            self.bar = tqdm(
                total=total,
                file=sys.stderr,
                bar_format="{desc} {percentage:3.0f}%|{bar:24}| {elapsed}<{remaining}"
                "{postfix}",
            )

    def advance(self, amount: float, group: str, message: str = "") -> None:
        if self.bar is not None:
            self.bar.set_description_str(group, refresh=False)
            self.bar.set_postfix_str(message, refresh=False)
            # float units: rounding must not push the count past the total
            self.bar.update(max(0.0, min(amount, self.bar.total - self.bar.n)))
        elif self.enabled and group != self.group:
            print(f"{group} {message}", file=sys.stderr, flush=True)
        self.group = group

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _command(prog: str | None, argv: list[str]) -> str:
    if prog is None:
        name = os.path.basename(sys.argv[0]) if sys.argv else ""
        prog = "numxent-bench" if name == "numxent-bench" else "python -m numxent.bench"
    return " ".join([prog, *map(shlex.quote, argv)])


def _check_choices(option: str, values: list[str], known: list[str]) -> None:
    for v in values:
        if v not in known:
            raise ValueError(f"{option}: unknown {v!r}; choose from {', '.join(known)}")


def settings(args: argparse.Namespace) -> dict:
    """The run's settings from the parsed options (``--quick`` fills what is
    not given); raises ValueError on a bad value."""
    s: dict = {"quick": bool(args.quick), "stat": args.stat, "order": args.order,
               "seed": args.seed}  # fmt: skip
    for key, defaults in _DEFAULTS.items():
        value = getattr(args, key)
        s[key] = value if value is not None else defaults[int(args.quick)]
    if args.shapes and not args.bce_shapes:
        s["bce_shapes"] = args.shapes
    for key in ("shapes", "bce_shapes"):
        shapes = parse_shapes(s[key]) if isinstance(s[key], str) else s[key]
        s[key] = [f"{n}x{c}" for n, c in shapes]
    if isinstance(s["dtypes"], str):
        s["dtypes"] = _csv(s["dtypes"])
    _check_choices("--dtypes", s["dtypes"], ["float32", "float64"])
    if s["repeat"] < 1:
        raise ValueError("--repeat must be at least 1")
    s["ops"] = [] if args.ops.strip() == "none" else _csv(args.ops)
    _check_choices("--ops", s["ops"], ALL_OPS)
    peers = _csv(args.peers or "") or [
        p for p in PEERS if not (PEERS[p].slow_setup and args.quick)
    ]
    _check_choices("--peers", peers, list(PEERS))
    if "copyto" not in peers:
        peers.insert(0, "copyto")
    if args.no_thp:
        peers = [p for p in peers if PEERS[p].where != "thp"]
    s["peers"] = peers
    return s


def _set_threads(requested: int | None, parser) -> int:
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if requested is not None and not 1 <= requested <= limit:
        parser.error(f"--threads must be between 1 and {limit} (NUMBA_NUM_THREADS)")
    threads = numba.get_num_threads() if requested is None else requested
    numba.set_num_threads(threads)
    return threads


def workloads(s: dict) -> list[Workload]:
    """The grid of settings ``s``: per op, dtype and shape, in that order."""
    return [
        Workload(op, *parse_shapes(shape)[0], dtype)
        for op in s["ops"]
        if op != "startup"
        for dtype in s["dtypes"]
        for shape in s["bce_shapes" if op.startswith("bce") else "shapes"]
    ]


def run(s: dict, threads: int, command: str, quiet: bool = False) -> dict:
    """Run the grid described by settings ``s``; the results dict."""
    from ._machine import load_average, machine_info
    from ._startup import measure_startup

    load_start = load_average()
    grid = workloads(s)
    thp_peers = [p for p in s["peers"] if PEERS[p].where == "thp"]
    thp_workloads = [w for w in grid if any(w.op in PEERS[p].ops for p in thp_peers)]
    units = (len(grid) + len(thp_workloads)) * (s["repeat"] + 1)
    if "startup" in s["ops"]:
        units += max(1, s["cold_starts"]) + s["warm_starts"]
    progress = Progress(units, enabled=not quiet and units > 0)
    notes: list[str] = []

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)

    results = []
    for w in grid:
        peers = [p.id for p in peers_for(w.op, where="main") if p.id in s["peers"]]
        stats, unavailable, errors = time_workload(
            w, peers, threads, s,
            on_step=lambda m, a, g=w.group: progress.advance(a, g, m),
        )  # fmt: skip
        for pid, why in unavailable.items():
            note(f"{PEERS[pid].label} (`{pid}`) skipped: {why}")
        for pid, err in errors.items():
            note(f"{PEERS[pid].label} (`{pid}`) failed on {w.group}: {err}")
        results.append(
            {**w.to_dict(), "group": w.group, "elements": w.elements,
             "copy_bytes": w.copy_bytes, "times": stats,
             "skipped": {**unavailable, **errors}}
        )  # fmt: skip

    thp_info: dict | None = None
    if thp_workloads:
        reason = None
        if importlib.util.find_spec("torch") is None:
            reason = "torch is not installed"
        else:
            try:
                thp_info = run_worker(
                    thp_workloads, thp_peers, s, threads, progress.advance
                )
            except Exception as exc:
                reason = f"the THP_MEM_ALLOC_ENABLE=1 subprocess failed ({exc})"
        by_group = {e["group"]: e for e in results}
        if reason is not None:
            note(f"PyTorch THP skipped: {reason}")
            for w in thp_workloads:
                for pid in thp_peers:
                    if w.op in PEERS[pid].ops:
                        by_group[w.group]["skipped"][pid] = reason
        elif thp_info is not None:
            for r in thp_info.pop("results"):
                e = by_group[Workload(r["op"], r["n"], r["c"], r["dtype"]).group]
                copy = r["times"].pop("copyto", None)
                if copy is not None:
                    e["thp_worker_copyto"] = copy
                e["times"].update(r["times"])
                e["skipped"].update(r["skipped"])
                for pid, why in r["skipped"].items():
                    note(f"{PEERS[pid].label} (`{pid}`) skipped on {e['group']}: {why}")

    startup = None
    if "startup" in s["ops"]:
        try:
            startup = measure_startup(
                warm_repeat=s["warm_starts"],
                cold_repeat=s["cold_starts"],
                threads=threads,
                on_step=lambda m, a: progress.advance(a, "startup", m),
            )
        except Exception as exc:
            note(f"start-up measurement failed: {exc}")
    progress.close()

    for e in results:
        add_ratios(e, s["stat"])
    machine = machine_info(threads, command)
    machine["load_average_start"] = load_start
    busy = load_start[0] if load_start else 0.0
    if busy > 0.5:
        note(
            f"the machine was busy (load average {busy:.2f} before the run): "
            "other processes take cores from the timed calls; OpenMP peers "
            "(PyTorch, scikit-learn) with every core in use can slow down by "
            "orders of magnitude when a core is taken. Re-run on an idle machine "
            "for numbers to publish."
        )
    return {
        "schema": SCHEMA,
        "settings": {**s, "threads": threads},
        "machine": machine,
        "peers": {
            pid: {"label": p.label, "library": p.library, "description": p.description}
            for pid, p in PEERS.items()
        },
        "results": results,
        "startup": startup,
        "thp_worker": thp_info,
        "notes": notes,
    }


def write_report(results: dict, out_dir: str, want_plot: bool = True) -> dict:
    """Write results.json, report.md, plot.png, readme_table.md into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    if want_plot:
        png = os.path.join(out_dir, "plot.png")
        why_not = plot(results, png)
        if why_not is None:
            files["plot"] = png
        else:
            results["notes"].append(why_not)
    for key, name in [("report", "report.md"), ("results", "results.json"),
                      ("readme_table", "readme_table.md")]:  # fmt: skip
        files[key] = os.path.join(out_dir, name)
    results["files"] = {k: os.path.basename(v) for k, v in files.items()}
    with open(files["results"], "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(files["report"], "w") as f:
        f.write(markdown_report(results, "plot.png" if "plot" in files else None))
    with open(files["readme_table"], "w") as f:
        f.write(readme_table(results))
    return files


def load_results(path: str) -> dict:
    """A results.json (or the one in a report directory), checked for its schema."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path) as f:
        results = json.load(f)
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a numxent-bench results.json ({SCHEMA})")
    return results


def main(argv: list[str] | None = None, *, prog: str | None = None, extra=None) -> int:
    """Run the report. ``extra`` (``benchmarks/report.py``'s scenario sections)
    has ``add_arguments(parser)`` and ``run(args, threads, note)``, which runs
    after the grid and returns ``{key: section}``, each section a dict with
    ``title``, ``intro``, ``markdown`` and ``summary`` (lines) for the report:
    the results' ``"sections"``."""
    parser = build_parser(prog or "numxent-bench")
    if extra is not None:
        extra.add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.readme_table:
        try:
            results = load_results(args.readme_table)
        except (OSError, ValueError) as exc:
            parser.error(f"--readme-table: {exc}")
        sys.stdout.write(readme_table(results))
        return 0
    try:
        s = settings(args)
    except ValueError as exc:
        parser.error(str(exc))
    threads = _set_threads(args.threads, parser)
    t0 = time.perf_counter()
    results = run(s, threads, _command(prog, argv), quiet=args.quiet)
    if extra is not None:
        results["sections"] = extra.run(args, threads, results["notes"].append)
    results["elapsed_s"] = time.perf_counter() - t0
    files = write_report(results, args.out, want_plot=not args.no_plot)
    sys.stdout.write(text_tables(results))
    for n in results["notes"]:
        sys.stdout.write(f"note: {n}\n")
    sys.stdout.write(
        f"\n{results['elapsed_s']:.1f} s; wrote "
        + ", ".join(files[k] for k in ("report", "results", "plot") if k in files)
        + f"\nREADME table: numxent-bench --readme-table {files['results']}\n"
    )
    return 0
