"""``transpose8``: an 8 x 8 float32 block copied transposed, between arrays
of any row length and at any offset (the lane kernel's copies into and out of
its class-major block)."""

import numpy as np
import pytest
from numba import njit

from _paths import transpose8
from numxent._kernels.ce_lanes import _transpose


@njit
def _blocks(src, s0, s_stride, dst, d0, d_stride):
    transpose8(src, s0, s_stride, dst, d0, d_stride)


@pytest.mark.parametrize(("s_stride", "d_stride"), [(8, 8), (10, 64), (64, 13), (9, 9)])
def test_block_lands_transposed_and_nothing_else_is_written(s_stride, d_stride):
    rng = np.random.default_rng(s_stride * 100 + d_stride)
    src = rng.standard_normal(16 * s_stride + 3).astype(np.float32)
    for s0, d0 in [(0, 0), (3, 5), (s_stride + 1, 2 * d_stride + 7)]:
        dst = np.full(16 * d_stride + 9, -7.0, np.float32)
        _blocks(src, s0, s_stride, dst, d0, d_stride)
        expected = np.full_like(dst, -7.0)
        for i in range(8):
            for j in range(8):
                expected[d0 + j * d_stride + i] = src[s0 + i * s_stride + j]
        np.testing.assert_array_equal(dst, expected)


def test_two_dimensional_views_count_from_their_first_element():
    """A view's data pointer is its first element: offsets count from it."""
    x = np.arange(20 * 12, dtype=np.float32).reshape(20, 12)
    view = x[5:]
    out = np.zeros((12, 16), np.float32)
    _blocks(view, 2 * 12 + 3, 12, out, 3 * 16 + 4, 16)
    np.testing.assert_array_equal(out[3:11, 4:12], x[7:15, 3:11].T)
    out[3:11, 4:12] = 0.0
    assert not out.any()


@njit
def _whole(src, n_rows, n_cols, dst, src_stride, dst_stride):
    _transpose(src, n_rows, n_cols, dst, src_stride, dst_stride)


def test_the_lane_kernels_transpose_covers_every_shape():
    """The lane kernel's copy of an n_rows x n_cols corner, transposed (blocks
    of eight, the ragged edges element by element): every element lands and
    nothing else is written."""
    rng = np.random.default_rng(5)
    src = rng.standard_normal((21, 23)).astype(np.float32)
    for n_rows in range(1, 22):
        for n_cols in range(1, 24):
            dst = np.full((25, 24), -7.0, np.float32)
            _whole(src, n_rows, n_cols, dst, 23, 24)
            expected = np.full_like(dst, -7.0)
            expected[:n_cols, :n_rows] = src[:n_rows, :n_cols].T
            np.testing.assert_array_equal(dst, expected, err_msg=f"{n_rows}x{n_cols}")
