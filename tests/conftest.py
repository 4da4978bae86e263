import numpy as np
import pytest
from hypothesis import settings
from numba import types as numba_types
from numba.core import event as numba_event

# Hypothesis budgets. "numxent" (the default) keeps a full run fast; "slow"
# (``--hypothesis-profile=slow``) gives every property and fuzz test many
# more examples. ``pytest -m slow`` also runs the fuzz tests' slow-marked
# twins (tests/test_fuzz.py). Sizes are drawn per example, so no deadline.
settings.register_profile("numxent", max_examples=12, deadline=None)
settings.register_profile("slow", max_examples=500, deadline=None)
settings.load_profile("numxent")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# A guard over every compilation the run makes (the suite's first run on a
# fresh checkout compiles every kernel: CI's does): no numxent function may be
# compiled for a literal argument. A literal (``helper(..., 0, ...)`` in a
# serial driver, where the parallel one passes an int64) types the call apart
# from the other callers', so the helper is compiled twice -- seconds of a
# cold start each time, and the parallel kernel compiled later does not reuse
# the serial kernel's cached helper. Pass ``np.int64(0)`` instead.
_literal_compiles: list[str] = []


class _LiteralGuard(numba_event.Listener):
    def on_start(self, event):
        pass

    def on_end(self, event):
        dispatcher = event.data["dispatcher"]
        func = dispatcher.py_func
        args = event.data["args"]
        if func.__module__.startswith("numxent.") and any(
            isinstance(a, numba_types.Literal) for a in args
        ):
            _literal_compiles.append(f"{func.__module__}.{func.__qualname__}{args}")


numba_event.register("numba:compile", _LiteralGuard())


@pytest.fixture(autouse=True)
def _no_literal_compiles():
    seen = len(_literal_compiles)
    yield
    new = _literal_compiles[seen:]
    if new:
        pytest.fail("compiled for a literal argument: " + "; ".join(new))
