"""The benchmark tables of the README and the docs, written from a results.json.

Each table lives between two markers in a Markdown file::

    <!-- numxent-bench:ce-float32 begin (python benchmarks/report.py --write-docs) -->
    ...
    <!-- numxent-bench:ce-float32 end -->

and ``python benchmarks/report.py --write-docs [RESULTS_JSON]`` rewrites
everything between them in ``README.md``, ``benchmarks/README.md`` and
``docs/*.md`` from the saved results (``benchmarks/results/results.json`` by
default): nothing is measured. ``tests/test_front_door.py`` checks that the
committed text is what this writes, so a hand-edited figure fails the suite.

The blocks (:data:`BLOCKS`):

``ce-float32``
    the README's table: cross_entropy loss+gradient, float32, time ÷
    ``np.copyto`` for numxent and the strongest peers, then start-up and the
    machine line;
``ratio-tables``
    every ratio table of the run with all its columns (``numxent-bench
    --readme-table``'s output), start-up and the machine line;
``training``, ``sklearn-fit``
    the training-step and estimator-fit sections of the same run, one row per
    comparison;
``startup``
    the start-up sentence alone.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable

from numxent.bench._cli import build_parser as bench_parser
from numxent.bench._cli import load_results
from numxent.bench._peers import PEERS
from numxent.bench._report import format_ratio, format_seconds, readme_table, table

__all__ = ["BLOCKS", "FILES", "RESULTS", "render", "stale", "write"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the report run the committed tables come from
RESULTS = os.path.join("benchmarks", "results", "results.json")
#: the files whose markers are filled, relative to the repository root
FILES = ["README.md", os.path.join("benchmarks", "README.md")] + sorted(
    os.path.join("docs", f)
    for f in os.listdir(os.path.join(ROOT, "docs"))
    if f.endswith(".md")
)
REPORT_PROG = "python benchmarks/report.py"

#: the README's columns: the roofline's time, numxent, PyTorch eager and the
#: two compiled peers (the strongest others); the rest is benchmarks/README.md's
README_COLUMNS = ["numxent_out", "torch_fwd_bwd", "torch_compile", "jax_jit"]

_MARKER = re.compile(
    r"(?P<begin><!-- numxent-bench:(?P<name>[\w-]+) begin[^>]*-->\n)"
    r"(?P<body>.*?)"
    r"(?P<end><!-- numxent-bench:(?P=name) end -->)",
    re.S,
)


def parse_error(parser, argv: list[str]) -> str | None:
    """Why ``parser`` rejects ``argv`` (None: it accepts it); never exits."""

    class Rejected(Exception):
        pass

    def error(message):
        raise Rejected(message)

    saved = parser.error
    parser.error = error
    try:
        parser.parse_args(argv)
    except Rejected as exc:
        return str(exc)
    except SystemExit as exc:  # --help
        return None if exc.code == 0 else f"exit {exc.code}"
    finally:
        parser.error = saved
    return None


def report_command(command: str) -> tuple[str, bool]:
    """The recorded command of a run as it runs today, and whether it changed.

    Runs made before the scenario sections left the package recorded
    ``numxent-bench ... --training ...``; ``numxent-bench`` no longer takes
    the section flags, ``python benchmarks/report.py`` takes the same options.
    """
    argv = shlex.split(command)
    for prog in (["numxent-bench"], ["python", "-m", "numxent.bench"]):
        if argv[: len(prog)] == prog:
            args = argv[len(prog) :]
            if parse_error(bench_parser(), args) is not None:
                return " ".join([REPORT_PROG, *map(shlex.quote, args)]), True
    return command, False


def _as_today(results: dict) -> tuple[dict, str]:
    """``results`` with today's command, and the note that says so, if any."""
    command, changed = report_command(results["machine"].get("command", ""))
    if not changed:
        return results, ""
    note = (
        " (The run recorded it as `numxent-bench` with the same options: the "
        "scenario sections were then part of the package.)"
    )
    return {**results, "machine": {**results["machine"], "command": command}}, note


def _trailer(results: dict) -> str:
    """Start-up and the machine line, as ``numxent-bench --readme-table``."""
    results, note = _as_today(results)
    return readme_table({**results, "results": []}).rstrip("\n") + note + "\n"


def ce_float32(results: dict) -> str:
    """The README's table: a few columns of cross_entropy float32."""
    entries = [
        e
        for e in results["results"]
        if (e["op"], e["dtype"]) == ("ce", "float32") and "copyto" in e["seconds"]
    ]
    timed = {p for e in entries for p in e["seconds"]}
    columns = [p for p in README_COLUMNS if p in timed]
    rows = [
        [f"{e['n']:,} × {e['c']:,}", format_seconds(e["seconds"]["copyto"])]
        + [format_ratio(e["ratio_to_copy"].get(p)) for p in columns]
        for e in entries
    ]
    headers = ["N × C", "np.copyto"] + [PEERS[p].label for p in columns]
    return table(headers, rows, "l") + "\n\n" + _trailer(results)


def ratio_tables(results: dict) -> str:
    """Every ratio table with all its columns, start-up and the machine line."""
    results, note = _as_today(results)
    return readme_table(results).rstrip("\n") + note + "\n"


def startup(results: dict) -> str:
    """The start-up sentence alone."""
    lines = readme_table({**results, "results": []}).splitlines()
    return "".join(f"{ln}\n" for ln in lines if ln.startswith("Start-up"))


def _section(results: dict, key: str) -> dict:
    """A scenario section's result (``sections`` now, top level in runs made
    before the sections left the package)."""
    section = (results.get("sections") or {}).get(key) or results.get(key)
    if not section:
        raise ValueError(f"the results hold no {key!r} section")
    return section


def _ms(x: float) -> str:
    return f"{x:.1f}" if x < 20 else f"{x:,.0f}"


def training(results: dict) -> str:
    """One row per task and torch thread count: torch → numxent."""
    rows = _section(results, "training")["rows"]
    cells = []
    for t, n in zip(rows[0::2], rows[1::2], strict=True):
        assert (t["impl"], n["impl"]) == ("torch", "numxent"), (t, n)
        if t["task"] == "mlp":
            task = (
                f"MLP {t['in_features']:,} → {t['hidden']:,} → {t['classes']:,} "
                f"classes, batch {t['batch']:,}"
            )
        else:
            task = f"LM head {t['hidden']:,} → {t['classes']:,}, {t['batch']:,} tokens"
        cells.append([
            task,
            str(t["threads"]),
            f"{_ms(t['step_ms'])} → {_ms(n['step_ms'])} "
            f"({t['step_ms'] / n['step_ms']:.2f}×)",
            f"{_ms(t['loss_ms'])} → {_ms(n['loss_ms'])} "
            f"({t['loss_ms'] / n['loss_ms']:.1f}×)",
            f"{t['loss_peak_MiB']:,.0f} → {n['loss_peak_MiB']:,.0f}",
        ])  # fmt: skip
    headers = ["task", "torch threads", "step ms, torch → numxent",
               "loss fwd+bwd ms", "loss peak MiB"]  # fmt: skip
    return table(headers, cells, "lr") + "\n"


def sklearn_fit(results: dict) -> str:
    """One row per thread count and dtype: the two fits and the speed-up."""
    rows = _section(results, "sklearn_fit")["rows"]
    fits = {(r["threads"], r["dtype"], r["model"]): r["fit_s"] for r in rows}
    cells = []
    for threads, dtype in dict.fromkeys((r["threads"], r["dtype"]) for r in rows):
        nx = fits.get((threads, dtype, "numxent"))
        sk = fits.get((threads, dtype, "sklearn"))
        if nx is None or sk is None:
            continue
        cells.append([str(threads), dtype, f"{nx:.2f} s", f"{sk:.2f} s",
                      f"{sk / nx:.1f}×"])  # fmt: skip
    headers = ["threads (numba + BLAS)", "dtype", "CrossEntropyClassifier",
               "LogisticRegression", "speed-up"]  # fmt: skip
    return table(headers, cells, "ll") + "\n"


BLOCKS: dict[str, Callable[[dict], str]] = {
    "ce-float32": ce_float32,
    "ratio-tables": ratio_tables,
    "startup": startup,
    "training": training,
    "sklearn-fit": sklearn_fit,
}


def render(text: str, results: dict) -> str:
    """``text`` with every marked block rewritten from ``results``."""

    def fill(m: re.Match) -> str:
        name = m["name"]
        if name not in BLOCKS:
            raise ValueError(f"unknown block {name!r}; known: {', '.join(BLOCKS)}")
        body = BLOCKS[name](results).strip("\n")
        return f"{m['begin']}\n{body}\n\n{m['end']}"

    return _MARKER.sub(fill, text)


def blocks(text: str) -> list[str]:
    """The names of the marked blocks in ``text``, in order."""
    return [m["name"] for m in _MARKER.finditer(text)]


def stale(results: dict, root: str = ROOT) -> dict[str, str]:
    """``{path: rewritten text}`` of the files whose blocks differ."""
    out = {}
    for path in FILES:
        with open(os.path.join(root, path), encoding="utf-8") as f:
            text = f.read()
        new = render(text, results)
        if new != text:
            out[path] = new
    return out


def write(results_path: str, root: str = ROOT) -> list[str]:
    """Rewrite the blocks of every file from ``results_path``; the changed
    files."""
    changed = stale(load_results(results_path), root)
    for path, text in changed.items():
        with open(os.path.join(root, path), "w", encoding="utf-8") as f:
            f.write(text)
    return list(changed)
