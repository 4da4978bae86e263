"""Smoke tests of the benchmark report (``numxent-bench``) at its smallest.

Tiny shapes, one repeat, one cold and one warm start: this checks that the
report runs end to end and writes what it promises, not the timings.
"""

import json
import sys

import pytest

from numxent.bench.__main__ import main
from numxent.bench._peers import PEERS

# --quick's peers and defaults (no torch.compile: seconds per shape), smaller
TINY = ["--quick", "--shapes", "64x10,256x100", "--repeat", "1"]
TINY += ["--min-time", "0.0005", "--budget", "0.5", "--quiet"]


def test_report_writes_markdown_json_and_plot(tmp_path, capsys):
    out = tmp_path / "report"
    argv = [*TINY, "--ops", "ce,ce_fwd,bce,startup", "--out", str(out)]
    argv += ["--warm-starts", "1", "--cold-starts", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    for key in (
        "schema",
        "settings",
        "machine",
        "peers",
        "results",
        "startup",
        "targets",
        "notes",
    ):
        assert key in results
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
        assert e["times"]["copyto"]["median"] > 0
        assert e["times"][ref]["median"] > 0
        assert e["ratio_to_copy"]["copyto"] == pytest.approx(1.0)
        assert e["ratio_to_numxent"][ref] == pytest.approx(1.0)
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
    assert "## Machine" in report and machine["cpu"] in report
    assert "### ce — cross_entropy, loss + gradient, float32" in report
    assert "## Start-up" in report
    # 64x10 is a "small call" target shape; start-up has its targets too
    assert {t["where"] for t in results["targets"]} >= {"startup", "ce 64×10 float32"}
    assert "## Speed targets" in report
    assert "python -m numxent.bench" in report  # the command line
    assert "np.copyto" in printed and "start-up" in printed

    pytest.importorskip("matplotlib")
    png = (out / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_readme_table_from_results(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([*TINY, "--ops", "ce", "--no-thp", "--no-plot", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["--readme-table", str(out / "results.json")]) == 0
    table = capsys.readouterr().out
    assert "| N × C | np.copyto | numxent out= |" in table
    assert "| 256 × 100 |" in table
    assert "Made with `python -m numxent.bench" in table
    assert (out / "readme_table.md").read_text() == table


def test_missing_optional_libraries_are_skipped_with_a_note(
    tmp_path, capsys, monkeypatch
):
    # None in sys.modules makes ``import x`` raise ImportError
    for name in ("torch", "sklearn._loss.loss", "jax", "matplotlib"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "r"
    assert main([*TINY, "--ops", "ce", "--shapes", "64x10", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    (entry,) = results["results"]
    assert set(entry["times"]) == {
        "copyto",
        "numxent_out",
        "numxent_alloc",
        "numpy_ref",
    }
    for peer in ("torch_fwd_bwd", "torch_thp_fwd_bwd", "sklearn", "jax_jit"):
        assert entry["skipped"][peer]
    notes = " ".join(results["notes"])
    assert "torch" in notes and "matplotlib" in notes and "scikit-learn" in notes
    assert not (out / "plot.png").exists()
    assert (out / "report.md").exists()


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--shapes", "100", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "NxC" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--ops", "nope", "--out", str(tmp_path)])


def test_training_benchmark_smoke(capsys):
    """The training-step benchmark at toy sizes: both losses train the same
    model to the same loss, and the report's table and targets are made."""
    pytest.importorskip("torch")
    from numxent.bench._report import targets
    from numxent.bench.training import markdown, run_training

    tiny = dict(mlp_in=8, mlp_hidden=16, mlp_classes=10, batch=64, lm_hidden=8,
                vocab=50, lm_tokens=32, steps=2, warmup=1, loss_reps=2)  # fmt: skip
    rows = run_training(tasks="lm", threads="1", **tiny)  # 3 child processes
    assert [(r["task"], r["impl"]) for r in rows] == [
        ("lm", "torch"),
        ("lm", "numxent"),
    ]
    for r in rows:
        assert r["step_ms"] > 0 and r["loss_ms"] > 0
        assert r["loss_rel_diff"] < 1e-5
        assert r["threading_layer"]
    table = markdown(rows)
    assert "| lm | 32 × 50 | 1 | numxent |" in table
    assert "faster with numxent" in table
    found = targets({"training": {"rows": rows}})
    assert [t["target"] for t in found] == [
        "PyTorch loss fwd+bwd ÷ numxent's in the step ≥",
        "PyTorch step ÷ numxent step ≥",
    ]
    assert {t["where"] for t in found} == {"training lm 32×50, torch threads 1"}
    with pytest.raises(ValueError, match="unknown task"):
        run_training(tasks="cnn", threads="1", **tiny)


def test_sklearn_fit_benchmark_in_the_report(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from numxent.bench import sklearn_fit

    rows = sklearn_fit.run_fits(n_samples=800, n_features=12, n_classes=4,
                                dtypes=("float32",), threads=1)  # fmt: skip
    assert [(r["model"], r["dtype"]) for r in rows] == [
        ("numxent", "float32"),
        ("sklearn", "float32"),
    ]
    for r in rows:
        assert r["fit_s"] > 0 and r["n_iter"] >= 1 and 0 <= r["test_accuracy"] <= 1
    assert rows[0]["coef_dtype"] == "float32"
    table = sklearn_fit.markdown(rows)
    assert "| CrossEntropyClassifier | float32 |" in table
    assert "| LogisticRegression | float32 |" in table
    assert "faster with numxent" in table
    from numxent.bench._report import targets

    found = targets({"sklearn_fit": {"rows": rows}})
    assert [t["target"] for t in found] == [
        "LogisticRegression fit ÷ CrossEntropyClassifier fit ≥",
        "test accuracy difference ≤",
    ]
