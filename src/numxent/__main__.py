"""``python -m numxent compile``: fill the on-disk cache with numxent's kernels.

numxent compiles a kernel on its first call and caches the machine code on
disk, so a process's first call of each kind pays seconds of compilation
unless an earlier process left the kernel in the cache. This command makes
those first calls ahead of time -- after an install or an upgrade, in a
container image's build, before a job starts many processes at once -- for
every kernel numxent serves to the given logits dtypes: hard labels (rows a
lane, tiles of narrow rows and wide rows, soft-capped logits, ``out=logits``, forward
only), soft labels, binary cross-entropy, the softmax family and the linear
cross-entropy, each in its serial and its parallel variant, and the
estimator's sparse products and L-BFGS kernels.

The cache is the one later processes use: ``NUMBA_CACHE_DIR`` when set, else
Numba's own place (``__pycache__`` beside numxent's sources, or the user's
cache directory), in the directory of this version and these sources
(``numxent._config.CACHE_KEY``). Kernels already there are loaded, not
compiled again.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from . import _validation as V

__all__ = ["DTYPES", "OPS", "compile_kernels", "main"]

#: The logits dtypes ``compile`` accepts (float16 and bfloat16 share the
#: hard-label kernels of 16-bit logits; their other ops run in float32).
DTYPES = ("float32", "float64", "float16", "bfloat16")
#: The op families, in the order they are compiled.
OPS = ("hard", "soft", "bce", "softmax", "linear", "estimator")

Call = Callable[[], object]


def _shapes(n_classes: int, serial_below: int) -> list[tuple[str, int, int]]:
    """(variant, rows, classes): one call below the serial threshold and one
    at it, so both variants of a kernel pair run."""
    return [
        ("serial", 2, n_classes),
        ("parallel", math.ceil(serial_below / n_classes), n_classes),
    ]


def _row_shapes(dt: np.dtype) -> list[tuple[str, int, int]]:
    """(name, classes, serial threshold) of each hard-label kernel shape:
    rows a lane (float32 and 16-bit), tiles of narrow rows, wide rows."""
    from . import _dispatch as D
    from . import _kernels as K

    # 16-bit logits are staged through float32: float32's crossovers
    narrow = D.NARROW_CLASSES[max(dt.itemsize, 4)]
    shapes = [("wide rows", narrow + 1, D.WIDE_SERIAL_BELOW)]
    if dt.itemsize == 8:
        return [("narrow rows", 10, D.SERIAL_BELOW), *shapes]
    return [
        ("rows a lane", min(10, K.LANE_CLASSES), D.SERIAL_BELOW),
        ("narrow rows", K.LANE_CLASSES + 8, D.SERIAL_BELOW),
        *shapes,
    ]


def _hard_calls(dt: np.dtype, rng) -> Iterator[tuple[str, Call]]:
    import numxent as nx

    for shape, n_classes, below in _row_shapes(dt):
        for variant, n, c in _shapes(n_classes, below):
            x = rng.standard_normal((n, c)).astype(dt)
            y = rng.integers(0, c, n)
            label = f"hard labels, {shape}, {variant}"

            def plain(x=x, y=y):
                nx.cross_entropy(x, y, return_grad=True)
                nx.cross_entropy(x, y)
                xw = x.copy()
                nx.cross_entropy(xw, y, return_grad=True, out=xw)

            yield label, plain
            if dt.itemsize == 2:
                continue  # z-loss and soft-capping need float32 / float64 logits

            # z-loss, and soft-capping with or without it: a variant each
            def z_loss(x=x, y=y):
                nx.cross_entropy(x, y, lse_square_scale=1e-4, return_grad=True)
                nx.cross_entropy(x, y, lse_square_scale=1e-4, return_z_loss=True)

            def capped(x=x, y=y):
                nx.cross_entropy(x, y, softcap=30.0, return_grad=True)
                nx.cross_entropy(x, y, softcap=30.0, lse_square_scale=1e-4,
                                 return_z_loss=True, return_grad=True)  # fmt: skip

            yield label + ", z-loss", z_loss
            yield label + ", soft-capped (with or without z-loss)", capped


def _soft_calls(dt: np.dtype, rng) -> Iterator[tuple[str, Call]]:
    import numxent as nx

    from . import _dispatch as D

    for variant, n, c in _shapes(10, D.SERIAL_BELOW):
        x = rng.standard_normal((n, c)).astype(dt)
        t = rng.dirichlet(np.ones(c), n).astype(dt)

        def soft(x=x, t=t):
            nx.cross_entropy(x, t, return_grad=True)
            nx.cross_entropy(x, t)
            xw = x.copy()
            nx.cross_entropy(xw, t, return_grad=True, out=xw)

        yield f"soft labels, {variant}", soft


def _bce_calls(dt: np.dtype, rng) -> Iterator[tuple[str, Call]]:
    import numxent as nx

    from . import _dispatch as D

    for variant, n, c in _shapes(10, D.SERIAL_BELOW):
        x = rng.standard_normal((n, c)).astype(dt)
        t = (rng.random((n, c)) < 0.5).astype(dt)
        pw = np.linspace(0.5, 2.0, c)
        sw = np.ones(n)

        def bce(x=x, t=t, pw=pw, sw=sw):
            f = nx.binary_cross_entropy_with_logits
            f(x, t, return_grad=True)
            f(x, t, pos_weight=pw, sample_weight=sw, reduction="none")
            f(x, t, weight=np.ones_like(x), return_grad=True)
            xw = x.copy()
            f(xw, t, return_grad=True, out=xw)

        yield f"binary cross-entropy, {variant}", bce


def _softmax_calls(dt: np.dtype, rng) -> Iterator[tuple[str, Call]]:
    import numxent as nx

    from . import _dispatch as D

    for variant, n, c in _shapes(10, D.SERIAL_BELOW):
        x = rng.standard_normal((n, c)).astype(dt)

        def rowwise(x=x):
            nx.logsumexp(x)
            nx.log_softmax(x)
            nx.softmax(x)

        yield f"logsumexp / log_softmax / softmax, {variant}", rowwise


def _linear_calls(dt: np.dtype, rng) -> Iterator[tuple[str, Call]]:
    from .linear import linear_cross_entropy

    for shape, n_classes, below in _row_shapes(dt):
        for variant, n, c in _shapes(n_classes, below):
            h = rng.standard_normal((n, 4)).astype(dt)
            w = rng.standard_normal((c, 4)).astype(dt)
            y = rng.integers(0, c, n)

            def linear(h=h, w=w, y=y):
                f = linear_cross_entropy
                f(h, w, y, return_grad=True)
                f(h, w, y)
                f(h, w, y, lse_square_scale=1e-4, return_z_loss=True, return_grad=True)
                f(h, w, y, softcap=30.0, return_grad=True)
                f(h, w, y, softcap=30.0, lse_square_scale=1e-4, return_grad=True)

            yield f"linear cross-entropy, {shape}, {variant}", linear


def _estimator_calls(dt: np.dtype, rng) -> Iterator[tuple[str, Call]]:
    """The estimator's own kernels (its objective's losses are the "hard" and
    "bce" families): the sparse products for ``dt`` data with int32 indices
    (SciPy's), and L-BFGS's products over its pairs (float64 whatever the
    data)."""
    from ._kernels.lbfgs import memory_combination, memory_products
    from ._kernels.sparse import csc_gather, csr_logits

    ip, ix = np.array([0, 1, 2], np.int32), np.array([0, 1], np.int32)
    data, w = np.ones(2, dt), np.ones((2, 3), dt)

    def sparse():
        z, acc = np.empty((2, 3), dt), np.empty(3, dt)
        csr_logits(ip, ix, data, w, np.zeros(3, dt), 0, 2, z, acc)
        csc_gather(ip, ix, data, w, np.int64(0), np.int64(2), np.empty((2, 3)),
                   np.empty(3))  # fmt: skip

    yield "estimator: sparse products", sparse
    if dt == np.float64:
        P, new, coef = np.zeros((4, 5)), np.zeros((3, 5)), np.zeros(4)

        def pairs():
            memory_products(P, new[:1], np.empty((1, 4, 1)), np.empty((4, 1)))
            memory_products(P, new, np.empty((1, 4, 3)), np.empty((4, 3)))
            memory_combination(P, coef, new[0], 1.0, np.empty(5))

        yield "estimator: L-BFGS products", pairs


_FAMILIES = {
    "hard": _hard_calls,
    "soft": _soft_calls,
    "bce": _bce_calls,
    "softmax": _softmax_calls,
    "linear": _linear_calls,
    "estimator": _estimator_calls,
}


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _calls(dtypes, ops) -> Iterator[tuple[str, Call]]:
    rng = np.random.default_rng(0)
    # float16 and bfloat16 logits share their hard-label kernels, and their
    # other ops compute in float32
    seen16 = False
    for name in dtypes:
        dt = _dtype(name)
        if dt.itemsize == 2:
            if seen16:
                continue
            seen16 = True
            if "hard" in ops:
                for label, call in _hard_calls(dt, rng):
                    yield f"{name} {label}", call
            continue
        for op in ops:
            for label, call in _FAMILIES[op](dt, rng):
                yield f"{name} {label}", call


def compile_kernels(
    dtypes=("float32", "float64"), ops=OPS, on_call=None
) -> dict[str, dict[str, int]]:
    """Run a call of every kernel numxent serves to ``dtypes`` and ``ops``,
    so that each is compiled into the on-disk cache (or loaded from it).

    ``on_call(label, seconds)`` is called after each call. Returns
    ``{kernel name: {"compiled": n, "loaded": n}}``: the signatures each
    kernel compiled and loaded from the cache in this process (Numba's
    dispatcher statistics).
    """
    for name in dtypes:
        V.check_choice(name, DTYPES, "dtype")
    for op in ops:
        V.check_choice(op, OPS, "op")
    from . import _dispatch
    from ._config import cached_kernels

    # every parallel variant now, not on its second call
    defer, _dispatch.DEFER_PARALLEL = _dispatch.DEFER_PARALLEL, False
    try:
        for label, call in _calls(dtypes, ops):
            t0 = time.perf_counter()
            call()
            if on_call is not None:
                on_call(label, time.perf_counter() - t0)
    finally:
        _dispatch.DEFER_PARALLEL = defer
    counts = {}
    for kernel in cached_kernels():
        stats = kernel.stats
        compiled = sum(stats.cache_misses.values())
        loaded = sum(stats.cache_hits.values())
        if compiled or loaded:
            counts[kernel.py_func.__name__] = {"compiled": compiled, "loaded": loaded}
    return counts


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m numxent",
        description="Commands about numxent's compiled kernels.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    c = sub.add_parser(
        "compile",
        help="compile every kernel numxent serves into the on-disk cache",
        description="Compile every kernel numxent serves to the given logits "
        "dtypes into the on-disk cache that later processes load (NUMBA_CACHE_DIR, "
        "or Numba's default place). Kernels already cached are loaded, not "
        "compiled again.",
    )
    c.add_argument(
        "--dtypes",
        type=_csv,
        default=["float32", "float64"],
        help="comma-separated logits dtypes, of " + ", ".join(DTYPES) + " "
        "(default: float32,float64)",
    )
    c.add_argument(
        "--ops",
        type=_csv,
        default=list(OPS),
        help="comma-separated op families, of " + ", ".join(OPS) + " (default: all)",
    )
    c.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in args.dtypes:
        if name not in DTYPES:
            print(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}",
                  file=sys.stderr)  # fmt: skip
            return 2
    for op in args.ops:
        if op not in OPS:
            print(f"unknown op {op!r}; choose from {', '.join(OPS)}", file=sys.stderr)
            return 2

    from . import _config

    if not _config.JIT_CACHE:
        print(
            "numxent's on-disk kernel cache is off in this process (NUMXENT_CACHE=0, "
            "or NUMBA_CACHE_DIR cannot be written): there is nothing to compile into",
            file=sys.stderr,
        )
        return 1

    def report(label: str, seconds: float) -> None:
        if not args.quiet:
            print(f"  {seconds:7.2f} s  {label}", flush=True)

    t0 = time.perf_counter()
    counts = compile_kernels(args.dtypes, args.ops, on_call=report)
    elapsed = time.perf_counter() - t0
    where = sorted({p for k in _config.cached_kernels() if (p := k.stats.cache_path)})
    compiled = sum(c["compiled"] for c in counts.values())
    loaded = sum(c["loaded"] for c in counts.values())
    if not where:
        print("no kernel could be cached (see the CacheWarning above)", file=sys.stderr)
        return 1
    print(
        f"{compiled} kernel signatures compiled, {loaded} already cached, "
        f"{len(counts)} kernels, in {elapsed:.1f} s; cache: {', '.join(where)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
