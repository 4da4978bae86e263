"""Non-temporal stores on a standalone copy / scale loop, and the copy floor.

Times, in one process, interleaved, best of 7: ``np.copyto`` (one thread),
the report's two parallel copies (``numxent.bench._floor``: ordinary and
non-temporal stores), a parallel scale loop ``dst = 2 * src`` with ordinary
stores, the same loop computing 1,024 elements at a time into an L1 scratch
and streaming them out with ``stream_copy``, and numxent's loss + gradient
(``out=``) on the shape. Ratios are to ``np.copyto``.

    python benchmarks/stream_stores.py
"""

from __future__ import annotations

import time

import numba
import numpy as np
from numba import njit, prange

import numxent as nx
from numxent._kernels._intrinsics import nt_fence
from numxent._kernels._vecmath import stream_copy
from numxent.bench._floor import copy_plain, copy_stream

_TASK = 8192
_SUB = 1024


@njit(parallel=True, error_model="numpy")
def scale_plain(src, dst, a):
    n = src.shape[0]
    for b in prange((n + _TASK - 1) // _TASK):
        lo = b * _TASK
        for i in range(lo, min(lo + _TASK, n)):
            dst[i] = src[i] * a


@njit(parallel=True, error_model="numpy")
def scale_stream(src, dst, a):
    n = src.shape[0]
    for b in prange((n + _TASK - 1) // _TASK):
        lo = b * _TASK
        m = min(_TASK, n - lo)
        buf = np.empty(_SUB, src.dtype)
        for j in range(0, m, _SUB):
            k = min(_SUB, m - j)
            for i in range(k):
                buf[i] = src[lo + j + i] * a
            stream_copy(dst, lo + j, buf, 0, k)
        nt_fence()


def one_shape(n: int, c: int, dtype: str, repeat: int = 7) -> str:
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal((n, c), dtype=dtype)
    dst = np.empty_like(x)
    g = np.empty_like(x)
    xf, df = x.reshape(-1), dst.reshape(-1)
    two = x.dtype.type(2)
    if c == 100 and n >= 1_000_000:
        t = (rng.random((n, c), dtype=np.float32) < 0.5).astype(dtype)
        kernel = ("bce", lambda: nx.binary_cross_entropy_with_logits(
            x, t, return_grad=True, out=g))  # fmt: skip
    else:
        y = rng.integers(0, c, n)
        kernel = ("ce", lambda: nx.cross_entropy(x, y, return_grad=True, out=g))
    fns = {
        "copyto": lambda: np.copyto(dst, x),
        "copy_plain": lambda: copy_plain(x, dst),
        "copy_stream": lambda: copy_stream(x, dst),
        "scale_plain": lambda: scale_plain(xf, df, two),
        "scale_stream": lambda: scale_stream(xf, df, two),
        kernel[0]: kernel[1],
    }
    for f in fns.values():
        f()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    cp = best["copyto"]
    floor = min(best["copy_plain"], best["copy_stream"])
    ratios = " ".join(f"{k} {v / cp:.2f}x" for k, v in best.items() if k != "copyto")
    return (
        f"{n}x{c} {dtype}: copyto {cp * 1e3:.2f} ms | {ratios} | floor/copyto "
        f"{floor / cp:.2f}, {kernel[0]}/floor {best[kernel[0]] / floor:.2f}"
    )


def main() -> None:
    print(f"numba threads: {numba.get_num_threads()}")
    for n, c, dtype in [(1_000_000, 10, "float32"), (262_144, 100, "float32"),
                        (8_192, 32_000, "float32"), (1_000_000, 100, "float32"),
                        (262_144, 100, "float64")]:  # fmt: skip
        print(one_shape(n, c, dtype), flush=True)


if __name__ == "__main__":
    main()
