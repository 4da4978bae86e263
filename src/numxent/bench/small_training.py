"""Small-batch training: an MLP on scikit-learn's digits, PyTorch's loss vs numxent's.

Run it as ``numxent-bench --small-training`` (a section of the report) or
``python -m numxent.bench.small_training``. The training most people run on
CPUs: Linear(64, 128) -> ReLU -> Linear(128, 10) on the 1,797 digits images
(pixels / 16, float32), plain SGD, a few epochs, at batch sizes 32, 64 and
256. At these sizes a loss call is mostly per-call overhead, so this is
where a drop-in could make training slower.

One fresh process (torch's intra-op pool at ``--threads``) trains two
copies of the model (same seed, same shuffles), one with
``torch.nn.functional.cross_entropy`` and one with
``numxent.torch.cross_entropy``, alternating whole epochs (the order flips
every epoch, so load drift hits both). Reported per batch size: the best
epoch's wall time of each (every step: zero_grad, forward, loss, backward,
SGD step) and the final loss of each model on the whole data set.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ._child import run_child, section_main, thread_count

DEFAULTS = dict(batches="32,64,256", epochs=3, hidden=128, lr=0.1, threads="all")
QUICK = dict(epochs=2)
_HELP = {
    "batches": "comma list of batch sizes",
    "epochs": "epochs each model trains (the best one is reported)",
    "threads": "torch intra-op threads ('all': every CPU)",
}


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
    for fn in fns.values():  # load the kernels outside the figures
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
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
            runs[impl] = dict(model=model, opt=opt, epochs=[])
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
                model, opt = r["model"], r["opt"]
                t0 = time.perf_counter()
                for xb, yb in batches:
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model(xb), yb).backward()
                    opt.step()
                r["epochs"].append(time.perf_counter() - t0)
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
                 "final_loss": final[impl], "loss_rel_diff": abs(t - n) / abs(t)}
            )  # fmt: skip
    return {"rows": rows}


def run_small_training(on_step=None, **opts) -> list[dict]:
    """One row per (batch size, loss), PyTorch's first; ``opts`` override
    :data:`DEFAULTS`; ``on_step(message)`` is called when the child is done."""

    o = {**DEFAULTS, **opts}
    threads = thread_count(o["threads"])
    batches = [int(b) for b in str(o["batches"]).split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise ValueError(f"batches: positive batch sizes needed, got {o['batches']!r}")
    cfg = dict(batches=batches, epochs=int(o["epochs"]), hidden=int(o["hidden"]),
               lr=float(o["lr"]), threads=threads)  # fmt: skip
    rows = run_child("small_training", cfg, "small-training")
    (on_step or (lambda message: None))("digits MLP")
    return rows


def _pairs(rows):
    return list(zip(rows[0::2], rows[1::2], strict=False))


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table plus one summary line per batch size."""
    from ._report import table

    headers = ["batch", "torch threads", "PyTorch epoch ms", "numxent epoch ms",
               "PyTorch ÷ numxent", "final loss PyTorch",
               "final loss numxent"]  # fmt: skip
    cells = [
        [f"{t['batch']:,}", str(t["threads"]), f"{t['epoch_ms']:.1f}",
         f"{n['epoch_ms']:.1f}", f"{t['epoch_ms'] / n['epoch_ms']:.2f}×",
         f"{t['final_loss']:.6f}", f"{n['final_loss']:.6f}"]
        for t, n in _pairs(rows)
    ]  # fmt: skip
    return "\n".join([table(headers, cells, "lr"), ""] + [
        f"- {line}" for line in summary(rows)
    ]) + "\n"  # fmt: skip


def summary(rows: list[dict]) -> list[str]:
    """One line per batch size: the epoch speed-up and the loss agreement."""
    return [
        f"digits MLP 64→{t['hidden']}→10, batch {t['batch']}: epoch "
        f"{t['epoch_ms'] / n['epoch_ms']:.2f}× with numxent (best of {t['epochs']} "
        f"epochs, {t['epoch_ms']:.1f} → {n['epoch_ms']:.1f} ms); final loss rel. "
        f"diff {t['loss_rel_diff']:.1e}"
        for t, n in _pairs(rows)
    ]


def main(argv=None) -> int:
    return section_main(
        argv, doc=__doc__ or "", defaults=DEFAULTS, helps=_HELP, quick=QUICK,
        quick_help="2 epochs", run=run_small_training, child=child, markdown=markdown,
        status=lambda rows: int(any(r["loss_rel_diff"] > 1e-4 for r in rows)),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
