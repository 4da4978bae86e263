"""The bfloat16 loss: PyTorch's cross-entropy forward+backward vs numxent.torch's.

The report's ``--bf16-loss`` section (``python benchmarks/report.py
--bf16-loss``). bfloat16 logits are what
``torch.autocast("cpu", dtype=torch.bfloat16)`` gives a model's last layer.
Timed in one fresh process, the three calls interleaved, best of the
repeats: the loss forward + backward on an (N, C) bfloat16 model output (a
non-leaf tensor; ``torch.autograd.grad`` hands the gradient back and it is
dropped, as a model's backward drops it), with int64 labels:

- ``torch bf16``: ``torch.nn.functional.cross_entropy`` on the bfloat16
  logits;
- ``torch autocast``: what PyTorch runs under autocast, which computes
  cross-entropy in float32: the logits upcast, the loss, the gradient cast
  back to bfloat16;
- ``numxent bf16``: ``numxent.torch.cross_entropy``, the logits read in
  place, float32 arithmetic, the gradient written in bfloat16.
"""

from __future__ import annotations

import time

from ._section import Section, run_child

OPTIONS = {
    "shapes": ("4096x32000", "comma list of N x C"),
    "repeat": (5, "timed calls of each (the best is reported)"),
}
QUICK = {"shapes": "1024x8000", "repeat": 3}
IMPLS = ("torch bf16", "torch autocast", "numxent bf16")


def child(cfg) -> dict:
    import torch

    import numxent.torch as nt

    torch.set_num_threads(cfg["threads"])
    F = torch.nn.functional
    fns = {
        "torch bf16": F.cross_entropy,
        "torch autocast": lambda x, y: F.cross_entropy(x.float(), y),
        "numxent bf16": nt.cross_entropy,
    }
    rows = []
    for n, c in cfg["shapes"]:
        gen = torch.Generator().manual_seed(0)
        leaf = (torch.randn(n, c, generator=gen) * 2).to(torch.bfloat16)
        leaf.requires_grad_(True)
        out = leaf * 1  # a model's output: not a leaf
        y = torch.randint(0, c, (n,), generator=gen)
        times: dict[str, list[float]] = {k: [] for k in IMPLS}
        losses = {}
        for i in range(cfg["repeat"] + 1):
            k = i % len(IMPLS)
            for impl in IMPLS[k:] + IMPLS[:k]:
                t0 = time.perf_counter()
                loss = fns[impl](out, y)
                (g,) = torch.autograd.grad(loss, out)
                dt = time.perf_counter() - t0
                assert g.dtype == torch.bfloat16
                losses[impl] = loss.float().item()
                del g, loss
                if i:  # the first round warms up (kernels, pool)
                    times[impl].append(dt)
        ref = losses["torch autocast"]
        for impl in IMPLS:
            rows.append(
                {"n": n, "c": c, "impl": impl, "threads": cfg["threads"],
                 "repeat": cfg["repeat"], "ms": 1e3 * min(times[impl]),
                 "loss": losses[impl],
                 "loss_rel_diff": abs(losses[impl] - ref) / abs(ref)}
            )  # fmt: skip
    return {"rows": rows}


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """Rows per (shape, impl) in :data:`IMPLS` order, on ``threads`` torch
    threads."""
    from numxent.bench import parse_shapes

    cfg = dict(shapes=parse_shapes(str(opts["shapes"])),
               repeat=max(1, int(opts["repeat"])), threads=threads)  # fmt: skip
    result = run_child("bf16_loss", cfg)
    on_step("bf16 loss")
    return result


def _groups(rows):
    return [
        {r["impl"]: r for r in rows[i : i + len(IMPLS)]}
        for i in range(0, len(rows), len(IMPLS))
    ]


def markdown(result: dict) -> str:
    """The rows as a Markdown table plus one summary line per shape."""
    from numxent.bench._report import table

    rows = result["rows"]
    headers = ["N × C", "torch threads", *(f"{i} ms" for i in IMPLS),
               "torch bf16 ÷ numxent", "torch autocast ÷ numxent"]  # fmt: skip
    cells = []
    for g in _groups(rows):
        nx_ = g["numxent bf16"]
        cells.append(
            [f"{nx_['n']:,} × {nx_['c']:,}", str(nx_["threads"])]
            + [f"{g[i]['ms']:,.1f}" for i in IMPLS]
            + [f"{g[i]['ms'] / nx_['ms']:.2f}×" for i in IMPLS[:2]]
        )
    lines = [f"- {line}" for line in summary(result)]
    return "\n".join([table(headers, cells, "lr"), "", *lines]) + "\n"


def summary(result: dict) -> list[str]:
    """One line per shape: the speed-ups and the loss agreement."""
    out = []
    for g in _groups(result["rows"]):
        nx_, tb, ta = g["numxent bf16"], g["torch bf16"], g["torch autocast"]
        out.append(
            f"bf16 loss fwd+bwd {nx_['n']:,}×{nx_['c']:,}: "
            f"{tb['ms'] / nx_['ms']:.2f}× PyTorch's bf16 loss, "
            f"{ta['ms'] / nx_['ms']:.2f}× its autocast (float32) loss; "
            f"loss rel. diff to float32 {nx_['loss_rel_diff']:.1e}"
        )
    return out


SECTION = Section(
    key="bf16_loss",
    flag="bf16-loss",
    help="the bfloat16 loss forward+backward, PyTorch's (bf16 and autocast) vs "
    "numxent.torch's (needs torch, ml_dtypes)",
    title="bfloat16 loss",
    intro="The loss forward + backward on a bfloat16 (N, C) model output with "
    "int64 labels: PyTorch's on the bfloat16 logits, PyTorch's under autocast "
    "(upcast to float32, gradient cast back) and numxent's (bfloat16 read in "
    "place, float32 arithmetic, bfloat16 gradient); interleaved in one process, "
    "best of the repeats.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("torch", "ml_dtypes"),
)
