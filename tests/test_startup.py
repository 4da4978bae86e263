"""Start-up: what ``import numxent`` imports, and the on-disk kernel cache.

The cache tests run fresh interpreters on a copy of the package (so that a
source file can be edited) with private cache directories, and read Numba's
dispatcher statistics there: which kernel signatures each process compiled
and which it loaded from the cache. Nothing here is timed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import numxent as nx

SRC = pathlib.Path(nx.__file__).parent


def _python(code: str, pythonpath: pathlib.Path | str, cache: pathlib.Path, **env):
    """Run ``code`` in a fresh interpreter; its last stdout line, as JSON."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(pythonpath),
        "NUMBA_CACHE_DIR": str(cache),
        **env,
    }
    full_env.pop("NUMXENT_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _copy_package(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "site"
    shutil.copytree(SRC, root / "numxent", ignore=shutil.ignore_patterns("__pycache__"))
    return root


# One small serial call and what the process compiled and loaded. The kernel
# is the soft-cap pair, the cheapest to compile (under a second, where the
# other families take 3 to 10 s): these tests are about the cache, and each
# process compiles with an empty one.
_CALL = """
import json
import numpy as np

import numxent as nx
from numxent import _config, _dispatch
from numxent import _kernels as K

x = np.arange(6.0).reshape(2, 3)
_dispatch.softcap(x, 30.0, np.empty_like(x))
stats = K.softcap_ser.stats
print(json.dumps({
    "file": nx.__file__,
    "key": _config.CACHE_KEY,
    "compiled": sum(stats.cache_misses.values()),
    "loaded": sum(stats.cache_hits.values()),
    "cache_path": stats.cache_path,
}))
"""


def test_import_leaves_scipy_linalg_and_the_extras_out(tmp_path):
    got = _python(
        """
        import json, sys
        import numxent as nx
        heavy = ["scipy.linalg", "numxent.linear", "numxent.torch", "numxent.dask",
                 "numxent.sklearn", "numxent.bench", "torch", "dask", "sklearn"]
        at_import = sorted(m for m in heavy if m in sys.modules)
        name = "linear_cross_entropy"
        listed = name in dir(nx) and name in nx.__all__
        from numxent import linear_cross_entropy
        from numxent.linear import linear_cross_entropy as direct
        print(json.dumps({
            "at_import": at_import,
            "listed": listed,
            "same": linear_cross_entropy is direct is nx.linear_cross_entropy,
            "after": "numxent.linear" in sys.modules,
        }))
        """,
        SRC.parent,
        tmp_path / "cache",
    )
    assert got == {"at_import": [], "listed": True, "same": True, "after": True}


def test_torch_bridge_import_leaves_dynamo_and_ml_dtypes_out(tmp_path):
    """``import numxent.torch`` costs about torch's own import: torch._dynamo
    (2 s, for ``torch.compile``) and ml_dtypes (1 s, for bfloat16 tensors)
    are imported when first needed."""
    pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    got = _python(
        """
        import json, sys
        import torch
        import numxent.torch as nt
        heavy = ["torch._dynamo", "ml_dtypes"]
        at_import = sorted(m for m in heavy if m in sys.modules)
        y = torch.tensor([0, 2])
        nt.cross_entropy(torch.randn(2, 3), y)
        plain = sorted(m for m in heavy if m in sys.modules)
        nt.cross_entropy(torch.randn(2, 3, dtype=torch.bfloat16), y)
        print(json.dumps({"at_import": at_import, "plain": plain,
                          "bf16": "ml_dtypes" in sys.modules}))
        """,
        SRC.parent,
        tmp_path / "cache",
        NUMBA_DISABLE_JIT="1",  # (this is about imports, not kernels)
    )
    assert got == {"at_import": [], "plain": [], "bf16": True}


def test_editing_a_helper_file_recompiles_the_kernels(tmp_path):
    site = _copy_package(tmp_path)
    cache = tmp_path / "cache"
    first = _python(_CALL, site, cache)
    assert first["file"].startswith(str(site))
    assert first["compiled"] == 1 and first["loaded"] == 0
    again = _python(_CALL, site, cache)
    assert again["key"] == first["key"]
    assert again["compiled"] == 0 and again["loaded"] == 1  # served from the cache

    # An edit of a helper in another file than the kernel's own: Numba's
    # check of the kernel's file alone would load the old machine code.
    with open(site / "numxent" / "_kernels" / "_intrinsics.py", "a") as f:
        f.write("# edited\n")
    edited = _python(_CALL, site, cache)
    assert edited["key"] != first["key"]
    assert edited["compiled"] == 1 and edited["loaded"] == 0
    assert edited["cache_path"] != first["cache_path"]
    assert edited["cache_path"].endswith(edited["key"])
    assert any(name.endswith(".nbi") for name in os.listdir(edited["cache_path"])), (
        "the recompiled kernel was not cached"
    )


# A call of the soft-cap kernels large enough for the parallel variant,
# twice, and what each variant compiled and loaded.
_PARALLEL_SIZED = """
import hashlib
import json
import numpy as np

import numxent as nx
from numxent import _dispatch as D
from numxent import _kernels as K

x = np.random.default_rng(0).standard_normal((D.SERIAL_BELOW // 8 + 1, 8))
out = {}
for call in ("first", "second"):
    res = np.empty_like(x)
    D.softcap(x, 2.0, res)
    out[call] = {
        "bytes": hashlib.sha256(res.tobytes()).hexdigest(),
        "layer": nx.threading_layer(),
        **{
            name: {
                "compiled": sum(k.stats.cache_misses.values()),
                "loaded": sum(k.stats.cache_hits.values()),
            }
            for name, k in (("ser", K.softcap_ser), ("par", K.softcap_par))
        },
    }
print(json.dumps(out))
"""


def test_cold_parallel_sized_call_runs_the_serial_kernel_first(tmp_path):
    cache = tmp_path / "cache"
    cold = _python(_PARALLEL_SIZED, SRC.parent, cache)
    first, second = cold["first"], cold["second"]
    # the first call: the serial kernel, the parallel one left uncompiled; the
    # pool is started all the same (the layer is known after a first call)
    assert first["ser"] == {"compiled": 1, "loaded": 0}
    assert first["par"] == {"compiled": 0, "loaded": 0}
    assert first["layer"] is not None
    # the second: the parallel kernel, compiled now; the same bits
    assert second["par"] == {"compiled": 1, "loaded": 0}
    assert second["bytes"] == first["bytes"]

    # a later process finds the parallel kernel in the cache: no serial run
    warm = _python(_PARALLEL_SIZED, SRC.parent, cache)
    assert warm["first"]["par"] == {"compiled": 0, "loaded": 1}
    assert warm["first"]["ser"] == {"compiled": 0, "loaded": 0}
    assert warm["first"]["bytes"] == first["bytes"]


def test_numxent_defer_parallel_0_compiles_the_parallel_kernel_at_once(tmp_path):
    got = _python(
        _PARALLEL_SIZED, SRC.parent, tmp_path / "cache", NUMXENT_DEFER_PARALLEL="0"
    )
    assert got["first"]["par"] == {"compiled": 1, "loaded": 0}
    assert got["first"]["ser"] == {"compiled": 0, "loaded": 0}


_HELPER_STATS = """
import json
import numpy as np
import numxent as nx
from numxent import _dispatch as D
from numxent._kernels import rowwise

rows = D.SERIAL_BELOW // 8 + 1 if PARALLEL else 3
nx.log_softmax(np.random.default_rng(0).standard_normal((rows, 8)))
stats = rowwise._softmax_task.stats
print(json.dumps({
    "compiled": sum(stats.cache_misses.values()),
    "loaded": sum(stats.cache_hits.values()),
}))
"""


def test_a_later_process_loads_the_kernels_helper_from_the_cache(tmp_path):
    """The serial and parallel kernels of a family call one row helper; the
    parallel kernel compiled in a later process loads the helper's machine
    code that the serial kernel's compilation cached."""
    cache = tmp_path / "cache"
    serial = _python("PARALLEL = False" + _HELPER_STATS, SRC.parent, cache)
    assert serial == {"compiled": 1, "loaded": 0}
    parallel = _python(
        "PARALLEL = True" + _HELPER_STATS,
        SRC.parent,
        cache,
        NUMXENT_DEFER_PARALLEL="0",
    )
    assert parallel == {"compiled": 0, "loaded": 1}


_AT_ONCE = """
import json, os, pathlib, sys, time
import numpy as np
from numxent import _dispatch
from numxent import _kernels as K

me, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
me.touch()  # imported: ready
while not go.exists():
    time.sleep(0.005)
x = np.arange(6.0).reshape(2, 3)
_dispatch.softcap(x, 30.0, np.empty_like(x))
stats = K.softcap_ser.stats
print(json.dumps({
    "compiled": sum(stats.cache_misses.values()),
    "loaded": sum(stats.cache_hits.values()),
}))
"""


def test_processes_missing_a_kernel_at_once_compile_it_once(tmp_path):
    """Two processes call the same kernel at the same moment on an empty
    cache: one compiles it, the other waits for its lock and loads it."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMXENT_CACHE", None)
    env["PYTHONPATH"] = str(SRC.parent)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_AT_ONCE), str(r), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in ready
    ]
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in procs), procs[0].communicate()
        time.sleep(0.01)
    go.touch()
    got = []
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        got.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(g["compiled"] for g in got) == [0, 1], got
    assert sorted(g["loaded"] for g in got) == [0, 1], got


# --------------------------------------------------------------------------
# python -m numxent compile
# --------------------------------------------------------------------------


def _compile_command(cache: pathlib.Path, *args: str, **env: str):
    full_env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), **env}
    full_env["PYTHONPATH"] = str(SRC.parent)
    return subprocess.run(
        [sys.executable, "-m", "numxent", "compile", *args],
        env=full_env,
        capture_output=True,
        text=True,
    )


_LOG_SOFTMAX_CALLS = """
import json
import numpy as np

import numxent as nx
from numxent import _config, _dispatch as D

rng = np.random.default_rng(0)
for rows in (3, D.SERIAL_BELOW // 8 + 1):  # the serial and the parallel kernel
    nx.log_softmax(rng.standard_normal((rows, 8)))
kernels = _config.cached_kernels()
print(json.dumps({
    "compiled": sum(sum(k.stats.cache_misses.values()) for k in kernels),
    "loaded": sum(sum(k.stats.cache_hits.values()) for k in kernels),
}))
"""


def test_compile_command_fills_the_cache_a_fresh_process_loads(tmp_path):
    cache = tmp_path / "cache"
    proc = _compile_command(cache, "--dtypes", "float64", "--ops", "softmax")
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "compiled, 0 already cached" in summary, proc.stdout
    assert str(cache) in summary
    # a fresh process: both kernels of the pair from the cache, none compiled
    got = _python(_LOG_SOFTMAX_CALLS, SRC.parent, cache)
    assert got == {"compiled": 0, "loaded": 2}
    # a second run of the command finds everything cached
    again = _compile_command(cache, "--dtypes", "float64", "--ops", "softmax", "-q")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().startswith("0 kernel signatures compiled")


_ESTIMATOR_KERNELS = """
import json
import numpy as np
from scipy import sparse

from numxent._kernels import lbfgs, sparse as sp
from numxent._lbfgs import minimize_lbfgs
from numxent._sparse_objective import SparseObjective

# L-BFGS as the fit runs it, on a quadratic (its pairs' products)
c = np.arange(6.0)
minimize_lbfgs(lambda x: (float((x - c) @ (x - c)), 2 * (x - c)), np.zeros(6))
# the sparse objective's products on its own arrays, as _block and
# _column_range call them (the loss left out)
X = sparse.random(8, 5, density=0.5, format="csr", random_state=0)
obj = SparseObjective(X, np.zeros(8, np.int64), None, "multiclass", 3, True, 0.0,
                      0.0, None, 1)
indptr, indices, data = obj.csr
sp.csr_logits(indptr, indices, data, obj.WT, obj.b, 0, 8, obj.G, obj.acc[0])
obj._column_range(0, 0)
kernels = [lbfgs.memory_products, lbfgs.memory_combination, sp.csr_logits,
           sp.csc_gather]
print(json.dumps({
    "compiled": sum(sum(k.stats.cache_misses.values()) for k in kernels),
    "loaded": sum(sum(k.stats.cache_hits.values()) for k in kernels),
}))
"""


def test_compile_command_fills_the_cache_with_the_estimators_kernels(tmp_path):
    """What a float64 fit on dense or sparse data compiles of its own (L-BFGS's
    products, the sparse products) comes from the cache after ``compile
    --ops estimator``: the same signatures as the fit's calls."""
    pytest.importorskip("scipy")
    cache = tmp_path / "cache"
    proc = _compile_command(cache, "--dtypes", "float64", "--ops", "estimator", "-q")
    assert proc.returncode == 0, proc.stderr
    got = _python(_ESTIMATOR_KERNELS, SRC.parent, cache)
    assert got == {"compiled": 0, "loaded": 4}


def test_compile_command_refuses_bad_arguments_and_an_off_cache(tmp_path):
    bad = _compile_command(tmp_path / "cache", "--dtypes", "float8")
    assert bad.returncode == 2 and "float8" in bad.stderr
    off = _compile_command(tmp_path / "cache", "--ops", "softmax", NUMXENT_CACHE="0")
    assert off.returncode == 1 and "NUMXENT_CACHE=0" in off.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_compile_result_numba_cannot_cache_warns_instead_of_crashing():
    """Numba declines to cache some compile results (lifted loops, dynamic
    globals: every kernel under ``NUMBA_OPT=0``) with a warning that names
    the kernel's source file, which it reads from the cache's locator; the
    keyed locator used to lack it, and the first call raised
    AttributeError."""
    import types
    import warnings

    from numxent import _config
    from numxent import _kernels as K

    impl = _config._KeyedCacheImpl(K.softmax_ser.py_func)
    cres = types.SimpleNamespace(
        lifted=(),
        library=types.SimpleNamespace(has_dynamic_globals=True),
        fndesc=types.SimpleNamespace(qualname="softmax_ser"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert impl.check_cachable(cres) is False
    (w,) = caught
    assert "Cannot cache compiled function" in str(w.message)
    assert w.filename == K.softmax_ser.py_func.__code__.co_filename
