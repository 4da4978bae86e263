"""CPU training step with PyTorch's cross-entropy vs numxent.torch's drop-in.

Standalone: ``python benchmarks/train_step.py`` (defaults are the issue's
sizes; ``--quick`` runs reduced sizes). Two workloads, same model, data and
seed for both losses:

- ``mlp``: Linear(in, hidden) -> ReLU -> Linear(hidden, classes), batch N;
- ``lm``:  an LM head, Linear(hidden, vocab) on N tokens (+ the loss).

Timings: for each (workload, torch thread count) one fresh process trains
two copies of the model (same seed), one per loss, alternating their steps
so that load from other processes hits both alike. Memory: each (workload,
loss) runs in a fresh process; on Linux the resident high-water mark
(``VmHWM``) is reset before each measurement. Reported:

- ``step_ms``: median wall time of a whole SGD step (zero_grad, forward,
  loss, backward, optimizer step) over the timed steps;
- ``loss_ms``: median wall time of the loss's forward+backward alone on the
  same logits (a leaf tensor), and its share of the step;
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


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mib() -> float:
    rss = _status_mib("VmRSS")
    return _peak_mib() if rss is None else rss


def _peak_mib() -> float:
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _extra_peak(fn) -> float:
    """MiB of resident memory fn() adds at its peak over what is resident now."""
    _reset_peak()
    before = _rss_mib()
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
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0, loss.item(), out.detach()


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
        runs[impl] = dict(model=model, opt=opt, steps=[], losses=[], out=None)
    order = list(fns)
    for i in range(cfg["warmup"] + cfg["steps"]):
        for impl in order if i % 2 == 0 else order[::-1]:
            r = runs[impl]
            dt, loss, r["out"] = _step(r["model"], r["opt"], fns[impl], x, y)
            r["losses"].append(loss)
            if i >= cfg["warmup"]:
                r["steps"].append(dt)
    loss_times = {impl: [] for impl in fns}
    leaves = {impl: runs[impl]["out"].clone().requires_grad_(True) for impl in fns}
    for i in range(cfg["loss_reps"] + 1):
        for impl in order if i % 2 == 0 else order[::-1]:
            leaves[impl].grad = None
            t0 = time.perf_counter()
            fns[impl](leaves[impl], y).backward()
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
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cfg)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tasks", default="mlp,lm", help="comma list of mlp, lm")
    p.add_argument("--threads", default="1,all", help="torch thread counts")
    p.add_argument("--batch", type=int, default=4096, help="MLP samples a batch")
    p.add_argument("--lm-tokens", type=int, default=4096, help="LM tokens a batch")
    p.add_argument("--mlp-classes", type=int, default=1000)
    p.add_argument("--mlp-in", type=int, default=256)
    p.add_argument("--mlp-hidden", type=int, default=512)
    p.add_argument("--lm-hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--loss-reps", type=int, default=5)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--quick", action="store_true", help="batch and tokens 1024")
    a = p.parse_args(argv)
    if a.child:
        cfg = json.loads(a.child)
        run = child_memory if cfg["mode"] == "memory" else child_time
        print(json.dumps(run(cfg)))
        return 0
    if a.quick:
        a.batch, a.lm_tokens = 1024, 1024

    ncpu = os.cpu_count() or 1
    threads = [ncpu if s == "all" else int(s) for s in a.threads.split(",")]
    rows = []
    for task in a.tasks.split(","):
        shape = (
            dict(in_features=a.mlp_in, hidden=a.mlp_hidden, classes=a.mlp_classes)
            if task == "mlp"
            else dict(hidden=a.lm_hidden, classes=a.vocab)
        )
        mem = {}
        for impl in ("torch", "numxent"):
            cfg = dict(
                mode="memory", task=task, impl=impl, threads=ncpu, seed=0, lr=0.1,
                batch=a.batch if task == "mlp" else a.lm_tokens, **shape,
            )  # fmt: skip
            mem[impl] = _run_child(cfg)
        for th in threads:
            cfg = dict(
                mode="time", task=task, threads=th, seed=0, lr=0.1,
                batch=a.batch if task == "mlp" else a.lm_tokens,
                steps=a.steps, warmup=a.warmup, loss_reps=a.loss_reps, **shape,
            )  # fmt: skip
            res = _run_child(cfg)
            t, n = res["torch"]["final_loss"], res["numxent"]["final_loss"]
            for impl in ("torch", "numxent"):
                rows.append(
                    {**cfg, "impl": impl, **res[impl], **mem[impl],
                     "loss_rel_diff": abs(t - n) / abs(t)}
                )  # fmt: skip

    hdr = (
        "| task | N x C | torch threads | loss | step ms | loss fwd+bwd ms "
        "| loss share | loss peak MiB | step peak MiB | final loss |"
    )
    print(hdr)
    print("|" + "---|" * 10)
    for r in rows:
        print(
            f"| {r['task']} | {r['batch']}x{r['classes']} | {r['threads']} "
            f"| {r['impl']} | {r['step_ms']:.1f} | {r['loss_ms']:.1f} "
            f"| {r['loss_ms'] / r['step_ms']:.0%} | {r['loss_peak_MiB']:.0f} "
            f"| {r['step_peak_MiB']:.0f} | {r['final_loss']:.6f} |"
        )
    print()
    for i in range(0, len(rows), 2):
        t, n = rows[i], rows[i + 1]
        print(
            f"{t['task']} threads={t['threads']}: "
            f"step {t['step_ms'] / n['step_ms']:.2f}x,"
            f" loss fwd+bwd {t['loss_ms'] / n['loss_ms']:.1f}x faster with numxent;"
            f" final loss rel. diff {t['loss_rel_diff']:.1e}"
        )
    n0 = rows[1]
    print(
        f"\nnumba threads {n0['numba_threads']}, threading layer "
        f"{n0['threading_layer']}, {ncpu} CPUs; command: "
        + " ".join([os.path.basename(sys.executable)] + sys.argv)
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if r["loss_rel_diff"] > 1e-4]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
