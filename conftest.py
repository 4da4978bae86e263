"""Root pytest configuration.

- Numba's on-disk cache for the test run lives in a directory keyed by a hash
  of the kernel sources. Numba re-validates a cached kernel only against its
  own file's timestamp, so a change to a helper in another kernel file would
  otherwise leave a development checkout running stale compiled code.
- Doctests of optional bridges need their extras.
"""

import hashlib
import importlib.util
import os
import pathlib

_SRC = pathlib.Path(__file__).parent / "src" / "numxent"


def _kernel_source_hash() -> str:
    h = hashlib.sha256()
    files = sorted(_SRC.glob("_kernels*/**/*.py")) + sorted(_SRC.glob("_kernels*.py"))
    for path in files + [_SRC / "_config.py"]:
        if path.is_file():
            h.update(path.relative_to(_SRC).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


if "numba" not in __import__("sys").modules:
    _base = os.environ.get("NUMBA_CACHE_DIR") or str(
        pathlib.Path(__file__).parent / ".numba-cache"
    )
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, _kernel_source_hash())

collect_ignore = [
    path
    for path, module in (
        ("src/numxent/torch.py", "torch"),
        ("src/numxent/_torch_linear.py", "torch"),
        ("src/numxent/_torch_ops.py", "torch"),
        ("src/numxent/_torch_serve.py", "torch"),
        ("src/numxent/sklearn.py", "sklearn"),
        ("src/numxent/bench/_torch_worker.py", "torch"),
        ("src/numxent/bench/sklearn_fit.py", "sklearn"),
        ("docs/torch.md", "torch"),
        ("docs/precision.md", "ml_dtypes"),
        ("docs/sklearn.md", "sklearn"),
        ("src/numxent/dask.py", "dask"),
        ("src/numxent/_dask_fit.py", "sklearn"),
        ("src/numxent/_dask_fit.py", "dask"),
        ("src/numxent/bench/dask_scale.py", "distributed"),
        ("docs/dask.md", "dask"),
    )
    if importlib.util.find_spec(module) is None
]
