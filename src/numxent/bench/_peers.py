"""The peers a workload is timed with, shared by the report and pytest-benchmark.

Each peer is a factory: given a workload, its data and the thread count it
returns a zero-argument callable that does one call's work (inputs and any
reusable buffers bound in advance), or raises :class:`PeerUnavailable` with the
reason (library not installed, op not supported). Optional libraries are
imported inside the factories, so importing this module costs nothing.

``np.copyto(dst, logits)`` is the roofline: it moves the same bytes as a fused
loss+gradient pass that reads the logits once and writes the gradient once.
It is one thread; the copy floor (:data:`FLOOR`) is the same copy on every
thread (``_floor``), with ordinary and with non-temporal stores.

A peer whose first call compiles (JAX jit, torch.compile) makes that call in
its factory and records its seconds as the callable's ``compile_s``
attribute: the report shows it apart, and the timings never include it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._workloads import Workload

__all__ = [
    "FLOOR",
    "PEERS",
    "REFERENCE",
    "Peer",
    "PeerUnavailable",
    "make_peer",
    "peers_for",
]

Fn = Callable[[], object]


class PeerUnavailable(Exception):
    """A peer cannot run here; the message says why (shown in the report)."""


@dataclass(frozen=True)
class Peer:
    id: str
    label: str  # short column header
    library: str  # colour family in the plot
    description: str
    ops: tuple[str, ...]
    factory: Callable[[Workload, dict, int], Fn]
    #: "main": timed in the report's process; "thp": in the THP worker process.
    where: str = "main"
    #: seconds of set-up per workload (torch.compile compiles each shape):
    #: left out of ``--quick`` and the pytest suite unless named explicitly
    slow_setup: bool = False


def _copyto(w: Workload, d: dict, threads: int) -> Fn:
    x = d["x"]
    dst = np.empty_like(x)
    np.copyto(dst, x)  # touch the pages once: a reused buffer, like out=
    return lambda: np.copyto(dst, x)


def _copy_floor(stream: bool):
    def factory(w: Workload, d: dict, threads: int) -> Fn:
        from . import _floor

        x = d["x"]
        dst = np.empty_like(x)
        f = _floor.copy_stream if stream else _floor.copy_plain
        f(x, dst)  # compiles (or loads from the cache) and touches the pages
        return lambda: f(x, dst)

    return factory


def _compiled_first_call(fn: Fn) -> Fn:
    """Make ``fn``'s first (compiling) call now; its seconds as ``compile_s``."""
    t0 = time.perf_counter()
    fn()
    fn.compile_s = time.perf_counter() - t0  # type: ignore[attr-defined]
    return fn


def _numxent(grad: bool, out: bool = False):
    def factory(w: Workload, d: dict, threads: int) -> Fn:
        import numxent as nx

        x, y = d["x"], d["y"]
        f = nx.cross_entropy if w.op.startswith("ce") else (
            nx.binary_cross_entropy_with_logits)  # fmt: skip
        if not grad:
            return lambda: f(x, y)
        if out:
            buf = np.empty_like(x)
            return lambda: f(x, y, return_grad=True, out=buf)
        return lambda: f(x, y, return_grad=True)

    return factory


# NumPy: the straightforward log-softmax a NumPy training loop would write
def _numpy_ce(x: np.ndarray, y: np.ndarray, rows: np.ndarray, grad: bool):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) - z[rows, y])
    if not grad:
        return loss
    g = e / s
    g[rows, y] -= 1
    g /= x.shape[0]
    return loss, g


def _numpy_bce(x: np.ndarray, t: np.ndarray, grad: bool):
    e = np.exp(-np.abs(x))
    loss = np.mean(np.maximum(x, 0) - x * t + np.log1p(e))
    if not grad:
        return loss
    g = np.where(x >= 0, 1, e) / (1 + e)  # sigmoid(x) without overflow
    g -= t
    g /= x.size
    return loss, g


def _numpy(grad: bool):
    def factory(w: Workload, d: dict, threads: int) -> Fn:
        x, y = d["x"], d["y"]
        if w.op.startswith("ce"):
            rows = np.arange(x.shape[0])
            return lambda: _numpy_ce(x, y, rows, grad)
        return lambda: _numpy_bce(x, y, grad)

    return factory


def import_torch():
    try:
        import torch
    except ImportError as exc:  # also: a broken install
        raise PeerUnavailable(f"torch is not importable ({exc})") from None
    return torch


def _torch(grad: bool, compile: bool = False):
    """PyTorch eager, or ``torch.compile``d with ``compile``."""

    def factory(w: Workload, d: dict, threads: int) -> Fn:
        torch = import_torch()
        F = torch.nn.functional
        torch.set_num_threads(threads)  # pinned to numba's thread count
        f = F.cross_entropy if w.op.startswith("ce") else (
            F.binary_cross_entropy_with_logits)  # fmt: skip
        if compile:
            # a fresh compile per workload: past 8 shapes dynamo would silently
            # fall back to eager and the column would time eager PyTorch
            torch._dynamo.reset()
            eager = f
            f = torch.compile(lambda x, y: eager(x, y), dynamic=False)
        x = torch.from_numpy(d["x"])  # shares the NumPy buffer: no copy timed
        y = torch.from_numpy(d["y"])
        if not grad:
            fwd: Fn = lambda: f(x, y)  # noqa: E731
            return _compiled_first_call(fwd) if compile else fwd
        x = x.detach().requires_grad_(True)

        def fwd_bwd():
            x.grad = None  # what optimizer.zero_grad() does: a fresh grad each step
            loss = f(x, y)
            loss.backward()
            return loss, x.grad

        return _compiled_first_call(fwd_bwd) if compile else fwd_bwd

    return factory


def _sklearn(w: Workload, d: dict, threads: int) -> Fn:
    try:
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
    except ImportError as exc:
        raise PeerUnavailable(f"scikit-learn is not importable ({exc})") from None
    x, y = d["x"], d["y"]
    if w.op == "ce":
        loss = HalfMultinomialLoss(n_classes=w.c)
        raw = x
        y_true = y.astype(x.dtype)  # its Cython signature wants raw's dtype
    else:
        # binary loss on 1-D arrays: every (sample, class) is one prediction
        loss = HalfBinomialLoss()
        raw, y_true = x.reshape(-1), y.reshape(-1)
    loss_out = np.empty(raw.shape[0], dtype=x.dtype)
    grad_out = np.empty_like(raw)

    def run():
        per_sample, g = loss.loss_gradient(
            y_true=y_true, raw_prediction=raw, loss_out=loss_out,
            gradient_out=grad_out, n_threads=threads,
        )  # fmt: skip
        return per_sample.mean(), g

    return run


def _jax(grad: bool):
    def factory(w: Workload, d: dict, threads: int) -> Fn:
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as exc:
            raise PeerUnavailable(f"jax is not importable ({exc})") from None
        if w.dtype == "float64":
            jax.config.update("jax_enable_x64", True)

        def loss(x, y):
            if w.op.startswith("ce"):
                logp = jax.nn.log_softmax(x, axis=-1)
                return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
            return jnp.mean(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))

        f = jax.jit(jax.value_and_grad(loss) if grad else loss)
        x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])
        if x.dtype != d["x"].dtype:
            raise PeerUnavailable(f"jax computes {d['x'].dtype} as {x.dtype}")
        return _compiled_first_call(lambda: jax.block_until_ready(f(x, y)))

    return factory


_GRAD = ("ce", "bce")
_FWD = ("ce_fwd", "bce_fwd")

PEERS: dict[str, Peer] = {
    p.id: p
    for p in [
        Peer(
            "copyto", "np.copyto", "roofline",
            "np.copyto(dst, logits) into a reused buffer: the same bytes a fused "
            "pass moves (the roofline)",
            _GRAD + _FWD, _copyto,
        ),
        Peer(
            "copy_par", "parallel copy", "roofline",
            "the same copy on every thread (a Numba prange loop, 64 KiB a task), "
            "ordinary stores: each destination line is read before it is written",
            _GRAD + _FWD, _copy_floor(stream=False),
        ),
        Peer(
            "copy_par_nt", "parallel NT copy", "roofline",
            "the same copy on every thread with non-temporal stores (no "
            "read-for-ownership, like memcpy's for large arrays)",
            _GRAD + _FWD, _copy_floor(stream=True),
        ),
        Peer(
            "numxent_out", "numxent out=", "numxent",
            "numxent, return_grad=True, out= a reused gradient buffer",
            _GRAD, _numxent(grad=True, out=True),
        ),
        Peer(
            "numxent_alloc", "numxent alloc", "numxent",
            "numxent, return_grad=True, gradient allocated by the call",
            _GRAD, _numxent(grad=True),
        ),
        Peer(
            "numxent_fwd", "numxent fwd", "numxent",
            "numxent, return_grad=False (loss only)",
            _FWD, _numxent(grad=False),
        ),
        Peer(
            "numpy_ref", "NumPy", "numpy",
            "straightforward NumPy: max-shifted exp, sum, log, gradient "
            "(allocates its temporaries)",
            _GRAD, _numpy(grad=True),
        ),
        Peer(
            "numpy_ref_fwd", "NumPy fwd", "numpy",
            "straightforward NumPy loss only",
            _FWD, _numpy(grad=False),
        ),
        Peer(
            "torch_fwd_bwd", "PyTorch", "torch",
            "PyTorch eager: F.cross_entropy / F.binary_cross_entropy_with_logits "
            "on a requires_grad tensor, then .backward() (grad reset to None)",
            _GRAD, _torch(grad=True),
        ),
        Peer(
            "torch_fwd", "PyTorch fwd", "torch",
            "PyTorch eager forward only, tensor without requires_grad",
            _FWD, _torch(grad=False),
        ),
        Peer(
            "torch_thp_fwd_bwd", "PyTorch THP", "torch_thp",
            "PyTorch eager forward+backward with THP_MEM_ALLOC_ENABLE=1 (its "
            "allocator asks for transparent huge pages), timed in a subprocess",
            _GRAD, _torch(grad=True), where="thp",
        ),
        Peer(
            "torch_thp_fwd", "PyTorch THP fwd", "torch_thp",
            "PyTorch eager forward only with THP_MEM_ALLOC_ENABLE=1, in a "
            "subprocess",
            _FWD, _torch(grad=False), where="thp",
        ),
        Peer(
            "torch_compile", "torch.compile", "torch_compile",
            "torch.compile(F.cross_entropy / F.binary_cross_entropy_with_logits, "
            "dynamic=False) forward, then .backward(); its compiling first call "
            "is timed apart; not in --quick or the pytest suite unless named",
            _GRAD, _torch(grad=True, compile=True), slow_setup=True,
        ),
        Peer(
            "torch_compile_fwd", "torch.compile fwd", "torch_compile",
            "torch.compile forward only, tensor without requires_grad",
            _FWD, _torch(grad=False, compile=True), slow_setup=True,
        ),
        Peer(
            "sklearn", "scikit-learn", "sklearn",
            "scikit-learn HalfMultinomialLoss(n_classes=C).loss_gradient (bce: "
            "HalfBinomialLoss on the flattened arrays) with loss_out/gradient_out "
            "reused, n_threads pinned, plus the mean of the per-sample loss; its "
            "gradient is per sample (not divided by N)",
            _GRAD, _sklearn,
        ),
        Peer(
            "jax_jit", "JAX jit", "jax",
            "jax.jit(jax.value_and_grad(loss)) of the log_softmax / "
            "take_along_axis mean (bce: the softplus form), block_until_ready; "
            "its compiling first call is timed apart (XLA's thread count is not "
            "pinned)",
            _GRAD, _jax(grad=True),
        ),
        Peer(
            "jax_jit_fwd", "JAX jit fwd", "jax",
            "jax.jit(loss), block_until_ready; compile timed apart",
            _FWD, _jax(grad=False),
        ),
    ]
}  # fmt: skip

#: The copy-floor peers: the faster of the two is each workload's floor.
FLOOR = ("copy_par", "copy_par_nt")

#: The numxent peer each op's "× numxent" ratios divide by.
REFERENCE = {op: "numxent_out" for op in _GRAD} | {op: "numxent_fwd" for op in _FWD}


def peers_for(op: str, where: str | None = None) -> list[Peer]:
    """The peers that apply to ``op`` (optionally only those timed ``where``)."""
    return [
        p for p in PEERS.values() if op in p.ops and (where is None or p.where == where)
    ]


def make_peer(peer_id: str, w: Workload, data: dict, threads: int) -> Fn:
    """The callable for one peer on one workload (raises PeerUnavailable)."""
    peer = PEERS[peer_id]
    if w.op not in peer.ops:
        raise PeerUnavailable(f"{peer_id} does not run op {w.op!r}")
    return peer.factory(w, data, threads)
