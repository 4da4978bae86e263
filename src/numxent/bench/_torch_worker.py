"""Times PyTorch in a process of its own, for settings read at ``import torch``.

``THP_MEM_ALLOC_ENABLE=1`` makes PyTorch's CPU allocator ask the kernel for
transparent huge pages, but only if it is set before torch is imported, so
the report (:func:`run_worker`) runs this module as a subprocess with that
variable set::

    THP_MEM_ALLOC_ENABLE=1 python -m numxent.bench._torch_worker < spec.json

The spec on stdin is the report's settings (``repeat``, ``min_time``,
``budget``, ``order``, ``seed``) plus ``threads``, ``workloads`` (a list of
``{"op", "n", "c", "dtype"}``) and ``peers`` (peer ids). The worker rebuilds
each workload's data from the seed, times ``np.copyto`` (a same-process
check) and the peers with the main process's protocol, and prints progress
lines ``PROGRESS <advance> <group> <message>`` and at the end one line
``RESULT <json>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ._startup import error_summary


def run_worker(workloads, peers: list[str], s: dict, threads: int, advance) -> dict:
    """Run the worker on ``workloads`` with THP_MEM_ALLOC_ENABLE=1, passing its
    progress to ``advance(amount, group, message)``; its result, or raises."""
    from ._machine import child_env

    spec = {
        **{k: s[k] for k in ("repeat", "min_time", "budget", "order", "seed")},
        "threads": threads,
        "workloads": [w.to_dict() for w in workloads],
        "peers": peers,
    }
    env = child_env(THP_MEM_ALLOC_ENABLE="1", NUMBA_NUM_THREADS=str(max(threads, 1)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "numxent.bench._torch_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe, read as it comes: none fills up
        text=True,
        env=env,
    )
    result = None
    tail: list[str] = []
    assert proc.stdin is not None and proc.stdout is not None  # both PIPE
    try:
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        for line in proc.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "PROGRESS":
                amount, group, message = (rest.split(" ", 2) + [""])[:3]
                advance(float(amount), group, message)
            elif kind == "RESULT":
                result = json.loads(rest)
            else:
                tail = (tail + [line.rstrip()])[-40:]
        proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: do not leave the worker running
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(
            f"exited with {proc.returncode}: " + error_summary("\n".join(tail))
        )
    if result is None:
        raise RuntimeError("printed no result: " + " | ".join(tail[-2:]))
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def main() -> int:
    from ._peers import PEERS, PeerUnavailable, import_torch
    from ._timing import time_workload
    from ._workloads import Workload

    spec = json.load(sys.stdin)
    threads = int(spec["threads"])
    try:
        torch = import_torch()
    except PeerUnavailable as exc:
        print("RESULT " + json.dumps({"error": str(exc)}))
        return 0
    torch.set_num_threads(threads)
    results = []
    for wd in spec["workloads"]:
        w = Workload(**wd)
        peers = [p for p in ["copyto", *spec["peers"]] if w.op in PEERS[p].ops]
        stats, unavailable, errors = time_workload(
            w, peers, threads, spec,
            on_step=lambda m, a, g=w.group: print(
                f"PROGRESS {a} {g} THP {m}", flush=True),
        )  # fmt: skip
        results.append({**wd, "times": stats, "skipped": {**unavailable, **errors}})
    result = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "results": results,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
