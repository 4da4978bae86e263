"""numxent.torch under DistributedDataParallel (2 gloo processes, 127.0.0.1).

Each rank trains on its own shard; DDP averages the ranks' gradients, so a
per-rank ``reduction="mean"`` gives the gradient of the mean of the ranks'
means. The references are computed in this process without DDP, from
PyTorch's loss: the mean of the shards' ``F.cross_entropy`` (plain DDP), and
the global mean over every kept token of both shards (the recipe of
docs/torch.md: ``reduction="sum"`` divided by an all-reduced token count).
The shards have different numbers of ignored tokens, so the two differ.
"""

from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
F = torch.nn.functional

WORLD = 2
STEPS = 4
BATCH, FEATURES, CLASSES = 16, 6, 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 12), torch.nn.Tanh(), torch.nn.Linear(12, CLASSES)
    )


def _shards():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(WORLD, BATCH, FEATURES, generator=gen)
    y = torch.randint(0, CLASSES, (WORLD, BATCH), generator=gen)
    y[0, :3] = -100  # rank 0 keeps 13 tokens, rank 1 keeps 10
    y[1, 5:11] = -100
    return x, y


def _train(loss_of, steps=STEPS):
    """A model after ``steps`` SGD steps on ``loss_of(model)``."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
    return model


def _worker(rank, port, path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import numxent.torch as nt

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        x, y = _shards()
        x, y = x[rank], y[rank]
        results = {}
        for recipe in ("per_rank_mean", "global_mean"):
            model = _model()
            ddp = DDP(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.3)
            for _ in range(STEPS):
                opt.zero_grad()
                out = ddp(x)
                if recipe == "per_rank_mean":
                    loss = nt.cross_entropy(out, y)
                else:
                    n = (y != -100).sum()
                    dist.all_reduce(n)  # kept tokens on every rank
                    # DDP divides the summed gradients by the world size
                    loss = nt.cross_entropy(out, y, reduction="sum") * WORLD / n
                loss.backward()
                opt.step()
            served = type(nt.cross_entropy(out, y).grad_fn).__name__
            results[recipe] = ([p.detach() for p in model.parameters()], served)
        if rank == 0:
            torch.save(results, path)
    finally:
        dist.destroy_process_group()
    # Leave without Python's teardown: freeing the DDP model at the worker's
    # return freed the last reference to the gloo process group, whose
    # destructor (holding the GIL) joins a gloo thread that was waiting for
    # the GIL to free a finished all-reduce -- PyTorch 2.13 hung there for
    # minutes once in a full suite run. The results are already on disk.
    os._exit(0)


def test_ddp_gloo_two_ranks_matches_pytorch(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "params.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    results = torch.load(out)
    x, y = _shards()

    def per_rank_mean(model):
        return sum(F.cross_entropy(model(x[r]), y[r]) for r in range(WORLD)) / WORLD

    def global_mean(model):
        return F.cross_entropy(model(x.reshape(-1, FEATURES)), y.reshape(-1))

    for recipe, ref_loss in [
        ("per_rank_mean", per_rank_mean),
        ("global_mean", global_mean),
    ]:
        params, served = results[recipe]
        assert served == "_CrossEntropyFunctionBackward"
        want = [p.detach() for p in _train(ref_loss).parameters()]
        for got, exp in zip(params, want, strict=True):
            torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-6)
    # the two recipes train differently when the ranks keep unequal counts
    assert not torch.allclose(
        results["per_rank_mean"][0][0], results["global_mean"][0][0]
    )
