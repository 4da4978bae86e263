"""Vocabulary-parallel losses (``process_group=``) on 2 and 3 gloo processes.

Each rank holds a contiguous, uneven shard of V = 10 classes (3/7, 4/3/3).
One spawn per world size runs every scenario and saves each rank's results;
the references are computed here, in one process, on the whole vocabulary:
numxent's own single-process functions, PyTorch's ``F.cross_entropy`` (the
z-loss and soft-capping by their formulas on top of it, as in tests/naive.py)
and ``tests/naive.py``. Bad input is passed on every rank at once (or on one
rank only): every rank must raise, and a good call right after shows that no
rank was left behind in a collective. The process group's timeout is short,
so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
F = torch.nn.functional

import naive  # noqa: E402
from test_torch_ddp import _free_port  # noqa: E402

V, N, H, FEATURES = 10, 9, 5, 6
SPLITS = {2: (3, 7), 3: (4, 3, 3)}
TIMEOUT = datetime.timedelta(seconds=20)
STEPS = 4

CE_CASES = {
    "plain": {},
    "weight_smooth_sum": dict(weight=True, label_smoothing=0.2, reduction="sum"),
    "extras_none": dict(
        weight=True, lse_square_scale=1e-2, softcap=4.0, reduction="none"
    ),
    "everything_mean": dict(
        weight=True, label_smoothing=0.1, lse_square_scale=1e-3, softcap=6.0
    ),
    "ignore_in_range": dict(ignore_index=3, label_smoothing=0.1),
}
F32_CASES = ("plain", "everything_mean")
LIN_CASES = {
    "bias_weight_smooth_mean": dict(bias=True, weight=True, label_smoothing=0.1),
    "extras_none": dict(
        bias=True, lse_square_scale=1e-2, softcap=4.0, reduction="none"
    ),
    "weight_sum": dict(weight=True, reduction="sum"),
}
LIN_F32_CASES = ("bias_weight_smooth_mean",)


def _data(dtype=torch.float64):
    gen = torch.Generator().manual_seed(7)
    x = (3 * torch.randn(N, V, generator=gen)).to(dtype)
    y = torch.randint(0, V, (N,), generator=gen)
    y[[1, 5]] = -100
    y[[2, 6]] = 3  # the class ignore_index=3 names
    w = (0.2 + torch.rand(V, generator=gen)).to(dtype)
    h = torch.randn(N, H, generator=gen).to(dtype)
    lw = torch.randn(V, H, generator=gen).to(dtype)
    lb = torch.randn(V, generator=gen).to(dtype)
    up = torch.rand(N, generator=gen).to(dtype)  # upstream gradient of "none"
    return x, y, w, h, lw, lb, up


def _upstream(loss, up):
    return up if loss.dim() else torch.tensor(1.7, dtype=loss.dtype)


def _target(case: dict, y):
    """``y`` with the case's ignore_index where the default marks ignored rows."""
    return torch.where(y == -100, case.get("ignore_index", -100), y)


def _options(case: dict, w, lo=0, hi=V):
    kw = {k: v for k, v in case.items() if k not in ("weight", "bias")}
    if case.get("weight"):
        kw["weight"] = w[lo:hi]
    return kw


# --------------------------------------------------------------------------
# the ranks
# --------------------------------------------------------------------------
def _ce_runs(nt, g, lo, hi):
    out = {}
    for dtype in (torch.float64, torch.float32):
        x, y, w, *_, up = _data(dtype)
        for name, case in CE_CASES.items():
            if dtype == torch.float32 and name not in F32_CASES:
                continue
            xs = x[:, lo:hi].clone().requires_grad_()
            loss = nt.cross_entropy(xs, _target(case, y), **_options(case, w, lo, hi),
                                    process_group=g)  # fmt: skip
            loss.backward(_upstream(loss, up))
            out[name, dtype] = (loss.detach(), xs.grad)
    # (N, C, d) layout: 3 samples of 3 positions, classes on dim 1
    x, y, *_ = _data()
    x3 = x.reshape(3, 3, V).movedim(-1, 1)[:, lo:hi].clone().requires_grad_()
    loss = nt.cross_entropy(x3, y.reshape(3, 3), process_group=g)
    loss.backward()
    out["layout_3d", torch.float64] = (loss.detach(), x3.grad)
    # one unbatched sample: (C_r,) logits, a 0-d target
    x1 = x[4, lo:hi].clone().requires_grad_()
    loss = nt.cross_entropy(x1, y[4], process_group=g)
    loss.backward()
    out["unbatched", torch.float64] = (loss.detach(), x1.grad)
    return out


def _linear_runs(nt, g, rank, lo, hi):
    out = {}
    for dtype, name in [(torch.float64, n) for n in LIN_CASES] + [
        (torch.float32, n) for n in LIN_F32_CASES
    ]:
        case = LIN_CASES[name]
        x, y, w, h, lw, lb, up = _data(dtype)
        hs = h.clone().requires_grad_()
        ws = lw[lo:hi].clone().requires_grad_()
        bs = lb[lo:hi].clone().requires_grad_() if case.get("bias") else None
        loss = nt.linear_cross_entropy(
            hs, ws, y, linear_bias=bs, **_options(case, w, lo, hi),
            chunk_bytes=(2 + rank) * 8 * (hi - lo),  # 2 + rank rows: min 2
            process_group=g,
        )  # fmt: skip
        loss.backward(_upstream(loss, up))
        grads = (hs.grad, ws.grad, None if bs is None else bs.grad)
        out[name, dtype] = (loss.detach(), *grads)
    return out


def _body():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, H), torch.nn.Tanh())


def _head():
    torch.manual_seed(1)
    return torch.nn.Linear(H, V).double()


def _train_data():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(N, FEATURES, generator=gen, dtype=torch.float64)
    y = torch.randint(0, V, (STEPS, N), generator=gen)
    y[:, 0] = -100
    return feats, y


def _train(lo, hi, loss_of):
    """(body, head weight rows lo:hi, head bias lo:hi) after STEPS SGD steps."""
    body, head = _body().double(), _head()
    w = torch.nn.Parameter(head.weight.detach()[lo:hi].clone())
    b = torch.nn.Parameter(head.bias.detach()[lo:hi].clone())
    opt = torch.optim.SGD([*body.parameters(), w, b], lr=0.5)
    feats, y = _train_data()
    for step in range(STEPS):
        opt.zero_grad()
        loss_of(body(feats), w, b, y[step]).backward()
        opt.step()
    return [p.detach() for p in body.parameters()], w.detach(), b.detach()


def _bad_calls(nt, g, rank, world, lo, hi):
    """Each bad call on every rank (or one), then a good one: what each raised."""
    x, y, w, h, lw, lb, _ = _data()
    xs = x[:, lo:hi]
    last = rank == world - 1
    y_other = y.clone()
    y_other[0] = (y[0] + 1) % V
    calls = {
        "reduction": lambda: nt.cross_entropy(xs, y, reduction="avg", process_group=g),
        "weight_one_rank": lambda: nt.cross_entropy(
            xs, y, weight=w[lo : hi - 1] if last else w[lo:hi], process_group=g
        ),
        "target_differs": lambda: nt.cross_entropy(
            xs, y_other if rank == 0 else y, process_group=g
        ),
        "label_out_of_range": lambda: nt.cross_entropy(
            xs, torch.where(torch.arange(N) == 4, V, y), process_group=g
        ),
        "soft_target": lambda: nt.cross_entropy(
            xs, torch.softmax(xs, 1), process_group=g
        ),
        "bfloat16": lambda: nt.cross_entropy(xs.bfloat16(), y, process_group=g),
        "hidden_one_rank": lambda: nt.linear_cross_entropy(
            h[:, :-1] if rank == 0 else h, lw[lo:hi], y, process_group=g
        ),
        "chunk_bytes_one_rank": lambda: nt.linear_cross_entropy(
            h,
            lw[lo:hi],
            y,
            chunk_bytes="lots" if rank == 0 else 1 << 20,
            process_group=g,
        ),  # fmt: skip
        "rows_one_rank": lambda: nt.cross_entropy(
            xs[:-1] if last else xs, y[:-1] if last else y, process_group=g
        ),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the test compares them
            raised = (type(exc).__name__, isinstance(exc, ValueError), str(exc))
        else:
            raised = None
        good = nt.cross_entropy(xs, y, process_group=g)  # in step again?
        out[name] = (raised, good.item())
    return out


def _run_all(nt, g, rank, world):
    sizes = SPLITS[world]
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]

    def vocab_loss(hidden, w, b, y):
        return nt.linear_cross_entropy(hidden, w, y, linear_bias=b,
                                       process_group=g)  # fmt: skip

    def vocab_ce(hidden, w, b, y):  # the logits shard: no input all-reduce
        return nt.cross_entropy(F.linear(hidden.detach(), w, b), y, process_group=g)

    x, y, w, h, lw, lb, _ = _data()
    modules = (  # the modules' forward: the functions with the same arguments
        nt.CrossEntropyLoss(weight=w[lo:hi], label_smoothing=0.1, process_group=g)(
            x[:, lo:hi], y
        ),
        nt.LinearCrossEntropyLoss(softcap=4.0, process_group=g)(
            h, lw[lo:hi], y, lb[lo:hi]
        ),
    )
    return {
        "modules": modules,
        "ce": _ce_runs(nt, g, lo, hi),
        "linear": _linear_runs(nt, g, rank, lo, hi),
        "train": _train(lo, hi, vocab_loss),
        "train_ce": _train(lo, hi, vocab_ce),
        "bad": _bad_calls(nt, g, rank, world, lo, hi),
    }


def _worker(rank, port, prefix):
    """3 ranks: every scenario on the whole group, then on a group of ranks
    0 and 1 (``dist.new_group``, not the default one)."""
    import numxent.torch as nt

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=3, timeout=TIMEOUT)  # fmt: skip
    try:
        pair = dist.new_group([0, 1], timeout=TIMEOUT)
        res = {3: _run_all(nt, dist.group.WORLD, rank, 3)}
        if rank < 2:
            res[2] = _run_all(nt, pair, rank, 2)
        torch.save(res, f"{prefix}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="session")
def spawned(tmp_path_factory):
    """Every rank's results, by world size: one spawn of 3 processes in the
    whole test run, whichever pytest-xdist worker asks first (the others wait
    for it and read its files)."""
    import filelock  # a dependency of torch
    import torch.multiprocessing as mp

    if "PYTEST_XDIST_WORKER" in os.environ:  # the workers' shared folder
        folder = tmp_path_factory.getbasetemp().parent / "vocab-parallel"
    else:
        folder = tmp_path_factory.mktemp("vocab-parallel")
    folder.mkdir(exist_ok=True)
    prefix = str(folder / "rank")
    with filelock.FileLock(str(folder / "lock")):
        if not all(os.path.exists(f"{prefix}.{r}") for r in range(3)):
            mp.spawn(_worker, args=(_free_port(), prefix), nprocs=3, join=True)
    return [torch.load(f"{prefix}.{r}") for r in range(3)]


@pytest.fixture(params=sorted(SPLITS))
def ranks(request, spawned):
    """(world size, every rank's results in that world)."""
    world = request.param
    return world, [spawned[r][world] for r in range(world)]


# --------------------------------------------------------------------------
# the references (one process, the whole vocabulary)
# --------------------------------------------------------------------------
def _torch_ref(x, y, weight=None, ignore_index=-100, reduction="mean",
               label_smoothing=0.0, lse_square_scale=0.0, softcap=None):  # fmt: skip
    """PyTorch's F.cross_entropy; z-loss and soft-capping by their formulas."""
    xc = x if softcap is None else softcap * torch.tanh(x / softcap)
    rows = F.cross_entropy(
        xc, y, weight=weight, ignore_index=ignore_index, reduction="none",
        label_smoothing=label_smoothing,
    )  # fmt: skip
    kept = y != ignore_index
    w = torch.ones(V, dtype=x.dtype) if weight is None else weight
    wy = torch.where(kept, w[torch.where(kept, y, 0)], 0)
    rows = rows + lse_square_scale * wy * torch.logsumexp(xc, 1) ** 2
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / wy.sum()


def _references(case: dict, dtype):
    """[(loss, grad)] of the whole vocabulary: numxent.torch, PyTorch, naive."""
    import numxent.torch as nt

    x, y, w, *_, up = _data(dtype)
    y = _target(case, y)
    kw = _options(case, w)
    refs = []
    for fn in (nt.cross_entropy, _torch_ref):
        xf = x.clone().requires_grad_()
        loss = fn(xf, y, **kw)
        loss.backward(_upstream(loss, up))
        refs.append((loss.detach(), xf.grad))
    kw_np = {k: (v.double().numpy() if k == "weight" else v) for k, v in kw.items()}
    loss, grad = naive.cross_entropy_ref(x.double().numpy(), y.numpy(), **kw_np)
    u = _upstream(torch.as_tensor(loss), up).double().numpy()
    grad = grad * (u[:, None] if np.ndim(loss) else u)
    refs.append((torch.as_tensor(loss), torch.as_tensor(grad)))
    return refs


def _close(got, want, dtype):
    if dtype == torch.float64:
        tol = dict(rtol=1e-6, atol=1e-12)
    else:
        tol = dict(rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(got.double(), want.double(), **tol)


def _ids(value):
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else None


def _shard(world, rank):
    lo = sum(SPLITS[world][:rank])
    return lo, lo + SPLITS[world][rank]


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, dtype",
    [(n, torch.float64) for n in sorted(CE_CASES)]
    + [(n, torch.float32) for n in F32_CASES],
    ids=_ids,
)
def test_cross_entropy_matches_the_whole_vocabulary(ranks, name, dtype):
    world, results = ranks
    refs = _references(CE_CASES[name], dtype)
    for rank, res in enumerate(results):
        loss, grad = res["ce"][name, dtype]
        assert loss.dtype == dtype
        lo, hi = _shard(world, rank)
        for ref_loss, ref_grad in refs:
            _close(loss, ref_loss, dtype)
            _close(grad, ref_grad[:, lo:hi], dtype)


@pytest.mark.parametrize("layout", ["layout_3d", "unbatched"])
def test_cross_entropy_other_layouts(ranks, layout):
    """(N, C, d) logits, classes on dim 1; one (C,) sample with a 0-d target."""
    import numxent.torch as nt

    world, results = ranks
    x, y, *_ = _data()
    if layout == "layout_3d":
        xf, yf = x.reshape(3, 3, V).movedim(-1, 1).clone(), y.reshape(3, 3)
    else:
        xf, yf = x[4].clone(), y[4]
    xf.requires_grad_()
    ref = nt.cross_entropy(xf, yf)
    ref.backward()
    torch.testing.assert_close(ref, F.cross_entropy(xf, yf))
    for rank, res in enumerate(results):
        loss, grad = res["ce"][layout, torch.float64]
        lo, hi = _shard(world, rank)
        _close(loss, ref.detach(), torch.float64)
        _close(grad, xf.grad[..., lo:hi] if xf.dim() == 1 else xf.grad[:, lo:hi],
               torch.float64)  # fmt: skip


@pytest.mark.parametrize(
    "name, dtype",
    [(n, torch.float64) for n in sorted(LIN_CASES)]
    + [(n, torch.float32) for n in LIN_F32_CASES],
    ids=_ids,
)
def test_linear_cross_entropy_matches_the_whole_vocabulary(ranks, name, dtype):
    import numxent.torch as nt

    world, results = ranks
    case = LIN_CASES[name]
    x, y, w, h, lw, lb, up = _data(dtype)
    kw = _options(case, w)
    refs = []
    for materialise in (False, True):
        hf, wf = h.clone().requires_grad_(), lw.clone().requires_grad_()
        bf = lb.clone().requires_grad_() if case.get("bias") else None
        if materialise:  # PyTorch's loss of the (N, V) logits
            loss = _torch_ref(F.linear(hf, wf, bf), y, **kw)
        else:
            loss = nt.linear_cross_entropy(hf, wf, y, linear_bias=bf, **kw)
        loss.backward(_upstream(loss, up))
        refs.append((loss.detach(), hf.grad, wf.grad, None if bf is None else bf.grad))
    for rank, res in enumerate(results):
        loss, gh, gw, gb = res["linear"][name, dtype]
        assert loss.dtype == gh.dtype == gw.dtype == dtype
        lo, hi = _shard(world, rank)
        for ref_loss, ref_gh, ref_gw, ref_gb in refs:
            _close(loss, ref_loss, dtype)
            _close(gh, ref_gh, dtype)  # all-reduced: the full gradient
            _close(gw, ref_gw[lo:hi], dtype)
            if ref_gb is None:
                assert gb is None
            else:
                _close(gb, ref_gb[lo:hi], dtype)


def test_modules_take_the_process_group(ranks):
    import numxent.torch as nt

    world, results = ranks
    x, y, w, h, lw, lb, _ = _data()
    want = (
        F.cross_entropy(x, y, weight=w, label_smoothing=0.1),
        nt.linear_cross_entropy(h, lw, y, linear_bias=lb, softcap=4.0),
    )
    for res in results:
        for got, ref in zip(res["modules"], want, strict=True):
            _close(got, ref, torch.float64)


@pytest.mark.parametrize("recipe", ["train", "train_ce"])
def test_training_steps_match_one_process(ranks, recipe):
    world, results = ranks

    def whole(hidden, w, b, y):
        if recipe == "train_ce":
            hidden = hidden.detach()  # (the ranks' recipe trains the head only)
        return F.cross_entropy(F.linear(hidden, w, b), y)

    body, w, b = _train(0, V, whole)
    for rank, res in enumerate(results):
        got_body, got_w, got_b = res[recipe]
        lo, hi = _shard(world, rank)
        _close(got_w, w[lo:hi], torch.float64)
        _close(got_b, b[lo:hi], torch.float64)
        for got, want in zip(got_body, body, strict=True):
            _close(got, want, torch.float64)
    # the steps moved the parameters (a test of something)
    assert not torch.allclose(w, _head().weight.detach())


BAD = {  # what every rank must raise, and a word its message must hold
    "reduction": ("InvalidValueError", "reduction"),
    "weight_one_rank": ("InvalidValueError", "weight"),
    "target_differs": ("InvalidValueError", "target differs across ranks"),
    "label_out_of_range": ("LabelIndexError", "outside [0, 10)"),
    "soft_target": ("InvalidValueError", "target of class probabilities"),
    "bfloat16": ("InvalidTypeError", "input is a torch.bfloat16 tensor"),
    "hidden_one_rank": ("InvalidValueError", "linear_weight"),
    "rows_one_rank": ("InvalidValueError", "rows"),
    "chunk_bytes_one_rank": ("InvalidTypeError", "rank 0: chunk_bytes must be"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises_on_every_rank(ranks, name):
    import numxent.torch as nt

    world, results = ranks
    x, y, *_ = _data()
    good = nt.cross_entropy(x, y).item()
    cls, words = BAD[name]
    messages = set()
    for res in results:
        raised, after = res["bad"][name]
        assert raised is not None, name
        assert raised[0] == cls, raised
        assert words in raised[2], raised
        messages.add(raised[2])
        assert after == pytest.approx(good, rel=1e-12)  # the ranks still in step
    assert len(messages) == 1  # the same error everywhere


def test_an_unexpected_exception_is_kept_for_the_exchange():
    """Any exception of a rank's own checks waits for the exchange (where
    every rank raises), instead of leaving the other ranks in it."""
    from numxent import _torch_vocab

    def check(problems):
        raise RuntimeError("boom")

    problems: list = []
    assert _torch_vocab._guard(problems, check) is None
    assert problems == [(False, "RuntimeError: boom")]
