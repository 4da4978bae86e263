"""The one place the test suite reaches into numxent's internals.

Tests that must land on a particular kernel path (tile or row-at-a-time
hard-label kernels, serial or parallel launch, the BCE weight layouts) take
their sizes from the dispatch and kernel constants re-exported here, never
from literals, so a retuned threshold moves the tests with it. When the
package's internals move, this module is the only test file to repoint.

Exported constants
------------------
SERIAL_BELOW
    Logits per call below which the serial kernel of a pair runs (all ops
    except wide hard-label rows).
WIDE_SERIAL_BELOW
    The same threshold for hard-label rows wider than NARROW_CLASSES.
NARROW_CLASSES
    ``{itemsize: C}``: hard-label rows of at most C classes use the tile
    kernels (``ce_narrow_*``), wider ones the row-at-a-time kernels.
NARROW_TILE
    Elements per tile of narrow rows and per task of wide rows.
LANE_CLASSES
    float32 (and 16-bit) hard-label rows of at most this many classes,
    without soft-capping, take the lane kernels (``ce_lanes_*``,
    ``ce_lowp_lanes_*``) instead of the tile kernels.
LANE_ROWS
    Rows a block of the lane kernels (a parallel task is whole blocks).
ROWS_PER_TASK
    Rows per parallel task of the soft-label and softmax kernels (and the
    minimum of a wide hard-label task).
BCE_BLOCK
    Elements per binary cross-entropy block; the weight layout uses a
    period of at most BCE_BLOCK.
GROUP_ROWS, GROUP_ELEMENTS
    Wide hard-label rows are finished a group of rows at a time.
PREFETCH_ROW_BYTES
    Wide hard-label rows up to this many bytes prefetch two rows ahead.
NT_LINE
    Bytes one non-temporal store writes.

Helpers
-------
``narrow_classes(dtype)``, ``lane_classes(dtype)``, ``sizes_around(threshold)``,
``record_kernels()`` (which kernel pair member ran, and with which BCE weight
layout);
``general_path_only()`` (``cross_entropy``'s common calls take the general
path inside the block); ``dask_objective()`` (the dask fit's objective, to
interrupt a fit); the non-temporal store helpers ``stream_copy`` and
``nt_fence`` and the 8 x 8 block transpose ``transpose8`` (kernel building
blocks, tested on their own).
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np

from numxent import _dispatch as _D
from numxent import _kernels as _K
from numxent._kernels._intrinsics import NT_LINE, nt_fence, transpose8
from numxent._kernels._vecmath import stream_copy

__all__ = [
    "BCE_BLOCK",
    "GROUP_ELEMENTS",
    "GROUP_ROWS",
    "KERNELS",
    "LANE_CLASSES",
    "LANE_ROWS",
    "NARROW_CLASSES",
    "NARROW_TILE",
    "NT_LINE",
    "PREFETCH_ROW_BYTES",
    "ROWS_PER_TASK",
    "SERIAL_BELOW",
    "WIDE_SERIAL_BELOW",
    "bce_layout",
    "dask_objective",
    "general_path_only",
    "lane_classes",
    "narrow_classes",
    "nt_fence",
    "record_kernels",
    "sizes_around",
    "stream_copy",
    "transpose8",
]

SERIAL_BELOW: int = _D.SERIAL_BELOW
# functional.py passes K.NARROW_TILE as the wide hard-label rows' threshold.
WIDE_SERIAL_BELOW: int = _D.WIDE_SERIAL_BELOW
NARROW_CLASSES: dict[int, int] = dict(_D.NARROW_CLASSES)
NARROW_TILE: int = _K.NARROW_TILE
LANE_CLASSES: int = _K.LANE_CLASSES
LANE_ROWS: int = _K.LANE_ROWS
ROWS_PER_TASK: int = _K.ROWS_PER_TASK
BCE_BLOCK: int = _K.BCE_BLOCK
GROUP_ROWS: int = _K.GROUP_ROWS
GROUP_ELEMENTS: int = _K.GROUP_ELEMENTS
PREFETCH_ROW_BYTES: int = _K.PREFETCH_ROW_BYTES

# Kernel pairs as functional.py launches them (attributes of _KERNEL_MODULE).
KERNELS = (
    "ce_lanes_ser",
    "ce_lanes_par",
    "ce_narrow_ser",
    "ce_narrow_par",
    "ce_hard_ser",
    "ce_hard_par",
    "ce_lowp_lanes_ser",
    "ce_lowp_lanes_par",
    "ce_lowp_narrow_ser",
    "ce_lowp_narrow_par",
    "ce_lowp_wide_ser",
    "ce_lowp_wide_par",
    "ce_soft_ser",
    "ce_soft_par",
    "bce_ser",
    "bce_par",
    "softmax_ser",
    "softmax_par",
)
# The module whose attributes the dispatch code looks the kernels up in at
# call time (_dispatch.py: ``K.ce_narrow_par``).
_KERNEL_MODULE = _K
# Positions of (fac_pat, row_scale) in the bce_* kernels' arguments.
_BCE_PARAMS = list(
    inspect.signature(getattr(_K.bce_ser, "py_func", _K.bce_ser)).parameters
)
_BCE_FAC_PAT, _BCE_ROW_SCALE = (
    _BCE_PARAMS.index("fac_pat"),
    _BCE_PARAMS.index("row_scale"),
)


def narrow_classes(dtype) -> int:
    """The widest hard-label row (classes) the tile kernels take for ``dtype``
    (float16 and bfloat16 are computed as float32)."""
    dt = np.dtype(dtype)
    return NARROW_CLASSES[4 if dt.itemsize == 2 else dt.itemsize]


def lane_classes(dtype) -> int:
    """The widest hard-label row (classes) the lane kernels take for
    ``dtype`` (0 for float64: its narrow rows all take the tile kernels)."""
    return LANE_CLASSES if np.dtype(dtype).itemsize <= 4 else 0


def sizes_around(threshold: int, spread: int = 1) -> list[int]:
    """``threshold - spread .. threshold + spread``, positive values only:
    the sizes on both sides of a switch and the switch itself."""
    return [n for n in range(threshold - spread, threshold + spread + 1) if n > 0]


def bce_layout(args) -> str:
    """How a bce_* call was given its weights: "period-1" (all constant),
    "period-C" (constant along rows, laid out with the row's period),
    "row-scale" (plus a per-row sample weight) or "gathered"."""
    fac_pat, row_scale = args[_BCE_FAC_PAT], args[_BCE_ROW_SCALE]
    if fac_pat.shape[0] == 0:
        return "gathered"
    if row_scale.shape[0] > 0:
        return "row-scale"
    return "period-1" if fac_pat.shape[0] - BCE_BLOCK == 1 else "period-C"


@contextlib.contextmanager
def record_kernels():
    """Record the kernels numxent launches inside the block.

    Yields a list that receives one ``(kernel name, detail)`` per launch;
    ``detail`` is :func:`bce_layout` for the bce_* kernels, else None. The
    kernels still run: the wrappers only note the call.

    Inside the block a cold parallel variant compiles on its first call (as
    ``NUMXENT_DEFER_PARALLEL=0`` does), so the calls recorded are those of a
    warm process whatever ran before: the path the call's size selects.
    """
    calls: list[tuple[str, str | None]] = []
    saved = {name: getattr(_KERNEL_MODULE, name) for name in KERNELS}
    defer, _D.DEFER_PARALLEL = _D.DEFER_PARALLEL, False

    def wrap(name, kernel):
        def spy(*args):
            calls.append((name, bce_layout(args) if name.startswith("bce") else None))
            return kernel(*args)

        return spy

    try:
        for name, kernel in saved.items():
            setattr(_KERNEL_MODULE, name, wrap(name, kernel))
        yield calls
    finally:
        for name, kernel in saved.items():
            setattr(_KERNEL_MODULE, name, kernel)
        _D.DEFER_PARALLEL = defer


@contextlib.contextmanager
def general_path_only():
    """Inside the block ``cross_entropy`` runs every call through its general
    path (``prepare_ce``), not the lean path of the common call."""
    from numxent import _ops

    saved = _ops.ce_plain
    _ops.ce_plain = lambda *args: None
    try:
        yield
    finally:
        _ops.ce_plain = saved


def dask_objective():
    """The class whose instances L-BFGS calls in ``fit`` on dask arrays (one
    call = one evaluation over the persisted blocks). Imported on demand:
    it needs dask and scikit-learn."""
    from numxent import _dask_fit

    return _dask_fit.DaskObjective
