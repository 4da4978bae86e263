"""Fused linear cross-entropy: the loss of ``input @ linear_weight.T +
linear_bias`` without the N x V logits.

The tokens are processed a chunk of rows at a time: one GEMM makes the
chunk's logits in a reused buffer, the hard-label kernel overwrites them in
place with their gradient ``G_c``, and two more GEMMs take ``G_c @ W`` (the
chunk's input gradient) and accumulate ``G_c.T @ h_c`` into the weight
gradient. Memory beyond the inputs and the gradients is the chunk buffer
(``chunk_bytes``, 64 MiB by default) and a few per-row arrays.

BLAS: SciPy's ``gemm`` when SciPy is installed (its ``beta=1`` accumulates the
weight gradient in place, its ``alpha`` applies the mean's scale), else
NumPy's ``matmul`` with one weight-sized temporary for the accumulation.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _kernels as K
from . import _ops as O
from . import _validation as V

__all__ = ["linear_cross_entropy", "DEFAULT_CHUNK_BYTES"]

#: Bytes of chunk logits held at a time, by default.
DEFAULT_CHUNK_BYTES = 64 << 20


@functools.cache
def _scipy_blas():
    """SciPy's BLAS (gemm with alpha / beta into a given array), imported on
    the first product: ``import numxent`` does not import SciPy."""
    try:
        from scipy.linalg import blas
    except ImportError:  # pragma: no cover - SciPy is in the test environment
        return None
    return blas


def _gemm(alpha: float, a, b, c, beta: float) -> None:
    """``c = alpha * a @ b + beta * c`` in place, for C-ordered 2-D arrays
    (through the transposed, Fortran-ordered views BLAS reads)."""
    _blas = _scipy_blas()
    if _blas is not None:
        f = _blas.sgemm if c.dtype == np.float32 else _blas.dgemm
        # c.T = alpha * b.T @ a.T + beta * c.T, Fortran-ordered: each factor
        # passed as it is or transposed (trans=1), never copied
        ta, tb = b.T, a.T
        trans_a = not ta.flags.f_contiguous
        trans_b = not tb.flags.f_contiguous
        r = f(alpha, ta.T if trans_a else ta, tb.T if trans_b else tb, beta=beta,
              c=c.T, trans_a=trans_a, trans_b=trans_b, overwrite_c=True)  # fmt: skip
        if r.base is not c and r is not c.T and not np.shares_memory(r, c):
            np.copyto(c, r.T)  # (never seen: f2py wrote into c.T)
        return
    if beta == 0.0:
        np.matmul(a, b, out=c)
        if alpha != 1.0:
            c *= alpha
    else:
        t = np.matmul(a, b)
        if alpha != 1.0:
            t *= alpha
        c += t


def even_chunks(n_rows: int, most: int) -> int:
    """Rows a chunk when ``n_rows`` rows are cut into as few chunks of at most
    ``most`` rows as will do, all of one size but the last (shorter by fewer
    rows than there are chunks). A ragged last chunk made a GEMM of another
    shape, for which OpenBLAS took a buffer of its own (measured at 4,096 x
    512 -> 32,000: 84-96 MiB beyond the gradients with chunks of 524, 524,
    ..., 428 rows; 62-63 MiB with eight of 512)."""
    most = max(1, most)
    n_chunks = max(1, -(-n_rows // most))
    return max(1, -(-n_rows // n_chunks))


def _chunk_rows(chunk_size, chunk_bytes, n_rows: int, n_classes: int,
                itemsize: int) -> int:  # fmt: skip
    if chunk_size is not None:
        return V.check_positive_int(chunk_size, "chunk_size", "rows per chunk")
    budget = V.check_nonneg_int(chunk_bytes, "chunk_bytes")
    return even_chunks(n_rows, budget // (n_classes * itemsize))


def linear_cross_entropy(
    input: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    return_grad: bool = False,
    chunk_size: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Any:
    r"""``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``
    without ever holding the N x V logits.

    Parameters
    ----------
    input : float array of shape (..., H)
        Hidden states; the leading axes are tokens (N of them in all).
    linear_weight : float array of shape (V, H)
        The output layer's weight, laid out as ``torch.nn.Linear.weight``.
    target : int array of shape input.shape[:-1]
        Class indices in ``[0, V)`` or ``ignore_index``.
    linear_bias : float array of shape (V,), optional
        The output layer's bias.
    weight, sample_weight, ignore_index, reduction, label_smoothing
        As for :func:`numxent.cross_entropy` (class weights of shape (V,),
        per-token weights of shape input.shape[:-1]).
    lse_square_scale, softcap, return_z_loss
        z-loss and logit soft-capping, as for :func:`numxent.cross_entropy`.
    return_grad : bool, default False
        Also return ``(grad_input, grad_linear_weight, grad_linear_bias)``,
        the gradients of the (reduced) loss; ``grad_linear_bias`` is None
        without a bias. The weight gradient is accumulated in place in the
        compute dtype (float32, or float64 when input or weight is float64).
    chunk_size : int, optional
        Rows (tokens) per chunk; by default from ``chunk_bytes``.
    chunk_bytes : int, default 64 MiB
        Bound on the chunk's logits buffer when ``chunk_size`` is not given:
        chunks of at most ``max(1, chunk_bytes // (V * itemsize))`` rows, as
        few as will do, of one size (``ceil(N / n_chunks)`` rows; the last
        may be shorter).

    Returns
    -------
    loss, or (loss, z_loss), followed by the gradients' tuple with ``return_grad``:
        ``loss`` (and ``z_loss``) as :func:`numxent.cross_entropy` gives them
        for the materialised logits: a scalar for "mean" / "sum", an array of
        shape input.shape[:-1] for "none" (whose gradients are those of the
        per-token losses' sum).

    Notes
    -----
    "mean" divides by the total weight of the kept tokens, found by one scan
    of the labels before the first chunk; the chunks' gradients are scaled by
    it inside the GEMMs. The logits of each chunk are BLAS results, so they
    (and the loss) agree with the materialised computation to the GEMM's
    rounding, not bitwise.

    Examples
    --------
    >>> import numpy as np, numxent as nx
    >>> rng = np.random.default_rng(0)
    >>> h = rng.standard_normal((6, 4)); W = rng.standard_normal((10, 4))
    >>> y = np.array([1, 2, 3, -100, 9, 0])
    >>> loss, (gh, gW, gb) = nx.linear_cross_entropy(h, W, y, return_grad=True)
    >>> bool(np.isclose(loss, nx.cross_entropy(h @ W.T, y)))
    True
    >>> gh.shape, gW.shape, gb is None
    ((6, 4), (10, 4), True)
    """
    return _linear_ce(
        input, linear_weight, target, linear_bias, weight, sample_weight,
        ignore_index, reduction, label_smoothing, lse_square_scale, softcap,
        return_z_loss, return_grad, chunk_size, chunk_bytes, _gemm, None,
    )  # fmt: skip


def _linear_ce(input, linear_weight, target, linear_bias, weight, sample_weight,
               ignore_index, reduction, label_smoothing, lse_square_scale, softcap,
               return_z_loss, return_grad, chunk_size, chunk_bytes, gemm,
               row_scale):  # fmt: skip
    """:func:`linear_cross_entropy` with the matrix products done by
    ``gemm(alpha, a, b, c, beta)`` (``c = alpha * a @ b + beta * c`` in place on
    NumPy arrays): the PyTorch bridge passes PyTorch's own. ``row_scale``:
    None, or one factor per token multiplying that token's gradient (the
    bridge's backward of ``reduction="none"``: the upstream gradient)."""
    h, w_lin, bias = V.check_linear(input, linear_weight, linear_bias)
    n_classes, hidden = w_lin.shape
    red = V.check_reduction(reduction)
    eps = V.check_label_smoothing(label_smoothing)
    ignore = V.check_ignore_index(ignore_index)
    z = V.check_lse_square_scale(lse_square_scale)
    cap = V.check_softcap(softcap)
    t = V.check_class_indices(target, "linear_cross_entropy")
    lead = h.shape[:-1]
    n_rows = math.prod(lead)
    y, ignore_k = V.hard_labels(t, n_classes, ignore, lead)
    w, w_total = O.class_weights(weight, n_classes)
    sw = O.sample_weights(sample_weight, lead)
    first_bad, denom = K.scan_hard_labels(y, n_classes, ignore_k, w, sw)
    if first_bad >= 0:
        V.raise_bad_label(t.reshape(-1), first_bad, n_classes, lead)
    # -- every check has passed: nothing below raises on user input --

    wide = np.float64 in (h.dtype.type, w_lin.dtype.type)
    cdtype = np.dtype(np.float64 if wide else np.float32)
    dtype = np.result_type(h.dtype, w_lin.dtype)
    hk = V.as_compute(h, cdtype).reshape(n_rows, hidden)
    wk = V.as_compute(w_lin, cdtype)
    bk = None if bias is None else V.as_compute(bias, cdtype)
    mean = red == "mean"
    empty_mean = mean and denom == 0.0
    gscale = 1.0 / denom if mean and not empty_mean else 1.0

    if row_scale is not None:  # (N, 1): a factor per row of each chunk
        row_scale = V.as_compute(np.asarray(row_scale).reshape(n_rows, 1), cdtype)
    rows = _chunk_rows(chunk_size, chunk_bytes, n_rows, n_classes, cdtype.itemsize)
    rows = max(1, min(rows, n_rows))
    buf = np.empty((rows, n_classes), dtype=cdtype)
    per_row = np.zeros(n_rows)
    zrows = np.zeros(n_rows) if return_z_loss and z > 0.0 else O.NO_ROWS
    if return_grad:
        g_in = np.empty((n_rows, hidden), dtype=cdtype)
        g_w = np.zeros((n_classes, hidden), dtype=cdtype)
        g_b = None if bk is None else np.zeros(n_classes)
    no_grad = np.empty((0, n_classes), dtype=cdtype)
    # each chunk: the cross-entropy call of its logits, in place in ``buf``
    whole = O.CECall(buf, y, w, w_total, sw, ignore_k, eps, "sum", per_row, no_grad,
                     O.FMT_NONE, True, denom, dtype, lead, None, None, t)  # fmt: skip
    for c0 in range(0, n_rows, rows):
        c1 = min(n_rows, c0 + rows)
        bc = buf[: c1 - c0]
        hc = hk[c0:c1]
        gemm(1.0, hc, wk.T, bc, 0.0)
        if bk is not None:
            bc += bk
        chunk = whole._replace(
            x=V.readonly(bc), target=y[c0:c1], sw=sw[c0:c1] if sw.shape[0] else sw,
            per_row=per_row[c0:c1], kgrad=bc if return_grad else no_grad,
        )  # fmt: skip
        zc = zrows[c0:c1] if zrows.shape[0] else O.NO_ROWS
        O.launch_ce(chunk, z, cap, zc, scratch=bc)
        if row_scale is not None and return_grad:
            bc *= row_scale[c0:c1]
        if return_grad and not empty_mean:
            gemm(gscale, bc, wk, g_in[c0:c1], 0.0)
            gemm(gscale, bc.T, hc, g_w, 1.0)
            if g_b is not None:
                g_b += np.add.reduce(bc, axis=0, dtype=np.float64)

    loss = O.reduce_loss(per_row, red, denom, None, dtype, lead)
    res: tuple = (loss,)
    if return_z_loss:
        zr = zrows if z > 0.0 else np.zeros(n_rows)
        res += (O.reduce_loss(zr, red, denom, None, dtype, lead),)
    if return_grad:
        if empty_mean:
            g_in[...] = 0
            g_w[...] = 0
            if g_b is not None:
                g_b[...] = 0
        gi = g_in.reshape(h.shape).astype(h.dtype, copy=False)
        gw = g_w.astype(w_lin.dtype, copy=False)
        gb = None
        if g_b is not None and bias is not None:
            gb = (g_b * gscale).astype(bias.dtype, copy=False)
        res += ((gi, gw, gb),)
    return res[0] if len(res) == 1 else res
