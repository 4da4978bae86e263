"""Timing: warm up, calibrate, then take ``repeat`` samples per peer.

Every peer is called untimed first (Numba and torch.compile compile there,
pages get touched, its thread pool wakes), then timed with
``time.perf_counter`` over ``number`` back-to-back calls, ``number`` chosen
so one sample lasts at least ``min_time``. A peer stops taking samples once
it has spent ``budget`` seconds (it always keeps at least one).

Two orders, both in one process:

``block`` (default)
    each peer's warm-up and samples back to back (A A A, B B B, ...). The
    peers bring their own thread pools (Numba's TBB or OpenMP, PyTorch's and
    scikit-learn's OpenMP): an OpenMP pool spins for milliseconds after each
    parallel region, and on a 2-core machine that steals the next peer's
    cores. In block order only the untimed warm-up meets the previous peer's
    spinning threads, and each peer is built just before its turn and freed
    after it, so only one peer's buffers are in memory at a time.
``interleaved``
    round-robin (A B C, A B C, ...), so that a drift in machine load hits
    every peer alike; each sample then starts after another library's call
    and can pay for its pool's spinning. Every peer's buffers are alive at
    once.

:func:`time_workload` does it for one workload's peers; the report's process
and the THP worker both use it. The pytest-benchmark suite (``benchmarks/``)
builds each peer the same way and calls :func:`warm_up` for its calls per
sample, then lets pytest-benchmark take the samples.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable

from ._peers import PeerUnavailable, make_peer
from ._workloads import Workload, make_data

__all__ = ["measure", "summarise", "time_workload", "warm_up"]


def _time_calls(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _calibrate(fn: Callable[[], object], t_one: float, min_time: float) -> int:
    """Calls per sample so one sample lasts at least ``min_time`` (like timeit)."""
    if t_one >= min_time:
        return 1
    number = max(1, math.ceil(min_time / max(t_one, 1e-9) / 4))
    while number < 10**7:
        t = _time_calls(fn, number) * number
        if t >= min_time / 2:
            return max(1, math.ceil(number * min_time / t))
        number *= 4
    return number


def warm_up(fn: Callable[[], object], min_time: float) -> tuple[int, float]:
    """Call ``fn`` untimed (compilation and first touch stay outside the
    timings), then time one call; ``(calls per sample, seconds of a call)``."""
    fn()
    t = _time_calls(fn, 1)
    if t < min_time:  # cheap: a second look, in case the first stalled
        t = min(t, _time_calls(fn, 1))
    return _calibrate(fn, t, min_time), t


def summarise(samples: list[float], number: int) -> dict:
    """min / median / mean seconds per call of a peer's samples.

    >>> summarise([3.0, 1.0, 2.0], 4)["median"]
    2.0
    """
    return {
        "min": min(samples),
        "median": statistics.median(samples),
        "mean": statistics.fmean(samples),
        "samples": len(samples),
        "number": number,
    }


def measure(
    fns: dict[str, Callable[[], object]],
    repeat: int = 5,
    min_time: float = 0.01,
    budget: float = 20.0,
    on_step: Callable[[str, float], None] | None = None,
    order: str = "block",
    settle: float = 0.02,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Time each callable; returns ``(stats by peer, errors by peer)``.

    A peer that raises is dropped from the timings and reported in ``errors``
    (the message), never aborting the others. ``on_step(message, advance)``
    reports progress: ``repeat + 1`` units in all. ``settle`` seconds of sleep
    before each peer's warm-up (and, interleaved, before each sample) let the
    previous peer's spinning threads go idle.
    """
    if order not in ("block", "interleaved"):
        raise ValueError(f"order must be 'block' or 'interleaved', not {order!r}")
    numbers: dict[str, int] = {}
    spent: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    unit = 1 / max(len(fns), 1)
    step = on_step or (lambda message, advance: None)

    def prepare(name: str) -> None:
        time.sleep(settle)
        try:
            numbers[name], t = warm_up(fns[name], min_time)
        except Exception as exc:  # a peer's failure is a result, not a crash
            errors[name] = f"{type(exc).__name__}: {exc}"
        else:
            spent[name] = 3 * t
            samples[name] = []
        step(f"{name} warm-up" + (" failed" if name in errors else ""), unit)

    def sample(name: str) -> None:
        if name not in samples or (samples[name] and spent[name] > budget):
            return
        try:
            t = _time_calls(fns[name], numbers[name])
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            del samples[name]
            return
        samples[name].append(t)
        spent[name] += t * numbers[name]

    gc_was_enabled = gc.isenabled()
    try:
        if order == "block":
            for name in fns:
                gc.enable()
                prepare(name)
                gc.collect()  # outside the timed calls: the previous garbage
                gc.disable()
                for r in range(repeat):
                    sample(name)
                    step(f"{name} {r + 1}/{repeat}", unit)
        else:
            for name in fns:
                prepare(name)
            gc.disable()
            for r in range(repeat):
                for name in fns:
                    time.sleep(settle)
                    sample(name)
                gc.collect()
                step(f"round {r + 1}/{repeat}", 1.0)
    finally:
        if gc_was_enabled:
            gc.enable()

    stats = {name: summarise(s, numbers[name]) for name, s in samples.items() if s}
    return stats, errors


def time_workload(
    w: Workload, peer_ids: list[str], threads: int, s: dict, on_step=None
) -> tuple[dict[str, dict], dict[str, str], dict[str, str]]:
    """Time ``peer_ids`` that run ``w.op`` on the workload's data, with the
    ``repeat``, ``min_time``, ``budget``, ``order`` and ``seed`` of settings
    ``s``; ``(stats, unavailable, errors)`` by peer id, the last two reasons.
    A peer whose factory made a compiling first call has its seconds in its
    stats as ``compile_s`` (never in the samples)."""
    # Frozen (unless a caller froze), what lives now is skipped by the
    # collections between peers (a full one took 0.28 s with torch and JAX)
    if ours := gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    try:
        data = make_data(w, seed=s["seed"])
        unavailable: dict[str, str] = {}
        kw = dict(repeat=s["repeat"], min_time=s["min_time"], budget=s["budget"],
                  order=s["order"])  # fmt: skip

        def build(pid: str, data: dict):
            try:
                return make_peer(pid, w, data, threads)
            except PeerUnavailable as exc:
                unavailable[pid] = str(exc)
                return None

        if s["order"] == "block":
            # One peer at a time: each peer's buffers (its gradient, a device copy
            # of the logits, a compiled call's outputs) are freed before the next
            # one is built, so the peak memory is the largest peer's, not the sum
            # of all (at 8192 x 32000 float64: 24 GiB, against 12.6 GiB for JAX
            # alone). Each peer's samples were back to back anyway.
            stats, errors = {}, {}
            n = max(len(peer_ids), 1)
            sub = None if on_step is None else (lambda m, a: on_step(m, a / n))
            for pid in peer_ids:
                fn = build(pid, data)
                if fn is None:
                    if on_step is not None:
                        on_step(f"{pid} unavailable", 1.0 / n)
                    continue
                st, er = measure({pid: fn}, on_step=sub, **kw)
                _compile_time(st, pid, fn)
                stats.update(st)
                errors.update(er)
                del fn, st
                gc.collect()
        else:  # round-robin: every peer alive at once
            fns = {pid: fn for pid in peer_ids if (fn := build(pid, data)) is not None}
            stats, errors = measure(fns, on_step=on_step, **kw)
            for pid, fn in fns.items():
                _compile_time(stats, pid, fn)
            del fns
        del data
        gc.collect()
        return stats, unavailable, errors
    finally:
        if ours:
            gc.unfreeze()


def _compile_time(stats: dict, pid: str, fn) -> None:
    """A compiling first call, made by the peer's factory, into its stats."""
    compile_s = getattr(fn, "compile_s", None)
    if compile_s is not None and pid in stats:
        stats[pid]["compile_s"] = compile_s
