"""Small-batch training: an MLP on scikit-learn's digits, PyTorch's loss vs numxent's.

The report's ``--small-training`` section (``python benchmarks/report.py
--small-training``). The training most people run on
CPUs: Linear(64, 128) -> ReLU -> Linear(128, 10) on the 1,797 digits images
(pixels / 16, float32), plain SGD, a few epochs, at batch sizes 32, 64 and
256. At these sizes a loss call is mostly per-call overhead, so this is
where a drop-in could make training slower.

One fresh process (torch's intra-op pool at the report's ``--threads``) trains two
copies of the model (same seed, same shuffles), one with
``torch.nn.functional.cross_entropy`` and one with
``numxent.torch.cross_entropy``, alternating whole epochs (the order flips
every epoch, so load drift hits both). Reported per batch size: the best
epoch's wall time of each (every step: zero_grad, forward, loss, backward,
SGD step) and the final loss of each model on the whole data set.

The model is what a client trains: an ``nn.Sequential`` whose weights are
``nn.Parameter`` objects, stepped by ``torch.optim.SGD``. Both models' epochs run
with :class:`numxent.torch.FallbackWarning` raised as an error, and every
step's loss records its autograd node: a numxent step that PyTorch served
(``F.cross_entropy``'s node instead of numxent's) fails the section, so it
can never time PyTorch twice.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from ._section import Section, ints, run_child

OPTIONS = {
    "batches": ("32,64,256", "comma list of batch sizes"),
    "epochs": (3, "epochs each model trains (the best one is reported)"),
    "hidden": (128, "hidden units"),
    "lr": (0.1, "SGD learning rate"),
}
QUICK = {"epochs": 2}
#: the autograd node of a loss numxent served
CE_NODE = "_CrossEntropyFunctionBackward"


def _digits(torch):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def child(cfg) -> dict:
    import torch

    import numxent.torch as nt

    torch.set_num_threads(cfg["threads"])
    x, y = _digits(torch)
    fns = {"torch": torch.nn.functional.cross_entropy, "numxent": nt.cross_entropy}
    with warnings.catch_warnings():  # load the kernels outside the figures
        warnings.simplefilter("error", nt.FallbackWarning)
        for fn in fns.values():
            w = torch.randn(64, 10, requires_grad=True)
            fn(w, torch.randint(0, 10, (64,))).backward()
    rows = []
    for batch in cfg["batches"]:
        runs: dict[str, dict[str, Any]] = {}
        for impl in fns:
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(64, cfg["hidden"]),
                torch.nn.ReLU(),
                torch.nn.Linear(cfg["hidden"], 10),
            )
            assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
            runs[impl] = dict(model=model, opt=opt, epochs=[], nodes={})
        gen = torch.Generator().manual_seed(1)
        order = list(fns)
        for epoch in range(cfg["epochs"]):
            perm = torch.randperm(len(x), generator=gen)
            batches = [
                (x[perm[i : i + batch]], y[perm[i : i + batch]])
                for i in range(0, len(x), batch)
            ]
            for impl in order if epoch % 2 == 0 else order[::-1]:
                r, loss_fn = runs[impl], fns[impl]
                model, opt, nodes = r["model"], r["opt"], r["nodes"]
                with warnings.catch_warnings():  # both sides alike
                    warnings.simplefilter("error", nt.FallbackWarning)
                    t0 = time.perf_counter()
                    for xb, yb in batches:
                        opt.zero_grad(set_to_none=True)
                        loss = loss_fn(model(xb), yb)
                        loss.backward()
                        opt.step()
                        node = type(loss.grad_fn).__name__
                        nodes[node] = nodes.get(node, 0) + 1
                    r["epochs"].append(time.perf_counter() - t0)
        served = runs["numxent"]["nodes"]
        if set(served) != {CE_NODE}:  # PyTorch timed twice: no figure
            raise RuntimeError(
                f"numxent.torch.cross_entropy was handed to PyTorch at batch "
                f"{batch}: loss nodes {served}"
            )
        with torch.no_grad():
            final = {
                impl: torch.nn.functional.cross_entropy(
                    runs[impl]["model"](x), y
                ).item()
                for impl in fns
            }
        t, n = final["torch"], final["numxent"]
        for impl in fns:
            rows.append(
                {"batch": batch, "impl": impl, "threads": cfg["threads"],
                 "epochs": cfg["epochs"], "samples": len(x), "hidden": cfg["hidden"],
                 "epoch_ms": 1e3 * min(runs[impl]["epochs"]),
                 "epochs_ms": [1e3 * s for s in runs[impl]["epochs"]],
                 "final_loss": final[impl], "loss_rel_diff": abs(t - n) / abs(t),
                 "loss_nodes": runs[impl]["nodes"],
                 "steps": sum(runs[impl]["nodes"].values()),
                 "parameters": sum(p.numel() for p in runs[impl]["model"].parameters())}
            )  # fmt: skip
    return {"rows": rows}


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """One row per (batch size, loss), PyTorch's first, on ``threads`` torch
    threads."""
    batches = ints(opts["batches"])
    if not batches or min(batches) < 1:
        raise ValueError(
            f"batches: positive batch sizes needed, got {opts['batches']!r}"
        )
    cfg = dict(batches=batches, epochs=int(opts["epochs"]), hidden=int(opts["hidden"]),
               lr=float(opts["lr"]), threads=threads)  # fmt: skip
    result = run_child("small_training", cfg)
    on_step("digits MLP")
    return result


def _pairs(rows):
    return list(zip(rows[0::2], rows[1::2], strict=False))


def _served(row: dict) -> str:
    """``"served/steps"``: the steps whose loss had numxent's autograd node
    (rows of runs made before the section recorded it: ``"?"``)."""
    if "loss_nodes" not in row:
        return "?"
    return f"{row['loss_nodes'].get(CE_NODE, 0)}/{row['steps']}"


def markdown(result: dict) -> str:
    """The rows as a Markdown table plus one summary line per batch size."""
    from numxent.bench._report import table

    rows = result["rows"]
    headers = ["batch", "torch threads", "PyTorch epoch ms", "numxent epoch ms",
               "PyTorch ÷ numxent", "final loss PyTorch",
               "final loss numxent", "numxent steps served"]  # fmt: skip
    cells = [
        [f"{t['batch']:,}", str(t["threads"]), f"{t['epoch_ms']:.1f}",
         f"{n['epoch_ms']:.1f}", f"{t['epoch_ms'] / n['epoch_ms']:.2f}×",
         f"{t['final_loss']:.6f}", f"{n['final_loss']:.6f}", _served(n)]
        for t, n in _pairs(rows)
    ]  # fmt: skip
    return "\n".join([table(headers, cells, "lr"), ""] + [
        f"- {line}" for line in summary(result)
    ]) + "\n"  # fmt: skip


def summary(result: dict) -> list[str]:
    """One line per batch size: the epoch speed-up and the loss agreement."""
    rows = result["rows"]
    return [
        f"digits MLP 64→{t['hidden']}→10, batch {t['batch']}: epoch "
        f"{t['epoch_ms'] / n['epoch_ms']:.2f}× with numxent (best of {t['epochs']} "
        f"epochs, {t['epoch_ms']:.1f} → {n['epoch_ms']:.1f} ms); final loss rel. "
        f"diff {t['loss_rel_diff']:.1e}; numxent served {_served(n)} steps"
        for t, n in _pairs(rows)
    ]


SECTION = Section(
    key="small_training",
    flag="small-training",
    help="small-batch training epochs (the digits MLP at batch 32/64/256), "
    "PyTorch's loss vs numxent.torch's (needs torch, scikit-learn)",
    title="Small-batch training",
    intro="An MLP 64 → 128 → 10 (`nn.Sequential` of `nn.Linear`s, their weights "
    "`nn.Parameter`s) on scikit-learn's digits (1,797 images), `torch.optim.SGD`, "
    "trained with `torch.nn.functional.cross_entropy` and with "
    "`numxent.torch.cross_entropy` from the same seed and shuffles, their epochs "
    "alternating in one process; the best epoch's wall time of each. Every "
    "numxent step is checked served (its loss's autograd node is numxent's, "
    "`FallbackWarning` raised as an error): a hand-off to PyTorch fails the "
    "section.",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("torch", "sklearn"),
)
