"""A ``torch.compile``d training step against the eager one, with both losses.

The report's ``--compiled-step`` section (``python benchmarks/report.py
--compiled-step``). The model is
Linear(64, 128) -> ReLU -> Linear(128, C) on random data; the forward plus
loss is compiled with ``torch.compile(fullgraph=True)`` (inductor), which
with ``numxent.torch.cross_entropy`` calls the ``numxent::cross_entropy``
custom op. Four copies of the model (same seed and data) train in one
fresh process: numxent eager, numxent compiled, PyTorch eager and PyTorch
compiled, their steps round-robin (the order rotates every round) after
warm-up steps that compile. Reported per shape: the median step time of
each and the last step's loss (compiled and eager must agree).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from ._section import Section, run_child

OPTIONS = {
    "shapes": ("64x10,4096x1000", "comma list of batch x classes"),
    "steps": (30, "timed steps of each model"),
    "warmup": (3, "untimed steps first (compiling), at least 2"),
}
QUICK = {"shapes": "64x10", "steps": 10}
IMPLS = ("numxent eager", "numxent compiled", "torch eager", "torch compiled")


def child(cfg) -> dict:
    import torch

    import numxent.torch as nt

    torch.set_num_threads(cfg["threads"])
    rows = []
    for batch, classes in cfg["shapes"]:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 64, generator=gen)
        y = torch.randint(0, classes, (batch,), generator=gen)
        runs: dict[str, dict[str, Any]] = {}
        for impl in IMPLS:
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, classes)
            )
            loss_fn = nt.cross_entropy if impl.startswith("numxent") else (
                torch.nn.functional.cross_entropy
            )  # fmt: skip

            def forward(x, y, model=model, loss_fn=loss_fn):
                return loss_fn(model(x), y)

            if impl.endswith("compiled"):
                forward = torch.compile(forward, fullgraph=True)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            runs[impl] = dict(forward=forward, opt=opt, times=[], loss=None)
        for i in range(cfg["warmup"] + cfg["steps"]):
            k = i % len(IMPLS)
            for impl in IMPLS[k:] + IMPLS[:k]:
                r = runs[impl]
                t0 = time.perf_counter()
                r["opt"].zero_grad(set_to_none=True)
                loss = r["forward"](x, y)
                loss.backward()
                r["opt"].step()
                dt = time.perf_counter() - t0
                r["loss"] = loss.item()
                if i >= cfg["warmup"]:
                    r["times"].append(dt)
        for impl in IMPLS:
            rows.append(
                {"batch": batch, "classes": classes, "impl": impl,
                 "threads": cfg["threads"], "steps": cfg["steps"],
                 "step_us": 1e6 * statistics.median(runs[impl]["times"]),
                 "final_loss": runs[impl]["loss"]}
            )  # fmt: skip
    return {"rows": rows}


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """Rows per (shape, impl) in :data:`IMPLS` order, on ``threads`` torch
    threads."""
    from numxent.bench import parse_shapes

    cfg = dict(shapes=parse_shapes(str(opts["shapes"])), steps=int(opts["steps"]),
               warmup=max(2, int(opts["warmup"])), threads=threads)  # fmt: skip
    result = run_child("compiled_step", cfg)
    on_step("compiled step")
    return result


def _groups(rows):
    out = []
    for i in range(0, len(rows), len(IMPLS)):
        out.append({r["impl"]: r for r in rows[i : i + len(IMPLS)]})
    return out


def markdown(result: dict) -> str:
    """The rows as a Markdown table plus one summary line per shape."""
    from numxent.bench._report import table

    rows = result["rows"]
    headers = ["N × C", "torch threads", *(f"{i} µs" for i in IMPLS),
               "numxent eager ÷ compiled", "loss eager / compiled"]  # fmt: skip
    cells = []
    for g in _groups(rows):
        e, c = g["numxent eager"], g["numxent compiled"]
        cells.append(
            [f"{e['batch']:,} × {e['classes']:,}", str(e["threads"])]
            + [f"{g[i]['step_us']:,.0f}" for i in IMPLS]
            + [f"{e['step_us'] / c['step_us']:.2f}×",
               f"{e['final_loss']:.6f} / {c['final_loss']:.6f}"]
        )  # fmt: skip
    lines = [f"- {line}" for line in summary(result)]
    return "\n".join([table(headers, cells, "lr"), "", *lines]) + "\n"


def summary(result: dict) -> list[str]:
    """One line per shape: compiled against eager, and against PyTorch's."""
    out = []
    for g in _groups(result["rows"]):
        e, c = g["numxent eager"], g["numxent compiled"]
        te, tc = g["torch eager"], g["torch compiled"]
        out.append(
            f"MLP step {e['batch']:,}×{e['classes']:,}: numxent compiled "
            f"{e['step_us'] / c['step_us']:.2f}× its eager step; compiled PyTorch "
            f"÷ compiled numxent {tc['step_us'] / c['step_us']:.2f}×, eager "
            f"{te['step_us'] / e['step_us']:.2f}×; last loss eager "
            f"{e['final_loss']:.6f}, compiled {c['final_loss']:.6f}"
        )
    return out


SECTION = Section(
    key="compiled_step",
    flag="compiled-step",
    help="a torch.compile'd training step against the eager one, both losses "
    "(needs torch)",
    title="Compiled training step",
    intro="An MLP 64 → 128 → C step (forward, loss, backward, SGD) eager and "
    "`torch.compile(fullgraph=True)`'d, with numxent's loss (the "
    "`numxent::cross_entropy` custom op when compiled) and with PyTorch's; the "
    "four models' steps round-robin in one process, medians.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("torch",),
)
