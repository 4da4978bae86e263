"""Root pytest configuration.

- The test run's Numba cache lives in ``.numba-cache`` at the repository root
  unless ``NUMBA_CACHE_DIR`` is set: apart from the user's cache. numxent
  keys its own cache by its version and a hash of its kernel sources
  (``numxent._config.CACHE_KEY``), so an edited helper in another kernel file
  is recompiled here as it is for users.
- Doctests of optional bridges need their extras.
"""

import importlib.util
import os
import pathlib
import sys

if "numba" not in sys.modules:  # Numba reads its configuration on import
    os.environ.setdefault(
        "NUMBA_CACHE_DIR", str(pathlib.Path(__file__).parent / ".numba-cache")
    )

collect_ignore = [
    path
    for path, module in (
        ("src/numxent/torch.py", "torch"),
        ("src/numxent/_torch_linear.py", "torch"),
        ("src/numxent/_torch_ops.py", "torch"),
        ("src/numxent/_torch_serve.py", "torch"),
        ("src/numxent/_torch_vocab.py", "torch"),
        ("src/numxent/sklearn.py", "sklearn"),
        ("src/numxent/bench/_torch_worker.py", "torch"),
        ("docs/torch.md", "torch"),
        ("docs/precision.md", "ml_dtypes"),
        ("docs/sklearn.md", "sklearn"),
        ("src/numxent/dask.py", "dask"),
        ("src/numxent/_dask_fit.py", "sklearn"),
        ("src/numxent/_dask_fit.py", "dask"),
        ("docs/dask.md", "dask"),
    )
    if importlib.util.find_spec(module) is None
]
