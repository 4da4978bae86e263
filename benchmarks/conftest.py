"""pytest-benchmark suite: one group per workload, ``op|NxC|dtype``.

Off in a plain ``pytest`` run (``benchmarks/`` is not in ``testpaths`` and
every test is marked ``benchmark``, which the default ``-m`` deselects). Run::

    pytest benchmarks -m benchmark --benchmark-only
    pytest benchmarks -m benchmark --benchmark-only --nx-shapes large
    NUMXENT_BENCH_SHAPES=large NUMXENT_BENCH_DTYPES=float32 pytest benchmarks \\
        -m benchmark --benchmark-only --benchmark-json bench.json

Options (each with an environment variable for CI):

``--nx-shapes`` / ``NUMXENT_BENCH_SHAPES``
    ``NxC`` list and names of built-in lists: ``large`` (up to 1 GB per
    array), ``small``, ``quick``, ``default``; default: moderate shapes.
``--nx-dtypes`` / ``NUMXENT_BENCH_DTYPES``  default ``float32,float64``.
``--nx-ops`` / ``NUMXENT_BENCH_OPS``  default ``ce,ce_fwd,bce,bce_fwd``.
``--nx-peers`` / ``NUMXENT_BENCH_PEERS``  default: every peer but
    torch.compile (seconds of compiling per shape; name ``torch_compile``,
    ``torch_compile_fwd`` to add them).
``--nx-threads`` / ``NUMXENT_BENCH_THREADS``  numba's and torch's threads.

PyTorch with transparent huge pages: ``THP_MEM_ALLOC_ENABLE`` must be set
before torch is imported, so run the suite again with
``THP_MEM_ALLOC_ENABLE=1``; the PyTorch peers are then named ``torch_thp_*``
(every ratio is still measured in one process).

The same peers as ``numxent-bench`` (``numxent.bench._peers``); each is
called twice before timing so Numba's compilation stays out of it. At the end
the terminal summary prints each group's medians as ratios to ``np.copyto``
(the roofline) and to numxent.
"""

from __future__ import annotations

import os

import pytest

from numxent.bench._peers import PEERS, REFERENCE, PeerUnavailable, make_peer
from numxent.bench._workloads import OPS, Workload, make_data, parse_shapes

DEFAULT_SHAPES = "262144x10,65536x100,8192x1000,512x32000,256x1000"
THP = os.environ.get("THP_MEM_ALLOC_ENABLE", "") not in ("", "0")

_medians: dict[str, dict[str, float]] = {}


def pytest_addoption(parser):
    group = parser.getgroup("numxent benchmarks")
    for name, env, default, help_ in [
        ("shapes", "NUMXENT_BENCH_SHAPES", DEFAULT_SHAPES, "NxC list or list names"),
        ("dtypes", "NUMXENT_BENCH_DTYPES", "float32,float64", "dtypes"),
        ("ops", "NUMXENT_BENCH_OPS", ",".join(OPS), "ops"),
        ("peers", "NUMXENT_BENCH_PEERS", "", "peer ids (default: all)"),
        ("threads", "NUMXENT_BENCH_THREADS", "", "numba/torch threads"),
    ]:
        group.addoption(
            f"--nx-{name}",
            default=os.environ.get(env, default),
            help=f"{help_} (env {env}; default {default or 'all'})",
        )


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def peer_id_shown(peer: str) -> str:
    """The name a peer is reported under (torch_* becomes torch_thp_* with THP)."""
    if THP and PEERS[peer].library == "torch":
        return peer.replace("torch_", "torch_thp_", 1)
    return peer


def pytest_generate_tests(metafunc):
    """Parametrize ``workload`` (module scope) and ``peer`` from the module's OP."""
    op = getattr(metafunc.module, "OP", None)
    if op is None or "workload" not in metafunc.fixturenames:
        return
    cfg = metafunc.config
    ops = _csv(cfg.getoption("--nx-ops"))
    shapes = parse_shapes(cfg.getoption("--nx-shapes"))
    dtypes = _csv(cfg.getoption("--nx-dtypes"))
    wanted = _csv(cfg.getoption("--nx-peers"))
    workloads = [
        Workload(op, n, c, dt) for dt in dtypes for n, c in shapes if op in ops
    ]
    # THP peers need a process of their own: see the module docstring
    peers = [
        p.id
        for p in PEERS.values()
        if op in p.ops
        and p.where == "main"
        and (p.id in wanted if wanted else not p.slow_setup)
    ]
    if "copyto" not in peers:
        peers.insert(0, "copyto")
    metafunc.parametrize(
        "workload",
        workloads,
        ids=[w.group for w in workloads],
        indirect=True,
        scope="module",
    )
    metafunc.parametrize("peer", peers, ids=[peer_id_shown(p) for p in peers])


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
def data(workload):
    """The workload's arrays, built once for all its peers."""
    return make_data(workload)


@pytest.fixture
def bench_peer(benchmark, threads):
    """Time one peer on one workload in the group ``op|NxC|dtype``."""

    def run(workload: Workload, data: dict, peer: str):
        benchmark.group = f"{workload.op}|{workload.n}x{workload.c}|{workload.dtype}"
        shown = peer_id_shown(peer)
        try:
            fn = make_peer(peer, workload, data, threads)
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        fn()  # warm-up: compilation (numba, torch.compile, jax) and first touch
        fn()
        benchmark.extra_info.update(
            peer=shown,
            label=PEERS[peer].label,
            threads=threads,
            elements=workload.elements,
            copy_bytes=workload.copy_bytes,
            THP_MEM_ALLOC_ENABLE=os.environ.get("THP_MEM_ALLOC_ENABLE"),
        )
        benchmark(fn)
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
            cells.append(f"{peer_id_shown(peer)} {to_copy} ({to_nx})")
        tr.write_line(f"{group}: " + ", ".join(cells))
