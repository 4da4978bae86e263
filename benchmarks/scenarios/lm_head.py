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

Each path runs in a fresh child process: the time is the median of the
steps (after one warm-up step), and the memory is the child's peak RSS
(``ru_maxrss``) minus its RSS once the inputs exist and one step on a small
head has run (imports, compiled kernels and BLAS buffers in place): the
memory the step itself needs, its gradients included; the table also gives
it less the two gradients' size (``(N + V) * H`` floats), the memory beyond
the inputs, the weight and their gradients::

    python benchmarks/report.py --ops none --lm-head --lm-head-sizes lm,llama3
"""

from __future__ import annotations

import statistics
import time

from ._section import Section, run_child

__all__ = ["PATHS", "SECTION", "SIZES", "markdown", "run", "run_lm_head", "summary"]

PATHS = ("gemms", "torch-ce", "torch-linear-ce", "numxent", "numxent-torch")
#: (tokens N, hidden H, vocabulary V)
SIZES = {"lm": (4096, 512, 32000), "llama3": (2048, 2048, 128256)}


def _rss_mib() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _make_step(path: str, h, W, y, chunk: dict):
    """One step of ``path`` on (h, W, y), inputs and buffers bound."""
    import torch

    if path == "gemms":

        def step():
            lg = h @ W.T
            lg @ W
            lg.T @ h

        return step
    if path == "numxent":
        import numxent as nx

        hn, Wn, yn = h.numpy(), W.numpy(), y.numpy()
        return lambda: nx.linear_cross_entropy(hn, Wn, yn, return_grad=True, **chunk)
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
        loss().backward()

    return step


def child(cfg: dict) -> dict:
    """One path, in a process of its own: the step times and its memory."""
    import resource

    import numba
    import torch

    torch.set_num_threads(cfg["threads"])
    numba.set_num_threads(cfg["threads"])
    chunk = {"chunk_bytes": int(cfg["chunk_mib"] * 2**20)} if cfg["chunk_mib"] else {}
    n, h_, v = cfg["N"], cfg["H"], cfg["V"]
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, h_, generator=g)
    W = torch.randn(v, h_, generator=g) * 0.05
    y = torch.randint(0, v, (n,), generator=g)
    # warm-up on a small head first (imports, kernel compilation or cache
    # loading, BLAS buffers), so that the peak below is the step's own memory
    vs = min(v, 1000)
    small = (torch.randn(64, h_), torch.randn(vs, h_), torch.randint(0, vs, (64,)))
    _make_step(cfg["path"], *small, chunk)()
    step = _make_step(cfg["path"], h, W, y, chunk)
    base = _rss_mib()
    times = []
    for _ in range(cfg["steps"] + 1):  # the first: warm-up
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times[1:], "extra_mib": peak - base}


def run_lm_head(sizes=("lm",), steps: int = 5, threads: int = 2,
                shapes: dict | None = None, on_row=None,
                chunk_mib: float = 0.0) -> list[dict]:  # fmt: skip
    """One row per (size, path): ``step_ms`` (median), ``extra_mib``.
    ``chunk_mib``: numxent's ``chunk_bytes`` in MiB (0: its own)."""
    rows = []
    shapes = shapes or SIZES
    for name in sizes:
        n, h, v = shapes[name]
        for path in PATHS:
            cfg = dict(path=path, N=n, H=h, V=v, steps=steps, threads=threads,
                       chunk_mib=chunk_mib)  # fmt: skip
            r = run_child("lm_head", cfg)
            row = {"size": name, "N": n, "H": h, "V": v, "path": path,
                   "step_ms": 1e3 * statistics.median(r["times"]),
                   "extra_mib": r["extra_mib"]}  # fmt: skip
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


OPTIONS = {
    "sizes": ("lm", "comma list of " + ", ".join(f"{k} (N, H, V = {v})"
                                                for k, v in SIZES.items())),
    "steps": (5, "timed steps of each path"),
    "chunk_mib": (0.0, "numxent's chunk_bytes in MiB (0: its own default)"),
}  # fmt: skip


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """:func:`run_lm_head` with the section's options, on ``threads``."""
    sizes = [s for s in opts["sizes"].split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise ValueError(f"sizes: unknown {bad}; choose from {sorted(SIZES)}")
    rows = run_lm_head(
        sizes, opts["steps"], threads, chunk_mib=opts["chunk_mib"],
        on_row=lambda r: on_step(f"{r['size']} {r['path']}"),
    )  # fmt: skip
    return {"rows": rows}


def summary(result: dict) -> list[str]:
    """One line per size: each path's step time ÷ the matrix products'."""
    out = []
    for size in dict.fromkeys(r["size"] for r in result["rows"]):
        rows = {r["path"]: r for r in result["rows"] if r["size"] == size}
        r = next(iter(rows.values()))
        floor = rows.get("gemms", {}).get("step_ms")
        ratios = ", ".join(
            f"{p} {x['step_ms'] / floor:.2f}×" for p, x in rows.items() if p != "gemms"
        ) if floor else "no GEMM floor"  # fmt: skip
        out.append(f"LM head {r['N']}×{r['H']}×{r['V']}, step ÷ GEMMs: {ratios}")
    return out


def markdown(result: dict) -> str:
    """The table, with each path's step time against the matrix products'."""
    rows = result["rows"]
    out = ["| N × H × V | path | step (ms) | × GEMMs | memory beyond inputs (MiB) "
           "| less the gradients (MiB) |",
           "|---|---|--:|--:|--:|--:|"]  # fmt: skip
    floor = {r["size"]: r["step_ms"] for r in rows if r["path"] == "gemms"}
    for r in rows:
        ratio = r["step_ms"] / floor[r["size"]] if r["size"] in floor else float("nan")
        grads = (r["N"] + r["V"]) * r["H"] * 4 / 2**20  # float32 grad_input, grad_W
        out.append(
            f"| {r['N']} × {r['H']} × {r['V']} | {r['path']} | {r['step_ms']:.0f} | "
            f"{ratio:.2f} | {r['extra_mib']:.0f} | {r['extra_mib'] - grads:.0f} |"
        )
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
    "`numxent.linear_cross_entropy` on NumPy arrays and its PyTorch bridge; each "
    "path in a fresh process, the median step, and the step's own peak memory.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    requires=("torch",),
    steps=lambda opts: len(opts["sizes"].split(",")) * len(PATHS),
)
