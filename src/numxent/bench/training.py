"""CPU training step with PyTorch's cross-entropy vs numxent.torch's drop-in.

Run it as ``numxent-bench --training`` (a section of the report),
``python -m numxent.bench.training`` or ``python benchmarks/train_step.py``
(``--quick`` runs batch and tokens 1,024). Two workloads, same model, data
and seed for both losses:

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

Numba's thread count is left at its default (all cores) while torch's
intra-op pool is set to 1 or to all cores, to show whether the two pools
oversubscribe the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULTS = dict(
    tasks="mlp,lm", threads="1,all", batch=4096, lm_tokens=4096, mlp_classes=1000,
    mlp_in=256, mlp_hidden=512, lm_hidden=512, vocab=32000, steps=5, warmup=1,
    loss_reps=21,
)  # fmt: skip
QUICK = dict(batch=1024, lm_tokens=1024)
_HELP = {
    "tasks": "comma list of mlp, lm",
    "threads": "comma list of torch thread counts ('all': every CPU)",
    "batch": "MLP samples a batch",
    "lm_tokens": "LM tokens a batch",
    "steps": "timed steps",
    "loss_reps": "timed loss forward+backward calls",
}


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
    import torch

    import numxent.torch as nt

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


def _run_child(cfg) -> dict:
    from ._machine import child_env

    proc = subprocess.run(
        [sys.executable, "-m", "numxent.bench.training", "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(
            f"training child exited {proc.returncode}: {' | '.join(tail)}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_training(on_step=None, **opts) -> list[dict]:
    """Run the grid; one row per (task, torch threads, loss), torch's first.

    ``opts`` override :data:`DEFAULTS`; ``on_step(message)`` is called after
    each child process.
    """
    o = {**DEFAULTS, **opts}
    ncpu = os.cpu_count() or 1
    threads = [
        ncpu if str(s) == "all" else int(s) for s in str(o["threads"]).split(",")
    ]
    step = on_step or (lambda message: None)
    rows = []
    for task in o["tasks"].split(","):
        if task == "mlp":
            shape = dict(in_features=o["mlp_in"], hidden=o["mlp_hidden"],
                         classes=o["mlp_classes"], batch=o["batch"])  # fmt: skip
        elif task == "lm":
            shape = dict(hidden=o["lm_hidden"], classes=o["vocab"],
                         batch=o["lm_tokens"])  # fmt: skip
        else:
            raise ValueError(f"tasks: unknown task {task!r} (mlp, lm)")
        base = dict(task=task, seed=0, lr=0.1, **shape)
        mem = {}
        for impl in ("torch", "numxent"):
            mem[impl] = _run_child(dict(base, mode="memory", impl=impl, threads=ncpu))
            step(f"{task} memory {impl}")
        for th in threads:
            cfg = dict(base, mode="time", threads=th, steps=o["steps"],
                       warmup=o["warmup"], loss_reps=o["loss_reps"])  # fmt: skip
            res = _run_child(cfg)
            step(f"{task} time threads={th}")
            t, n = res["torch"]["final_loss"], res["numxent"]["final_loss"]
            for impl in ("torch", "numxent"):
                rows.append(
                    {**cfg, "impl": impl, **res[impl], **mem[impl],
                     "loss_rel_diff": abs(t - n) / abs(t)}
                )  # fmt: skip
    return rows


def n_children(**opts) -> int:
    """How many child processes :func:`run_training` starts (progress units)."""
    o = {**DEFAULTS, **opts}
    return len(o["tasks"].split(",")) * (2 + len(str(o["threads"]).split(",")))


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table plus one summary line per comparison."""
    from ._report import table

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
    out += [f"- {line}" for line in summary(rows)]
    if rows:
        n0 = rows[1]
        out.append(
            f"- numba threads {n0['numba_threads']}, threading layer "
            f"{n0['threading_layer']}"
        )
    return "\n".join(out) + "\n"


def summary(rows: list[dict]) -> list[str]:
    """One line per (torch, numxent) pair of rows: the speed-ups and memory."""
    return [
        f"{t['task']} {t['batch']:,}×{t['classes']:,}, torch threads={t['threads']}: "
        f"step {t['step_ms'] / n['step_ms']:.2f}×, "
        f"loss fwd+bwd {t['loss_ms'] / n['loss_ms']:.1f}× faster with numxent; "
        f"loss peak memory {n['loss_peak_MiB']:.0f} vs {t['loss_peak_MiB']:.0f} MiB; "
        f"final loss rel. diff {t['loss_rel_diff']:.1e}"
        for t, n in zip(rows[0::2], rows[1::2], strict=False)
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    for key, default in DEFAULTS.items():
        p.add_argument(
            "--" + key.replace("_", "-"),
            type=type(default),
            help=f"{_HELP.get(key, key.replace('_', ' '))} (default {default})",
        )
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--quick", action="store_true", help="batch and tokens 1024")
    a = p.parse_args(argv)
    if a.child:
        cfg = json.loads(a.child)
        run = child_memory if cfg["mode"] == "memory" else child_time
        print(json.dumps(run(cfg)))
        return 0
    opts = {k: v for k, v in vars(a).items() if k in DEFAULTS and v is not None}
    if a.quick:
        opts = {**QUICK, **opts}
    rows = run_training(
        on_step=lambda m: print(f"  done: {m}", file=sys.stderr), **opts
    )
    print(markdown(rows))
    print(
        f"{os.cpu_count()} CPUs; command: "
        + " ".join([os.path.basename(sys.executable)] + sys.argv)
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any(r["loss_rel_diff"] > 1e-4 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
