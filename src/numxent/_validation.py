"""Input checks and coercions: every input error numxent raises comes from here.

Each check raises one of :mod:`numxent.errors`' classes (a ``NumxentError``
that is also the built-in ``ValueError`` / ``TypeError`` / ``IndexError``).
One check runs elsewhere: the range of hard labels is scanned by the compiled
kernels (a Python-side scan would read the labels a second time), which
return the position of the first bad label; :func:`raise_bad_label` turns
that position into the error, before any output is written.

All checks run before anything is written, so a call that raises leaves
``out`` (and in-place logits) untouched. Nothing here modifies an input:
coercions copy when they must and otherwise hand back read-only views, which
also keeps the kernels' compiled signatures to one per logits dtype.
"""

from __future__ import annotations

import operator
import sys
from typing import NoReturn

import numpy as np

from .errors import InvalidTypeError, InvalidValueError, LabelIndexError

_COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32 = np.dtype(np.float32)
_FLOAT_TYPES = (np.float32, np.float64, np.float16)
_REDUCTIONS = ("mean", "sum", "none")


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the caller's array keeps its own flags)."""
    v = a.view()
    v.setflags(write=False)  # (cheaper than assigning flags.writeable)
    return v


#: Argument types that are never dask collections: the common calls' test
#: is three set lookups.
_EAGER_TYPES = frozenset(
    {np.ndarray, type(None), list, tuple, int, float, bool, np.float64, np.float32}
)


def is_dask_collection(x) -> bool:
    """Whether ``x`` is a dask collection (a type test: dask is not
    imported)."""
    return type(x).__module__.startswith("dask.")


def lazy(a, b=None, c=None) -> bool:
    """Whether any argument is a dask collection (a type test: dask is not
    imported). The NumPy API hands such calls to ``numxent.dask``."""
    eager = _EAGER_TYPES
    ta, tb, tc = type(a), type(b), type(c)
    if ta in eager and tb in eager and tc in eager:
        return False
    return any(
        t not in eager and t.__module__.startswith("dask.") for t in (ta, tb, tc)
    )


def as_compute(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous native array of ``dtype``, read-only.

    Copies only when the dtype, byte order or layout requires it.
    """
    return readonly(np.ascontiguousarray(a, dtype=dtype))


def is_bfloat16(dt: np.dtype) -> bool:
    """Whether ``dt`` is ``ml_dtypes.bfloat16``. ml_dtypes is not imported
    here: whoever holds a bfloat16 array has imported it already."""
    mld = sys.modules.get("ml_dtypes")
    return mld is not None and dt.type is mld.bfloat16


def check_logits(
    logits, name: str = "logits", *, min_ndim: int = 1, need_classes: bool = True
) -> np.ndarray:
    x = np.asarray(logits)
    if x.dtype.type not in _FLOAT_TYPES and not is_bfloat16(x.dtype):
        raise InvalidTypeError(
            f"{name} must be a floating array (float16, float32, float64 or "
            f"ml_dtypes.bfloat16), got dtype {x.dtype}; cast it, e.g. "
            f"{name}.astype(np.float32)"
        )
    if x.ndim < min_ndim:
        raise InvalidValueError(
            f"{name} must have at least {min_ndim} dimension(s) with classes on "
            f"the last axis, got a {x.ndim}-d array of shape {x.shape}"
        )
    if need_classes and x.shape[-1] == 0:
        raise InvalidValueError(
            f"{name} has 0 classes (shape {x.shape}); the last axis must be non-empty"
        )
    return x


def result_dtype(x: np.ndarray) -> np.dtype:
    """The dtype results come back in: the logits' dtype, native byte order."""
    dt = x.dtype
    return dt if dt.isnative else dt.newbyteorder("=")


def compute_dtype(x: np.ndarray) -> np.dtype:
    """The 16-bit formats (float16, bfloat16) are computed in float32;
    float32 and float64 as they are."""
    dt = result_dtype(x)
    return _F32 if dt.itemsize == 2 else dt


def is_16bit(dt: np.dtype) -> bool:
    """float16 or bfloat16 (the only 2-byte dtypes check_logits admits)."""
    return dt.itemsize == 2


def check_reduction(reduction) -> str:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise InvalidValueError(
            f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}"
        )
    return reduction


def check_label_smoothing(label_smoothing) -> float:
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise InvalidTypeError(
            f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}"
        ) from None
    if not 0.0 <= eps <= 1.0:  # also rejects NaN
        raise InvalidValueError(
            f"label_smoothing must be in [0, 1], got {label_smoothing!r}"
        )
    return eps


def check_lse_square_scale(lse_square_scale) -> float:
    """The z-loss scale: a finite float >= 0 (0 turns it off)."""
    try:
        z = float(lse_square_scale)
    except (TypeError, ValueError):
        raise InvalidTypeError(
            f"lse_square_scale must be a float >= 0, got {lse_square_scale!r}"
        ) from None
    if not 0.0 <= z < np.inf:  # also rejects NaN
        raise InvalidValueError(
            f"lse_square_scale must be finite and >= 0, got {lse_square_scale!r}"
        )
    return z


def check_softcap(softcap) -> float:
    """The soft-capping scale as the kernels read it: 0.0 for None (off), else
    a finite float > 0."""
    if softcap is None:
        return 0.0
    try:
        s = float(softcap)
    except (TypeError, ValueError):
        raise InvalidTypeError(
            f"softcap must be None or a float > 0, got {softcap!r}"
        ) from None
    if not 0.0 < s < np.inf:
        raise InvalidValueError(f"softcap must be finite and > 0, got {softcap!r}")
    return s


def check_hard_only(hard: bool, z: float, cap: float, return_z_loss: bool) -> None:
    """z-loss and soft-capping are served for class-index targets only."""
    if not hard and (z > 0.0 or cap > 0.0 or return_z_loss):
        raise InvalidValueError(
            "lse_square_scale, softcap and return_z_loss apply to class-index "
            "targets only; with class-probability targets leave them at their "
            "defaults"
        )


def check_plain_extras(what: str, z: float, cap: float, return_z_loss: bool) -> None:
    """z-loss and soft-capping are not served for ``what`` (yet)."""
    if z > 0.0 or cap > 0.0 or return_z_loss:
        raise InvalidValueError(
            f"lse_square_scale, softcap and return_z_loss are not supported for "
            f"{what}; leave them at their defaults (or pass float32/float64 "
            f"NumPy logits)"
        )


def check_ignore_index(ignore_index) -> int:
    try:
        return int(operator.index(ignore_index))
    except TypeError:
        raise InvalidTypeError(
            f"ignore_index must be an integer, got {ignore_index!r}"
        ) from None


def check_nonneg_int(value, name: str) -> int:
    """``int(value)``, checked >= 0."""
    n = int(value)
    if n < 0:
        raise InvalidValueError(f"{name} must be >= 0, got {n}")
    return n


def check_choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise InvalidValueError(
            f"unknown {what} {value!r}; choose from {', '.join(choices)}"
        )
    return value


def check_positive_int(value, name: str, what: str) -> int:
    """``int(value)``, checked >= 1 (``what`` says what it counts)."""
    n = check_nonneg_int(value, name)
    if n == 0:
        raise InvalidValueError(f"{name} must be >= 1 ({what})")
    return n


def check_axis(axis, ndim: int) -> int:
    """``axis`` as an int in [-ndim, ndim)."""
    try:
        axis = int(operator.index(axis))
    except TypeError:
        raise InvalidTypeError(f"axis must be an integer, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise InvalidValueError(f"axis={axis} is out of range for x with {ndim} dims")
    return axis


def check_soft_ignore_index(ignore_index: int) -> None:
    """Class-probability targets have no labels to ignore: only the default
    (or another negative value) is accepted."""
    if ignore_index >= 0:
        raise InvalidValueError(
            f"ignore_index={ignore_index} applies to class-index targets only; with "
            "class-probability targets leave it at its default (-100)"
        )


def check_nonneg_weights(w, name: str, shape: tuple | None) -> np.ndarray:
    """A float64 copy-or-view of ``w``, checked finite and >= 0; of exactly
    ``shape`` when that is given (else the caller checks broadcasting)."""
    a = np.asarray(w)
    if a.dtype.kind not in "biuf":
        raise InvalidTypeError(
            f"{name} must be a real numeric array, got dtype {a.dtype}"
        )
    if shape is not None and a.shape != tuple(shape):
        raise InvalidValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    if a.size and not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a.ravel()))[0]
        raise InvalidValueError(
            f"{name} must be finite, found {a.ravel()[bad]} at flat position {bad}"
        )
    if a.size and np.any(a < 0):
        bad = np.flatnonzero(a.ravel() < 0)[0]
        raise InvalidValueError(
            f"{name} must be non-negative, found {a.ravel()[bad]} at flat "
            f"position {bad}"
        )
    return a


def check_out(
    out, shape: tuple, dtype: np.dtype, return_grad: bool
) -> np.ndarray | None:
    if out is None:
        return None
    if not return_grad:
        raise InvalidValueError(
            "out receives the gradient: pass return_grad=True with out=, or drop out="
        )
    if not isinstance(out, np.ndarray):
        raise InvalidTypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise InvalidValueError(
            f"out must have the logits' shape {tuple(shape)}, got {out.shape}"
        )
    if out.dtype != dtype:
        raise InvalidTypeError(
            f"out must have the logits' dtype {dtype} (native byte order), got "
            f"{out.dtype}"
        )
    if not out.flags.c_contiguous:
        raise InvalidValueError(
            "out must be C-contiguous; allocate it with np.empty_like"
        )
    if not out.flags.writeable:
        raise InvalidValueError("out must be writeable, got a read-only array")
    return out


# Ignored rows are marked with this value in the int64 labels the kernels
# read; it can never be a valid class index.
IGNORED_LABEL = np.iinfo(np.int64).min
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def hard_labels(
    target: np.ndarray, n_classes: int, ignore_index: int, lead_shape: tuple
) -> tuple[np.ndarray, int]:
    """Flat int64 labels for the kernels and the ignore value they compare to.

    Range checks happen in the kernels' label scan (``scan_hard_labels``),
    except where int64 cannot hold the labels or ``ignore_index`` (uint64
    labels, an ignore_index beyond int64): there the labels are compared with
    ``ignore_index`` in their own dtype here, checked, and ignored rows are
    marked with ``IGNORED_LABEL``.
    """
    if target.shape != lead_shape:
        raise InvalidValueError(
            f"target of integer class indices must have the logits' leading shape "
            f"{lead_shape} (logits.shape[:-1]), got {target.shape}"
        )
    flat = target if target.ndim == 1 else target.reshape(-1)
    fits = _INT64_MIN <= ignore_index <= _INT64_MAX and (
        flat.dtype.type is np.int64
        or not (flat.dtype.kind == "u" and flat.dtype.itemsize == 8)
    )
    if fits:
        return readonly(np.ascontiguousarray(flat, dtype=np.int64)), ignore_index
    ignored = flat == ignore_index  # NumPy compares out-of-range ints exactly
    valid = (flat >= 0) & (flat < n_classes)
    bad = ~(valid | ignored)
    if np.any(bad):
        raise_bad_label(flat, np.flatnonzero(bad)[0], n_classes, lead_shape)
    y = np.where(ignored, IGNORED_LABEL, flat.astype(np.int64, copy=False))
    return readonly(np.ascontiguousarray(y, dtype=np.int64)), IGNORED_LABEL


def raise_bad_label(flat, pos: int, n_classes: int, lead_shape: tuple) -> NoReturn:
    """Raise the LabelIndexError for the bad label at flat position ``pos``
    (found by a kernel's label scan, or by ``hard_labels``)."""
    idx = np.unravel_index(pos, lead_shape) if lead_shape else ()
    where = tuple(int(p) for p in idx)
    loc = f"position {where}" if len(where) != 1 else f"position {where[0]}"
    raise LabelIndexError(
        f"target holds class index {flat[pos]} at {loc}, outside [0, {n_classes}) "
        f"and not ignore_index; labels must be in [0, {n_classes}) for logits with "
        f"{n_classes} classes"
    )


def classify_target(target, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """The target array and whether it holds hard labels (integer indices)."""
    t = np.asarray(target)
    kind = t.dtype.kind
    if kind in "iu":
        return t, True
    if kind == "f":
        if t.shape == x.shape:
            return t, False
        if t.shape == x.shape[:-1]:
            raise InvalidTypeError(
                f"target of shape {t.shape} looks like class indices but has "
                f"floating dtype {t.dtype}; cast it with target.astype(np.int64), "
                f"or pass class probabilities of the logits' shape {x.shape}"
            )
        raise InvalidValueError(
            f"target must be integer class indices of shape {x.shape[:-1]} or "
            f"class probabilities of shape {x.shape}, got shape {t.shape}"
        )
    raise InvalidTypeError(
        f"target must be integer class indices or floating class probabilities, "
        f"got dtype {t.dtype}"
    )


def check_bce_target(target, x: np.ndarray) -> np.ndarray:
    t = np.asarray(target)
    if t.dtype.kind not in "biuf" and not is_bfloat16(t.dtype):
        raise InvalidTypeError(
            f"target must be a real numeric array, got dtype {t.dtype}"
        )
    if t.shape != x.shape:
        raise InvalidValueError(
            f"target must have the logits' shape {x.shape}, got {t.shape}"
        )
    return t


def broadcast_weight(
    w: np.ndarray | np.generic, name: str, shape: tuple, rows: int, cols: int
):
    """``w`` broadcast to ``shape`` and viewed as (rows, cols), read-only."""
    try:
        b = np.broadcast_to(w, shape)
    except ValueError:
        raise InvalidValueError(
            f"{name} of shape {w.shape} cannot be broadcast to the logits' shape "
            f"{shape}"
        ) from None
    # A broadcast view usually reshapes without a copy (zero strides stay
    # zero); the rare layouts that cannot are materialised.
    return readonly(b.reshape(rows, cols))


# -- dask arrays (numxent.dask) --------------------------------------------
def check_dask_array(x, name: str, is_array: bool) -> None:
    """A dask collection other than a dask array (a DataFrame, a Bag) is
    refused by name (``is_array``: whether ``x`` is a ``dask.array.Array``)."""
    if is_dask_collection(x) and not is_array:
        raise InvalidTypeError(
            f"{name} must be a dask array (or a NumPy array), got "
            f"{type(x).__name__}; convert it with .to_dask_array()"
        )


def check_dense_blocks(block, name: str) -> None:
    """The estimator's Dask path takes NumPy blocks; ``block`` is a dask
    array's ``_meta`` (or an in-memory ``X`` passed with dask targets)."""
    if hasattr(block, "tocsr") or "sparse" in type(block).__module__:
        raise InvalidTypeError(
            f"{name} is sparse ({type(block).__name__}) in a fit or prediction "
            "on dask arrays; CrossEntropyClassifier fits sparse data in memory "
            "only: pass one SciPy sparse matrix with NumPy y and sample_weight, "
            f"or densify dask blocks with {name}.map_blocks(lambda b: b.toarray())"
        )


def check_known_chunks(chunks: tuple, name: str) -> None:
    if any(c != c for cs in chunks for c in cs):  # NaN: unknown
        raise InvalidValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )


def check_no_out(out) -> None:
    if out is not None:
        raise InvalidValueError(
            "out= is not supported on dask arrays: the gradient is a new lazy "
            "dask array (store it with da.store or grad.to_zarr)"
        )


def check_shape(shape: tuple, expected: tuple, name: str) -> None:
    if tuple(shape) != tuple(expected):
        raise InvalidValueError(f"{name} must have shape {expected}, got {shape}")


def check_broadcastable(shape: tuple, to: tuple, name: str) -> None:
    try:
        ok = np.broadcast_shapes(shape, to) == tuple(to)
    except ValueError:
        ok = False
    if not ok:
        raise InvalidValueError(
            f"{name} of shape {shape} cannot be broadcast to the logits' shape {to}"
        )


# -- linear_cross_entropy, vocabulary-parallel losses ----------------------
def check_linear(input, linear_weight, linear_bias):
    """``(input, linear_weight, linear_bias or None)`` as arrays: input
    (..., H), weight (V, H) with V >= 1, bias (V,)."""
    h = check_logits(input, "input", min_ndim=1)
    w = check_logits(linear_weight, "linear_weight", min_ndim=1)
    if w.ndim != 2:
        raise InvalidValueError(
            f"linear_weight must be 2-D (n_classes, hidden), got shape {w.shape}"
        )
    n_classes, hidden = w.shape
    if h.shape[-1] != hidden:
        raise InvalidValueError(
            f"input's last axis ({h.shape[-1]}) must match linear_weight's second "
            f"axis (hidden size {hidden}): input {h.shape}, linear_weight {w.shape}"
        )
    if n_classes == 0:
        raise InvalidValueError("linear_weight has 0 rows (classes)")
    if linear_bias is None:
        return h, w, None
    b = check_logits(linear_bias, "linear_bias", min_ndim=1)
    if b.shape != (n_classes,):
        raise InvalidValueError(
            f"linear_bias must have shape ({n_classes},) (linear_weight.shape[0]),"
            f" got {b.shape}"
        )
    return h, w, b


def check_class_indices(target, what: str) -> np.ndarray:
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise InvalidTypeError(
            f"target must be integer class indices for {what}, got dtype {t.dtype}"
        )
    return t


def check_ranks_agree(problems: list, what: str) -> None:
    """Raise on every rank of a process group alike what any rank found wrong:
    ``(is_type_error, message)`` pairs gathered from every rank, none left waiting."""
    msg = f"{what} with process_group: " + "; ".join(m for _, m in problems)
    if problems and all(t for t, _ in problems):
        raise InvalidTypeError(msg)
    if problems:
        raise InvalidValueError(msg)


# -- the estimator (numxent.sklearn, numxent._dask_fit) --------------------
def raise_bad_param(estimator, name: str, want: str) -> NoReturn:
    """scikit-learn's message for a constructor parameter out of its domain."""
    value = getattr(estimator, name)
    raise InvalidValueError(
        f"The '{name}' parameter of {type(estimator).__name__} must be {want}. "
        f"Got {value!r} instead."
    )


def check_class_weight_multilabel(class_weight) -> None:
    if class_weight is not None:
        raise InvalidValueError(
            "class_weight is not supported for multi-label targets; pass "
            "sample_weight instead"
        )


def check_target_type(y_type: str, estimator: str) -> None:
    if y_type not in ("binary", "multiclass"):
        raise InvalidValueError(
            f"{estimator} supports binary, multiclass and multi-label indicator "
            f"targets; got a '{y_type}' target"
        )


def check_two_classes(classes: np.ndarray) -> None:
    if classes.size < 2:
        raise InvalidValueError(
            "This solver needs samples of at least 2 classes in the data, "
            f"but the data contains only one class: {classes[0]!r}"
        )


def check_indicator(values: np.ndarray) -> None:
    """A 2-D target holds only 0 and 1 (``values``: its distinct values)."""
    if not np.isin(values, [0, 1]).all():
        raise InvalidValueError(
            "a 2-D y must be a 0/1 multi-label indicator matrix; got values "
            f"{values[:5].tolist()}"
        )


def check_weight_sum(total: float) -> float:
    if not total > 0:
        raise InvalidValueError("sample_weight (times class weights) sums to zero")
    return total


def check_weights_ok(ok: bool, name: str) -> None:
    if not ok:
        raise InvalidValueError(f"{name} must be finite and non-negative")


def check_sample_weight_vector(sw: np.ndarray, n: int) -> np.ndarray:
    if sw.shape != (n,):
        raise InvalidValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)")
    return sw


def check_nonneg_sample_weight(sw: np.ndarray) -> np.ndarray:
    if np.any(sw < 0):
        raise InvalidValueError("sample_weight must be non-negative")
    return sw


def check_ndim_at_most(a, ndim: int, name: str) -> None:
    if a.ndim > ndim:
        raise InvalidValueError(
            f"{name} must be 1-D or {ndim}-D, got {a.ndim} dimensions"
        )


def check_features(shape: tuple, name: str, n_features: int | None) -> None:
    """A 2-D feature matrix, of ``n_features`` columns when that is given."""
    if len(shape) != 2:
        raise InvalidValueError(
            f"Expected a 2-D dask array for {name}, got {len(shape)} dimension(s)"
        )
    if n_features is not None and shape[1] != n_features:
        raise InvalidValueError(
            f"{name} has {shape[1]} features, but CrossEntropyClassifier is "
            f"expecting {n_features} features as input."
        )


def check_numeric(dtype: np.dtype, name: str) -> None:
    if dtype.kind not in "biuf":
        raise InvalidValueError(f"{name} must hold numbers, got dtype {dtype}")


def check_same_samples(n: int, n_x: int, name: str) -> None:
    if n != n_x:
        raise InvalidValueError(f"{name} has {n} samples, X has {n_x}: they must match")
