"""binary_cross_entropy_with_logits, {0, 1} targets, mean: loss and gradient."""

import pytest

OP = "bce"


@pytest.mark.benchmark
def test_bce(bench_peer, workload, data, peer):
    bench_peer(workload, data, peer)
