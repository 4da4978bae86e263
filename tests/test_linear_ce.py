"""The fused linear cross-entropy against ``cross_entropy`` of the
materialised logits, and the z-loss / soft-capping options' plumbing
(NumPy only).

``linear_cross_entropy(h, W, y, linear_bias=b)`` must equal
``cross_entropy(h @ W.T + b, y)``, and its gradients the chain rule through
that product: ``G W``, ``G^T h`` and the column sums of ``G``, with ``G``
the logits' gradient. ``cross_entropy`` itself, z-loss and soft-capping
included, is checked against the float64 reference in
test_naive_reference.py; here the grid is thin and its concern is what the
linear entry adds: chunking (one row, a chunk of ignored rows only, a chunk
that does not divide the rows, one chunk, a chunk larger than the batch),
the bias, the leading shapes and the options passed through. The PyTorch
entry is in test_torch_linear.py.
"""

import numpy as np
import pytest

import numxent as nx

CHUNKS = [None, 1, 4, 10, 37, 1000]
# (leading shape, classes, hidden, options): each option on in some case;
# 50 classes are tile rows, 300 row-at-a-time rows.
CASES = {
    "plain": ((37,), 50, 8, {}),
    "bias-zloss-3d": ((5, 7), 300, 16, dict(bias=True, lse_square_scale=1e-3)),
    "weight-smoothing-unbatched": (
        (),
        50,
        8,
        dict(weight=True, label_smoothing=0.1, lse_square_scale=1e-3),
    ),
    "all-options": (
        (37,),
        300,
        16,
        dict(
            bias=True,
            weight=True,
            sample_weight=True,
            lse_square_scale=1e-3,
            softcap=4.0,
        ),
    ),
}

# The float32 entry once on each row kind (each float32 case compiles the
# kernels for another set of argument types).
FLOAT32_CASES = ("plain", "all-options")


def _materialised(h, W, b, y, kw):
    """(loss, grad_h, grad_W, grad_b) from cross_entropy of h @ W.T + b."""
    x = h @ W.T if b is None else h @ W.T + b
    loss, grad = nx.cross_entropy(x, y, return_grad=True, **kw)
    G = grad.reshape(-1, W.shape[0])
    h2 = h.reshape(-1, W.shape[1])
    gb = None if b is None else G.sum(axis=0)
    return loss, (G @ W).reshape(h.shape), G.T @ h2, gb


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", list(CASES))
def test_linear_cross_entropy_matches_materialised(case, red):
    lead, n_classes, hidden, opts = CASES[case]
    rng = np.random.default_rng(len(case) + 7 * len(lead))
    h = rng.standard_normal(lead + (hidden,))
    W = rng.standard_normal((n_classes, hidden)) * 0.5
    y = rng.integers(0, n_classes, lead)
    if y.size > 12:
        y.reshape(-1)[4:12] = -100  # with chunk_size=4: a chunk of ignored rows
    b = rng.standard_normal(n_classes) if opts.get("bias") else None
    kw = dict(reduction=red)
    if opts.get("weight"):
        kw["weight"] = rng.random(n_classes)
    if opts.get("sample_weight"):
        kw["sample_weight"] = rng.random(lead)
    for key in ("label_smoothing", "lse_square_scale", "softcap"):
        if key in opts:
            kw[key] = opts[key]
    r_loss, r_h, r_W, r_b = _materialised(h, W, b, y, kw)
    for chunk in CHUNKS:
        what = f"chunk_size={chunk}"
        loss, (gh, gW, gb) = nx.linear_cross_entropy(
            h, W, y, linear_bias=b, return_grad=True, chunk_size=chunk, **kw
        )
        assert gh.shape == h.shape and gW.shape == W.shape, what
        np.testing.assert_allclose(loss, r_loss, rtol=1e-10, atol=1e-12, err_msg=what)
        np.testing.assert_allclose(gh, r_h, rtol=1e-9, atol=1e-12, err_msg=what)
        np.testing.assert_allclose(gW, r_W, rtol=1e-9, atol=1e-12, err_msg=what)
        if b is None:
            assert gb is None, what
        else:
            np.testing.assert_allclose(gb, r_b, rtol=1e-9, atol=1e-12, err_msg=what)
        only = nx.linear_cross_entropy(h, W, y, linear_bias=b, chunk_size=chunk, **kw)
        np.testing.assert_allclose(only, r_loss, rtol=1e-10, atol=1e-12, err_msg=what)
    if case in FLOAT32_CASES:  # float32 inputs: tile and row-at-a-time rows
        b32 = None if b is None else b.astype(np.float32)
        l32 = nx.linear_cross_entropy(
            h.astype(np.float32), W.astype(np.float32), y, linear_bias=b32, **kw
        )
        assert np.asarray(l32).dtype == np.float32
        np.testing.assert_allclose(l32, r_loss, rtol=1e-4, atol=1e-5)


def test_extras_off_is_plain_and_z_loss_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 9))
    y = rng.integers(0, 9, 20)
    plain, g = nx.cross_entropy(x, y, return_grad=True)
    loss, zl, g2 = nx.cross_entropy(x, y, return_z_loss=True, return_grad=True)
    assert loss == plain and zl == 0.0 and np.array_equal(g, g2)


def test_extras_errors_and_bad_label_leaves_out_untouched():
    x = np.zeros((3, 4))
    y = np.array([0, 1, 2])
    with pytest.raises(nx.InvalidValueError, match="lse_square_scale"):
        nx.cross_entropy(x, y, lse_square_scale=-1.0)
    with pytest.raises(nx.InvalidValueError, match="softcap"):
        nx.cross_entropy(x, y, softcap=0.0)
    with pytest.raises(nx.InvalidTypeError, match="softcap"):
        nx.cross_entropy(x, y, softcap="a")
    with pytest.raises(nx.InvalidValueError, match="class-index"):
        nx.cross_entropy(x, np.full((3, 4), 0.25), softcap=2.0)
    out = np.full((3, 4), 7.0)
    with pytest.raises(nx.LabelIndexError):
        nx.cross_entropy(x, np.array([0, 9, 1]), softcap=2.0, return_grad=True,
                         out=out)  # fmt: skip
    assert np.all(out == 7.0)


def test_linear_z_loss_and_all_ignored_mean():
    rng = np.random.default_rng(3)
    h, W = rng.standard_normal((9, 4)), rng.standard_normal((6, 4))
    y = rng.integers(0, 6, 9)
    loss, zl = nx.linear_cross_entropy(h, W, y, lse_square_scale=0.01,
                                       return_z_loss=True, chunk_size=2)  # fmt: skip
    ref_loss, ref_z = nx.cross_entropy(h @ W.T, y, lse_square_scale=0.01,
                                       return_z_loss=True)  # fmt: skip
    np.testing.assert_allclose([loss, zl], [ref_loss, ref_z], rtol=1e-12)
    loss, (gh, gW, gb) = nx.linear_cross_entropy(
        h, W, np.full(9, -100), return_grad=True, chunk_size=4
    )
    assert np.isnan(loss) and not gh.any() and not gW.any() and gb is None


def test_linear_errors_name_arguments():
    h, W, y = np.zeros((3, 4)), np.zeros((5, 4)), np.array([0, 1, 2])
    with pytest.raises(nx.InvalidValueError, match="linear_weight"):
        nx.linear_cross_entropy(h, np.zeros((5, 3)), y)
    with pytest.raises(nx.InvalidValueError, match="linear_bias"):
        nx.linear_cross_entropy(h, W, y, linear_bias=np.zeros(4))
    with pytest.raises(nx.InvalidValueError, match="target"):
        nx.linear_cross_entropy(h, W, np.array([0, 1]))
    with pytest.raises(nx.InvalidTypeError, match="target"):
        nx.linear_cross_entropy(h, W, np.zeros(3))
    with pytest.raises(nx.LabelIndexError):
        nx.linear_cross_entropy(h, W, np.array([0, 5, 1]))
    with pytest.raises(nx.InvalidValueError, match="chunk_size"):
        nx.linear_cross_entropy(h, W, y, chunk_size=0)
    with pytest.raises(nx.InvalidValueError, match="weight"):
        nx.linear_cross_entropy(h, W, y, weight=np.ones(4))


def test_chunks_from_chunk_bytes_are_as_few_and_as_even_as_will_do():
    """``chunk_bytes`` bounds the rows a chunk; the rows are cut into as few
    chunks as that allows, all of one size but a shorter last one."""
    from numxent.linear import even_chunks

    for n_rows in range(1, 70):
        for most in range(1, 25):
            rows = even_chunks(n_rows, most)
            n_chunks = -(-n_rows // rows)
            assert rows <= most
            assert n_chunks == -(-n_rows // most)
            last = n_rows - (n_chunks - 1) * rows
            assert 0 < last <= rows and rows - last < n_chunks
    assert even_chunks(4096, 524) == 512  # 32,000 float32 classes in 64 MiB
    assert even_chunks(5, 0) == 1
