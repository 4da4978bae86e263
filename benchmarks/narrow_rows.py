"""Narrow float32 rows: the lane kernel against the tile kernel, per class count.

Both kernels take the same arguments, so for each C this times the serial
kernel of each on the same cache-resident float32 logits (about 40,000
logits, one thread), loss and gradient and forward only, interleaved, best of
rounds of the process's CPU time, and prints ns a logit with a wide-row
reference (the row-at-a-time kernel at 1,024 classes). ``LANE_CLASSES`` (the
widest rows the dispatch sends to the lane kernel) should sit where the lane
kernel stops being faster.

    python benchmarks/narrow_rows.py [C,C,...]
"""

from __future__ import annotations

import sys
import time

import numba
import numpy as np

from numxent import _kernels as K


def _best(calls: dict, number: int, rounds: int) -> dict:
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, (fn, args) in calls.items():
            t0 = time.process_time()
            for _ in range(number):
                fn(*args)
            best[name] = min(best[name], (time.process_time() - t0) / number)
    return best


def _args(n: int, c: int, rng, grad: bool):
    x = rng.standard_normal((n, c)).astype(np.float32)
    x.setflags(write=False)
    y = rng.integers(0, c, n)
    g = np.empty((n if grad else 0, c), np.float32)
    return (x, y, np.ones(c), float(c), np.zeros(0), -100, 0.0, K.REDUCE_MEAN,
            np.empty(n), g, None, None, np.zeros(0))  # fmt: skip


def main(argv: list[str]) -> None:
    widths = [int(c) for c in argv[0].split(",")] if argv else [2, 4, 10, 16, 24, 32]
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    wide = _args(40, 1024, rng, True)
    print(f"float32, one thread, serial kernels, ns a logit (LANE_CLASSES = "
          f"{K.LANE_CLASSES}); wide rows, 40 x 1,024: ", end="")  # fmt: skip
    b = _best({"wide": (K.ce_hard_ser, wide)}, 20, 15)
    print(f"{b['wide'] / (40 * 1024) * 1e9:.2f}")
    print("| C | lanes | tile | lanes, forward | tile, forward |")
    print("|--:|--:|--:|--:|--:|")
    for c in widths:
        n = max(40_000 // c, 1)
        g, f = _args(n, c, rng, True), _args(n, c, rng, False)
        calls = {
            "lanes": (K.ce_lanes_ser, g),
            "tile": (K.ce_narrow_ser, g),
            "lanes_fwd": (K.ce_lanes_ser, f),
            "tile_fwd": (K.ce_narrow_ser, f),
        }
        b = _best(calls, 20, 15)
        cells = " | ".join(f"{b[k] / (n * c) * 1e9:.2f}" for k in calls)
        print(f"| {c} | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1:])
