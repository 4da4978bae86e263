"""Numba kernels: where every loss, gradient and softmax is computed.

Layer 1 of the package: loops only. Outputs are passed in, nothing is
allocated or validated here (``functional.py`` does that), and options are
runtime arguments so each kernel compiles once per logits dtype.

Modules, by family: ``_intrinsics`` (compile options, LLVM intrinsics, the
``by_width`` pattern of dtype-specialised helpers), ``_vecmath`` (row max,
exp, log, fixed-point sums, ``ordered_total``), ``ce_hard``, ``ce_soft``,
``bce`` and ``rowwise`` (each family's row functions and drivers), and
``ce_lowp`` (hard labels on float16 / bfloat16 logits: blocks of rows staged
through float32 into ``ce_hard``'s row functions).

Every kernel comes as a pair, ``*_par`` (``prange`` over samples) and
``*_ser`` (``range``), built from the same ``inline="always"`` row function
and taking the same arguments: a row's values never depend on which variant
or how many threads ran it, and no parallel kernel sums across rows (the
per-row values are reduced by ``ordered_total`` in a fixed order -- by the
caller, or at the end of a hard-label driver, serially; binary cross-entropy
sums within fixed 8,192-element blocks), so results are bitwise identical
for any thread count. The pairs are near-copies because Numba forces them:
its on-disk cache key ignores the target options (``parallel=``), so one
function cannot be cached compiled both ways, and a ``prange`` loop run
serially still pays the parallel launch. ``numxent._dispatch`` picks the
variant. Hard-label rows of at most ``_dispatch.NARROW_CLASSES`` classes (256
float32, 100 float64) are processed a tile of rows at a time
(``_ce_hard_tile``, the ``ce_narrow_*`` pair) so that the exp loop stays long
enough to vectorise; float32 rows of at most ``LANE_CLASSES`` (24) classes
without soft-capping a block of rows at a time, one row a vector lane
(``ce_lanes``, the ``ce_lanes_*`` pair); a first call compiles one loop
shape.

Precision: float32 rows are exponentiated in float32 (the vectorised exp of
``_vecmath``, <= 1 ulp); row sums, logs, losses and gradient scales are
float64; float64 rows are float64 throughout. Binary cross-entropy on float32
logits is elementwise float32 arithmetic (float32-sized exp and log1p
polynomials; loss within 4 ulp of float64, subnormal tails included;
tests/test_accuracy) and float64 block sums. Rows holding NaN or +inf take a
scalar float64 path (``*_exact``) whose NaN/inf pattern is PyTorch's.

Row layout of the softmax cross-entropy kernels (a row stays in cache between
the passes, so memory is read once and written once):

1. ``m = max_k x_k``;
2. ``e_k = exp(x_k - m)``, ``s = sum_k e_k`` and the target terms, with
   ``e_k`` parked in the gradient row (forward-only calls and out=logits:
   scratch rows);
3. ``grad_k = scale * (A * e_k / s - a_k)`` in place over ``e_k``, where
   ``a_k`` is the target weight of class ``k`` and ``A = sum_k a_k``.

The loss is ``sum_k a_k (log s - (x_k - m))``: both factors are >= 0, so the
sum has no cancellation however large the logits are.

Short names used in the kernels:

========== ==============================================================
``x``      logits, (rows, C), float32 or float64, C-contiguous
``xi``     the logits' bits as int32 / int64 (``int_view``), for row_max
``y``      hard labels, int64 (``ignore_index`` marks ignored rows)
``t``      soft labels (class probabilities) or BCE targets, x's dtype
``w``      class weights, float64 (C,); BCE: weight broadcast to (rows, cols)
``w_total`` sum of ``w`` (the label-smoothing term's total weight)
``pw``     BCE pos_weight, broadcast to (rows, cols)
``sw``     per-sample weights, float64 (rows,), empty when not given
``eps``    label smoothing
``gscale`` gradient scale: 1 / the mean's denominator, or 1
``reduction`` hard-label drivers: REDUCE_NONE / REDUCE_SUM / REDUCE_MEAN
``loss_rows`` per-row losses, float64 (rows,)
``grad``   gradient, x's shape and dtype; (0, C) for forward-only calls
``e, ei``  the array and row where a row's exp values wait (the gradient
           row or a scratch row); ``src, si`` the same in the finish
``sc, r``  a scratch group of rows and a row in it
``fix``    2**S, the scale of the int64 fixed-point row sums
``m``      row max; ``finite``: the row holds no NaN and m is finite
``s``      sum_k exp(x_k - m); ``log_s`` its log
``d_y``    x[i, y_i] - m
``wd``     sum_k w_k (x_k - m) (label smoothing's term)
``s_w``    this row's sample weight; ``w_y`` = w[y_i]
``big_a``  A = sum_k a_k, the row's total target weight
``fac, pwv`` BCE: weight * sample weight, pos_weight, laid out as x
``fac_pat, pw_pat, row_scale`` BCE weights laid out periodically
``mode``   rowwise: MODE_LOGSUMEXP / MODE_LOG_SOFTMAX / MODE_SOFTMAX
``i, k``   sample (row), class; ``r`` a row within a tile or group
========== ==============================================================
"""

from ._vecmath import (
    ROWS_PER_TASK,
    exp_shifted,
    fixed_point_scale,
    log_f64,
    ordered_total,
)
from .bce import BCE_BLOCK, bce_par, bce_ser
from .ce_hard import (
    GROUP_ELEMENTS,
    GROUP_ROWS,
    NARROW_TILE,
    PREFETCH_ROW_BYTES,
    REDUCE_MEAN,
    REDUCE_NONE,
    REDUCE_SUM,
    ce_hard_par,
    ce_hard_ser,
    ce_narrow_par,
    ce_narrow_ser,
    scan_hard_labels,
    softcap_par,
    softcap_ser,
)
from .ce_lanes import LANE_CLASSES, LANE_ROWS, ce_lanes_par, ce_lanes_ser
from .ce_lowp import (
    FMT_BFLOAT16,
    FMT_FLOAT16,
    ce_lowp_lanes_par,
    ce_lowp_lanes_ser,
    ce_lowp_narrow_par,
    ce_lowp_narrow_ser,
    ce_lowp_wide_par,
    ce_lowp_wide_ser,
)
from .ce_soft import ce_soft_par, ce_soft_ser
from .rowwise import (
    MODE_LOG_SOFTMAX,
    MODE_LOGSUMEXP,
    MODE_SOFTMAX,
    softmax_par,
    softmax_ser,
)

__all__ = [
    "BCE_BLOCK",
    "FMT_BFLOAT16",
    "FMT_FLOAT16",
    "GROUP_ELEMENTS",
    "GROUP_ROWS",
    "LANE_CLASSES",
    "LANE_ROWS",
    "MODE_LOGSUMEXP",
    "MODE_LOG_SOFTMAX",
    "MODE_SOFTMAX",
    "NARROW_TILE",
    "PREFETCH_ROW_BYTES",
    "REDUCE_MEAN",
    "REDUCE_NONE",
    "REDUCE_SUM",
    "ROWS_PER_TASK",
    "bce_par",
    "bce_ser",
    "ce_hard_par",
    "ce_hard_ser",
    "ce_lanes_par",
    "ce_lanes_ser",
    "ce_lowp_lanes_par",
    "ce_lowp_lanes_ser",
    "ce_lowp_narrow_par",
    "ce_lowp_narrow_ser",
    "ce_lowp_wide_par",
    "ce_lowp_wide_ser",
    "ce_narrow_par",
    "ce_narrow_ser",
    "ce_soft_par",
    "ce_soft_ser",
    "exp_shifted",
    "fixed_point_scale",
    "log_f64",
    "ordered_total",
    "scan_hard_labels",
    "softcap_par",
    "softcap_ser",
    "softmax_par",
    "softmax_ser",
]
