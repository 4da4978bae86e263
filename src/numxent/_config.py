"""Threading-layer set-up and the primitive that runs a parallel kernel.

Numba has three threading layers and only one of them is safe both when many
Python threads call a parallel kernel at once and when the process forks after
using it:

========== ============ ========== ==========================================
layer      thread-safe  fork-safe  what numxent does about it
========== ============ ========== ==========================================
tbb        yes          yes        nothing: the preferred layer
omp (GNU)  yes          no         a forked child runs the serial kernels
workqueue  no           yes        parallel launches are serialised by a lock
========== ============ ========== ==========================================

At import, unless the user already chose a layer (``NUMBA_THREADING_LAYER`` or
``numba.config.THREADING_LAYER``) or Numba's thread pool is already running,
numxent asks for ``tbb``. The ``tbb`` wheel from PyPI installs ``libtbb.so.12``
into ``<prefix>/lib``, which the dynamic loader does not search, so Numba's own
probe fails with "Unknown import problem"; loading the library by its full path
first (``RTLD_GLOBAL``) lets Numba's TBB extension resolve against it. If TBB
cannot be loaded, Numba's default choice stands and the table's last column
keeps numxent safe on whichever layer Numba picks.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
import threading

import numba
from numba.np.ufunc import parallel as _numba_parallel

__all__ = ["forked_after_openmp", "run_parallel", "threading_layer"]

_USER_CHOSE_LAYER = numba.config.THREADING_LAYER != "default"

_lock = threading.Lock()
_layer: str | None = None  # known after the first parallel launch
_omp_inherited = False  # a forked child of a process whose GNU OpenMP pool ran


def _tbb_library_candidates() -> list[str]:
    prefixes = [sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None)]
    if sys.platform.startswith("linux"):
        names = ["libtbb.so.12"]
    elif sys.platform == "darwin":
        names = ["libtbb.12.dylib"]
    else:  # Windows wheels put tbb12.dll on the DLL search path already
        names = []
    paths = []
    for prefix in prefixes:
        if not prefix:
            continue
        for name in names:
            path = os.path.join(prefix, "lib", name)
            if os.path.exists(path) and path not in paths:
                paths.append(path)
    return paths


def _tbb_importable() -> bool:
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _ensure_tbb() -> bool:
    """Make Numba's TBB layer importable; True when it is."""
    if _tbb_importable():
        return True
    for path in _tbb_library_candidates():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        if _tbb_importable():
            return True
    return False


def _choose_layer() -> None:
    if _USER_CHOSE_LAYER or _numba_parallel._is_initialized:
        return
    if _ensure_tbb():
        numba.config.THREADING_LAYER = "tbb"


def _after_fork_in_child() -> None:
    global _lock, _omp_inherited
    # A lock held by another parent thread at fork time would never be released.
    _lock = threading.Lock()
    if _layer == "omp":
        _omp_inherited = True


_choose_layer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def threading_layer() -> str | None:
    """The Numba threading layer numxent's parallel kernels run on.

    ``None`` until the first parallel launch in this process.
    """
    return _layer


def forked_after_openmp() -> bool:
    """Whether this process is a forked child of one whose GNU OpenMP pool
    ran: its parallel kernels would hang, so the serial ones run instead."""
    return _omp_inherited


def run_parallel(parallel_kernel, *args):
    """Run a parallel kernel, serialised where the threading layer needs it;
    returns what the kernel returns."""
    global _layer
    layer = _layer
    if layer is None:
        # The first launch starts Numba's pool; only then is the layer known.
        with _lock:
            result = parallel_kernel(*args)
            try:
                _layer = numba.threading_layer()
            except ValueError:  # NUMBA_DISABLE_JIT=1: no pool was started
                pass
        return result
    if layer == "workqueue":
        with _lock:
            return parallel_kernel(*args)
    return parallel_kernel(*args)
