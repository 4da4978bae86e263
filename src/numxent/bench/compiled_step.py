"""A ``torch.compile``d training step against the eager one, with both losses.

Run it as ``numxent-bench --compiled-step`` (a section of the report) or
``python -m numxent.bench.compiled_step``. The model is
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
import sys
import time
from typing import Any

from ._child import run_child, section_main, shape_tuples, thread_count

DEFAULTS = dict(shapes="64x10,4096x1000", steps=30, warmup=3, threads="all")
QUICK = dict(shapes="64x10", steps=10)
IMPLS = ("numxent eager", "numxent compiled", "torch eager", "torch compiled")
_HELP = {
    "shapes": "comma list of batch x classes",
    "steps": "timed steps of each model",
    "threads": "torch intra-op threads ('all': every CPU)",
}


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


def run_compiled_step(on_step=None, **opts) -> list[dict]:
    """Rows per (shape, impl) in :data:`IMPLS` order; ``opts`` override
    :data:`DEFAULTS`; ``on_step(message)`` is called when the child is done."""
    from ._workloads import parse_shapes

    o = {**DEFAULTS, **opts}
    threads = thread_count(o["threads"])
    cfg = dict(shapes=parse_shapes(str(o["shapes"])), steps=int(o["steps"]),
               warmup=max(2, int(o["warmup"])), threads=threads)  # fmt: skip
    rows = run_child("compiled_step", cfg, "compiled-step")
    (on_step or (lambda message: None))("compiled step")
    return rows


def _groups(rows):
    out = []
    for i in range(0, len(rows), len(IMPLS)):
        out.append({r["impl"]: r for r in rows[i : i + len(IMPLS)]})
    return out


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table plus one summary line per shape."""
    from ._report import table

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
    lines = [f"- {line}" for line in summary(rows)]
    return "\n".join([table(headers, cells, "lr"), "", *lines]) + "\n"


def summary(rows: list[dict]) -> list[str]:
    """One line per shape: compiled against eager, and against PyTorch's."""
    out = []
    for g in _groups(rows):
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


def main(argv=None) -> int:
    return section_main(
        argv, doc=__doc__ or "", defaults=DEFAULTS, helps=_HELP, quick=QUICK,
        quick_help="64x10, 10 steps", run=run_compiled_step, child=child,
        markdown=markdown,
        child_cfg=shape_tuples,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
