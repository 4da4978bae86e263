"""binary_cross_entropy_with_logits, {0, 1} targets, mean: loss only."""

import pytest

OP = "bce_fwd"


@pytest.mark.benchmark
def test_bce_fwd(bench_peer, workload, data, peer):
    bench_peer(workload, data, peer)
