"""The kernels' loops may use the CPU's widest vectors (``wide_vectors``)."""

import numba
import numpy as np
import pytest
from numba import njit

from numxent import _kernels as K
from numxent._kernels._intrinsics import wide_vectors

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="JIT off")


def _avx512() -> bool:
    from llvmlite import binding as ll

    return bool(ll.get_host_cpu_features().get("avx512f", False))


@njit(fastmath=False)
def _scale_wide(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = x[i] * np.float32(1.5) + np.float32(2.0)


def test_the_attribute_is_set_on_the_calling_function_only():
    x = np.arange(1000, dtype=np.float32)
    out = np.empty_like(x)
    _scale_wide(x, out)
    np.testing.assert_array_equal(out, x * np.float32(1.5) + np.float32(2.0))
    ir = _scale_wide.inspect_llvm(_scale_wide.signatures[0])
    assert '"prefer-vector-width"="512"' in ir
    if _avx512():
        assert "zmm" in _scale_wide.inspect_asm(_scale_wide.signatures[0])


@pytest.mark.skipif(not _avx512(), reason="the CPU has no 512-bit vectors")
def test_a_kernel_compiles_to_512_bit_vectors():
    # a fresh, uncached compilation of the wide-row driver and its helpers
    kernel = njit(parallel=False, fastmath=False, error_model="numpy")(
        K.ce_hard_ser.py_func
    )
    x = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)
    y = np.arange(4)
    w = np.ones(300)
    loss_rows = np.empty(4)
    grad = np.empty_like(x)
    first_bad, denom, total = kernel(x, y, w, 300.0, np.zeros(0), -100, 0.0,
                                     K.REDUCE_SUM, loss_rows, grad, 0.0, 0.0,
                                     np.zeros(0))  # fmt: skip
    assert first_bad == -1 and denom == 4.0
    lse = np.log(np.exp(x.astype(np.float64)).sum(1))
    np.testing.assert_allclose(loss_rows, lse - x[np.arange(4), y], rtol=1e-6)
    assert "zmm" in kernel.inspect_asm(kernel.signatures[0])
