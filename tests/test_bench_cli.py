"""Smoke tests of the benchmark report (``numxent-bench``) at its smallest,
and of ``benchmarks/check_targets.py``, which checks a report's numbers.

Tiny shapes, one repeat, one cold and one warm start: this checks that the
report runs end to end and writes what it promises, not the timings.
"""

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

import pytest

from numxent.bench.__main__ import main
from numxent.bench._peers import FLOOR, PEERS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# --quick's peers and defaults (no torch.compile: seconds per shape), smaller
TINY = ["--quick", "--shapes", "64x10,256x100", "--repeat", "1"]
TINY += ["--min-time", "0.0005", "--budget", "0.5", "--quiet"]


def md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown pipe table in ``text`` as rows of stripped cells, the
    separator row as ``l``/``r`` per column (whitespace padding ignored)."""
    tables, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")):
            current = None
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if current is not None and len(current) == 1:
            assert all(set(c) <= set(":-") and "-" in c for c in cells), line
            cells = ["l" if c.startswith(":") else "r" for c in cells]
        if current is None:
            current = []
            tables.append(current)
        current.append(cells)
    return tables


def check_targets():
    """The dev script's functions (it is not part of the package)."""
    return runpy.run_path(str(ROOT / "benchmarks" / "check_targets.py"))


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """One report run at the smallest settings, shared by the tests that read
    it: ``(its --out folder, what it printed)``."""
    out = tmp_path_factory.mktemp("bench") / "report"
    argv = [*TINY, "--ops", "ce,ce_fwd,bce,startup", "--out", str(out)]
    argv += ["--warm-starts", "1", "--cold-starts", "1"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


def test_report_writes_markdown_json_and_plot(report_run):
    out, printed = report_run

    results = json.loads((out / "results.json").read_text())
    for key in ("schema", "settings", "machine", "peers", "results", "startup"):
        assert key in results
    assert "targets" not in results  # the speed targets are a dev script's
    assert results["schema"] == "numxent-bench/1"
    machine = results["machine"]
    for key in ("cpu", "logical_cpus", "numba_threading_layer", "date", "command"):
        assert machine[key]
    assert machine["versions"]["numpy"] and machine["versions"]["numba"]
    assert "--shapes 64x10,256x100" in machine["command"]

    groups = [e["group"] for e in results["results"]]
    assert groups == [
        "ce|64x10|float32",
        "ce|256x100|float32",
        "ce_fwd|64x10|float32",
        "ce_fwd|256x100|float32",
        "bce|64x10|float32",
        "bce|256x100|float32",
    ]
    for e in results["results"]:
        ref = "numxent_fwd" if e["op"].endswith("_fwd") else "numxent_out"
        assert e["reference"] == ref
        copy = e["times"]["copyto"]["median"]
        assert copy > 0 and e["times"][ref]["median"] > 0
        assert e["copy_bytes"] == 2 * e["n"] * e["c"] * 4
        assert e["copy_gbps"] == pytest.approx(e["copy_bytes"] / copy / 1e9)
        for pid, t in e["times"].items():
            assert e["ratio_to_copy"][pid] == pytest.approx(t["median"] / copy)
        assert e["ratio_to_numxent"][ref] == pytest.approx(1.0)
        # the copy floor: the faster of the two parallel copies
        assert e["floor"] in FLOOR
        floor = e["floor_seconds"]
        assert floor == min(e["times"][p]["median"] for p in FLOOR)
        assert e["floor_gbps"] == pytest.approx(e["copy_bytes"] / floor / 1e9)
        for pid, t in e["times"].items():
            assert e["ratio_to_floor"][pid] == pytest.approx(t["median"] / floor)
        # every peer of the op is either timed or skipped with a reason
        for peer in PEERS.values():
            if e["op"] in peer.ops and not peer.slow_setup:
                assert (peer.id in e["times"]) != (peer.id in e["skipped"]), peer.id
    assert "numxent_alloc" in results["results"][0]["times"]

    startup = results["startup"]
    assert startup, results["notes"]  # None when the start-up child failed
    for kind in ("warm", "cold"):
        assert startup[kind]["total_s"] > 0
        assert startup[kind]["first_call_s"] > 0

    report = (out / "report.md").read_text()
    threads = results["settings"]["threads"]
    for section in ("## Machine", "## Time ÷ `np.copyto` time",
                    f"## Time ÷ {threads}-thread copy floor time",
                    "## Time ÷ numxent time", "## Time per call (median)",
                    "## Start-up", "## Peers"):  # fmt: skip
        assert section in report
    assert machine["cpu"] in report
    assert "### ce — cross_entropy, loss + gradient, float32" in report
    assert "Speed targets" not in report
    assert "python -m numxent.bench" in report  # the command line
    # ratio to copy, to the copy floor, to numxent, time per call: 4 per
    # (op, dtype)
    tables = md_tables(report)
    assert sum(t[0][0] == "N × C" for t in tables) == 4 * 3
    floor_head = ["N × C", "copy floor", "floor GB/s", "np.copyto"]
    to_floor = [t for t in tables if t[0][:4] == floor_head]
    assert len(to_floor) == 3 and all(len(t) == 2 + 2 for t in to_floor)
    per_call = [t for t in tables if t[0][:2] == ["N × C", "np.copyto"]][-1]
    assert [row[0] for row in per_call[2:]] == ["64 × 10", "256 × 100"]
    assert "np.copyto" in printed and "start-up" in printed

    pytest.importorskip("matplotlib")
    png = (out / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "## Plot" in report


def test_readme_table_from_results(report_run, capsys):
    out, _ = report_run
    assert main(["--readme-table", str(out / "results.json")]) == 0
    text = capsys.readouterr().out
    assert (out / "readme_table.md").read_text() == text
    ratios = md_tables(text)[0]  # cross_entropy's, then the other ops'
    assert ratios[0][:5] == ["N × C", "np.copyto", "parallel copy",
                             "parallel NT copy", "numxent out="]  # fmt: skip
    assert ratios[1] == ["l"] + ["r"] * (len(ratios[0]) - 1)
    assert [row[0] for row in ratios[2:]] == ["64 × 10", "256 × 100"]
    assert all(cell.endswith("×") for row in ratios[2:] for cell in row[2:])
    assert "Made with `python -m numxent.bench" in text


def test_readme_table_of_the_committed_results_is_unchanged(capsys):
    """The command regenerates the committed table, cell for cell."""
    assert main(["--readme-table", str(RESULTS / "results.json")]) == 0
    text = capsys.readouterr().out
    committed = (RESULTS / "readme_table.md").read_text()
    assert md_tables(text) == md_tables(committed)
    assert len(md_tables(text)) >= 2
    prose = [ln for ln in text.splitlines() if not ln.startswith("|")]
    assert prose == [ln for ln in committed.splitlines() if not ln.startswith("|")]


def test_missing_optional_libraries_are_skipped_with_a_note(
    tmp_path, capsys, monkeypatch
):
    # None in sys.modules makes ``import x`` raise ImportError
    for name in ("torch", "sklearn._loss.loss", "jax", "matplotlib", "tqdm",
                 "tabulate"):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "r"
    argv = [*TINY, "--ops", "ce", "--shapes", "64x10", "--out", str(out)]
    argv.remove("--quiet")  # the plain progress lines instead of tqdm's bar
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "ce|64x10|float32" in captured.err
    results = json.loads((out / "results.json").read_text())
    (entry,) = results["results"]
    assert set(entry["times"]) == {
        "copyto",
        "copy_par",
        "copy_par_nt",
        "numxent_out",
        "numxent_alloc",
        "numpy_ref",
    }
    for peer in ("torch_fwd_bwd", "torch_thp_fwd_bwd", "sklearn", "jax_jit"):
        assert entry["skipped"][peer]
    notes = " ".join(results["notes"])
    assert "torch" in notes and "matplotlib" in notes and "scikit-learn" in notes
    assert not (out / "plot.png").exists()
    report = (out / "report.md").read_text()
    assert "|:--|--:|" in report  # tables written without tabulate
    ratios = [t for t in md_tables(report) if t[0][0] == "N × C"]
    assert ratios and ratios[0][2][0] == "64 × 10"
    assert "N × C" in captured.out  # the terminal tables too


def test_jax_peers_time_the_compiled_call_and_report_the_compile(tmp_path, capsys):
    pytest.importorskip("jax")
    out = tmp_path / "r"
    argv = [*TINY, "--ops", "ce,ce_fwd", "--shapes", "64x10", "--no-thp"]
    argv += ["--no-plot", "--peers", "jax_jit,jax_jit_fwd", "--out", str(out)]
    argv[argv.index("--budget") + 1] = "0.05"
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    for e, pid in zip(results["results"], ("jax_jit", "jax_jit_fwd"), strict=True):
        t = e["times"][pid]
        # the compiling first call is kept apart, never one of the samples
        assert t["compile_s"] > t["min"] > 0
        assert set(e["times"]) == {"copyto", pid}
    assert "compile time (first call" in printed
    report = (out / "report.md").read_text()
    assert "## Compile time" in report
    (compiles,) = [t for t in md_tables(report) if t[0][0] == "workload"]
    assert [row[:2] for row in compiles[2:]] == [
        ["ce 64 × 10 float32", "JAX jit"],
        ["ce_fwd 64 × 10 float32", "JAX jit fwd"],
    ]


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--shapes", "100", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "NxC" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--ops", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--peers", "nope", "--out", str(tmp_path)])


def _entry(op, n, c, to_copy=None, to_nx=None, dtype="float32"):
    ratios = {"ratio_to_copy": to_copy or {}, "ratio_to_numxent": to_nx or {}}
    return {"op": op, "n": n, "c": c, "dtype": dtype, **ratios}


def test_check_targets_met_and_missed(tmp_path, capsys):
    ct = check_targets()
    results = {
        "peers": {"torch_fwd_bwd": {"label": "PyTorch"}},
        "results": [
            # a wide shape: copy ratio 1.25 at most, PyTorch 10x at least
            _entry("ce", 65_536, 1_000, {"numxent_out": 1.2},
                   {"torch_fwd_bwd": 9.0, "numxent_alloc": 1.6}),
            _entry("ce", 1_000_000, 10, {"numxent_out": 2.9}),
            _entry("ce", 64, 10, None, {"torch_fwd_bwd": 4.5}),
            _entry("ce", 1_000, 10, {"numxent_out": 99.0}),  # no target here
            _entry("ce_fwd", 8_192, 32_000, {"numxent_fwd": 1.01}),
        ],
        "startup": {"warm": {"total_s": 0.5}, "cold": {"total_s": 6.0}},
    }  # fmt: skip
    rows = ct["targets"](results)
    got = {(r["target"], r["where"]): (r["value"], r["met"]) for r in rows}
    assert got == {
        ("numxent out= ≤ × copy", "ce 65,536×1,000 float32"): (1.2, True),
        ("PyTorch ÷ numxent ≥", "ce 65,536×1,000 float32"): (9.0, False),
        ("numxent alloc ÷ out= ≤", "ce 65,536×1,000 float32"): (1.6, False),
        ("numxent out= ≤ × copy", "ce 1,000,000×10 float32"): (2.9, True),
        ("PyTorch ÷ numxent (small call) ≥", "ce 64×10 float32"): (4.5, True),
        ("numxent fwd ≤ × copy", "ce_fwd 8,192×32,000 float32"): (1.01, False),
        ("import + first call, warm cache ≤ s", "startup"): (0.5, True),
        ("import + first call, cold cache ≤ s", "startup"): (6.0, False),
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert ct["main"]([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "4 of 8 measured targets met." in printed
    assert printed.count("MISSED") == 4 and "9.00" in printed
    assert ct["main"]([str(path), "--strict"]) == 1
    capsys.readouterr()  # (without tabulate the terminal table is Markdown too)
    assert ct["main"]([str(path), "--markdown"]) == 0
    (table,) = md_tables(capsys.readouterr().out)
    assert table[0] == ["target", "workload", "measured", "limit", "met"]
    assert sum(row[-1] == "**no**" for row in table[2:]) == 4


def test_ops_none_and_an_extra_section(tmp_path, capsys):
    """``extra`` (what benchmarks/report.py passes): its options reach the
    parser, its run follows the grid, and its sections are rendered."""

    class Extra:
        def add_arguments(self, parser):
            parser.add_argument("--demo", action="store_true")

        def run(self, args, threads, note):
            note("demo note")
            assert args.demo and threads >= 1
            return {"demo": {"title": "Demo section", "intro": "An intro.",
                             "markdown": "| a |\n|--:|\n| 1 |\n",
                             "summary": ["one line"], "rows": [{"a": 1}]}}  # fmt: skip

    out = tmp_path / "r"
    argv = ["--ops", "none", "--demo", "--no-plot", "--quiet", "--out", str(out)]
    assert main(argv, prog="python demo.py", extra=Extra()) == 0
    printed = capsys.readouterr().out
    assert "Demo section:\n  one line" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["results"] == [] and results["startup"] is None
    assert results["sections"]["demo"]["rows"] == [{"a": 1}]
    assert "demo note" in results["notes"]
    assert results["machine"]["command"].startswith("python demo.py --ops none")
    report = (out / "report.md").read_text()
    assert "## Demo section\n\nAn intro.\n\n| a |" in report
    assert "## Time ÷ `np.copyto` time" not in report
    with pytest.raises(SystemExit):  # without the extra, no --demo
        main(argv)
    assert "--demo" in capsys.readouterr().err


@pytest.mark.parametrize("order", ["block", "interleaved"])
def test_block_order_frees_each_peer_before_building_the_next(monkeypatch, order):
    # At 8192 x 32000 float64 every peer's buffers at once needed 24 GiB: in
    # block order a peer is built after the previous one is freed.
    import gc
    import weakref

    from numxent.bench import _timing
    from numxent.bench._workloads import Workload

    refs: list = []
    alive_at_build: list = []

    class Fn:
        def __call__(self):
            return None

    def fake_make_peer(pid, w, data, threads):
        gc.collect()
        alive_at_build.append(sum(r() is not None for r in refs))
        fn = Fn()
        refs.append(weakref.ref(fn))
        return fn

    monkeypatch.setattr(_timing, "make_peer", fake_make_peer)
    steps: list = []
    s = dict(repeat=2, min_time=0.0, budget=1.0, order=order, seed=0)
    stats, unavailable, errors = _timing.time_workload(
        Workload("ce", 8, 3, "float32"), ["a", "b", "c"], 1, s,
        on_step=lambda m, a: steps.append(a),
    )  # fmt: skip
    assert set(stats) == {"a", "b", "c"} and not unavailable and not errors
    assert alive_at_build == ([0, 0, 0] if order == "block" else [0, 1, 2])
    assert sum(steps) == pytest.approx(s["repeat"] + 1)  # the progress bar's total
