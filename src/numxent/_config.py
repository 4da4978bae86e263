"""Threading layer, fork handling, the on-disk cache of compiled kernels and
the primitive that runs a parallel kernel.

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

``NUMBA_THREADING_LAYER`` (or ``numba.config.THREADING_LAYER``) names a layer
or a wish (``safe``, ``threadsafe``, ``forksafe``; ``default`` when unset).
Whenever the layers it may resolve to include TBB, numxent makes the ``tbb``
wheel's library loadable before Numba's pool starts: the wheel installs
``libtbb.so.12`` into ``<prefix>/lib``, which the dynamic loader does not
search, so Numba's own probe fails; loading the library by its full path
first (``RTLD_GLOBAL``) lets Numba's TBB extension resolve against it.
When the user chose nothing, numxent asks for ``tbb``; a user's choice is
never changed. A choice that cannot be honoured (``tbb`` or ``safe`` without
a loadable TBB) makes the first parallel call raise a ``RuntimeError`` that
names the variable and the fix, instead of Numba's generic message.

The kernels are compiled with Numba's on-disk cache (``cache=True``) unless
``NUMXENT_CACHE=0`` is set, or ``NUMBA_CACHE_DIR`` names a directory that
cannot be written: then they are compiled in each process, and numxent says
so once with a :class:`CacheWarning` (writing the cache anywhere else would
go against the user's choice of directory).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import site
import sys
import tempfile
import threading
import warnings

import numba
from numba.np.ufunc import parallel as _numba_parallel

__all__ = [
    "CacheWarning",
    "JIT_CACHE",
    "forked_after_openmp",
    "run_parallel",
    "threading_layer",
]


class CacheWarning(UserWarning):
    """numxent's kernels cannot use Numba's on-disk cache in this process."""


def _cache_enabled() -> bool:
    if os.environ.get("NUMXENT_CACHE", "").strip() == "0":
        return False
    cache_dir = numba.config.CACHE_DIR
    if cache_dir:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=cache_dir).close()
        except OSError as exc:
            where, reason = f"NUMBA_CACHE_DIR={cache_dir!r} cannot", str(exc)
        else:
            return True
    else:
        # Numba's own places: the package's __pycache__, then the user's cache
        # directory; with neither writable, cache=True fails at decoration.
        try:
            numba.njit(cache=True)(_cache_probe)
        except RuntimeError as exc:
            where, reason = "no cache directory can", str(exc)
        else:
            return True
    warnings.warn(
        f"{where} be written ({reason}); numxent's compiled kernels are not "
        "cached, so each process compiles them on first use. Point "
        "NUMBA_CACHE_DIR at a writable directory, or set NUMXENT_CACHE=0 to "
        "compile without the cache and without this warning.",
        CacheWarning,
        stacklevel=2,
    )
    return False


def _cache_probe():  # pragma: no cover - never called, only decorated
    return 0


# Whether the kernels are compiled with ``cache=True``.
JIT_CACHE = _cache_enabled()

_LINUX = sys.platform.startswith("linux")
# The layers each value of NUMBA_THREADING_LAYER may resolve to on this
# platform (Numba's own rules: numba/np/ufunc/parallel.py).
_LAYER_CANDIDATES = {
    "default": ("tbb", "omp", "workqueue"),
    "tbb": ("tbb",),
    "omp": ("omp",),
    "workqueue": ("workqueue",),
    "safe": ("tbb",),
    "threadsafe": ("tbb", "omp"),
    # GNU OpenMP (Linux) is not fork-safe; other platforms' OpenMP is
    "forksafe": ("tbb", "workqueue") + (() if _LINUX else ("omp",)),
}
_REQUESTED = str(numba.config.THREADING_LAYER).lower()
_USER_CHOSE_LAYER = (
    _REQUESTED != "default" or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ
)
_layer_problem: str | None = None  # raised by the first parallel launch

_lock = threading.Lock()
_layer: str | None = None  # known after the first parallel launch
_omp_inherited = False  # a forked child of a process whose GNU OpenMP pool ran


def _tbb_library_candidates() -> list[str]:
    if sys.platform.startswith("linux"):
        names = ["libtbb.so.12"]
    elif sys.platform == "darwin":
        names = ["libtbb.12.dylib"]
    else:  # Windows wheels put tbb12.dll on the DLL search path already
        return []
    paths = []
    # Where the tbb wheel says it put the library, then <prefix>/lib of this
    # interpreter, its base and the user site.
    try:
        for f in importlib.metadata.files("tbb") or ():
            if f.name in names:
                paths.append(os.path.normpath(str(f.locate())))
    except importlib.metadata.PackageNotFoundError:
        pass
    for prefix in (sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None)):
        if prefix:
            paths.extend(os.path.join(prefix, "lib", name) for name in names)
    unique = []
    for path in paths:
        if path not in unique and os.path.exists(path):
            unique.append(path)
    return unique


def _tbb_importable() -> bool:
    try:
        from numba.np.ufunc import tbbpool  # type: ignore[attr-defined]  # noqa: F401
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


def _tbb_problem() -> str:
    return (
        f"NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER!r} asks for Numba's "
        "TBB threading layer, but TBB cannot be loaded: install it with "
        "`pip install tbb` (numxent loads the wheel's library from <prefix>/lib), "
        "or unset NUMBA_THREADING_LAYER to let numxent pick a layer"
    )


def _prepare_layer() -> None:
    global _layer_problem
    if _numba_parallel._is_initialized:
        return  # the pool runs already: its layer is settled
    if "tbb" not in _LAYER_CANDIDATES.get(_REQUESTED, ()):
        return  # unknown values are left to Numba's own error
    tbb_ok = _ensure_tbb()
    if not _USER_CHOSE_LAYER and tbb_ok:
        numba.config.THREADING_LAYER = "tbb"
    elif not tbb_ok and _REQUESTED in ("tbb", "safe"):
        _layer_problem = _tbb_problem()


def _check_layer() -> None:
    """Raise the user's unhonourable layer choice, unless TBB loads by now."""
    global _layer_problem
    if _layer_problem is not None:
        if _ensure_tbb():
            _layer_problem = None
        else:
            raise RuntimeError(_layer_problem)


def _after_fork_in_child() -> None:
    global _lock, _omp_inherited
    # A lock held by another parent thread at fork time would never be released.
    _lock = threading.Lock()
    if _layer == "omp":
        _omp_inherited = True


_prepare_layer()
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
            _check_layer()
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
