"""Root pytest configuration.

- The test run's Numba cache lives in ``.numba-cache`` at the repository root
  unless ``NUMBA_CACHE_DIR`` is set: apart from the user's cache. numxent
  keys its own cache by its version and a hash of its kernel sources
  (``numxent._config.CACHE_KEY``), so an edited helper in another kernel file
  is recompiled here as it is for users.
- Doctests of optional bridges need their extras.
- ``pytest`` alone (the whole default selection) runs in one worker process
  per core when pytest-xdist is installed: most of a run on a cold cache is
  Numba compiling kernels, and each compilation uses one core. ``-n N``
  chooses the number of workers and ``-n 0`` runs in this process; a run of
  named files or tests, or of another marker selection (``-m slow``: stress
  runs that need the machine's memory to themselves), runs in this process
  unless ``-n`` is given.
"""

import importlib.util
import os
import pathlib
import sys

import pytest

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
        ("src/numxent/_lbfgs.py", "scipy"),
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


# the default selection: pyproject.toml's addopts
_DEFAULT_MARKERS = "not slow and not benchmark"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    # (before pytest-xdist's own hook, which turns "auto" into a count)
    opt = config.option
    if (
        not hasattr(config, "workerinput")  # not in a worker (nor its children)
        and "PYTEST_XDIST_WORKER" not in os.environ
        and getattr(opt, "numprocesses", False) is None  # xdist present, no -n
        and config.args_source is pytest.Config.ArgsSource.TESTPATHS
        and opt.markexpr == _DEFAULT_MARKERS
        and opt.dist == "no"
    ):
        opt.numprocesses = "auto"
        opt.dist = "worksteal"  # the compile-heavy tests run unevenly long
