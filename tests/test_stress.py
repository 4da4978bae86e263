"""Stress: what users bring beyond the unit tests.

- more than 2**31 logits in one call (64-bit indexing everywhere), forward-only
  and in place, checked against the naive float64 reference (``slow``);
- 10**4 calls of every public function and option family without growth of
  the resident set (``slow``);
- several processes compiling into one empty on-disk cache at once (``slow``);
- an unwritable cache directory and the ``NUMXENT_CACHE=0`` opt-out.

Run the slow ones with ``pytest -m slow tests/test_stress.py``; the >2**31
cases need about 13 GiB of memory.
"""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numxent as nx
from naive import (
    bce_with_logits_ref,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    softmax_ref,
)

CE = nx.cross_entropy
BCE = nx.binary_cross_entropy_with_logits


def _env(**changes: str | None) -> dict:
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(nx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _popen(script: str, **changes: str | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(script)],
        env=_env(**changes),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(script: str, **changes: str | None) -> tuple[str, str]:
    proc = _popen(script, **changes)
    out, err = proc.communicate()
    assert proc.returncode == 0, f"rc={proc.returncode}\n{out}\n{err}"
    return out, err


# A few calls that compile different kernels; prints a digest of the results.
_CALLS = """
import hashlib
import numpy as np
import numxent as nx

rng = np.random.default_rng(3)
x = rng.standard_normal((300, 40)).astype(np.float32)
y = rng.integers(0, 40, 300)
p = rng.random((300, 40)).astype(np.float32)
parts = [
    nx.cross_entropy(x, y, return_grad=True),
    nx.cross_entropy(x, p, reduction="none", return_grad=True),
    nx.binary_cross_entropy_with_logits(x, p, return_grad=True),
    (nx.softmax(x), nx.logsumexp(x)),
]
blob = b"".join(np.asarray(a).tobytes() for part in parts for a in part)
print("digest", hashlib.sha256(blob).hexdigest())
"""


# One kernel only, the cheapest to compile (the soft-cap pair: under a second,
# where the other families take 3 to 10 s): the processes below compile
# without a cache.
_LIGHT_CALLS = """
import hashlib
import numpy as np
from numxent import _dispatch

x = np.random.default_rng(3).standard_normal((300, 40))
out = np.empty_like(x)
_dispatch.softcap(x, 2.0, out)
blob = out.tobytes()
print("digest", hashlib.sha256(blob).hexdigest())
"""


def _expected_digest(script: str) -> str:
    namespace: dict = {}
    exec(textwrap.dedent(script).replace("print(", "_ = ("), namespace)
    return hashlib.sha256(namespace["blob"]).hexdigest()


# --------------------------------------------------------------------------
# the on-disk cache
# --------------------------------------------------------------------------


def test_unwritable_cache_dir_warns_once_and_still_computes(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # a path below a regular file cannot be created, even by root
    out, err = _run(
        _LIGHT_CALLS, NUMBA_CACHE_DIR=str(blocker / "cache"), NUMXENT_CACHE=None
    )
    assert f"digest {_expected_digest(_LIGHT_CALLS)}" in out.splitlines()
    assert err.count("CacheWarning") == 1, err
    assert "NUMBA_CACHE_DIR=" in err and "not cached" in err


def test_numxent_cache_0_writes_no_cache_files(tmp_path):
    cache = tmp_path / "cache"
    out, err = _run(_LIGHT_CALLS, NUMBA_CACHE_DIR=str(cache), NUMXENT_CACHE="0")
    assert f"digest {_expected_digest(_LIGHT_CALLS)}" in out.splitlines()
    assert "CacheWarning" not in err
    written = [f for _, _, files in os.walk(cache) for f in files]
    assert written == [], written
    # and the default does write there (so the check above can fail)
    _run(_LIGHT_CALLS, NUMBA_CACHE_DIR=str(cache), NUMXENT_CACHE=None)
    written = [f for _, _, files in os.walk(cache) for f in files]
    assert any(f.endswith(".nbi") for f in written), written


@pytest.mark.slow
def test_four_processes_start_at_once_on_one_empty_cache(tmp_path):
    cache = tmp_path / "cache"
    procs = [
        _popen(_CALLS, NUMBA_CACHE_DIR=str(cache), NUMXENT_CACHE=None) for _ in range(4)
    ]
    results = [p.communicate() + (p.returncode,) for p in procs]
    expected = f"digest {_expected_digest(_CALLS)}"
    for out, err, rc in results:
        assert rc == 0, err
        assert expected in out.splitlines(), (out, err)
    assert any(f.endswith(".nbi") for _, _, fs in os.walk(cache) for f in fs)
    # a later process loads what they wrote and computes the same
    out, _ = _run(_CALLS, NUMBA_CACHE_DIR=str(cache), NUMXENT_CACHE=None)
    assert expected in out.splitlines()


# --------------------------------------------------------------------------
# more than 2**31 logits
# --------------------------------------------------------------------------

_BLOCK_ROWS = 4096


def _big_problem(n_classes: int):
    """(x, y, special rows) with N * C > 2**31: a random block of rows tiled,
    and fresh random rows at the head, the tail and around flat index 2**31."""
    n_rows = -(-(2**31 + 2**26) // n_classes)
    rng = np.random.default_rng(n_classes)
    block = (rng.standard_normal((_BLOCK_ROWS, n_classes)) * 3).astype(np.float32)
    x = np.empty((n_rows, n_classes), dtype=np.float32)
    for r0 in range(0, n_rows, _BLOCK_ROWS):
        r1 = min(n_rows, r0 + _BLOCK_ROWS)
        x[r0:r1] = block[: r1 - r0]
    y_block = rng.integers(0, n_classes, _BLOCK_ROWS)
    y_block[::97] = -100
    y = np.resize(y_block, n_rows)
    edge = 2**31 // n_classes
    special = np.unique(
        np.concatenate(
            [
                np.arange(64),
                np.arange(edge - 3, edge + 4),
                np.arange(n_rows - 64, n_rows),
            ]
        )
    )
    x[special] = (rng.standard_normal((special.size, n_classes)) * 3).astype(np.float32)
    y[special] = rng.integers(0, n_classes, special.size)
    return x, y, block, y_block, special


@pytest.mark.slow
@pytest.mark.parametrize("n_classes", [1000, 10])
def test_more_than_2_31_logits_forward_and_in_place(n_classes):
    x, y, block, y_block, special = _big_problem(n_classes)
    n_rows = x.shape[0]
    assert x.size > 2**31
    # the expected per-row losses: naive float64 on the block and special rows
    block_loss, block_grad = cross_entropy_ref(block, y_block, reduction="none")
    special_loss, special_grad = cross_entropy_ref(
        x[special], y[special], reduction="none"
    )
    expected = np.resize(block_loss, n_rows)
    expected[special] = special_loss
    kept = y != -100
    denom = float(np.count_nonzero(kept))

    # forward only, every row's loss
    loss = CE(x, y, reduction="none")
    assert loss.shape == (n_rows,) and loss.dtype == np.float32
    np.testing.assert_allclose(loss, expected, rtol=2e-6, atol=2e-6)
    del loss
    gc.collect()
    mean = CE(x, y)
    np.testing.assert_allclose(float(mean), expected.sum() / denom, rtol=1e-6)

    # in place: the gradient overwrites the logits
    loss, grad = CE(x, y, return_grad=True, out=x)
    assert grad is x or np.shares_memory(grad, x)
    np.testing.assert_allclose(float(loss), expected.sum() / denom, rtol=1e-6)
    # special rows, and a stride of the tiled rows (all of them would need a
    # second array of this size)
    np.testing.assert_allclose(
        grad[special].astype(np.float64) * denom, special_grad, rtol=0, atol=2e-6
    )
    rows = np.setdiff1d(np.arange(0, n_rows, 9973), special)
    np.testing.assert_allclose(
        grad[rows].astype(np.float64) * denom,
        block_grad[rows % _BLOCK_ROWS],
        rtol=0,
        atol=2e-6,
    )


# --------------------------------------------------------------------------
# 10**4 calls: no growth of the resident set
# --------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _every_call():
    """One callable per public function and option family, each checked once
    against the naive reference before the loop."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 10))
    x32 = x.astype(np.float32)
    y = rng.integers(0, 10, 64)
    y[::7] = -100
    p = rng.random((64, 10))
    p /= p.sum(axis=1, keepdims=True)
    t = rng.random((64, 10))
    w = rng.random(10) + 0.5
    sw = rng.random(64)
    wide = rng.standard_normal((64, 1000))  # parallel size
    wide_y = rng.integers(0, 1000, 64)
    buf = np.empty_like(x)

    def in_place():
        z = x.copy()
        return CE(z, y, reduction="sum", return_grad=True, out=z)

    def bad_label():
        try:
            CE(x, np.full(64, 99))
        except IndexError:
            return None
        raise AssertionError("no IndexError")

    calls = {
        "ce-hard": (
            lambda: CE(x, y, return_grad=True),
            lambda: cross_entropy_ref(x, y),
        ),
        "ce-hard-f32-fwd": (
            lambda: (CE(x32, y),),
            lambda: (cross_entropy_ref(x32, y)[0],),
        ),
        "ce-weights-smoothing-none": (
            lambda: CE(
                x,
                y,
                weight=w,
                sample_weight=sw,
                label_smoothing=0.1,
                reduction="none",
                return_grad=True,
            ),
            lambda: cross_entropy_ref(
                x, y, weight=w, sample_weight=sw, label_smoothing=0.1, reduction="none"
            ),
        ),
        "ce-out": (
            lambda: CE(x, y, return_grad=True, out=buf),
            lambda: cross_entropy_ref(x, y),
        ),
        "ce-in-place": (in_place, lambda: cross_entropy_ref(x, y, reduction="sum")),
        "ce-soft": (
            lambda: CE(x, p, label_smoothing=0.2, return_grad=True),
            lambda: cross_entropy_ref(x, p, label_smoothing=0.2),
        ),
        "ce-wide-parallel": (
            lambda: CE(wide, wide_y, return_grad=True),
            lambda: cross_entropy_ref(wide, wide_y),
        ),
        "bce": (lambda: BCE(x, t, return_grad=True), lambda: bce_with_logits_ref(x, t)),
        "bce-weights": (
            lambda: BCE(
                x,
                t,
                weight=w,
                pos_weight=w[::-1].copy(),
                sample_weight=sw,
                reduction="none",
                return_grad=True,
            ),
            lambda: bce_with_logits_ref(
                x,
                t,
                weight=w,
                pos_weight=w[::-1].copy(),
                sample_weight=sw,
                reduction="none",
            ),
        ),
        "softmax": (lambda: (nx.softmax(x, axis=0),), lambda: (softmax_ref(x, 0),)),
        "log_softmax": (lambda: (nx.log_softmax(x),), lambda: (log_softmax_ref(x),)),
        "logsumexp": (lambda: (nx.logsumexp(x),), lambda: (logsumexp_ref(x),)),
        "bad-label": (bad_label, lambda: None),
    }
    return calls


@pytest.mark.slow
def test_ten_thousand_calls_do_not_grow_rss():
    calls = _every_call()
    for name, (call, ref) in calls.items():
        got, want = call(), ref()
        if want is None:
            continue
        for g, r in zip(got, want, strict=True):
            np.testing.assert_allclose(
                np.asarray(g, np.float64), r, rtol=1e-5, atol=1e-7, err_msg=name
            )
    for call, _ in calls.values():  # warm up: allocator pools, lru caches
        for _ in range(500):
            call()
    gc.collect()
    before = _rss_bytes()
    for call, _ in calls.values():
        for _ in range(10_000):
            call()
    gc.collect()
    after = _rss_bytes()
    growth = after - before
    print(f"RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    # 13 x 10**4 calls: a leak of even 64 bytes a call would show as 8 MiB
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"


@pytest.mark.slow
def test_ten_thousand_bridge_calls_do_not_grow_rss():
    torch = pytest.importorskip("torch")
    from numxent.torch import BCEWithLogitsLoss, CrossEntropyLoss

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(64, 10, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    t = torch.rand(64, 10, generator=gen)
    ce = CrossEntropyLoss(label_smoothing=0.1)
    bce = BCEWithLogitsLoss(pos_weight=torch.rand(10, generator=gen))
    ref_ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        z = x.clone().requires_grad_()
        (ce(z, y) + bce(z, t)).backward()
        return z.grad

    z = x.clone().requires_grad_()
    (
        ref_ce(z, y) + torch.nn.BCEWithLogitsLoss(pos_weight=bce.pos_weight)(z, t)
    ).backward()
    torch.testing.assert_close(step(), z.grad)
    for _ in range(500):
        step()
    gc.collect()
    before = _rss_bytes()
    for _ in range(10_000):
        step()
    gc.collect()
    after = _rss_bytes()
    print(f"RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    assert after - before < 8 * 2**20, f"RSS grew by {(after - before) / 2**20:.1f} MiB"
