"""The language-model head benchmark: the report's ``--lm-head`` section.

One training step of the last layer, loss forward + backward including the
matrix products, for N tokens of H hidden units and a vocabulary of V:

* ``gemms``: the three matrix products alone (``h @ W.T``, ``G @ W``,
  ``G.T @ h``, PyTorch), the floor;
* ``torch-ce``: PyTorch ``F.cross_entropy(h @ W.T, y)`` with autograd;
* ``torch-linear-ce``: PyTorch ``F.linear_cross_entropy(...,
  options=LinearCrossEntropyOptions())`` (its chunked path);
* ``numxent``: ``numxent.linear_cross_entropy(..., return_grad=True)``
  (NumPy arrays; SciPy's BLAS for the products);
* ``numxent-torch``: ``numxent.torch.linear_cross_entropy`` with autograd
  (PyTorch's BLAS for the products, as the model's other layers).

Then the step a client runs, on a real ``nn.Module`` whose weights are
``nn.Parameter`` objects: an ``nn.Embedding(V, H)``, a body (``nn.Linear(H, H)``,
GELU) and a head tied to the embedding (``head.weight = emb.weight``),
stepped by ``torch.optim.SGD``; each step embeds N tokens, runs the body,
the head's loss, the backward and the optimizer step:

* ``tied-torch-ce``: ``F.cross_entropy(model.head(h), y)``;
* ``tied-torch-linear-ce``: ``F.linear_cross_entropy(h, model.emb.weight, y,
  options=LinearCrossEntropyOptions())``;
* ``tied-numxent-torch``: ``numxent.torch.linear_cross_entropy(h,
  model.emb.weight, y)``.

The three start from the same weights (``W``) and tokens, so their losses
after the same steps agree. Each runs in a child of its own (its memory);
then one more child takes the three paths' steps in turns, the order
rotating every round, for step-time ratios that a busy machine's drift
between processes does not skew (the summary's "in turns" line). The
``paths`` option chooses paths (``--lm-head-paths
tied-torch-ce,tied-torch-linear-ce,tied-numxent-torch`` for the module
alone). The bridge's paths run with
:class:`numxent.torch.FallbackWarning` raised as an error and check every
step's autograd node: a call handed to PyTorch fails the section instead of
timing PyTorch twice. On the tied paths the child also checks, on the small
warm-up model, that the tied weight's gradient is the sum of its two uses'
(the embedding's rows and the head's), neither of them zero.

Each path runs in a fresh child process: the time is the median of the
steps (after one warm-up step), and the memory is the child's peak RSS
(``ru_maxrss``) minus its RSS once the inputs exist, one step on a small
head has run (imports, compiled kernels) and PyTorch's and SciPy's BLAS
have made products of the step's shapes (their work buffers, kept for the
process, in place): the memory the step itself needs, its gradients
included; the table also gives
it less the two gradients' size (``(N + V) * H`` floats), the memory beyond
the inputs, the weight and their gradients::

    python benchmarks/report.py --ops none --lm-head --lm-head-sizes lm,llama3
"""

from __future__ import annotations

import statistics
import time
import warnings

from ._section import Section, run_child

__all__ = ["BRIDGE_PATHS", "LINEAR_NODE", "PATHS", "SECTION", "SIZES",
           "TIED_PATHS", "markdown", "run", "run_lm_head", "summary"]  # fmt: skip

TIED_PATHS = ("tied-torch-ce", "tied-torch-linear-ce", "tied-numxent-torch")
PATHS = ("gemms", "torch-ce", "torch-linear-ce", "numxent", "numxent-torch",
         *TIED_PATHS)  # fmt: skip
#: the paths whose loss is numxent's bridge: every step served, or no figure
BRIDGE_PATHS = ("numxent-torch", "tied-numxent-torch")
#: the autograd node of a served numxent.torch.linear_cross_entropy
LINEAR_NODE = "_LinearCEFunctionBackward"
#: (tokens N, hidden H, vocabulary V)
SIZES = {"lm": (4096, 512, 32000), "llama3": (2048, 2048, 128256)}


def _rss_mib() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _tied_model(W, n: int):
    """The tied module, its embedding (and so its head) initialised to ``W``,
    and its ``n`` input tokens: the same on every tied path."""
    import torch
    from torch import nn

    class TiedLM(nn.Module):
        """Embedding -> Linear + GELU -> a head that is the embedding."""

        def __init__(self, v: int, h: int):
            super().__init__()
            self.emb = nn.Embedding(v, h)
            self.body = nn.Sequential(nn.Linear(h, h), nn.GELU())
            self.head = nn.Linear(h, v, bias=False)
            self.head.weight = self.emb.weight  # tied: one Parameter, two uses

        def forward(self, tokens):  # the hidden states the head reads
            return self.body(self.emb(tokens))

    v, h = W.shape
    torch.manual_seed(0)
    model = TiedLM(v, h)
    with torch.no_grad():
        model.emb.weight.copy_(W)
    assert model.head.weight is model.emb.weight
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    tokens = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(1))
    return model, tokens


def _tied_loss(path: str, y, chunk: dict):
    """``loss(h, W)``: the head's loss of ``path``, hidden states ``h`` and the
    head's weight ``W``."""
    import torch

    F = torch.nn.functional
    if path == "tied-torch-ce":
        return lambda h, W: F.cross_entropy(F.linear(h, W), y)  # model.head(h)
    if path == "tied-torch-linear-ce":
        opts = torch.nn.LinearCrossEntropyOptions()
        return lambda h, W: F.linear_cross_entropy(h, W, y, options=opts)
    from numxent.torch import linear_cross_entropy

    return lambda h, W: linear_cross_entropy(h, W, y, **chunk)


def _node(loss) -> str:
    return type(loss.grad_fn).__name__


def _make_step(path: str, h, W, y, chunk: dict):
    """One step of ``path`` on (h, W, y), inputs and buffers bound; it returns
    the loss's autograd node and value (None, None on the paths without
    autograd)."""
    import torch

    if path == "gemms":

        def step():
            lg = h @ W.T
            lg @ W
            lg.T @ h
            return None, None

        return step
    if path == "numxent":
        import numxent as nx

        hn, Wn, yn = h.numpy(), W.numpy(), y.numpy()

        def step():
            loss, _ = nx.linear_cross_entropy(hn, Wn, yn, return_grad=True, **chunk)
            return None, float(loss)

        return step
    if path in TIED_PATHS:
        model, tokens = _tied_model(W, len(y))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        tied_loss = _tied_loss(path, y, chunk)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = tied_loss(model(tokens), model.emb.weight)
            loss.backward()
            opt.step()
            return _node(loss), loss.item()

        return step
    hr = h.clone().requires_grad_(True)
    Wr = W.clone().requires_grad_(True)
    if path == "torch-ce":
        loss = lambda: torch.nn.functional.cross_entropy(hr @ Wr.T, y)  # noqa: E731
    elif path == "torch-linear-ce":
        opts = torch.nn.LinearCrossEntropyOptions()
        loss = lambda: torch.nn.functional.linear_cross_entropy(  # noqa: E731
            hr, Wr, y, options=opts
        )
    else:  # numxent-torch
        from numxent.torch import linear_cross_entropy

        loss = lambda: linear_cross_entropy(hr, Wr, y, **chunk)  # noqa: E731

    def step():
        hr.grad = Wr.grad = None
        out = loss()
        out.backward()
        return _node(out), out.item()

    return step


def _tied_grad_check(path: str, W, y, chunk: dict) -> dict:
    """The tied weight's gradient against the sum of its two uses' (each
    computed with the other use detached), and each use's size: a gradient
    that lost the embedding's or the head's part fails the section."""
    import torch

    tied_loss = _tied_loss(path, y, chunk)
    grads = {}
    for part in ("both", "head", "embedding"):
        model, tokens = _tied_model(W, len(y))
        h = model(tokens)
        head_w = model.emb.weight
        if part == "head":
            h = h.detach()  # the embedding's use out of the graph
        elif part == "embedding":
            head_w = head_w.detach()  # the head's use out of the graph
        tied_loss(h, head_w).backward()
        grads[part] = model.emb.weight.grad
    both, head, emb = grads["both"], grads["head"], grads["embedding"]
    norm = float(torch.linalg.vector_norm(both))
    out = {
        "tied_grad_rel_err": float(torch.linalg.vector_norm(both - head - emb)) / norm,
        "head_grad_share": float(torch.linalg.vector_norm(head)) / norm,
        "embedding_grad_share": float(torch.linalg.vector_norm(emb)) / norm,
    }
    if not (
        out["tied_grad_rel_err"] < 1e-4
        and out["head_grad_share"] > 0
        and out["embedding_grad_share"] > 0
    ):
        raise RuntimeError(f"{path}: the tied weight's gradient is not the sum of "
                           f"its two uses': {out}")  # fmt: skip
    return out


def child(cfg: dict) -> dict:
    """One path, in a process of its own: the step times and its memory."""
    import numba
    import torch

    torch.set_num_threads(cfg["threads"])
    numba.set_num_threads(cfg["threads"])
    if cfg["path"] not in BRIDGE_PATHS:
        return _child(cfg)
    from numxent.torch import FallbackWarning

    with warnings.catch_warnings():  # a hand-off to PyTorch raises: no figure
        warnings.simplefilter("error", FallbackWarning)
        return _child(cfg)


def _blas_buffers(h, W) -> None:
    """Products of the step's shapes, a 64 MiB block of tokens at a time, by
    PyTorch's BLAS and by SciPy's: each library's work buffers (allocated on
    its first products of a size and kept for the process, shared by every
    product a model makes) are then in place before the baseline, as in a
    model after its first step. The small warm-up head does not reach the
    sizes here (4096 x 512 -> 32000: PyTorch's BLAS took 32 MiB more on its
    first large product)."""
    import numpy as np

    from numxent.linear import _gemm

    rows = max(1, min(len(h), (64 << 20) // (4 * W.shape[0])))
    hb, Wd = h.detach()[:rows], W.detach()
    g = hb @ Wd.T  # (rows, V), like a chunk's logits
    g @ Wd, g.T @ hb  # noqa: B018 - the two gradient products
    hn, Wn, gn = hb.numpy(), Wd.numpy(), g.numpy()
    _gemm(1.0, hn, Wn.T, gn, 0.0)
    _gemm(1.0, gn, Wn, np.empty_like(hn), 0.0)
    _gemm(1.0, gn.T, hn, np.empty_like(Wn), 0.0)
    del g, gn


def _child(cfg: dict) -> dict:
    import resource

    import torch

    chunk = {"chunk_bytes": int(cfg["chunk_mib"] * 2**20)} if cfg["chunk_mib"] else {}
    path, n, h_, v = cfg["path"], cfg["N"], cfg["H"], cfg["V"]
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, h_, generator=g)
    W = torch.randn(v, h_, generator=g) * 0.05
    y = torch.randint(0, v, (n,), generator=g)
    # warm-up on a small head first (imports, kernel compilation or cache
    # loading, BLAS buffers), so that the peak below is the step's own memory
    vs = min(v, 1000)
    small = (torch.randn(64, h_, generator=g), torch.randn(vs, h_, generator=g) * 0.05,
             torch.randint(0, vs, (64,), generator=g))  # fmt: skip
    nodes = [_make_step(path, *small, chunk)()[0]]
    out = {}
    if path in TIED_PATHS:
        out.update(_tied_grad_check(path, *small[1:], chunk))
    _blas_buffers(h, W)
    step = _make_step(path, h, W, y, chunk)
    base = _rss_mib()
    times, losses = [], []
    for _ in range(cfg["steps"] + 1):  # the first: warm-up
        t = time.perf_counter()
        node, loss = step()
        times.append(time.perf_counter() - t)
        nodes.append(node)
        losses.append(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if path in BRIDGE_PATHS and set(nodes) != {LINEAR_NODE}:
        raise RuntimeError(
            f"{path}: numxent.torch.linear_cross_entropy was handed to PyTorch "
            f"(loss nodes {sorted(set(map(str, nodes)))})"
        )
    return {"times": times[1:], "extra_mib": peak - base, "losses": losses,
            "nodes": nodes, **out}  # fmt: skip


#: what the tied paths' children check and the rows keep
TIED_CHECKS = ("tied_grad_rel_err", "head_grad_share", "embedding_grad_share")


def interleaved_child(cfg: dict) -> dict:
    """The tied paths' steps in one process, in turns (the order rotating
    every round), so that a busy machine's drift hits all three alike: each
    path's step times and the bridge's loss nodes."""
    import numba
    import torch

    from numxent.torch import FallbackWarning

    torch.set_num_threads(cfg["threads"])
    numba.set_num_threads(cfg["threads"])
    chunk = {"chunk_bytes": int(cfg["chunk_mib"] * 2**20)} if cfg["chunk_mib"] else {}
    g = torch.Generator().manual_seed(0)
    h = torch.randn(cfg["N"], cfg["H"], generator=g)
    W = torch.randn(cfg["V"], cfg["H"], generator=g) * 0.05
    y = torch.randint(0, cfg["V"], (cfg["N"],), generator=g)
    times: dict[str, list[float]] = {p: [] for p in TIED_PATHS}
    nodes = []
    with warnings.catch_warnings():  # a hand-off to PyTorch raises: no figure
        warnings.simplefilter("error", FallbackWarning)
        steps = {p: _make_step(p, h, W, y, chunk) for p in TIED_PATHS}
        for p, step in steps.items():
            node, _ = step()  # warm-up
            if p in BRIDGE_PATHS:
                nodes.append(node)
        for k in range(cfg["steps"]):
            order = TIED_PATHS[k % 3 :] + TIED_PATHS[: k % 3]
            for p in order:
                t = time.perf_counter()
                node, _ = steps[p]()
                times[p].append(time.perf_counter() - t)
                if p in BRIDGE_PATHS:
                    nodes.append(node)
    if set(nodes) != {LINEAR_NODE}:
        raise RuntimeError(
            "tied-numxent-torch (interleaved): numxent.torch.linear_cross_entropy "
            f"was handed to PyTorch (loss nodes {sorted(set(map(str, nodes)))})"
        )
    return {"times": times, "nodes": nodes}


def run_lm_head(sizes=("lm",), steps: int = 5, threads: int = 2,
                shapes: dict | None = None, on_row=None,
                chunk_mib: float = 0.0, paths=PATHS) -> list[dict]:  # fmt: skip
    """One row per (size, path) of ``paths``: ``step_ms`` (median),
    ``extra_mib``; with every tied path chosen, one more row per tied path
    (``"interleaved": True``) from their steps taken in turns in one
    process. ``chunk_mib``: numxent's ``chunk_bytes`` in MiB (0: its own)."""
    rows = []
    shapes = shapes or SIZES
    for name in sizes:
        n, h, v = shapes[name]
        cfg = dict(N=n, H=h, V=v, steps=steps, threads=threads, chunk_mib=chunk_mib)
        for path in paths:
            r = run_child("lm_head", {**cfg, "path": path})
            row = {"size": name, "N": n, "H": h, "V": v, "path": path,
                   "step_ms": 1e3 * statistics.median(r["times"]),
                   "extra_mib": r["extra_mib"], "final_loss": r["losses"][-1],
                   "loss_nodes": r["nodes"]}  # fmt: skip
            row.update((k, r[k]) for k in TIED_CHECKS if k in r)
            rows.append(row)
            if on_row is not None:
                on_row(row)
        if set(TIED_PATHS) <= set(paths):
            r = run_child("lm_head", cfg, "interleaved_child")
            for path in TIED_PATHS:
                median = statistics.median(r["times"][path])
                row = {"size": name, "N": n, "H": h, "V": v, "path": path,
                       "interleaved": True, "rounds": steps,
                       "step_ms": 1e3 * median}  # fmt: skip
                if path in BRIDGE_PATHS:
                    row["loss_nodes"] = r["nodes"]
                rows.append(row)
            if on_row is not None:
                on_row({"size": name, "path": "tied paths interleaved"})
    return rows


OPTIONS = {
    "sizes": ("lm", "comma list of " + ", ".join(f"{k} (N, H, V = {v})"
                                                for k, v in SIZES.items())),
    "steps": (5, "timed steps of each path (and rounds of the tied paths' "
                 "interleaved steps)"),
    "chunk_mib": (0.0, "numxent's chunk_bytes in MiB (0: its own default)"),
    "paths": ("all", "comma list of paths, or all: " + ", ".join(PATHS) + "; the "
                     "tied paths are also timed in turns in one process when all "
                     "three are chosen"),
}  # fmt: skip


def _paths(opts: dict) -> tuple[str, ...]:
    """The chosen paths in :data:`PATHS` order."""
    chosen = [p for p in str(opts["paths"]).split(",") if p]
    if chosen == ["all"]:
        return PATHS
    bad = [p for p in chosen if p not in PATHS]
    if bad or not chosen:
        raise ValueError(f"paths: unknown {bad}; choose from all, {', '.join(PATHS)}")
    return tuple(p for p in PATHS if p in chosen)


def _steps(opts: dict) -> int:
    paths = _paths(opts)
    per_size = len(paths) + (set(TIED_PATHS) <= set(paths))
    return len([s for s in opts["sizes"].split(",") if s]) * per_size


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """:func:`run_lm_head` with the section's options, on ``threads``."""
    sizes = [s for s in opts["sizes"].split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise ValueError(f"sizes: unknown {bad}; choose from {sorted(SIZES)}")
    paths = _paths(opts)
    rows = run_lm_head(
        sizes, opts["steps"], threads, chunk_mib=opts["chunk_mib"], paths=paths,
        on_row=lambda r: on_step(f"{r['size']} {r['path']}"),
    )  # fmt: skip
    return {"rows": rows}


def _served(row: dict) -> str:
    """``"served/steps"`` on the bridge's paths (steps with numxent's autograd
    node, the warm-ups included), ``""`` on the others."""
    if row["path"] not in BRIDGE_PATHS or "loss_nodes" not in row:
        return ""
    nodes = row["loss_nodes"]
    return f"{nodes.count(LINEAR_NODE)}/{len(nodes)}"


def _tied_lines(rows: dict) -> list[str]:
    """The tied module's step ratios, loss agreement and gradient check."""
    nx = rows.get("tied-numxent-torch")
    if nx is None:
        return []
    r, out = nx, []
    ratios = ", ".join(
        f"{p.removeprefix('tied-')} {rows[p]['step_ms']:.0f} ms "
        f"({rows[p]['step_ms'] / nx['step_ms']:.2f}×)"
        for p in TIED_PATHS[:-1] if p in rows
    )  # fmt: skip
    out.append(
        f"tied-embedding module {r['N']}×{r['H']}×{r['V']} (embedding, Linear + "
        f"GELU, tied head, loss, backward, SGD step): numxent-torch "
        f"{nx['step_ms']:.0f} ms a step; PyTorch's ÷ numxent's: {ratios}"
    )
    torch_loss = rows.get("tied-torch-ce", {}).get("final_loss")
    if torch_loss:
        diff = abs(nx["final_loss"] - torch_loss) / abs(torch_loss)
        out.append(f"tied module, loss after the last step: numxent "
                   f"{nx['final_loss']:.6f}, PyTorch {torch_loss:.6f} (rel. diff "
                   f"{diff:.1e})")  # fmt: skip
    checks = [
        f"{p.removeprefix('tied-')} {rows[p]['tied_grad_rel_err']:.1e}"
        for p in TIED_PATHS if "tied_grad_rel_err" in rows.get(p, {})
    ]  # fmt: skip
    if checks:
        out.append(
            "tied weight's gradient = the embedding's part + the head's (rel. "
            f"error, small warm-up model): {', '.join(checks)}"
        )
    return out


def _interleaved_line(rows: dict) -> list[str]:
    """The tied paths' steps taken in turns in one process: their ratios."""
    nx = rows.get("tied-numxent-torch")
    if nx is None:
        return []
    ratios = ", ".join(
        f"{p.removeprefix('tied-')} {rows[p]['step_ms']:.0f} ms "
        f"({rows[p]['step_ms'] / nx['step_ms']:.2f}×)"
        for p in TIED_PATHS[:-1] if p in rows
    )  # fmt: skip
    return [
        f"tied module, the three paths' steps in turns in one process (median of "
        f"{nx['rounds']} rounds): numxent-torch {nx['step_ms']:.0f} ms a step; "
        f"PyTorch's ÷ numxent's: {ratios}"
    ]


def summary(result: dict) -> list[str]:
    """Per size: each path's step time ÷ the matrix products', the tied
    module's step ratios and checks, and the bridge's served steps."""
    out = []
    for size in dict.fromkeys(r["size"] for r in result["rows"]):
        of_size = [r for r in result["rows"] if r["size"] == size]
        rows = {r["path"]: r for r in of_size if not r.get("interleaved")}
        turns = {r["path"]: r for r in of_size if r.get("interleaved")}
        r = of_size[0]
        floor = rows.get("gemms", {}).get("step_ms")
        ratios = ", ".join(
            f"{p} {x['step_ms'] / floor:.2f}×" for p, x in rows.items()
            if p != "gemms" and p not in TIED_PATHS
        ) if floor else "no GEMM floor"  # fmt: skip
        if any(p not in TIED_PATHS for p in rows):
            out.append(f"LM head {r['N']}×{r['H']}×{r['V']}, step ÷ GEMMs: {ratios}")
        out += _tied_lines(rows) + _interleaved_line(turns)
        served = [f"{p} {_served(x)}" for p, x in rows.items() if _served(x)]
        served += [f"{p} interleaved {_served(x)}" for p, x in turns.items()
                   if _served(x)]  # fmt: skip
        if served:
            out.append(
                f"numxent.torch steps served (node {LINEAR_NODE}, FallbackWarning "
                f"as an error): {', '.join(served)}"
            )
    return out


def markdown(result: dict) -> str:
    """The table, with each path's step time against the matrix products',
    then the summary lines."""
    rows = result["rows"]
    out = ["| N × H × V | path | step (ms) | × GEMMs | memory beyond inputs (MiB) "
           "| less the gradients (MiB) | numxent steps served |",
           "|---|---|--:|--:|--:|--:|--:|"]  # fmt: skip
    floor = {r["size"]: r["step_ms"] for r in rows if r["path"] == "gemms"}
    for r in rows:
        if r.get("interleaved"):  # no memory of their own: the summary's
            continue
        ratio = f"{r['step_ms'] / floor[r['size']]:.2f}" if r["size"] in floor else "–"
        grads = (r["N"] + r["V"]) * r["H"] * 4 / 2**20  # float32 grad_input, grad_W
        out.append(
            f"| {r['N']} × {r['H']} × {r['V']} | {r['path']} | {r['step_ms']:.0f} | "
            f"{ratio} | {r['extra_mib']:.0f} | {r['extra_mib'] - grads:.0f} | "
            f"{_served(r)} |"
        )
    out.append("")
    out += [f"- {line}" for line in summary(result)]
    return "\n".join(out) + "\n"


SECTION = Section(
    key="lm_head",
    flag="lm-head",
    help="the language-model head step (numxent.linear_cross_entropy and its "
    "PyTorch bridge vs PyTorch's two paths and the matrix products; needs torch)",
    title="Language-model head step",
    intro="One training step of the last layer, loss forward + backward including "
    "the matrix products, for N tokens of H hidden units and a vocabulary of V: "
    "the three matrix products alone (`gemms`, the floor), PyTorch's "
    "`F.cross_entropy(h @ W.T, y)` and `F.linear_cross_entropy`, "
    "`numxent.linear_cross_entropy` on NumPy arrays and its PyTorch bridge; then "
    "the whole step of a module with a tied head (`nn.Embedding`, a Linear + GELU "
    "body, `head.weight = emb.weight`, SGD) with PyTorch's two losses and "
    "`numxent.torch.linear_cross_entropy(h, model.emb.weight, y)`. Each path in a "
    "fresh process, the median step, and the step's own peak memory; the tied "
    "paths also in turns in one process (the summary's step ratios). The "
    "bridge's steps are checked served (`FallbackWarning` as an error, the "
    "autograd node), and the tied weight's gradient the sum of its two uses'.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    requires=("torch",),
    steps=_steps,
)
