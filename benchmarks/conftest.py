"""pytest-benchmark suite: one group per workload, ``op|NxC|dtype``.

Off in a plain ``pytest`` run (``benchmarks/`` is not in ``testpaths`` and
every test is marked ``benchmark``, which the default ``-m`` deselects). Run::

    pytest benchmarks -m benchmark --benchmark-only               # the report's grid
    pytest benchmarks -m benchmark --benchmark-only --nx-quick    # its --quick grid
    pytest benchmarks -m benchmark --benchmark-disable --nx-quick # each once (CI)
    NUMXENT_BENCH_SHAPES=large NUMXENT_BENCH_DTYPES=float32 pytest benchmarks \\
        -m benchmark --benchmark-only --benchmark-json bench.json

The grid, the peers and how a call is timed are ``numxent-bench``'s
(``numxent.bench``): its settings (``--quick``, shapes, dtypes, ops, peers,
repeats, the time a sample lasts) make the workloads; each peer is built by
the report's factory (torch pinned to numba's thread count), warmed up and
calibrated by the report's :func:`~numxent.bench._timing.warm_up` (so
compilation stays outside the timings), then pytest-benchmark takes the
report's number of samples of that many calls each.

Options, each with an environment variable:

``--nx-quick`` / ``NUMXENT_BENCH_QUICK=1``  the report's ``--quick`` settings.
``--nx-shapes`` / ``NUMXENT_BENCH_SHAPES``  ``NxC`` list or a built-in list's
    name (``large``, ``small``, ``quick``, ``default``), also for the bce ops.
``--nx-dtypes`` / ``NUMXENT_BENCH_DTYPES``
``--nx-ops`` / ``NUMXENT_BENCH_OPS``  default ``ce,ce_fwd,bce,bce_fwd,startup``.
``--nx-peers`` / ``NUMXENT_BENCH_PEERS``  default: every peer but
    torch.compile's (seconds of compiling per shape; name ``torch_compile``,
    ``torch_compile_fwd`` to add them).
``--nx-threads`` / ``NUMXENT_BENCH_THREADS``  numba's and torch's threads.
``--nx-fit-samples`` / ``NUMXENT_BENCH_SKLEARN_SAMPLES``  the estimator fits'
    samples (default: the report's ``--sklearn-fit`` section's).

PyTorch with transparent huge pages: ``THP_MEM_ALLOC_ENABLE`` must be set
before torch is imported, so run the suite again with
``THP_MEM_ALLOC_ENABLE=1``; the PyTorch peers are then the report's
``torch_thp_*`` ones.
"""

from __future__ import annotations

import gc
import os

import pytest

from numxent.bench._cli import build_parser, settings, workloads
from numxent.bench._peers import (
    PEERS,
    REFERENCE,
    PeerUnavailable,
    make_peer,
)
from numxent.bench._timing import warm_up
from numxent.bench._workloads import OPS, Workload, make_data

THP = os.environ.get("THP_MEM_ALLOC_ENABLE", "") not in ("", "0")
#: (option, environment variable, default); each but the last two is the
#: numxent-bench option of its name
OPTIONS = [
    ("shapes", "NUMXENT_BENCH_SHAPES", ""),
    ("dtypes", "NUMXENT_BENCH_DTYPES", ""),
    ("ops", "NUMXENT_BENCH_OPS", ",".join([*OPS, "startup"])),
    ("peers", "NUMXENT_BENCH_PEERS",
     ",".join(p for p in PEERS if not PEERS[p].slow_setup)),
    ("threads", "NUMXENT_BENCH_THREADS", ""),
    ("fit-samples", "NUMXENT_BENCH_SKLEARN_SAMPLES", ""),
]  # fmt: skip

_medians: dict[str, dict[str, float]] = {}


def pytest_addoption(parser):
    group = parser.getgroup("numxent benchmarks")
    group.addoption(
        "--nx-quick",
        action="store_true",
        default=os.environ.get("NUMXENT_BENCH_QUICK", "") not in ("", "0"),
        help="numxent-bench --quick's grid and settings (env NUMXENT_BENCH_QUICK)",
    )
    for name, env, default in OPTIONS:
        group.addoption(
            f"--nx-{name}",
            default=os.environ.get(env, default),
            help=f"see benchmarks/conftest.py (env {env}; default {default or 'its'})",
        )


def nx_settings(config) -> dict:
    """numxent-bench's settings from the ``--nx-*`` options, made once."""
    if not hasattr(config, "_nx_settings"):
        argv = ["--quick"] if config.getoption("--nx-quick") else []
        for name, _, _ in OPTIONS[:4]:
            value = config.getoption(f"--nx-{name}")
            if value:
                argv += [f"--{name}", value]
        try:
            config._nx_settings = settings(build_parser().parse_args(argv))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    return config._nx_settings


def suite_peers(op: str, s: dict) -> list[str]:
    """The peers of ``op`` in settings ``s`` that run in this process: the
    THP ones when it was started with THP_MEM_ALLOC_ENABLE=1, in place of
    PyTorch's plain ones."""

    def here(p) -> bool:
        return THP if p.where == "thp" else not (THP and p.library == "torch")

    return [
        p.id for p in PEERS.values() if op in p.ops and p.id in s["peers"] and here(p)
    ]


def pytest_generate_tests(metafunc):
    """Parametrize ``workload`` (module scope) and ``peer`` from the module's OP."""
    op = getattr(metafunc.module, "OP", None)
    if op is None or "workload" not in metafunc.fixturenames:
        return
    s = nx_settings(metafunc.config)
    grid = [w for w in workloads(s) if w.op == op]
    peers = suite_peers(op, s)
    metafunc.parametrize(
        "workload", grid, ids=[w.group for w in grid], indirect=True, scope="module"
    )
    metafunc.parametrize("peer", peers)


def pytest_collection_modifyitems(config, items):
    """Drop the placeholder items of ops that --nx-ops left out."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "workload" in params and not isinstance(params["workload"], Workload):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def report_settings(request) -> dict:
    """numxent-bench's settings for this run (see :func:`nx_settings`)."""
    return nx_settings(request.config)


@pytest.fixture(scope="session")
def threads(request) -> int:
    """Numba's thread count (torch is pinned to it by each torch peer)."""
    import numba

    text = request.config.getoption("--nx-threads")
    n = int(text) if text else numba.get_num_threads()
    numba.set_num_threads(n)
    return n


@pytest.fixture(scope="module")
def workload(request) -> Workload:
    return request.param


@pytest.fixture(scope="module")
def data(workload, report_settings):
    """The workload's arrays, built once for all its peers."""
    return make_data(workload, seed=report_settings["seed"])


@pytest.fixture
def bench_peer(benchmark, threads, report_settings):
    """Time one peer on one workload in the group ``op|NxC|dtype``."""

    def run(workload: Workload, data: dict, peer: str):
        benchmark.group = workload.group
        try:
            fn = make_peer(peer, workload, data, threads)
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        number, _ = warm_up(fn, report_settings["min_time"])
        benchmark.extra_info.update(
            peer=peer,
            label=PEERS[peer].label,
            threads=threads,
            number=number,
            compile_s=getattr(fn, "compile_s", None),
            elements=workload.elements,
            copy_bytes=workload.copy_bytes,
            THP_MEM_ALLOC_ENABLE=os.environ.get("THP_MEM_ALLOC_ENABLE"),
        )
        if not benchmark.disabled:
            gc.collect()  # the previous peer's garbage, outside the timed calls
        benchmark.pedantic(fn, rounds=report_settings["repeat"], iterations=number)
        stats = getattr(benchmark.stats, "stats", None) if benchmark.stats else None
        if stats is not None:
            _medians.setdefault(benchmark.group, {})[peer] = stats.median

    return run


def pytest_terminal_summary(terminalreporter):
    """Each group's medians as ratios to np.copyto and to numxent."""
    if not _medians:
        return
    from numxent.bench._report import format_ratio

    tr = terminalreporter
    tr.section("numxent: median ÷ np.copyto median (÷ numxent median)")
    for group, med in _medians.items():
        copy = med.get("copyto")
        ref = med.get(REFERENCE.get(group.split("|")[0], ""))
        cells = []
        for peer, t in med.items():
            if peer == "copyto":
                continue
            to_copy = format_ratio(t / copy) if copy else "—"
            to_nx = format_ratio(t / ref) if ref else "—"
            cells.append(f"{peer} {to_copy} ({to_nx})")
        tr.write_line(f"{group}: " + ", ".join(cells))
