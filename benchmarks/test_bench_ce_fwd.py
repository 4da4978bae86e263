"""cross_entropy, int64 hard labels, mean: loss only (forward)."""

import pytest

OP = "ce_fwd"


@pytest.mark.benchmark
def test_ce_fwd(bench_peer, workload, data, peer):
    bench_peer(workload, data, peer)
