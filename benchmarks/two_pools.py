"""PyTorch's OpenMP pool and numxent's Numba pool in one training step.

Part 1, the loss right after a GEMM: ``h = linear(x)`` then the loss on ``h``
(PyTorch's forward, or numxent's loss and gradient with its parallel kernel,
or with the serial one), against the same loss 10 ms after the last torch op
("idle"). Part 2, a whole step (linear, loss, backward, SGD) split into its
pieces, PyTorch's loss against the bridge's. Medians, one process,
interleaved. Run it with the environment to compare, e.g.::

    python benchmarks/two_pools.py
    GOMP_SPINCOUNT=0 python benchmarks/two_pools.py
    OMP_WAIT_POLICY=PASSIVE python benchmarks/two_pools.py

(both variables are read when PyTorch loads its OpenMP runtime: set them
before the process starts).
"""

from __future__ import annotations

import statistics
import sys
import time

import numba
import numpy as np
import torch

import numxent as nx
import numxent.torch as nt
from numxent import _dispatch as D

F = torch.nn.functional
P = time.perf_counter
SHAPES = [(1024, 100), (4096, 100), (1024, 1000), (4096, 1000)]


def after_gemm(n: int, c: int, rounds: int) -> str:
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, c)
    x, y = torch.randn(n, 256), torch.randint(0, c, (n,))
    yn, g = y.numpy(), np.empty((n, c), np.float32)
    thresholds = (D.SERIAL_BELOW, D.WIDE_SERIAL_BELOW)

    def numxent(serial: bool):
        def loss(h):
            if serial:
                D.SERIAL_BELOW = D.WIDE_SERIAL_BELOW = 1 << 62
            try:
                nx.cross_entropy(h.detach().numpy(), yn, out=g, return_grad=True)
            finally:
                D.SERIAL_BELOW, D.WIDE_SERIAL_BELOW = thresholds

        return loss

    def torch_forward(h):
        with torch.no_grad():
            F.cross_entropy(h, y)

    losses = {"PyTorch forward": torch_forward, "numxent": numxent(False),
              "numxent serial": numxent(True)}  # fmt: skip
    after = {k: [] for k in losses}
    idle = {k: [] for k in losses}
    for fn in losses.values():
        for _ in range(5):
            fn(lin(x))
    for _ in range(rounds):
        for name, fn in losses.items():
            for _ in range(5):
                h = lin(x)
                t0 = P()
                fn(h)
                after[name].append(P() - t0)
            h = h.detach()
            time.sleep(0.01)
            for _ in range(3):
                t0 = P()
                fn(h)
                idle[name].append(P() - t0)
    med = statistics.median
    cells = [f"{med(after[k]) * 1e6:.0f} / {med(idle[k]) * 1e6:.0f}" for k in losses]
    return f"| {n} × {c} | " + " | ".join(cells) + " |"


def step_split(n: int, c: int, rounds: int) -> list[str]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, c)
    x, y = torch.randn(n, 256), torch.randint(0, c, (n,))
    opt = torch.optim.SGD(lin.parameters(), lr=1e-3)
    losses = {"PyTorch": F.cross_entropy, "numxent": nt.cross_entropy}
    acc: dict[str, list] = {k: [] for k in losses}

    def step(fn, out):
        t0 = P()
        opt.zero_grad(set_to_none=True)
        h = lin(x)
        t1 = P()
        loss = fn(h, y)
        t2 = P()
        loss.backward()
        t3 = P()
        opt.step()
        t4 = P()
        out.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0))

    for fn in losses.values():
        for _ in range(5):
            step(fn, [])
    for _ in range(rounds):
        for name, fn in losses.items():
            for _ in range(3):
                step(fn, acc[name])
    rows = []
    for name in losses:
        med = [statistics.median(v) * 1e3 for v in zip(*acc[name], strict=True)]
        rows.append(
            f"| {n} × {c} | {name} | " + " | ".join(f"{m:.2f}" for m in med) + " |"
        )
    return rows


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    print(f"{threads} threads (torch and numba); µs, after a GEMM / idle (medians)\n")
    print("| N × C | PyTorch forward | numxent, parallel | numxent, serial |")
    print("|:--|--:|--:|--:|")
    for n, c in SHAPES:
        print(after_gemm(n, c, 20), flush=True)
    print("\nA step, ms (medians): linear, loss, backward, SGD, the step\n")
    print("| N × C | loss | linear | loss | backward | SGD | step |")
    print("|:--|:--|--:|--:|--:|--:|--:|")
    for n, c in SHAPES:
        for row in step_split(n, c, 10):
            print(row, flush=True)


if __name__ == "__main__":
    main()
