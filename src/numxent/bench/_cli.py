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

__all__ = ["build_parser", "main", "run", "write_report"]

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="numxent-bench",
        description="Time numxent's fused cross-entropy against np.copyto (the "
        "memory roofline), NumPy, PyTorch, scikit-learn and JAX; print tables and "
        "write report.md, results.json, readme_table.md and plot.png to --out.",
        epilog="Ops: "
        + "; ".join(f"{k}: {v}" for k, v in OPS.items())
        + "; startup: import numxent + first call in a fresh process. Peers: "
        + ", ".join(PEERS)
        + ".",
    )
    add = p.add_argument
    full, quick = (_shapes_text(x) for x in _DEFAULTS["shapes"])
    names = ", ".join(NAMED_SHAPES)
    add("--shapes", help=f"NxC,... or {names} (default {full}; --quick {quick})")
    full, quick = (_shapes_text(x) for x in _DEFAULTS["bce_shapes"])
    add(
        "--bce-shapes",
        help=f"bce ops' shapes (default --shapes, else {full}; --quick {quick})",
    )
    add("--dtypes", help="float32,float64 (--quick: float32)")
    add(
        "--ops",
        default=",".join(DEFAULT_OPS),
        help=f"from {','.join(ALL_OPS)} (default %(default)s)",
    )
    add(
        "--peers",
        help="peer ids to time (default all; --quick: all but the "
        "torch.compile ones); np.copyto always runs",
    )
    add(
        "--threads",
        type=int,
        help="numba, torch and scikit-learn threads (default: numba's count)",
    )
    add(
        "--quick",
        action="store_true",
        help="small shapes, float32, 3 repeats, "
        "one cold and one warm start: well under a minute",
    )
    add("--repeat", type=int, help="timed samples per peer (default 5)")
    add("--min-time", type=float, help="seconds a sample lasts (default 0.02)")
    add(
        "--budget",
        type=float,
        help="seconds a peer may spend sampling one workload (default 15)",
    )
    add(
        "--stat",
        choices=["median", "min"],
        default="median",
        help="the samples' statistic the tables use",
    )
    add(
        "--order",
        choices=["block", "interleaved"],
        default="block",
        help="block: each peer's samples back to back, so no library's spinning "
        "threads slow the next one's, one peer's buffers in memory at a time; "
        "interleaved: round-robin (load drift), every peer's buffers at once "
        "(large shapes need the sum of their memory)",
    )
    add(
        "--training",
        action="store_true",
        help="also time training steps, "
        "PyTorch's loss vs numxent.torch's (needs torch)",
    )
    add(
        "--small-training",
        action="store_true",
        help="also time small-batch training epochs (the digits MLP at batch "
        "32/64/256), PyTorch's loss vs numxent.torch's (needs torch, scikit-learn)",
    )
    add(
        "--compiled-step",
        action="store_true",
        help="also time a torch.compile'd training step against the eager one, "
        "both losses (needs torch)",
    )
    add(
        "--bf16-loss",
        action="store_true",
        help="also time the bfloat16 loss forward+backward, PyTorch's (bf16 and "
        "autocast) vs numxent.torch's (needs torch, ml_dtypes)",
    )
    add(
        "--lm-head",
        action="store_true",
        help="instead: the language-model head step (numxent.linear_cross_entropy"
        " and its PyTorch bridge vs PyTorch's two paths and the matrix products;"
        " --lm-head-sizes lm,llama3, --steps, --threads, --chunk-mib)",
    )
    add(
        "--sklearn-fit",
        action="store_true",
        help="also time fits, "
        "CrossEntropyClassifier vs LogisticRegression (needs scikit-learn)",
    )
    add(
        "--dask",
        action="store_true",
        help="also time fits and a larger-than-memory loss on a 2-worker dask "
        "LocalCluster (needs dask, distributed, scikit-learn; dask-ml as a peer)",
    )
    add("--warm-starts", type=int, help="warm-cache start-up runs")
    add("--cold-starts", type=int, help="cold-cache start-up runs")
    add("--no-thp", action="store_true", help="no THP_MEM_ALLOC_ENABLE=1 worker")
    add("--no-plot", action="store_true", help="do not write plot.png")
    add("--seed", type=int, default=0, help="data seed (default 0)")
    add("--out", default="numxent-bench-report", help="output directory")
    add("--quiet", action="store_true", help="no progress bar")
    add(
        "--readme-table",
        metavar="RESULTS_JSON",
        help="print the README's "
        "tables from a results.json or report directory; runs nothing",
    )
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


def _command(argv: list[str]) -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv else ""
    head = "numxent-bench" if prog == "numxent-bench" else "python -m numxent.bench"
    return " ".join([head, *map(shlex.quote, argv)])


def _settings(args: argparse.Namespace, parser) -> dict:
    s: dict = {
        "quick": bool(args.quick),
        "stat": args.stat,
        "order": args.order,
        "seed": args.seed,
        "training": bool(args.training),
        "sklearn_fit": bool(args.sklearn_fit),
        "dask": bool(args.dask),
        "small_training": bool(args.small_training),
        "compiled_step": bool(args.compiled_step),
        "bf16_loss": bool(args.bf16_loss),
    }
    for key, defaults in _DEFAULTS.items():
        value = getattr(args, key)
        s[key] = value if value is not None else defaults[int(args.quick)]
    if args.shapes and not args.bce_shapes:
        s["bce_shapes"] = args.shapes
    try:
        for key in ("shapes", "bce_shapes"):
            if isinstance(s[key], str):
                s[key] = parse_shapes(s[key])
    except ValueError as exc:
        parser.error(str(exc))
    s["shapes"] = [f"{n}x{c}" for n, c in s["shapes"]]
    s["bce_shapes"] = [f"{n}x{c}" for n, c in s["bce_shapes"]]
    if isinstance(s["dtypes"], str):
        s["dtypes"] = _csv(s["dtypes"])
    for dt in s["dtypes"]:
        if dt not in ("float32", "float64"):
            parser.error(f"--dtypes: {dt!r} is not float32 or float64")
    if s["repeat"] < 1:
        parser.error("--repeat must be at least 1")
    s["ops"] = _csv(args.ops)
    for op in s["ops"]:
        if op not in ALL_OPS:
            parser.error(f"--ops: unknown op {op!r}; choose from {', '.join(ALL_OPS)}")
    if args.peers:
        peers = _csv(args.peers)
    else:
        peers = [p for p in PEERS if not (PEERS[p].slow_setup and args.quick)]
    for pid in peers:
        if pid not in PEERS:
            parser.error(
                f"--peers: unknown peer {pid!r}; choose from {', '.join(PEERS)}"
            )
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


def _workloads(s: dict) -> list[Workload]:
    return [
        Workload(op, *parse_shapes(shape)[0], dtype)
        for op in s["ops"]
        if op != "startup"
        for dtype in s["dtypes"]
        for shape in s["bce_shapes" if op.startswith("bce") else "shapes"]
    ]


def _optional_section(module, library, label, runner, note):
    """``runner()``'s result, or None with a note when ``module`` is missing
    or the run fails (an optional section never stops the report)."""
    if importlib.util.find_spec(module) is None:
        note(f"{label} skipped: {library} is not installed")
        return None
    try:
        return runner()
    except Exception as exc:
        note(f"{label} failed: {exc}")
        return None


def run(s: dict, threads: int, command: str, quiet: bool = False) -> dict:
    """Run the grid described by settings ``s``; the results dict."""
    from ._machine import load_average, machine_info
    from ._startup import measure_startup

    load_start = load_average()
    workloads = _workloads(s)
    thp_peers = [p for p in s["peers"] if PEERS[p].where == "thp"]
    thp_workloads = [
        w for w in workloads if any(w.op in PEERS[p].ops for p in thp_peers)
    ]
    units = (len(workloads) + len(thp_workloads)) * (s["repeat"] + 1)
    if "startup" in s["ops"]:
        units += max(1, s["cold_starts"]) + s["warm_starts"]
    training_opts, fit_opts = {}, {}
    if s["training"]:
        from .training import QUICK, n_children

        training_opts = dict(QUICK) if s["quick"] else {}
        units += n_children(**training_opts)
    if s["sklearn_fit"]:
        fit_opts = {"n_samples": 20_000 if s["quick"] else 200_000,
                    "dtypes": tuple(s["dtypes"])}  # fmt: skip
        units += 2 * len(s["dtypes"])
    dask_opts: dict = {}
    if s["dask"]:
        from .dask_scale import QUICK as DASK_QUICK

        dask_opts = dict(DASK_QUICK) if s["quick"] else {}
        units += 6
    units += int(s["small_training"]) + int(s["compiled_step"]) + int(s["bf16_loss"])
    progress = Progress(units, enabled=not quiet)
    notes: list[str] = []

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)

    results = []
    for w in workloads:
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

    def training_run():
        from .training import run_training

        rows = run_training(
            on_step=lambda m: progress.advance(1, "training", m), **training_opts
        )
        return {"options": training_opts, "rows": rows}

    def fit_run():
        from .sklearn_fit import run_fits

        rows = run_fits(
            threads=threads,
            on_step=lambda m: progress.advance(1, "sklearn-fit", m),
            **fit_opts,
        )
        return {"options": fit_opts, "rows": rows}

    def dask_run():
        from .dask_scale import run_dask

        rows = run_dask(
            threads=threads,
            on_step=lambda m: progress.advance(1, "dask", m),
            **dask_opts,
        )
        return {"options": dask_opts, "rows": rows}

    def small_training_run():
        from .small_training import QUICK, run_small_training

        opts = dict(QUICK) if s["quick"] else {}
        rows = run_small_training(
            on_step=lambda m: progress.advance(1, "small-training", m), **opts
        )
        return {"options": opts, "rows": rows}

    def compiled_step_run():
        from .compiled_step import QUICK, run_compiled_step

        opts = dict(QUICK) if s["quick"] else {}
        rows = run_compiled_step(
            on_step=lambda m: progress.advance(1, "compiled-step", m), **opts
        )
        return {"options": opts, "rows": rows}

    def bf16_loss_run():
        from .bf16_loss import QUICK, run_bf16_loss

        opts = dict(QUICK) if s["quick"] else {}
        rows = run_bf16_loss(
            on_step=lambda m: progress.advance(1, "bf16-loss", m), **opts
        )
        return {"options": opts, "rows": rows}

    training = sklearn_fit = dask_scale = None
    small_training = compiled_step = bf16_loss = None
    if s["training"]:
        training = _optional_section(
            "torch", "torch", "training benchmark", training_run, note
        )
    if s["sklearn_fit"]:
        sklearn_fit = _optional_section(
            "sklearn", "scikit-learn", "scikit-learn fit benchmark", fit_run, note
        )
    if s["dask"]:
        dask_scale = _optional_section(
            "distributed", "dask.distributed", "dask scale-out benchmark", dask_run,
            note,
        )  # fmt: skip
    if s["small_training"]:
        small_training = _optional_section(
            "sklearn", "scikit-learn", "small-batch training benchmark",
            small_training_run, note,
        )  # fmt: skip
    if s["compiled_step"]:
        compiled_step = _optional_section(
            "torch", "torch", "compiled-step benchmark", compiled_step_run, note
        )
    if s["bf16_loss"]:
        bf16_loss = _optional_section(
            "ml_dtypes", "ml_dtypes", "bf16 loss benchmark", bf16_loss_run, note
        )
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
        "training": training,
        "sklearn_fit": sklearn_fit,
        "dask_scale": dask_scale,
        "small_training": small_training,
        "compiled_step": compiled_step,
        "bf16_loss": bf16_loss,
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--lm-head" in argv:  # the LM-head section: its own options
        from .lm_head import main as lm_head_main

        return lm_head_main([a for a in argv if a != "--lm-head"])
    args = parser.parse_args(argv)
    if args.readme_table:
        try:
            results = load_results(args.readme_table)
        except (OSError, ValueError) as exc:
            parser.error(f"--readme-table: {exc}")
        sys.stdout.write(readme_table(results))
        return 0
    s = _settings(args, parser)
    threads = _set_threads(args.threads, parser)
    t0 = time.perf_counter()
    results = run(s, threads, _command(argv), quiet=args.quiet)
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
