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

The kernels are compiled with Numba's on-disk cache unless
``NUMXENT_CACHE=0`` is set, or ``NUMBA_CACHE_DIR`` names a directory that
cannot be written (or no cache directory can be): then they are compiled in
each process, and numxent says so once with a :class:`CacheWarning` (writing
the cache anywhere else would go against the user's choice of directory).

The cache is numxent's own use of Numba's (:func:`cached`), in three ways:

* Keyed: a kernel's cache files go one directory below where Numba would put
  them, into ``numxent-<version>-<hash of every file of numxent._kernels>``
  (:data:`CACHE_KEY`). Numba checks a cached kernel against its own source
  file only, so an edited helper in another file (a ``git pull``, an upgrade
  in place) would otherwise leave stale machine code in use.
* Light loads: Numba refreshes its whole target context before loading any
  cached function -- it imports and registers every implementation it has,
  and its BLAS check imports most of ``scipy.linalg`` -- which is most of a
  warm first call. Loading machine code needs none of it: only Numba's
  runtime (NRT) must be up. A compilation still refreshes, as Numba does.
* Lazy: a kernel's cache is set up on its first call, not at import.
* Locked: a process that misses a kernel takes a lock file for it in the
  cache directory until it has saved the compiled kernel; another process
  missing the same kernel meanwhile waits (at most :data:`COMPILE_WAIT_S`)
  and loads it instead of compiling it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import os
import site
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator

import numba
from numba.core import caching as _caching
from numba.np.ufunc import parallel as _numba_parallel

from ._version import __version__

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: compile locks are off
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CACHE_KEY",
    "CacheWarning",
    "CompileDeferred",
    "JIT_CACHE",
    "cached",
    "cached_kernels",
    "forked_after_openmp",
    "is_cached",
    "load_only",
    "run_parallel",
    "start_pool",
    "threading_layer",
]


class CacheWarning(UserWarning):
    """numxent's kernels cannot use Numba's on-disk cache in this process."""


def _warn_uncached(where: str, reason: str, stacklevel: int) -> None:
    warnings.warn(
        f"{where} be written ({reason}); numxent's compiled kernels are not "
        "cached, so each process compiles them on first use. Point "
        "NUMBA_CACHE_DIR at a writable directory, or set NUMXENT_CACHE=0 to "
        "compile without the cache and without this warning.",
        CacheWarning,
        stacklevel=stacklevel + 1,
    )


def _cache_enabled() -> bool:
    if os.environ.get("NUMXENT_CACHE", "").strip() == "0":
        return False
    cache_dir = numba.config.CACHE_DIR
    if cache_dir:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=cache_dir).close()
        except OSError as exc:
            _warn_uncached(f"NUMBA_CACHE_DIR={cache_dir!r} cannot", str(exc), 2)
            return False
    # Otherwise Numba's own places (the package's __pycache__, then the
    # user's cache directory) are tried on a kernel's first call.
    return True


# Whether the kernels are compiled with the on-disk cache.
JIT_CACHE = _cache_enabled()


def _source_key() -> str:
    """``numxent-<version>-<16 hex digits>``: the digits hash every file of
    ``numxent._kernels`` (names and contents), the only code the kernels are
    compiled from."""
    h = hashlib.sha256()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kernels")
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
                    h.update(b"\0")
                    with open(path, "rb") as f:
                        h.update(f.read())
                    h.update(b"\0")
    except OSError:  # pragma: no cover - sources not on disk (a zip): version only
        h = hashlib.sha256(b"sources unreadable")
    return f"numxent-{__version__}-{h.hexdigest()[:16]}"


#: The directory, below Numba's cache directory for numxent's kernels, that
#: holds this version's and these sources' compiled kernels.
CACHE_KEY = _source_key()


class _KeyedLocator(_caching._CacheLocator):
    """Numba's locator for a kernel, one directory down: ``<dir>/CACHE_KEY``."""

    def __init__(self, inner):
        self._inner = inner

    def get_cache_path(self):
        return os.path.join(self._inner.get_cache_path(), CACHE_KEY)

    def get_source_stamp(self):
        return self._inner.get_source_stamp()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    def __getattr__(self, name):
        # the rest (``_py_file``, read by Numba's warning about a function it
        # cannot cache) is the inner locator's
        return getattr(self._inner, name)


class _KeyedCacheImpl(_caching.CompileResultCacheImpl):
    def __init__(self, py_func):
        super().__init__(py_func)  # raises RuntimeError when no place is writable
        locator = _KeyedLocator(self._locator)
        try:
            locator.ensure_cache_path()
        except OSError as exc:
            raise RuntimeError(f"cannot write {locator.get_cache_path()!r}") from exc
        self._locator = locator


class _KernelCache(_caching.FunctionCache):
    """Numba's cache of compile results, keyed (``_KeyedCacheImpl``) and
    loading without refreshing the target context."""

    _impl_class = _KeyedCacheImpl

    def load_overload(self, sig, target_context):
        from numba.core.runtime import rtsys

        # Numba's own load_overload runs target_context.refresh() first. The
        # machine code links against Numba's runtime only (NRT; the C
        # helpers, math and threading symbols are installed with the context
        # and by the parallel kernels' reload hook).
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


_uncached_warned = False


class CompileDeferred(Exception):
    """Raised, inside :func:`load_only`, by a kernel call that would compile:
    its machine code for these arguments is neither in this process nor in
    the on-disk cache."""


_load_only = threading.local()


@contextlib.contextmanager
def load_only():
    """Within the block, a call of a :func:`cached` kernel runs machine code
    already compiled in this process or cached on disk, or raises
    :class:`CompileDeferred` instead of compiling."""
    _load_only.active = True
    try:
        yield
    finally:
        _load_only.active = False


#: Seconds a process waits for another one compiling the same kernel (then
#: it compiles the kernel itself).
COMPILE_WAIT_S = 60.0


class _CompileLocks:
    """Exclusive lock files, one per kernel signature, in the cache
    directory: held from a cache miss to the save of the compiled result, so
    that processes missing the same kernel at once (test workers, ranks,
    data-loader workers on an empty cache) compile it once and the others
    load it. Without ``fcntl`` (not POSIX) nothing is locked."""

    def __init__(self):
        self._held: dict[str, int] = {}  # signature -> open lock file

    def acquire(self, path: str | None, name: str, sig) -> bool:
        """Hold the lock of ``name`` with ``sig``; whether it is held."""
        key = str(sig)
        if key in self._held:  # (a compilation of it that raised)
            return True
        if path is None or fcntl is None:
            return False
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        try:
            fd = os.open(os.path.join(path, f"{name}-{digest}.lock"),
                         os.O_CREAT | os.O_RDWR, 0o666)  # fmt: skip
        except OSError:
            return False
        deadline = time.monotonic() + COMPILE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
            else:
                self._held[key] = fd
                return True

    def release(self, sig) -> None:
        fd = self._held.pop(str(sig), None)
        if fd is not None:
            # (unlocked first: a child forked meanwhile shares the open file)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class _LazyCache:
    """A kernel's on-disk cache, set up on the kernel's first call."""

    def __init__(self, py_func):
        self._py_func = py_func
        self._cache = None
        self._locks = _CompileLocks()

    def _get(self):
        global _uncached_warned
        if self._cache is None:
            if not JIT_CACHE:
                self._cache = _caching.NullCache()
                return self._cache
            try:
                self._cache = _KernelCache(self._py_func)
            except RuntimeError as exc:
                if not _uncached_warned:
                    _uncached_warned = True
                    _warn_uncached("no cache directory can", str(exc), 4)
                self._cache = _caching.NullCache()
        return self._cache

    @property
    def cache_path(self):
        return self._get().cache_path

    def load_overload(self, sig, target_context):
        # (Numba calls this under its compiler lock, before compiling)
        cache = self._get()
        cres = cache.load_overload(sig, target_context)
        if cres is None and getattr(_load_only, "active", False):
            raise CompileDeferred(self._py_func.__qualname__)
        if cres is None:
            name = self._py_func.__qualname__
            if self._locks.acquire(cache.cache_path, name, sig):
                # another process may have saved it while this one waited
                cres = cache.load_overload(sig, target_context)
                if cres is not None:
                    self._locks.release(sig)
        return cres

    def save_overload(self, sig, data):
        try:
            return self._get().save_overload(sig, data)
        finally:
            self._locks.release(sig)

    def enable(self):
        self._get().enable()

    def disable(self):
        self._get().disable()

    def flush(self):
        self._get().flush()


_CACHED: list = []  # the dispatchers decorated with ``cached``


def cached(dispatcher):
    """Decorator, over ``@njit``: give a kernel numxent's on-disk cache (see
    the module's docstring; none when the cache is off) and
    :func:`load_only` calls. A no-op on plain functions
    (``NUMBA_DISABLE_JIT=1``)."""
    if hasattr(dispatcher, "_cache"):
        _CACHED.append(dispatcher)
    return cached_helper(dispatcher)


def cached_helper(dispatcher):
    """Decorator, over ``@njit``: the on-disk cache of :func:`cached` for a
    helper that kernels call (not inlined): a kernel compiled in a later
    process, or in another process at the same time, loads the helper's
    machine code instead of compiling it again (the serial and parallel
    kernels of a family share their row helpers). Not one of
    :func:`cached_kernels`: nothing calls a helper from Python."""
    if hasattr(dispatcher, "_cache"):
        dispatcher._cache = _LazyCache(dispatcher.py_func)
    return dispatcher


def is_cached(kernel) -> bool:
    """Whether ``kernel`` is a dispatcher decorated with :func:`cached`."""
    return isinstance(getattr(kernel, "_cache", None), _LazyCache)


def cached_kernels() -> list:
    """The kernels (Numba dispatchers) decorated with :func:`cached`."""
    return list(_CACHED)


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


def _tbb_library_candidates() -> Iterator[str]:
    """Paths of TBB's library to try, in order, each once: ``<prefix>/lib`` of
    this interpreter, its base and the user site, then wherever the tbb
    wheel's metadata says it put the library (looked up only if those fail:
    the metadata search is most of this module's import time)."""
    if sys.platform.startswith("linux"):
        names = ["libtbb.so.12"]
    elif sys.platform == "darwin":
        names = ["libtbb.12.dylib"]
    else:  # Windows wheels put tbb12.dll on the DLL search path already
        return
    seen = set()
    for prefix in (sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None)):
        if prefix:
            for name in names:
                path = os.path.join(prefix, "lib", name)
                if path not in seen and os.path.exists(path):
                    seen.add(path)
                    yield path
    try:
        files = importlib.metadata.files("tbb") or ()
    except importlib.metadata.PackageNotFoundError:
        return
    for f in files:
        if f.name in names:
            path = os.path.normpath(str(f.locate()))
            if path not in seen and os.path.exists(path):
                seen.add(path)
                yield path


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

    ``None`` until the first call in this process large enough for a
    parallel kernel.
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


def start_pool() -> None:
    """What the first parallel launch settles, for a call large enough for a
    parallel kernel that a serial one serves: the user's layer choice is
    checked (and an unhonourable one raises), Numba's pool starts and the
    layer is known."""
    global _layer
    if _layer is not None:
        return
    with _lock:
        _check_layer()
        if not numba.config.DISABLE_JIT:
            _numba_parallel._launch_threads()
            _layer = numba.threading_layer()
