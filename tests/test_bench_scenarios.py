"""The report's scenario sections (``benchmarks/scenarios``) at toy sizes, and
``benchmarks/report.py``, which adds them to ``numxent-bench``'s report.

Each section's ``run`` is called with its default options and a few made
tiny, its child processes run in this process (``in_process``): this checks
that a section runs, that both losses or models agree and that its table is
made, not the timings. ``test_a_child_runs_in_a_process_of_its_own`` checks
the child process itself.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from numxent.bench import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/ is not a package

import scenarios  # noqa: E402
from scenarios import Section  # noqa: E402

from test_bench_cli import check_targets, md_tables  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
OLD_FLAGS = ["training", "sklearn-fit", "small-training", "compiled-step",
             "bf16-loss", "dask", "lm-head"]  # fmt: skip


@pytest.fixture
def in_process(monkeypatch):
    """The sections' children run in this process; the thread counts they
    set are restored afterwards."""
    import numba

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(scenarios._section, "IN_PROCESS", True)
    saved = numba.get_num_threads(), torch.get_num_threads()
    yield
    numba.set_num_threads(saved[0])
    torch.set_num_threads(saved[1])


def options(section: Section, **tiny) -> dict:
    """The section's defaults with ``tiny`` instead."""
    assert set(tiny) <= set(section.options), set(tiny) - set(section.options)
    return {**{k: d for k, (d, _) in section.options.items()}, **tiny}


def report(argv, capsys):
    """``python benchmarks/report.py ARGV`` in this process; its results."""
    out = Path(argv[argv.index("--out") + 1])
    assert main(argv, prog="python benchmarks/report.py", extra=scenarios) == 0
    capsys.readouterr()
    return json.loads((out / "results.json").read_text()), (out / "report.md")


def test_report_script_lists_every_section_and_its_options():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for flag in OLD_FLAGS:
        assert f"--{flag} " in proc.stdout
    for option in ("--lm-head-sizes", "--dask-loss-gib", "--training-batch",
                   "--shapes", "--ops"):  # fmt: skip
        assert option in proc.stdout
    assert sorted(s.flag for s in scenarios.SECTIONS) == sorted(OLD_FLAGS)


def test_a_child_runs_in_a_process_of_its_own():
    import os

    from scenarios._section import run_child

    assert run_child("_section", "2, all", "ints") == [2, os.cpu_count()]
    with pytest.raises(RuntimeError, match="_section child exited 1: .*ValueError"):
        run_child("_section", "two", "ints")


def test_section_options_defaults_quick_and_command_line():
    from numxent.bench._cli import build_parser

    parser = build_parser()
    scenarios.add_arguments(parser)
    args = parser.parse_args(["--quick", "--training", "--training-batch", "99"])
    training = scenarios.training.SECTION
    opts = training.options_from(args)
    assert opts["batch"] == 99  # the command line over --quick's 1024
    assert opts["lm_tokens"] == 1024  # --quick's
    assert opts["vocab"] == 32000  # the default
    assert args.training and not args.lm_head


def test_the_loop_notes_missing_modules_and_failures_and_runs_the_rest(
    tmp_path, capsys, monkeypatch
):
    def fail(opts, threads, on_step):
        raise RuntimeError("boom")

    def ok(opts, threads, on_step):
        on_step("done")
        return {"rows": [{"n": opts["n"], "threads": threads}]}

    common = dict(help="h", intro="Intro.", markdown=lambda r: f"n={r['rows']}\n",
                  summary=lambda r: ["line"])  # fmt: skip
    monkeypatch.setattr(scenarios, "SECTIONS", [
        Section("missing", "missing", title="Missing", run=ok,
                requires=("no_such_module_anywhere",), **common),
        Section("failing", "failing", title="Failing", run=fail, **common),
        Section("fine", "fine", title="Fine", run=ok, options={"n": (1, "n")},
                quick={"n": 2}, **common),
    ])  # fmt: skip
    argv = ["--ops", "none", "--quick", "--no-plot", "--quiet", "--threads", "1"]
    argv += ["--missing", "--failing", "--fine", "--out", str(tmp_path)]
    results, md = report(argv, capsys)
    assert list(results["sections"]) == ["fine"]
    fine = results["sections"]["fine"]
    assert fine["rows"] == [{"n": 2, "threads": 1}] and fine["options"] == {"n": 2}
    notes = " ".join(results["notes"])
    assert "Missing skipped: no_such_module_anywhere not installed" in notes
    assert "Failing failed: RuntimeError: boom" in notes
    assert "## Fine\n\nIntro.\n\nn=[{'n': 2, 'threads': 1}]" in md.read_text()


def test_report_script_runs_the_kernel_report_and_a_section(tmp_path, capsys):
    pytest.importorskip("sklearn")
    argv = ["--quick", "--ops", "ce", "--shapes", "64x10", "--repeat", "1",
            "--min-time", "0.0005", "--budget", "0.2", "--peers", "numxent_out",
            "--no-thp", "--no-plot", "--quiet", "--threads", "1", "--sklearn-fit",
            "--sklearn-fit-n-samples", "800", "--sklearn-fit-n-features", "12",
            "--sklearn-fit-n-classes", "4", "--out", str(tmp_path)]  # fmt: skip
    results, md = report(argv, capsys)
    assert [e["group"] for e in results["results"]] == ["ce|64x10|float32"]
    fit = results["sections"]["sklearn_fit"]
    assert fit["options"]["n_samples"] == 800 and fit["options"]["dtypes"] == "float32"
    assert [(r["model"], r["dtype"]) for r in fit["rows"]] == [
        ("numxent", "float32"),
        ("sklearn", "float32"),
    ]
    text = md.read_text()
    assert text.index("## Time ÷ `np.copyto` time") < text.index(
        "## scikit-learn estimator fit"
    )
    assert "faster with numxent" in fit["markdown"]
    found = check_targets()["targets"](results)
    assert "LogisticRegression fit ÷ CrossEntropyClassifier fit ≥" in {
        t["target"] for t in found
    }


def test_training_section(in_process):
    """Both losses train the same model to the same loss; the table and the
    targets are made."""
    training = scenarios.training
    tiny = options(training.SECTION, tasks="lm", threads="1", mlp_in=8,
                   mlp_hidden=16, mlp_classes=10, batch=64, lm_hidden=8, vocab=50,
                   lm_tokens=32, steps=2, warmup=1, loss_reps=2)  # fmt: skip
    steps: list[str] = []
    result = training.run(tiny, 1, steps.append)  # 3 child processes
    assert len(steps) == training.steps(tiny) == 3
    rows = result["rows"]
    assert [(r["task"], r["impl"]) for r in rows] == [
        ("lm", "torch"),
        ("lm", "numxent"),
    ]
    for r in rows:
        assert r["step_ms"] > 0 and r["loss_ms"] > 0
        assert r["loss_rel_diff"] < 1e-5
        assert r["threading_layer"] and r["numba_threads"] == 1
    text = training.markdown(result)
    (table,) = md_tables(text)
    assert table[2][:4] == ["lm", "32 × 50", "1", "torch"]
    assert table[3][:4] == ["lm", "32 × 50", "1", "numxent"]
    assert "faster with numxent" in text
    found = check_targets()["targets"]({"sections": {"training": result}})
    assert [t["target"] for t in found] == [
        "PyTorch loss fwd+bwd ÷ numxent's in the step ≥",
        "PyTorch step ÷ numxent step ≥",
    ]
    assert found[1]["value"] == pytest.approx(rows[0]["step_ms"] / rows[1]["step_ms"])
    with pytest.raises(ValueError, match="unknown task"):
        training.run({**tiny, "tasks": "cnn"}, 1)


def test_sklearn_fit_section():
    pytest.importorskip("sklearn")
    fit = scenarios.sklearn_fit
    tiny = options(fit.SECTION, n_samples=800, n_features=12, n_classes=4,
                   dtypes="float32")  # fmt: skip
    result = fit.run(tiny, 1)
    rows = result["rows"]
    assert [(r["model"], r["dtype"]) for r in rows] == [
        ("numxent", "float32"),
        ("sklearn", "float32"),
    ]
    for r in rows:
        assert r["fit_s"] > 0 and r["n_iter"] >= 1 and 0 <= r["test_accuracy"] <= 1
    assert rows[0]["coef_dtype"] == "float32"
    (table,) = md_tables(fit.markdown(result))
    assert [row[:2] for row in table[2:]] == [
        ["CrossEntropyClassifier", "float32"],
        ["LogisticRegression", "float32"],
    ]
    found = check_targets()["targets"]({"sections": {"sklearn_fit": result}})
    assert [t["target"] for t in found] == [
        "LogisticRegression fit ÷ CrossEntropyClassifier fit ≥",
        "test accuracy difference ≤",
    ]
    accuracy_gap = abs(rows[0]["test_accuracy"] - rows[1]["test_accuracy"])
    assert found[1]["value"] == pytest.approx(accuracy_gap)


def test_check_targets_reads_sections_of_results_written_before_the_move():
    """The committed results.json has each section at its top level."""
    results = json.loads((RESULTS / "results.json").read_text())
    assert "sections" not in results and results["training"]["rows"]
    where = {t["where"] for t in check_targets()["targets"](results)}
    assert any(w.startswith("training lm") for w in where)
    assert any(w.startswith("fit 200,000") for w in where)
    assert any(w.startswith("dask loss") for w in where)


@pytest.mark.slow  # starts a LocalCluster and runs five fits: about a minute
def test_dask_section():
    pytest.importorskip("distributed")
    pytest.importorskip("sklearn")
    dask_scale = scenarios.dask_scale
    tiny = options(dask_scale.SECTION, n_samples=800, n_features=12, chunks=4,
                   multinomial_classes=4, loss_gib=0.001, loss_classes=10,
                   repeat=1)  # fmt: skip
    result = dask_scale.run(tiny, 1)
    rows = result["rows"]
    models = [(r["task"], r["model"]) for r in rows]
    assert models[:2] == [
        ("binary", "numxent in memory"),
        ("binary", "numxent on dask"),
    ]
    assert ("multinomial", "numxent on dask") in models
    assert models[-2:] == [("loss", "numxent on dask"), ("loss", "numxent in memory")]
    for r in rows:
        if "fit_s" in r:
            assert r["fit_s"] > 0 and 0 <= r["test_accuracy"] <= 1
    dask_fits = [r for r in rows if r["model"] == "numxent on dask" and "fit_s" in r]
    assert all(r["coef_rel_diff"] < 1e-3 for r in dask_fits)
    loss = rows[-2]
    assert loss["workers_restarted"] == 0 and loss["ns_per_element"] > 0
    text = dask_scale.markdown(result)
    tables = md_tables(text)
    assert [row[2] for row in tables[0][2:4]] == [
        "numxent in memory",
        "numxent on dask",
    ]
    assert "the in-memory fit" in text and "ns/element" in text


def test_small_training_section(in_process):
    """The digits MLP at a toy budget: both losses train to the same loss."""
    pytest.importorskip("sklearn")
    small = scenarios.small_training
    result = small.run(options(small.SECTION, batches="128,512", epochs=1, hidden=8), 1)
    rows = result["rows"]
    assert [(r["batch"], r["impl"]) for r in rows] == [
        (128, "torch"),
        (128, "numxent"),
        (512, "torch"),
        (512, "numxent"),
    ]
    for r in rows:
        assert r["epoch_ms"] > 0 and len(r["epochs_ms"]) == 1
        assert r["loss_rel_diff"] < 1e-5 and r["samples"] == 1797
        assert r["parameters"] == 64 * 8 + 8 + 8 * 10 + 10  # the module's weights
    # every numxent step served by numxent's node, PyTorch's steps by its own
    steps = {128: 15, 512: 4}  # ceil(1797 / batch), one epoch
    for t, n in zip(rows[0::2], rows[1::2], strict=True):
        assert n["loss_nodes"] == {small.CE_NODE: steps[n["batch"]]}
        assert small.CE_NODE not in t["loss_nodes"]
        assert sum(t["loss_nodes"].values()) == t["steps"] == steps[t["batch"]]
    (table,) = md_tables(small.markdown(result))
    assert [row[0] for row in table[2:]] == ["128", "512"]
    ratio = rows[0]["epoch_ms"] / rows[1]["epoch_ms"]
    assert table[2][4] == f"{ratio:.2f}×"
    assert [row[7] for row in table[2:]] == ["15/15", "4/4"]
    assert len(small.summary(result)) == 2 and "batch 512" in small.summary(result)[1]
    assert small.summary(result)[1].endswith("numxent served 4/4 steps")
    with pytest.raises(ValueError, match="batch sizes"):
        small.run(options(small.SECTION, batches="0"), 1)


def _refuse_every_call(monkeypatch, warn: bool) -> None:
    """Make the bridge hand every cross_entropy call to PyTorch: with its
    FallbackWarning, or silently (``warn=False``: only the autograd node
    tells)."""
    import numxent.torch

    monkeypatch.setattr(numxent.torch, "_ce_unserved", lambda *a: "refused (test)")
    if not warn:
        monkeypatch.setattr(numxent.torch, "fallback", lambda op, why: None)


def _refuse_parameters(monkeypatch, warn: bool) -> None:
    """The bridge as it once was: ``nn.Parameter`` (a tensor subclass) refused,
    plain tensors served; with its FallbackWarning or silently."""
    import torch

    import numxent._torch_linear
    import numxent._torch_serve

    def plain_tensor(t):
        return type(t) is torch.Tensor and t.is_cpu and t.layout is torch.strided

    for module in (numxent._torch_serve, numxent._torch_linear):
        monkeypatch.setattr(module, "plain_tensor", plain_tensor)
    if not warn:
        monkeypatch.setattr(numxent._torch_linear, "fallback", lambda op, why: None)


@pytest.mark.parametrize("warn", [True, False], ids=["warning", "silent"])
def test_small_training_section_fails_when_numxent_is_not_served(
    in_process, monkeypatch, warn
):
    """A bridge that hands the loss to PyTorch (warning or not) fails the
    section instead of timing PyTorch twice."""
    pytest.importorskip("sklearn")
    from numxent.torch import FallbackWarning

    small = scenarios.small_training
    _refuse_every_call(monkeypatch, warn)
    raised, match = (
        (FallbackWarning, "cross_entropy: handed to PyTorch's own")
        if warn
        else (RuntimeError, "cross_entropy was handed to PyTorch at batch 512")
    )
    with pytest.raises(raised, match=match):
        small.run(options(small.SECTION, batches="512", epochs=1, hidden=8), 1)


@pytest.mark.slow  # compiles two graphs with inductor: tens of seconds
def test_compiled_step_section(in_process):
    """One tiny shape, two timed steps: compiled and eager agree on the loss."""
    compiled = scenarios.compiled_step
    tiny = options(compiled.SECTION, shapes="16x4", steps=2, warmup=2)
    result = compiled.run(tiny, 1)
    rows = result["rows"]
    assert [r["impl"] for r in rows] == list(compiled.IMPLS)
    assert all(r["step_us"] > 0 for r in rows)
    by = {r["impl"]: r for r in rows}
    assert by["numxent compiled"]["final_loss"] == by["numxent eager"]["final_loss"]
    assert by["torch compiled"]["final_loss"] == pytest.approx(
        by["numxent eager"]["final_loss"], rel=1e-5
    )
    text = compiled.markdown(result)
    (table,) = md_tables(text)
    assert table[2][0] == "16 × 4" and "its eager step" in text


def test_bf16_loss_section(in_process):
    pytest.importorskip("ml_dtypes")
    bf16 = scenarios.bf16_loss
    result = bf16.run(options(bf16.SECTION, shapes="64x300", repeat=1), 1)
    rows = result["rows"]
    assert [r["impl"] for r in rows] == list(bf16.IMPLS)
    by = {r["impl"]: r for r in rows}
    assert all(r["ms"] > 0 for r in rows)
    # the loss rounded to bfloat16 once: within one bfloat16 ulp of float32's
    assert by["numxent bf16"]["loss_rel_diff"] <= 2.0**-7
    (table,) = md_tables(bf16.markdown(result))
    ratio = by["torch bf16"]["ms"] / by["numxent bf16"]["ms"]
    assert table[2][0] == "64 × 300" and table[2][5] == f"{ratio:.2f}×"


def test_lm_head_section_tiny(in_process):
    """Every path runs; the table has one row per path; the bridge's steps
    were served, the tied module's losses agree and its tied weight's
    gradient has both uses' parts."""
    lm_head = scenarios.lm_head
    every = lm_head.run_lm_head(
        ["tiny"], steps=2, threads=1, shapes={"tiny": (64, 8, 100)}
    )
    rows = [r for r in every if not r.get("interleaved")]
    turns = {r["path"]: r for r in every if r.get("interleaved")}
    assert [r["path"] for r in rows] == list(lm_head.PATHS)
    assert list(turns) == list(lm_head.TIED_PATHS)
    assert all(r["step_ms"] > 0 for r in every)
    # interleaved: one warm-up step and 2 rounds, all served
    assert turns["tied-numxent-torch"]["loss_nodes"] == [lm_head.LINEAR_NODE] * 3
    by = {r["path"]: r for r in rows}
    # the small warm-up step, the timed warm-up and 2 timed steps
    for path in lm_head.BRIDGE_PATHS:
        assert by[path]["loss_nodes"] == [lm_head.LINEAR_NODE] * 4, path
    for path in ("torch-ce", "tied-torch-ce", "tied-torch-linear-ce"):
        assert lm_head.LINEAR_NODE not in by[path]["loss_nodes"], path
    # same weights and tokens, the same 3 SGD steps: the same loss after them
    tied = [by[p]["final_loss"] for p in lm_head.TIED_PATHS]
    assert tied == pytest.approx([tied[0]] * 3, rel=1e-5)
    # one step from W on the plain head: the three losses of (h, W, y) agree
    plain = [by[p]["final_loss"] for p in ("torch-ce", "numxent", "numxent-torch")]
    assert plain == pytest.approx([plain[0]] * 3, rel=1e-5)
    for path in lm_head.TIED_PATHS:
        r = by[path]
        assert r["tied_grad_rel_err"] < 1e-5
        assert r["head_grad_share"] > 0.01 and r["embedding_grad_share"] > 0.01
    text = lm_head.markdown({"rows": every})
    (table,) = md_tables(text)
    assert [row[1] for row in table[2:]] == list(lm_head.PATHS)
    assert table[2][3] == "1.00"
    served = {row[1]: row[6] for row in table[2:]}
    assert served["numxent-torch"] == served["tied-numxent-torch"] == "4/4"
    assert served["torch-ce"] == served["tied-torch-ce"] == ""
    lines = lm_head.summary({"rows": every})
    assert lines[0].startswith("LM head 64×8×100, step ÷ GEMMs: torch-ce ")
    assert "tied" not in lines[0]
    assert lines[1].startswith("tied-embedding module 64×8×100 ")
    ratio = by["tied-torch-ce"]["step_ms"] / by["tied-numxent-torch"]["step_ms"]
    torch_ms = by["tied-torch-ce"]["step_ms"]
    assert f"torch-ce {torch_ms:.0f} ms ({ratio:.2f}×)" in lines[1]
    (turn_line,) = [ln for ln in lines if "in turns in one process" in ln]
    ratio = turns["tied-torch-ce"]["step_ms"] / turns["tied-numxent-torch"]["step_ms"]
    assert "(median of 2 rounds)" in turn_line and f"({ratio:.2f}×)" in turn_line
    assert lines[-1].endswith(
        "numxent-torch 4/4, tied-numxent-torch 4/4, tied-numxent-torch interleaved 3/3"
    )
    assert all(f"- {line}" in text for line in lines)
    with pytest.raises(ValueError, match="unknown"):
        lm_head.run(options(lm_head.SECTION, sizes="gpt9"), 1)
    with pytest.raises(ValueError, match="paths: unknown"):
        lm_head.run(options(lm_head.SECTION, paths="torch-ce,jax"), 1)


def test_lm_head_section_chosen_paths(in_process):
    """``paths`` runs those paths in PATHS order; the tied ones are timed in
    turns too only when all three are chosen."""
    lm_head = scenarios.lm_head
    steps: list[str] = []
    chosen = "tied-numxent-torch,gemms,tied-torch-ce,tied-torch-linear-ce"
    opts = options(lm_head.SECTION, steps=1, paths=chosen)
    assert lm_head.SECTION.steps(opts) == 5
    rows = lm_head.run_lm_head(["tiny"], steps=1, threads=1,
                               shapes={"tiny": (32, 4, 50)},
                               paths=lm_head._paths(opts),
                               on_row=lambda r: steps.append(r["path"]))  # fmt: skip
    assert steps == ["gemms", *lm_head.TIED_PATHS, "tied paths interleaved"]
    assert [r.get("interleaved", False) for r in rows] == [False] * 4 + [True] * 3
    assert lm_head.SECTION.steps(options(lm_head.SECTION, paths="torch-ce")) == 1
    rows = lm_head.run_lm_head(["tiny"], steps=1, threads=1,
                               shapes={"tiny": (32, 4, 50)},
                               paths=("tied-numxent-torch",))  # fmt: skip
    assert [r["path"] for r in rows] == ["tied-numxent-torch"]
    (line,) = [ln for ln in lm_head.summary({"rows": rows}) if "served" in ln]
    assert line.endswith("tied-numxent-torch 3/3")


@pytest.mark.parametrize("warn", [True, False], ids=["warning", "silent"])
def test_lm_head_tied_path_fails_when_a_parameter_is_refused(
    in_process, monkeypatch, warn
):
    """With the bridge refusing ``nn.Parameter`` weights (as it once did),
    the tied module's numxent path fails, warning or not; the plain-tensor
    path is still served."""
    from numxent.torch import FallbackWarning

    lm_head = scenarios.lm_head
    _refuse_parameters(monkeypatch, warn)
    cfg = dict(N=64, H=8, V=100, steps=1, threads=1, chunk_mib=0.0)
    served = scenarios._section.run_child("lm_head", {**cfg, "path": "numxent-torch"})
    assert set(served["nodes"]) == {lm_head.LINEAR_NODE}
    raised, match = (
        (FallbackWarning, "linear_weight is a Parameter")
        if warn
        else (RuntimeError, "tied-numxent-torch: .* was handed to PyTorch")
    )
    with pytest.raises(raised, match=match):
        scenarios._section.run_child("lm_head", {**cfg, "path": "tied-numxent-torch"})
