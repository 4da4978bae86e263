import numpy as np
import pytest
from hypothesis import settings

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
