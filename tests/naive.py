"""Slow, obviously correct float64 NumPy references for the test suite.

Nothing here imports numxent. Every function works in float64, loops over
samples where that is clearer than vectorising, and writes the formulas of
PyTorch's ``cross_entropy`` / ``binary_cross_entropy_with_logits`` with the
class axis moved last (see SPEC.md section 2).

Each loss returns ``(loss, grad)``: ``loss`` is a float for "mean"/"sum" and an
array for "none"; ``grad`` has the logits' shape and is the derivative of the
reduced loss (for "none": of the sum of the "none" output, i.e. each element
is the derivative of its own sample's loss).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bce_with_logits_ref",
    "cross_entropy_ref",
    "log_softmax_ref",
    "logsumexp_ref",
    "penalised_objective_ref",
    "softmax_ref",
]


# --------------------------------------------------------------------------
# log-sum-exp family
# --------------------------------------------------------------------------
def _rows_logsumexp(rows: np.ndarray) -> np.ndarray:
    """log(sum(exp(row))) of each row of a 2-D float64 array, shifted by the
    row's max. A NaN row gives NaN; a row whose max is infinite gives that
    max (all -inf -> -inf; any +inf -> +inf: exp(+inf) dominates the sum)."""
    m = np.max(rows, axis=-1) if rows.shape[-1] else np.full(rows.shape[0], -np.inf)
    out = m.copy()  # NaN and infinite maxima are the answer as they are
    finite = np.isfinite(m)
    shifted = rows[finite] - m[finite, None]
    out[finite] = m[finite] + np.log(np.sum(np.exp(shifted), axis=-1))
    return out


def logsumexp_ref(x, axis: int = -1) -> np.ndarray:
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    flat = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    return _rows_logsumexp(flat).reshape(x.shape[:-1])


def log_softmax_ref(x, axis: int = -1) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    lse = np.expand_dims(logsumexp_ref(x64, axis=axis), axis)
    with np.errstate(invalid="ignore"):
        return x64 - lse


def softmax_ref(x, axis: int = -1) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.exp(log_softmax_ref(x, axis=axis))


# --------------------------------------------------------------------------
# cross-entropy
# --------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}")


def cross_entropy_ref(
    logits,
    target,
    weight=None,
    sample_weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
):
    """Reference of ``torch.nn.functional.cross_entropy`` (class axis last).

    Hard labels ``y`` (integer, shape ``logits.shape[:-1]``)::

        loss_i = (1-eps) * w[y_i] * (-logp_i[y_i])
                 + (eps/C) * sum_k w_k * (-logp_i[k])       (0 if y_i ignored)

    (xlogy: a term whose coefficient is 0 adds 0, even where logp is -inf)
        d loss_i / d x_ij = p_ij * ((1-eps) w[y_i] + (eps/C) sum_k w_k)
                            - (1-eps) w[y_i] [j == y_i] - (eps/C) w_j

    Soft labels ``t`` (floating, shape ``logits.shape``), ``q = (1-eps) t + eps/C``::

        loss_i = -sum_k w_k q_ik logp_ik      (xlogy: w_k q_ik == 0 adds 0)
        d loss_i / d x_ij = p_ij * sum_k w_k q_ik - w_j q_ij

    Hard labels only, the large-vocabulary extras: ``softcap`` ``c`` replaces
    every logit by ``c tanh(x / c)`` first (the gradient is taken through it,
    times ``1 - tanh**2``), and the z-loss ``lse_square_scale`` ``z`` adds to a
    kept row::

        z w[y_i] lse_i**2,    d / d x_ij = 2 z w[y_i] lse_i p_ij

    with ``lse_i`` the log-sum-exp of the (capped) row. ``return_z_loss`` also
    returns that part alone, reduced like the loss: ``(loss, z_loss, grad)``.

    ``sample_weight`` ``s_i`` multiplies loss_i. "mean" divides the weighted
    sum by ``sum_{i kept} s_i w[y_i]`` (hard) or ``sum_i s_i`` (soft); a zero
    denominator gives a NaN loss and an all-zero gradient.
    """
    _check_reduction(reduction)
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension")
    target = np.asarray(target)
    C = x.shape[-1]
    lead = x.shape[:-1]
    N = int(np.prod(lead, dtype=np.int64))
    X = x.reshape(N, C)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    assert w.shape == (C,)
    if sample_weight is None:
        s = np.ones(N)
    else:
        s = np.asarray(sample_weight, dtype=np.float64)
        assert s.shape == lead, (s.shape, lead)
        s = s.reshape(N)
    eps = float(label_smoothing)
    soft = np.issubdtype(target.dtype, np.floating)
    z = float(lse_square_scale)
    cap_grad = np.ones((N, C))
    if softcap is not None:
        assert not soft, "softcap applies to class-index targets only"
        th = np.tanh(X / softcap)
        X = softcap * th
        cap_grad = 1.0 - th * th
    if soft:
        assert z == 0.0, "the z-loss applies to class-index targets only"

    losses = np.zeros(N)
    grads = np.zeros((N, C))
    zlosses = np.zeros(N)
    denom = 0.0
    logp_rows = log_softmax_ref(X)  # row by row: each row its own softmax
    lse_rows = logsumexp_ref(X)
    if soft:
        assert target.shape == x.shape
        T = target.astype(np.float64).reshape(N, C)
        for i in range(N):
            q = (1.0 - eps) * T[i] + eps / C
            wq = w * q
            logp = logp_rows[i]
            p = np.exp(logp)
            # xlogy convention: a zero coefficient contributes exactly 0,
            # even where logp is -inf (NaN logits still propagate).
            with np.errstate(invalid="ignore"):
                terms = np.where((wq == 0.0) & (logp == -np.inf), 0.0, wq * logp)
            losses[i] = s[i] * -np.sum(terms)
            grads[i] = s[i] * (p * np.sum(wq) - wq)
            denom += s[i]
    else:
        assert np.issubdtype(target.dtype, np.integer), target.dtype
        assert target.shape == lead, (target.shape, lead)
        Y = target.reshape(N)
        for i in range(N):
            y = int(Y[i])
            if y == ignore_index:
                continue  # loss 0, grad 0, not in the denominator
            if not 0 <= y < C:
                raise IndexError(f"target {y} out of range [0, {C})")
            logp = logp_rows[i]
            p = np.exp(logp)
            # xlogy convention as for soft labels: a zero coefficient adds 0,
            # even where logp is -inf (NaN logits still propagate).
            a_y = (1.0 - eps) * w[y]
            loss = 0.0 if a_y == 0.0 and logp[y] == -np.inf else a_y * -logp[y]
            g = p * a_y
            g[y] -= a_y
            if eps > 0.0:
                zero = (w == 0.0) & (logp == -np.inf)
                with np.errstate(invalid="ignore"):
                    loss += (eps / C) * np.sum(np.where(zero, 0.0, w * -logp))
                g += (eps / C) * (p * np.sum(w) - w)
            if z > 0.0:
                zlosses[i] = s[i] * z * w[y] * lse_rows[i] ** 2
                loss += z * w[y] * lse_rows[i] ** 2
                g += 2.0 * z * w[y] * lse_rows[i] * p
            losses[i] = s[i] * loss
            grads[i] = s[i] * g * cap_grad[i]  # chain rule through the cap
            denom += s[i] * w[y]

    grad = grads.reshape(x.shape)
    if reduction == "none":
        loss, z_loss = losses.reshape(lead), zlosses.reshape(lead)
    elif reduction == "sum":
        loss, z_loss = float(np.sum(losses)), float(np.sum(zlosses))
    elif denom == 0.0:
        loss, z_loss, grad = float("nan"), float("nan"), np.zeros_like(grad)
    else:
        loss, z_loss = float(np.sum(losses) / denom), float(np.sum(zlosses) / denom)
        grad = grad / denom
    return (loss, z_loss, grad) if return_z_loss else (loss, grad)


# --------------------------------------------------------------------------
# binary cross-entropy with logits
# --------------------------------------------------------------------------
def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bce_with_logits_ref(
    logits,
    target,
    weight=None,
    pos_weight=None,
    sample_weight=None,
    reduction: str = "mean",
):
    """Reference of ``torch.nn.functional.binary_cross_entropy_with_logits``.

    With ``lw = 1 + (pw - 1) t``::

        loss = w * [(1 - t) x + lw * softplus(-x)]
             = w * [(1 - t) softplus(x) + pw t softplus(-x)]
        d loss / dx = w * [(1 - t) - lw * sigmoid(-x)]

    ``weight`` broadcasts to the logits' shape, ``pos_weight`` along the last
    axis. ``sample_weight`` has shape ``logits.shape[:-1]`` (broadcast over the
    last axis) for >= 2-D logits and ``logits.shape`` for 1-D logits; "mean"
    is ``np.average(loss, weights=broadcast sample_weight)``.
    """
    _check_reduction(reduction)
    x = np.asarray(logits, dtype=np.float64)
    t = np.broadcast_to(np.asarray(target, dtype=np.float64), x.shape)
    w = (
        np.ones(x.shape)
        if weight is None
        else np.broadcast_to(np.asarray(weight, dtype=np.float64), x.shape)
    )
    pw = (
        np.ones(x.shape)
        if pos_weight is None
        else np.broadcast_to(np.asarray(pos_weight, dtype=np.float64), x.shape)
    )
    if sample_weight is None:
        s = np.ones(x.shape)
    else:
        s = np.asarray(sample_weight, dtype=np.float64)
        if x.ndim >= 2:
            assert s.shape == x.shape[:-1], (s.shape, x.shape)
            s = s[..., None]
        else:
            assert s.shape == x.shape, (s.shape, x.shape)
        s = np.broadcast_to(s, x.shape)

    # Two softplus terms, each with a non-negative coefficient for t in
    # [0, 1]; a zero coefficient contributes 0 even when softplus is +inf
    # (a NaN logit still propagates).
    a = 1.0 - t
    b = pw * t
    nan = np.isnan(x)
    with np.errstate(invalid="ignore", over="ignore"):
        term_a = np.where((a == 0.0) & ~nan, 0.0, a * _softplus(x))
        term_b = np.where((b == 0.0) & ~nan, 0.0, b * _softplus(-x))
        lw = 1.0 + (pw - 1.0) * t
        elem_loss = w * (term_a + term_b)
        elem_grad = w * (a - lw * _sigmoid(-x))

    loss = s * elem_loss
    grad = s * elem_grad
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return float(np.sum(loss)), grad
    denom = float(np.sum(s))
    if denom == 0.0:
        return float("nan"), np.zeros_like(grad)
    return float(np.sum(loss) / denom), grad / denom


def penalised_objective_ref(X, y, sw, kind, theta, l2, eps):
    """The estimator's penalised objective and its gradient in float64 NumPy
    (dense ``X``): ``kind`` "binary", "multiclass" or "multilabel", ``theta``
    the coefficients row-major then the intercepts, ``l2`` = 1 / (C S)."""
    from scipy.special import expit, log_softmax  # (the sklearn extra's)

    n, f = X.shape
    k = 1 if kind == "binary" else y.shape[1] if kind == "multilabel" else y.max() + 1
    W, b = theta[: k * f].reshape(k, f), theta[k * f :]
    Z = X @ W.T + b
    S = sw.sum()
    if kind == "multiclass":
        T = (1 - eps) * np.eye(k)[y] + eps / k
        loss = -(T * log_softmax(Z, axis=1)).sum(1)
        G = np.exp(log_softmax(Z, axis=1)) - T
    else:
        T = y.reshape(n, -1).astype(float)
        loss = (np.logaddexp(0, Z) - T * Z).sum(1)
        G = expit(Z) - T
    G = G * sw[:, None] / S
    value = (sw * loss).sum() / S + 0.5 * l2 * (W**2).sum()
    grad = np.concatenate([(G.T @ X + l2 * W).ravel(), G.sum(0)])
    return value, grad
