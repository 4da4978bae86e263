"""cross_entropy, int64 hard labels, mean: loss and gradient."""

import pytest

OP = "ce"


@pytest.mark.benchmark
def test_ce(bench_peer, workload, data, peer):
    bench_peer(workload, data, peer)
