"""The language-model head benchmark (``numxent-bench --lm-head``).

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
the inputs, the weight and their gradients.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

__all__ = ["PATHS", "SIZES", "run_lm_head", "markdown"]

PATHS = ("gemms", "torch-ce", "torch-linear-ce", "numxent", "numxent-torch")
#: (tokens N, hidden H, vocabulary V)
SIZES = {"lm": (4096, 512, 32000), "llama3": (2048, 2048, 128256)}

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
path, n, h_, v, steps, threads, chunk_mib = sys.argv[1:8]
n, h_, v, steps = int(n), int(h_), int(v), int(steps)
chunk = {"chunk_bytes": int(float(chunk_mib) * 2**20)} if chunk_mib != "-" else {}
torch.set_num_threads(int(threads))
import numba
numba.set_num_threads(int(threads))
g = torch.Generator().manual_seed(0)
h = torch.randn(n, h_, generator=g)
W = torch.randn(v, h_, generator=g) * 0.05
y = torch.randint(0, v, (n,), generator=g)

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def make_step(h, W, y):
    if path == "gemms":
        def step():
            lg = h @ W.T
            lg @ W
            lg.T @ h
    elif path in ("torch-ce", "torch-linear-ce"):
        import torch.nn.functional as F
        hr = h.clone().requires_grad_(True)
        Wr = W.clone().requires_grad_(True)
        if path == "torch-ce":
            def step():
                hr.grad = Wr.grad = None
                F.cross_entropy(hr @ Wr.T, y).backward()
        else:
            opts = torch.nn.LinearCrossEntropyOptions()
            def step():
                hr.grad = Wr.grad = None
                F.linear_cross_entropy(hr, Wr, y, options=opts).backward()
    elif path == "numxent-torch":
        from numxent.torch import linear_cross_entropy
        hr = h.clone().requires_grad_(True)
        Wr = W.clone().requires_grad_(True)
        def step():
            hr.grad = Wr.grad = None
            linear_cross_entropy(hr, Wr, y, **chunk).backward()
    else:
        import numxent as nx
        hn, Wn, yn = h.numpy(), W.numpy(), y.numpy()
        def step():
            nx.linear_cross_entropy(hn, Wn, yn, return_grad=True, **chunk)
    return step

# warm-up on a small head first (imports, kernel compilation or cache
# loading, BLAS buffers), so that the peak below is the step's own memory
vs = min(v, 1000)
small = (torch.randn(64, h_), torch.randn(vs, h_), torch.randint(0, vs, (64,)))
make_step(*small)()
step = make_step(h, W, y)
base = rss_mib()
times = []
for _ in range(steps + 1):  # the first: warm-up
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"times": times[1:], "extra_mib": peak - base}))
"""


def run_lm_head(sizes=("lm",), steps: int = 5, threads: int = 2,
                shapes: dict | None = None, on_row=None,
                chunk_mib: float | None = None) -> list[dict]:  # fmt: skip
    """One row per (size, path): ``step_ms`` (median), ``extra_mib``.
    ``chunk_mib``: numxent's ``chunk_bytes`` in MiB (default: its own)."""
    rows = []
    shapes = shapes or SIZES
    for name in sizes:
        n, h, v = shapes[name]
        for path in PATHS:
            cmd = [sys.executable, "-c", _CHILD, path, str(n), str(h), str(v),
                   str(steps), str(threads),
                   "-" if chunk_mib is None else str(chunk_mib)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"size": name, "N": n, "H": h, "V": v, "path": path,
                   "step_ms": 1e3 * statistics.median(r["times"]),
                   "extra_mib": r["extra_mib"]}  # fmt: skip
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The table, with each path's step time against the matrix products'."""
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="numxent-bench --lm-head")
    p.add_argument("--lm-head-sizes", default="lm", help="comma list of: lm, llama3")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--chunk-mib",
        type=float,
        default=None,
        help="numxent's chunk_bytes, in MiB (default: its own, 64)",
    )
    a = p.parse_args(argv)
    sizes = [s for s in a.lm_head_sizes.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        p.error(f"--lm-head-sizes: unknown {bad}; choose from {sorted(SIZES)}")
    rows = run_lm_head(sizes, a.steps, a.threads, chunk_mib=a.chunk_mib)
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
