"""The pure-Python path (NUMBA_DISABLE_JIT=1, used for kernel coverage runs)
computes the same numbers as the compiled kernels."""

import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import numpy as np
import numxent as nx
rng = np.random.default_rng(0)
out = []
for dt, c in ((np.float64, 7), (np.float32, 100)):
    x = rng.standard_normal((40, c)).astype(dt)
    y = rng.integers(0, c, 40)
    y[3] = -100
    loss, grad = nx.cross_entropy(x, y, label_smoothing=0.1, return_grad=True)
    t = nx.softmax(x * 0.5)
    sl, sg = nx.cross_entropy(x, t, return_grad=True)
    tb = (x > 0).astype(dt)
    bl, bg = nx.binary_cross_entropy_with_logits(x, tb, return_grad=True)
    out += [loss, grad, sl, sg, bl, bg, nx.log_softmax(x), nx.logsumexp(x)]
np.savez(__import__("sys").argv[1], *out)
"""


def _run(tmp_path, name, disable_jit):
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    if disable_jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    path = tmp_path / f"{name}.npz"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], env=env, check=True, timeout=600
    )
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_disable_jit_matches_compiled(tmp_path):
    jit = _run(tmp_path, "jit", False)
    nojit = _run(tmp_path, "nojit", True)
    assert len(jit) == len(nojit) == 16
    for a, b in zip(jit, nojit, strict=True):
        assert a.dtype == b.dtype
        # fma is emulated with two roundings without the JIT: a few ulps apart
        rtol = 1e-5 if a.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.max(np.abs(a)))
