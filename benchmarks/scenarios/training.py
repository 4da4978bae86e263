"""CPU training step with PyTorch's cross-entropy vs numxent.torch's drop-in.

The report's ``--training`` section (``python benchmarks/report.py
--training``; ``--quick`` runs batch and tokens 1,024). Two workloads, same
model, data and seed for both losses:

- ``mlp``: Linear(in, hidden) -> ReLU -> Linear(hidden, classes), batch N;
- ``lm``:  an LM head, Linear(hidden, vocab) on N tokens (+ the loss).

Timings: for each (workload, torch thread count) one fresh process trains
two copies of the model (same seed), one per loss, alternating their steps
so that load from other processes hits both alike. Memory: each (workload,
loss) runs in a fresh process; on Linux the resident high-water mark
(``VmHWM``) is reset before each measurement. Reported:

- ``step_ms``: median wall time of a whole SGD step (zero_grad, forward,
  loss, backward, optimizer step) over the timed steps;
- ``loss_ms``: median wall time of the loss's forward+backward alone, as it
  runs inside the step: on the model's output (a non-leaf tensor) with the
  gradient handed back to the caller (``torch.autograd.grad``) and dropped,
  as the model's backward drops it; and its share of the step;
- ``loss_peak_MiB``: extra resident memory of one loss forward+backward on
  top of the logits (peak RSS during it minus RSS before);
- ``step_peak_MiB``: extra resident memory of the training steps on top of
  model, data and optimizer (peak RSS during two steps minus RSS before,
  torch at all cores);
- ``final_loss``: the loss of the last step (both losses must agree).

Numba runs on the report's ``--threads`` while torch's intra-op pool is set
to each of ``--training-threads`` (1 and all cores), to show whether the two
pools oversubscribe the machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from ._section import Section, ints, run_child

OPTIONS = {
    "tasks": ("mlp,lm", "comma list of mlp, lm"),
    "threads": ("1,all", "comma list of torch thread counts ('all': every CPU)"),
    "batch": (4096, "MLP samples a batch"),
    "lm_tokens": (4096, "LM tokens a batch"),
    "mlp_classes": (1000, "MLP classes"),
    "mlp_in": (256, "MLP input features"),
    "mlp_hidden": (512, "MLP hidden units"),
    "lm_hidden": (512, "LM hidden units"),
    "vocab": (32000, "LM vocabulary"),
    "steps": (5, "timed steps"),
    "warmup": (1, "untimed steps first"),
    "loss_reps": (21, "timed loss forward+backward calls"),
}
QUICK = {"batch": 1024, "lm_tokens": 1024}


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_mib() -> float:
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _extra_peak(fn) -> float:
    """MiB of resident memory fn() adds at its peak over what is resident now."""
    try:  # reset the kernel's resident high-water mark (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _status_mib("VmRSS") or _peak_mib()
    fn()
    return _peak_mib() - before


def _build(cfg, torch):
    torch.manual_seed(cfg["seed"])
    n = cfg["batch"]
    if cfg["task"] == "mlp":
        model = torch.nn.Sequential(
            torch.nn.Linear(cfg["in_features"], cfg["hidden"]),
            torch.nn.ReLU(),
            torch.nn.Linear(cfg["hidden"], cfg["classes"]),
        )
        x = torch.randn(n, cfg["in_features"])
    else:
        model = torch.nn.Linear(cfg["hidden"], cfg["classes"], bias=False)
        x = torch.randn(n, cfg["hidden"])
    y = torch.randint(0, cfg["classes"], (n,))
    return model, x, y


def _setup(cfg):
    import numba
    import torch

    import numxent.torch as nt

    numba.set_num_threads(min(cfg["numba_threads"], numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(cfg["threads"])
    fns = {"torch": torch.nn.functional.cross_entropy, "numxent": nt.cross_entropy}
    # Load compiled kernels and start both thread pools outside the figures.
    for fn in fns.values():
        w = torch.randn(64, 1000, requires_grad=True)
        fn(w, torch.randint(0, 1000, (64,))).backward()
    return torch, fns


def _step(model, opt, loss_fn, x, y):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0, loss.item()


def child_memory(cfg) -> dict:
    """Fresh process, one loss: extra peak RSS of the loss and of the steps."""
    torch, fns = _setup(cfg)
    loss_fn = fns[cfg["impl"]]
    model, x, y = _build(cfg, torch)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    held = [torch.randn(cfg["batch"], cfg["classes"], requires_grad=True)]
    loss_peak = _extra_peak(lambda: loss_fn(held[0], y).backward())
    held.clear()

    def train():
        for _ in range(2):
            _step(model, opt, loss_fn, x, y)

    return {"loss_peak_MiB": loss_peak, "step_peak_MiB": _extra_peak(train)}


def child_time(cfg) -> dict:
    """Both losses in one process, steps interleaved (load drift hits both)."""
    import numba

    import numxent

    torch, fns = _setup(cfg)
    runs = {}
    for impl in fns:
        model, x, y = _build(cfg, torch)  # same seed: same model and data
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
        runs[impl] = dict(model=model, opt=opt, steps=[], losses=[])
    order = list(fns)
    for i in range(cfg["warmup"] + cfg["steps"]):
        for impl in order if i % 2 == 0 else order[::-1]:
            r = runs[impl]
            dt, loss = _step(r["model"], r["opt"], fns[impl], x, y)
            r["losses"].append(loss)
            if i >= cfg["warmup"]:
                r["steps"].append(dt)
    loss_times: dict[str, list[float]] = {impl: [] for impl in fns}
    outs = {impl: runs[impl]["model"](x) for impl in fns}  # non-leaf logits
    for i in range(cfg["loss_reps"] + 1):
        for impl in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            (g,) = torch.autograd.grad(fns[impl](outs[impl], y), outs[impl])
            del g
            if i:
                loss_times[impl].append(time.perf_counter() - t0)
    return {
        impl: {
            "step_ms": 1e3 * statistics.median(runs[impl]["steps"]),
            "loss_ms": 1e3 * statistics.median(loss_times[impl]),
            "final_loss": runs[impl]["losses"][-1],
            "numba_threads": numba.get_num_threads(),
            "threading_layer": numxent.threading_layer(),
        }
        for impl in fns
    }


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """One row per (task, torch threads, loss), torch's first; ``on_step``
    is called after each child process."""
    ncpu = os.cpu_count() or 1
    rows = []
    for task in opts["tasks"].split(","):
        if task == "mlp":
            shape = dict(in_features=opts["mlp_in"], hidden=opts["mlp_hidden"],
                         classes=opts["mlp_classes"], batch=opts["batch"])  # fmt: skip
        elif task == "lm":
            shape = dict(hidden=opts["lm_hidden"], classes=opts["vocab"],
                         batch=opts["lm_tokens"])  # fmt: skip
        else:
            raise ValueError(f"tasks: unknown task {task!r} (mlp, lm)")
        base = dict(task=task, seed=0, lr=0.1, numba_threads=threads, **shape)
        mem = {}
        for impl in ("torch", "numxent"):
            cfg = dict(base, impl=impl, threads=ncpu)
            mem[impl] = run_child("training", cfg, "child_memory")
            on_step(f"{task} memory {impl}")
        for th in ints(opts["threads"]):
            cfg = dict(base, threads=th, steps=opts["steps"],
                       warmup=opts["warmup"], loss_reps=opts["loss_reps"])  # fmt: skip
            res = run_child("training", cfg, "child_time")
            on_step(f"{task} time threads={th}")
            t, n = res["torch"]["final_loss"], res["numxent"]["final_loss"]
            for impl in ("torch", "numxent"):
                rows.append(
                    {**cfg, "impl": impl, **res[impl], **mem[impl],
                     "loss_rel_diff": abs(t - n) / abs(t)}
                )  # fmt: skip
    return {"rows": rows}


def steps(opts: dict) -> int:
    """How many child processes :func:`run` starts (progress steps)."""
    return len(opts["tasks"].split(",")) * (2 + len(ints(opts["threads"])))


def markdown(result: dict) -> str:
    """The rows as a Markdown table plus one summary line per comparison."""
    from numxent.bench._report import table

    rows = result["rows"]
    headers = ["task", "N × C", "torch threads", "loss", "step ms",
               "loss fwd+bwd ms", "loss share", "loss peak MiB", "step peak MiB",
               "final loss"]  # fmt: skip
    cells = [
        [r["task"], f"{r['batch']:,} × {r['classes']:,}", str(r["threads"]),
         r["impl"], f"{r['step_ms']:.1f}", f"{r['loss_ms']:.1f}",
         f"{r['loss_ms'] / r['step_ms']:.0%}", f"{r['loss_peak_MiB']:.0f}",
         f"{r['step_peak_MiB']:.0f}", f"{r['final_loss']:.6f}"]
        for r in rows
    ]  # fmt: skip
    out = [table(headers, cells, "llrl"), ""]
    out += [f"- {line}" for line in summary(result)]
    if rows:
        n0 = rows[1]
        out.append(
            f"- numba threads {n0['numba_threads']}, threading layer "
            f"{n0['threading_layer']}"
        )
    return "\n".join(out) + "\n"


def summary(result: dict) -> list[str]:
    """One line per (torch, numxent) pair of rows: the speed-ups and memory."""
    rows = result["rows"]
    return [
        f"{t['task']} {t['batch']:,}×{t['classes']:,}, torch threads={t['threads']}: "
        f"step {t['step_ms'] / n['step_ms']:.2f}×, "
        f"loss fwd+bwd {t['loss_ms'] / n['loss_ms']:.1f}× faster with numxent; "
        f"loss peak memory {n['loss_peak_MiB']:.0f} vs {t['loss_peak_MiB']:.0f} MiB; "
        f"final loss rel. diff {t['loss_rel_diff']:.1e}"
        for t, n in zip(rows[0::2], rows[1::2], strict=False)
    ]


SECTION = Section(
    key="training",
    flag="training",
    help="training steps, PyTorch's loss vs numxent.torch's (needs torch)",
    title="Training step",
    intro="The same model, data and seed trained with "
    "`torch.nn.functional.cross_entropy` and with `numxent.torch.cross_entropy`, "
    "their steps interleaved in one process per torch thread count (median of "
    "the timed steps); the loss's forward+backward timed alone on the model's "
    "output; peak memory from separate processes (extra resident MiB).",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("torch",),
    steps=steps,
)
