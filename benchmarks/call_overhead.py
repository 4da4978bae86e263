"""Where the time of a small NumPy call goes.

Times, in one process, interleaved, best of rounds of the process's CPU time
(steadier than the wall clock on a shared machine), at one small shape
(default 64 x 10, float32):

- ``cross_entropy(x, y, return_grad=True, out=g)`` and ``cross_entropy(x, y)``
  as users call them (the common call's lean path, ``_ops.ce_plain``);
- the same through the general path (``_ops.prepare_ce``, taken by every
  call that is not the common one: weights, other dtypes or layouts, ...);
- ``_ops.ce_hard_checked``, the lean path without its type and flag tests;
- the kernel call alone (``_dispatch.ce_hard`` on prepared arguments);
- an empty compiled function taking the kernel's 13 argument types (what
  Numba's dispatch of the arguments costs);
- ``np.copyto`` of the logits, for scale.

    python benchmarks/call_overhead.py [N C [float32|float64]]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from numba import njit

import numxent as nx
from numxent import _dispatch as D
from numxent import _ops as O


@njit
def _empty13(x, y, w, w_total, sw, ignore_index, eps, reduction, rows, grad, z, cap,
             zrows):  # fmt: skip
    return -1, 1.0, 2.0


def _best(fn, number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - t0) / number)
    return best


def main(argv: list[str]) -> None:
    n, c = (int(argv[0]), int(argv[1])) if len(argv) >= 2 else (64, 10)
    dtype = np.dtype(argv[2] if len(argv) >= 3 else "float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c)).astype(dtype)
    y = rng.integers(0, c, n)
    g = np.empty_like(x)
    xr, yr = x.view(), y.view()
    xr.setflags(write=False)
    yr.setflags(write=False)
    rows = np.empty(n)
    w = O.unit_weights(c)
    kernel_args = (xr, yr, w, float(c), O.EMPTY_F64, -100, 0.0,
                   O.REDUCE_CODES["mean"], rows, g)  # fmt: skip
    plain = O.ce_plain

    def general(fn):
        def call():
            O.ce_plain = lambda *args: None
            try:
                return fn()
            finally:
                O.ce_plain = plain

        return call

    def lean_out():
        return nx.cross_entropy(x, y, return_grad=True, out=g)

    def lean_fwd():
        return nx.cross_entropy(x, y)

    cases = {
        "cross_entropy, out=": lean_out,
        "cross_entropy, forward": lean_fwd,
        "general path, out=": general(lean_out),
        "general path, forward": general(lean_fwd),
        "ce_hard_checked, out=": lambda: O.ce_hard_checked(
            xr, yr, None, -100, 0.0, "mean", g
        ),
        "kernel call (dispatch.ce_hard)": lambda: D.ce_hard(*kernel_args),
        "empty compiled call, 13 arguments": lambda: _empty13(
            *kernel_args, None, None, O.NO_ROWS
        ),
        "np.copyto": lambda: np.copyto(g, x),
    }
    for fn in cases.values():  # compile, warm up
        for _ in range(100):
            fn()
    number = max(200, int(2e6 / (n * c)))
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(9):
        for name, fn in cases.items():
            best[name] = min(best[name], _best(fn, number, 1))
    print(f"{n} x {c} {dtype.name}, best of 9 rounds of {number} calls, CPU time")
    print("| call | µs |\n|:--|--:|")
    for name, t in best.items():
        print(f"| {name} | {t * 1e6:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
