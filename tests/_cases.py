"""Hypothesis strategies that land on every kernel path, shared by the fuzz
and property tests.

A *path* names a kernel and the side of its serial/parallel switch; the
sizes each path draws come from the dispatch constants in ``_paths``, so a
retuned threshold moves the cases with it. Bulk values come from a NumPy
generator seeded by hypothesis (fast to draw; shrinks through the seed and
the sizes).

Tolerances (``assert_matches``): results are compared with the float64
reference on the very values numxent was given (float32 inputs cast
exactly to float64), so the difference is numxent's own rounding:

* float64: rtol 1e-12, atol 1e-13 x the result's scale (largest finite
  magnitude, at least 1) -- a few dozen ulps of the largest term;
* float32: rtol 2e-5, atol 2e-6 x scale -- float32 exp (<= 1 ulp) and one
  float32 rounding of each output, with cancellation in ``A p_k - a_k``
  measured against the row's scale;
* float16 and bfloat16 (computed in float32, rounded once): the reference
  rounded to the format, then rtol 2e-3, atol 1e-3 x scale (float16) or
  rtol 1.6e-2, atol 8e-3 x scale (bfloat16: 8 significand bits, about two
  ulps).

NaN and +-inf must sit in the same places.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from _paths import (
    BCE_BLOCK,
    GROUP_ROWS,
    LANE_ROWS,
    NARROW_TILE,
    PREFETCH_ROW_BYTES,
    ROWS_PER_TASK,
    SERIAL_BELOW,
    WIDE_SERIAL_BELOW,
    lane_classes,
    narrow_classes,
    sizes_around,
)

try:  # bfloat16 NumPy arrays (the torch extra installs ml_dtypes)
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BFLOAT16 = None

TOLERANCES = {
    np.dtype(np.float64): (1e-12, 1e-13),
    np.dtype(np.float32): (2e-5, 2e-6),
    np.dtype(np.float16): (2e-3, 1e-3),
}
if BFLOAT16 is not None:
    TOLERANCES[BFLOAT16] = (1.6e-2, 8e-3)
REDUCTIONS = ("none", "mean", "sum")
FLOATS = (np.float32, np.float64)

# (name, the kernel that must run); the lane paths take float32 and 16-bit
# logits only (``hard_paths``)
HARD_PATHS = {
    "lanes-serial": "ce_lanes_ser",
    "lanes-parallel": "ce_lanes_par",
    "narrow-serial": "ce_narrow_ser",
    "narrow-parallel": "ce_narrow_par",
    "wide-serial": "ce_hard_ser",
    "wide-parallel": "ce_hard_par",
}
# the same paths on float16 / bfloat16 logits (staged through float32)
HARD_PATHS_16 = {
    "lanes-serial": "ce_lowp_lanes_ser",
    "lanes-parallel": "ce_lowp_lanes_par",
    "narrow-serial": "ce_lowp_narrow_ser",
    "narrow-parallel": "ce_lowp_narrow_par",
    "wide-serial": "ce_lowp_wide_ser",
    "wide-parallel": "ce_lowp_wide_par",
}
SOFT_PATHS = {"soft-serial": "ce_soft_ser", "soft-parallel": "ce_soft_par"}
BCE_PATHS = {"bce-serial": "bce_ser", "bce-parallel": "bce_par"}
BCE_LAYOUTS = ("period-1", "period-C", "row-scale", "gathered")
ROWWISE_PATHS = {"rowwise-serial": "softmax_ser", "rowwise-parallel": "softmax_par"}


def hard_paths(dtype) -> list[str]:
    """The hard-label paths that ``dtype``'s logits can take."""
    return [p for p in HARD_PATHS if lane_classes(dtype) or not p.startswith("lanes")]


def hard_path_cases(dtypes=FLOATS) -> list[tuple[str, type]]:
    """(path, dtype) for every path of every dtype."""
    return [(p, d) for p in HARD_PATHS for d in dtypes if p in hard_paths(d)]


def assert_matches(actual, expected, dtype, scale=None):
    """``actual`` (numxent) against ``expected`` (float64 reference); see the
    module docstring for the tolerances."""
    rtol, atol_rel = TOLERANCES[np.dtype(dtype)]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if np.dtype(dtype).itemsize == 2:  # the result is rounded to 16 bits (may
        with np.errstate(over="ignore"):  # overflow: a sum above 65504 is inf)
            expected = expected.astype(dtype).astype(np.float64)
    if scale is None:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=atol_rel * scale, equal_nan=True
    )


def _ceil_div(a, b):
    return -(-a // b)


# --------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------
@st.composite
def hard_sizes(draw, path, dtype):
    """(n_rows, n_classes) for a hard-label path."""
    nc = narrow_classes(dtype)
    itemsize = max(np.dtype(dtype).itemsize, 4)  # 16-bit: computed in float32
    lc = lane_classes(dtype)
    if path.startswith("lanes"):
        c = draw(
            st.one_of(
                st.integers(1, 12),
                st.sampled_from([k for k in sizes_around(lc, 2) if k <= lc]),
                st.integers(1, lc),
            )
        )
        below = SERIAL_BELOW
        per_task = max(NARROW_TILE // c // LANE_ROWS, 1) * LANE_ROWS
    elif path.startswith("narrow"):
        c = draw(
            st.one_of(
                st.integers(lc + 1, lc + 12),
                st.sampled_from([k for k in sizes_around(nc, 2) if lc < k <= nc]),
                st.integers(lc + 1, nc),
            )
        )
        below = SERIAL_BELOW
        per_task = max(NARROW_TILE // c, 1)
    else:
        prefetch_limit = PREFETCH_ROW_BYTES // itemsize  # widest prefetched row
        c = draw(
            st.one_of(
                st.sampled_from(sizes_around(nc + 2, 1)),  # nc+1 .. nc+3
                st.integers(nc + 1, 3 * nc),
                st.sampled_from(sizes_around(prefetch_limit)),
            )
        )
        below = WIDE_SERIAL_BELOW
        per_task = max(NARROW_TILE // c, ROWS_PER_TASK)
    if path.endswith("serial") and not path.endswith("parallel"):
        most = (below - 1) // c
        candidates = [most, most - 1, per_task, per_task + 1, GROUP_ROWS + 1]
        n = draw(
            st.one_of(
                st.integers(0, min(40, most)),
                st.sampled_from([k for k in candidates if 0 <= k <= most]),
            )
        )
        assert n * c < below
    else:
        least = _ceil_div(below, c)
        n = least + draw(st.one_of(st.just(0), st.integers(1, 2 * per_task + 1)))
        assert n * c >= below
    return n, c


@st.composite
def rows_sizes(draw, path, max_classes=300):
    """(n_rows, n_classes) for the soft-label and softmax-family paths
    (one SERIAL_BELOW switch, ROWS_PER_TASK rows a task)."""
    c = draw(st.one_of(st.integers(1, 12), st.integers(1, max_classes)))
    if path.endswith("-serial"):
        most = (SERIAL_BELOW - 1) // c
        n = draw(
            st.one_of(
                st.integers(0, min(3 * ROWS_PER_TASK + 1, most)),
                st.sampled_from(sorted({most, max(most - 1, 0)})),
            )
        )
        assert n * c < SERIAL_BELOW
    else:
        least = _ceil_div(SERIAL_BELOW, c)
        n = least + draw(st.integers(0, 2 * ROWS_PER_TASK + 1))
        assert n * c >= SERIAL_BELOW
    return n, c


@st.composite
def bce_shapes(draw, path, layout):
    """A logits shape for a BCE path on which weights can take ``layout``
    (see ``bce_weights``): 1-D logits are one row, so a row-scale layout
    needs 2-D; a (C,) weight keeps its period only for C <= BCE_BLOCK."""
    parallel = path.endswith("parallel")
    ndim = draw(st.sampled_from([1, 2, 3]))
    if layout == "row-scale" or (layout == "period-C" and parallel):
        ndim = max(ndim, 2)
    if ndim == 1:
        if parallel:
            n = SERIAL_BELOW + draw(st.integers(0, 2 * BCE_BLOCK))
        elif layout == "period-C":
            n = draw(
                st.one_of(
                    st.integers(1, 64),
                    st.sampled_from(
                        [k for k in sizes_around(BCE_BLOCK) if k <= BCE_BLOCK]
                    ),
                )
            )
        elif layout == "gathered":
            n = draw(st.integers(BCE_BLOCK + 1, SERIAL_BELOW - 1))
        else:
            n = draw(st.one_of(st.integers(0, 64), st.integers(1, SERIAL_BELOW - 1)))
        return (n,)
    periodic = layout in ("period-C", "row-scale")
    edges = [k for k in sizes_around(BCE_BLOCK) if not periodic or k <= BCE_BLOCK]
    if not periodic:
        edges += sizes_around(BCE_BLOCK + 2)
    c = draw(
        st.one_of(st.integers(1, 40), st.sampled_from(edges), st.integers(1, 3000))
    )
    if layout == "row-scale":
        c = max(c, 2)  # (rows, 1) sample weights are gathered like weights
    # one row is constant along rows whatever its weights: gathered and
    # row-scale layouts need two
    min_rows = 2 if layout in ("row-scale", "gathered") else 1
    if parallel:
        rows = max(_ceil_div(SERIAL_BELOW, c), min_rows) + draw(st.integers(0, 3))
    else:
        c = min(c, (SERIAL_BELOW - 1) // min_rows)
        most = (SERIAL_BELOW - 1) // c
        rows = draw(st.one_of(st.integers(min_rows, min(20, most)), st.just(most)))
    if ndim == 3 and rows % 2 == 0:
        return (2, rows // 2, c)
    return (rows, c)


def bce_weights(rng, shape, layout, draw):
    """Keyword weights for binary_cross_entropy_with_logits that the call
    lays out as ``layout`` (the test checks it did)."""
    kw = {}
    n_cols = shape[-1] if shape else 1
    lead = shape[:-1] if len(shape) >= 2 else shape
    zeros = draw(st.booleans())
    if layout == "period-1":
        if draw(st.booleans()):
            kw["weight"] = np.float64(rng.uniform(0.1, 3.0))
        if draw(st.booleans()):
            kw["pos_weight"] = np.array([rng.uniform(0.1, 3.0)])
        return kw
    if layout in ("period-C", "row-scale"):
        which = draw(st.sampled_from(["weight", "pos_weight", "both", "none"]))
        if which == "none" and layout == "period-C":
            which = "both"
        if which in ("weight", "both"):
            kw["weight"] = weights(rng, (n_cols,), zeros)
        if which in ("pos_weight", "both"):
            kw["pos_weight"] = weights(rng, (n_cols,), zeros)
        if layout == "row-scale":
            kw["sample_weight"] = weights(rng, lead, zeros)
        return kw
    # gathered: weights that vary along rows, or a (C,) weight too long for
    # the periodic layout
    kind = draw(st.sampled_from(["full", "lead", "long"]))
    if n_cols > BCE_BLOCK and (kind == "long" or len(shape) == 1):
        kw["pos_weight"] = weights(rng, (n_cols,), zeros)
    elif kind == "lead" and len(shape) >= 2:
        kw["weight"] = weights(rng, shape[:-1] + (1,), zeros)
    else:
        kw["weight"] = weights(rng, shape, zeros)
    if draw(st.booleans()):
        kw["sample_weight"] = weights(rng, lead, zeros)
    return kw


# --------------------------------------------------------------------------
# arrays: values, layouts, non-finite entries
# --------------------------------------------------------------------------
LAYOUTS = ("C", "F", "strided", "readonly", "byteswapped")


def as_layout(a: np.ndarray, layout: str, rng) -> np.ndarray:
    """The same values as ``a`` in another memory layout."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    if layout == "strided" and a.ndim >= 1:
        steps = [int(s) for s in rng.integers(1, 4, size=a.ndim)]
        big_shape = [n * s for n, s in zip(a.shape, steps, strict=True)]
        big = np.zeros(big_shape, dtype=a.dtype)
        view = big[tuple(slice(None, None, s) for s in steps)]
        view[...] = a
        return view
    return a


def logits(rng, shape, dtype, scale):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def weights(rng, shape, zeros: bool):
    """Finite non-negative weights in [0.1, 3], some exactly 0 if ``zeros``."""
    w = rng.uniform(0.1, 3.0, size=shape)
    if zeros:
        w[rng.random(shape) < 0.2] = 0.0
    return w


NONFINITE = ("nan", "-inf", "all-inf", "+inf")


def poison_rows(rng, x, kinds, n_rows):
    """Write non-finite values into a few rows of ``x`` (N, C) in place;
    returns {row: kind}."""
    done = {}
    if n_rows == 0:
        return done
    for kind in kinds:
        i = int(rng.integers(0, n_rows))
        k = int(rng.integers(0, x.shape[1]))
        if kind == "nan":
            x[i, k] = np.nan
        elif kind == "-inf":
            x[i, k] = -np.inf
        elif kind == "all-inf":
            x[i, :] = -np.inf
        else:
            x[i, k] = np.inf
        done[i] = kind
    # a later kind may have overwritten an earlier one's row: re-read
    return {i: _row_kind(x[i]) for i in done}


def _row_kind(row):
    if np.isnan(row).any():
        return "nan"
    if np.isposinf(row).any():
        return "+inf"
    if np.isneginf(row).all():
        return "all-inf"
    return "-inf" if np.isneginf(row).any() else "finite"
