"""Non-temporal stores: the compiled helper really emits them (x86), and the
report's parallel copies (the copy floor) copy."""

import platform

import numba
import numpy as np
import pytest

from _paths import nt_fence, stream_copy
from numxent.bench._floor import copy_plain, copy_stream


@numba.njit
def _copy(dst, src):
    stream_copy(dst, 0, src, 0, src.shape[0])
    nt_fence()


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no machine code, JIT off")
def test_stream_copy_compiles_to_non_temporal_stores():
    for dtype in (np.float32, np.float64):
        src = np.arange(100, dtype=dtype)
        dst = np.zeros_like(src)
        _copy(dst, src)
        np.testing.assert_array_equal(dst, src)
    if platform.machine().lower() in ("x86_64", "amd64"):
        for sig in _copy.signatures:
            asm = _copy.inspect_asm(sig)
            assert "vmovnt" in asm or "movnt" in asm, "no non-temporal store"
            assert "mfence" in asm or "lock" in asm  # the full fence


@pytest.mark.parametrize("copy", [copy_plain, copy_stream])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_copies_copy(copy, dtype):
    # several 64 KiB tasks, an odd length, a misaligned start
    x = np.random.default_rng(0).standard_normal(40_003).astype(dtype)[1:]
    x = x.reshape(-1, 2)
    dst = np.empty_like(x)
    copy(x, dst)
    np.testing.assert_array_equal(dst, x)
    with pytest.raises(ValueError, match="shape"):
        copy(x, dst[1:])
    with pytest.raises(ValueError, match="contiguous"):
        copy(x[:, :1], np.empty_like(x[:, :1]))
