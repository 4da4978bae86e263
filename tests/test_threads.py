"""Thread safety, thread-count independence and fork safety.

- calls from many Python threads at once give the sequential bits;
- ``numba.set_num_threads(1)`` and all threads give identical bits;
- a forked child (``os.fork`` and a ``multiprocessing`` 'fork' pool) can call
  numxent after its parent did;
- numxent runs on a thread- and fork-safe threading layer, and a user's own
  ``NUMBA_THREADING_LAYER`` choice is kept and still safe.

Everything that could abort the interpreter runs in a subprocess.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import numxent as nx

CE = nx.cross_entropy
BCE = nx.binary_cross_entropy_with_logits


def _rng(seed):
    return np.random.default_rng(seed)


def _assert_bitwise(got, ref):
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref)
        for g, r in zip(got, ref, strict=True):
            _assert_bitwise(g, r)
        return
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert got.tobytes() == ref.tobytes()


# --------------------------------------------------------------------------
# (a) many Python threads at once
# --------------------------------------------------------------------------


def _thread_tasks():
    n, c = 2000, 300
    rng = _rng(0)
    x64 = rng.standard_normal((n, c)) * 3
    x32 = x64.astype(np.float32)
    y = rng.integers(0, c, n)
    y[::17] = -100
    p = rng.random((n, c))
    p /= p.sum(axis=1, keepdims=True)
    t = rng.random((n, c))
    w = np.linspace(0.5, 2.0, c)
    sw = rng.random(n)

    def ce_out(x):
        out = np.empty_like(x)
        loss, g = CE(x, y, return_grad=True, out=out)
        assert g is out or np.shares_memory(g, out)
        return loss, out

    def ce_inplace(x):
        x = x.copy()
        return CE(x, y, reduction="sum", return_grad=True, out=x)

    return {
        "ce-hard-mean-f64": lambda: CE(x64, y, return_grad=True),
        "ce-hard-sum-f32": lambda: CE(x32, y, reduction="sum", return_grad=True),
        "ce-hard-none-weighted": lambda: CE(
            x64,
            y,
            weight=w,
            sample_weight=sw,
            label_smoothing=0.1,
            reduction="none",
            return_grad=True,
        ),
        "ce-hard-loss-only": lambda: CE(x32, y, weight=w.astype(np.float32)),
        "ce-soft-mean-f32": lambda: CE(
            x32, p.astype(np.float32), label_smoothing=0.2, return_grad=True
        ),
        "ce-soft-sum-f64": lambda: CE(x64, p, reduction="sum", return_grad=True),
        "ce-out-f64": lambda: ce_out(x64),
        "ce-inplace-f32": lambda: ce_inplace(x32),
        "bce-mean-f64": lambda: BCE(
            x64, t, pos_weight=w, sample_weight=sw, return_grad=True
        ),
        "bce-none-f32": lambda: BCE(
            x32, t.astype(np.float32), reduction="none", return_grad=True
        ),
        "softmax-f64": lambda: nx.softmax(x64),
        "log_softmax-f32": lambda: nx.log_softmax(x32),
        "logsumexp-f64": lambda: nx.logsumexp(x64),
    }


def test_concurrent_python_threads_match_sequential():
    tasks = _thread_tasks()
    names = list(tasks)
    expected = {name: tasks[name]() for name in names}  # sequential reference
    order = [names[i % len(names)] for i in range(208)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [(name, pool.submit(tasks[name])) for name in order]
        results = [(name, fut.result()) for name, fut in futures]
    assert len(results) == len(order)
    for name, got in results:
        _assert_bitwise(got, expected[name])


# --------------------------------------------------------------------------
# (b) the number of Numba threads never changes a bit
# --------------------------------------------------------------------------


def _thread_counts():
    counts = {1, min(2, numba.config.NUMBA_NUM_THREADS), numba.get_num_threads()}
    counts.add(numba.config.NUMBA_NUM_THREADS)
    if numba.config.NUMBA_NUM_THREADS >= 3:
        counts.add(3)
    return sorted(counts)


@pytest.fixture(scope="module")
def big_problem():
    n, c = 20_000, 100
    rng = _rng(1)
    x = rng.standard_normal((n, c)) * 4
    y = rng.integers(0, c, n)
    y[::13] = -100
    p = rng.random((n, c))
    p /= p.sum(axis=1, keepdims=True)
    return {
        "x": x,
        "y": y,
        "p": p,
        "t": rng.random((n, c)),
        "w": rng.random(c) + 0.5,
        "sw": rng.random(n),
    }


def _calls(prob, dtype, reduction):
    x = prob["x"].astype(dtype)
    p = prob["p"].astype(dtype)
    t = prob["t"].astype(dtype)
    w = prob["w"].astype(dtype)
    sw = prob["sw"].astype(dtype)
    y = prob["y"]
    kw = {"reduction": reduction, "return_grad": True}
    return {
        "ce-hard": lambda: CE(x, y, **kw),
        "ce-hard-weighted": lambda: CE(
            x, y, weight=w, sample_weight=sw, label_smoothing=0.15, **kw
        ),
        "ce-soft": lambda: CE(x, p, sample_weight=sw, label_smoothing=0.05, **kw),
        "bce": lambda: BCE(x, t, weight=w, pos_weight=w[::-1].copy(), **kw),
        "bce-sample-weight": lambda: BCE(x, t, sample_weight=sw, **kw),
    }


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_thread_count_does_not_change_bits(big_problem, dtype, reduction):
    counts = _thread_counts()
    if len(counts) < 2:
        pytest.skip("Numba has a single thread here; nothing to compare")
    default = numba.get_num_threads()
    results = {}
    try:
        for k in counts:
            numba.set_num_threads(k)
            assert numba.get_num_threads() == k
            for name, call in _calls(big_problem, dtype, reduction).items():
                results[(k, name)] = call()
    finally:
        numba.set_num_threads(default)
    assert numba.get_num_threads() == default
    for (_, name), res in results.items():
        _assert_bitwise(res, results[(counts[0], name)])
    # the softmax family too
    x = big_problem["x"].astype(dtype)
    ref = [nx.softmax(x), nx.log_softmax(x), nx.logsumexp(x)]
    try:
        numba.set_num_threads(1)
        got = [nx.softmax(x), nx.log_softmax(x), nx.logsumexp(x)]
    finally:
        numba.set_num_threads(default)
    for g, r in zip(got, ref, strict=True):
        _assert_bitwise(g, r)


def test_lane_kernel_rows_do_not_depend_on_threads_or_batch():
    """float32 rows of a few classes take the lane kernel (64-row blocks,
    tasks of whole blocks): the same bits for any thread count, and each row
    the same in a batch of any size (serial, parallel, a ragged last
    block)."""
    rng = _rng(7)
    n, c = 20_000, 10
    x = (rng.standard_normal((n, c)) * 4).astype(np.float32)
    x[11, 3], x[12, 0], x[13] = np.nan, np.inf, -np.inf
    y = rng.integers(0, c, n)
    y[::17] = -100
    w = rng.random(c) + 0.5
    sw = rng.random(n)
    calls = {
        "plain": dict(),
        "weighted": dict(weight=w, sample_weight=sw, label_smoothing=0.1),
        "z-loss": dict(lse_square_scale=1e-3),
    }
    counts = _thread_counts()
    default = numba.get_num_threads()
    results = {}
    try:
        for k in counts:
            numba.set_num_threads(k)
            for name, kw in calls.items():
                results[k, name] = CE(x, y, reduction="sum", return_grad=True, **kw)
    finally:
        numba.set_num_threads(default)
    for (_, name), res in results.items():
        _assert_bitwise(res, results[counts[0], name])
    for kw in calls.values():
        big = CE(x, y, reduction="none", return_grad=True, **kw)
        for m in (3, 64, 65, 5000):
            part = {**kw, "sample_weight": sw[:m]} if "sample_weight" in kw else kw
            loss, grad = CE(x[:m], y[:m], reduction="none", return_grad=True, **part)
            _assert_bitwise(loss, big[0][:m])
            _assert_bitwise(grad, big[1][:m])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_small_and_large_batches_give_same_rows(big_problem, dtype):
    """Per-row values do not depend on batch size (serial vs parallel path)."""
    x = big_problem["x"].astype(dtype)
    y = big_problem["y"]
    w = big_problem["w"].astype(dtype)
    big_loss, big_grad = CE(x, y, weight=w, reduction="none", return_grad=True)
    for n in (3, 200, 5000):
        loss, grad = CE(x[:n], y[:n], weight=w, reduction="none", return_grad=True)
        _assert_bitwise(loss, big_loss[:n])
        _assert_bitwise(grad, big_grad[:n])
    t = big_problem["t"].astype(dtype)
    big_loss, big_grad = BCE(x, t, reduction="none", return_grad=True)
    loss, grad = BCE(x[:7], t[:7], reduction="none", return_grad=True)
    _assert_bitwise(loss, big_loss[:7])
    _assert_bitwise(grad, big_grad[:7])


# --------------------------------------------------------------------------
# (c), (d) fork and threading layers, in subprocesses
# --------------------------------------------------------------------------


def _run_script(script: str, **env_changes: str | None) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter that imports this numxent."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(nx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.pop("NUMBA_THREADING_LAYER", None)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
    )


def _check(proc: subprocess.CompletedProcess, *expected_lines: str) -> None:
    report = f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    lines = proc.stdout.splitlines()
    for line in expected_lines:
        assert line in lines, report


_PROBLEM = """
import numpy as np
import numxent as nx

# 256 x 200 = 51,200 logits: every call below runs its parallel kernel
rng = np.random.default_rng(7)
x = rng.standard_normal((256, 200))
y = rng.integers(0, 200, 256)
p = rng.random((256, 200))
p /= p.sum(axis=1, keepdims=True)

def compute():
    loss, grad = nx.cross_entropy(x, y, return_grad=True)
    sloss, sgrad = nx.cross_entropy(x, p, reduction="sum", return_grad=True)
    bloss, bgrad = nx.binary_cross_entropy_with_logits(x, p, return_grad=True)
    sm = nx.softmax(x)
    arrays = (loss, grad, sloss, sgrad, bloss, bgrad, sm)
    return [np.asarray(a).tobytes() for a in arrays]
"""


def test_os_fork_child_can_call_numxent():
    script = (
        _PROBLEM
        + """
import os

parent = compute()
pid = os.fork()
if pid == 0:
    try:
        ok = compute() == parent
        # twice, and from a thread, in the child too
        import threading
        box = []
        th = threading.Thread(target=lambda: box.append(compute()))
        th.start(); th.join()
        ok = ok and box == [parent]
    except BaseException:
        os._exit(4)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
print("child exit", code)
print("parent again", compute() == parent)
"""
    )
    _check(_run_script(script), "child exit 0", "parent again True")


def test_multiprocessing_fork_pool_can_call_numxent():
    script = (
        _PROBLEM
        + """
import multiprocessing as mp

def work(seed):
    return seed, compute()

if __name__ == "__main__":
    parent = compute()
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(work, range(4))
    print("n results", len(results))
    print("all equal", all(r == parent for _, r in results))
    print("parent again", compute() == parent)
"""
    )
    _check(_run_script(script), "n results 4", "all equal True", "parent again True")


def _expected_digest() -> str:
    """The digest of ``compute()`` in this process (whatever its layer)."""
    namespace: dict = {}
    exec(textwrap.dedent(_PROBLEM), namespace)
    return hashlib.sha256(b"".join(namespace["compute"]())).hexdigest()


def _layer_available(layer: str) -> bool:
    # numxent is imported here already, so TBB's library is loadable if present
    module = {"workqueue": "workqueue", "omp": "omppool", "tbb": "tbbpool"}[layer]
    try:
        importlib.import_module(f"numba.np.ufunc.{module}")
    except ImportError:
        return False
    return True


# NUMBA_THREADING_LAYER values (None: unset) and the layer numxent must end on.
# TBB is a runtime dependency wherever the tbb wheel exists (x86_64), so every
# value that may resolve to TBB must resolve to it, in a fresh venv too.
LAYER_CHOICES = [
    (None, "tbb"),
    ("tbb", "tbb"),
    ("safe", "tbb"),
    ("threadsafe", "tbb"),
    ("forksafe", "tbb"),
    ("workqueue", "workqueue"),
    ("omp", "omp"),
]

_LAYER_SCRIPT = """
import hashlib
import multiprocessing as mp
import os
import threading
import numba
from numxent import _config

def digest():
    return hashlib.sha256(b"".join(compute())).hexdigest()

def work(seed):
    return digest()

if __name__ == "__main__":
    ref = digest()
    print("digest", ref)
    print("layer", numba.threading_layer())
    results = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(3):
            results.append(digest())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print("threads", len(results), all(r == ref for r in results))
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if digest() == ref else 3
            # on GNU OpenMP the child must have fallen back to the serial kernels
            if numba.threading_layer() == "omp" and not _config._omp_inherited:
                code = 5
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    with mp.get_context("fork").Pool(2) as pool:
        pooled = pool.map(work, range(3))
    print("pool equal", pooled == [ref] * 3)
    print("parent again", digest() == ref)
    print("layer after", numba.threading_layer())
"""


@pytest.mark.parametrize(
    ("requested", "expected"), LAYER_CHOICES, ids=[str(r) for r, _ in LAYER_CHOICES]
)
def test_every_threading_layer_choice(requested, expected):
    """Each NUMBA_THREADING_LAYER value: the default's bits, 8 Python threads at
    once, a forked child and a fork pool after use; the user's choice kept."""
    if expected == "omp" and not _layer_available("omp"):
        pytest.skip("Numba's GNU OpenMP layer is not available on this platform")
    proc = _run_script(_PROBLEM + _LAYER_SCRIPT, NUMBA_THREADING_LAYER=requested)
    _check(
        proc,
        f"digest {_expected_digest()}",
        f"layer {expected}",
        "threads 24 True",
        "child exit 0",
        "pool equal True",
        "parent again True",
        f"layer after {expected}",
    )


_NO_TBB = """
import sys
sys.modules["numba.np.ufunc.tbbpool"] = None  # as if TBB could not be loaded
import numpy as np
import numxent as nx
small = float(nx.cross_entropy(np.zeros((4, 3)), np.zeros(4, dtype=np.int64)))
print("small call", round(small, 6))
x = np.zeros((4000, 200))
try:
    nx.cross_entropy(x, np.zeros(4000, dtype=np.int64))
except RuntimeError as exc:
    print("error", exc)
else:
    import numba
    print("layer", numba.threading_layer())
"""


@pytest.mark.parametrize("requested", ["tbb", "safe"])
def test_unhonourable_layer_choice_names_the_variable(requested):
    proc = _run_script(_NO_TBB, NUMBA_THREADING_LAYER=requested)
    _check(proc, "small call 1.098612")
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("error")]
    assert f"NUMBA_THREADING_LAYER={requested!r}" in line
    assert "pip install tbb" in line


def test_without_tbb_wishes_fall_back_to_another_safe_layer():
    # forksafe may use workqueue, threadsafe GNU OpenMP: no error then
    proc = _run_script(_NO_TBB, NUMBA_THREADING_LAYER="forksafe")
    _check(proc, "small call 1.098612", "layer workqueue")
