"""Times PyTorch in a process of its own, for settings read at ``import torch``.

``THP_MEM_ALLOC_ENABLE=1`` makes PyTorch's CPU allocator ask the kernel for
transparent huge pages, but only if it is set before torch is imported, so
the report runs this module as a subprocess with that variable set::

    THP_MEM_ALLOC_ENABLE=1 python -m numxent.bench._torch_worker < spec.json

The spec on stdin is the report's settings (``repeat``, ``min_time``,
``budget``, ``order``, ``seed``) plus ``threads``, ``workloads`` (a list of
``{"op", "n", "c", "dtype"}``) and ``peers`` (peer ids). The worker rebuilds
each workload's data from the seed, times ``np.copyto`` (a same-process
check) and the peers with the main process's protocol, prints one JSON
object on stdout and progress lines ``PROGRESS <advance> <message>`` on
stderr.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from ._peers import PEERS, PeerUnavailable, import_torch
    from ._timing import time_workload
    from ._workloads import Workload

    spec = json.load(sys.stdin)
    threads = int(spec["threads"])
    try:
        torch = import_torch()
    except PeerUnavailable as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    torch.set_num_threads(threads)

    def progress(message: str, advance: float) -> None:
        print(f"PROGRESS {advance} {message}", file=sys.stderr, flush=True)

    results = []
    for wd in spec["workloads"]:
        w = Workload(**wd)
        peers = [p for p in ["copyto", *spec["peers"]] if w.op in PEERS[p].ops]
        stats, unavailable, errors = time_workload(
            w, peers, threads, spec,
            on_step=lambda m, a, g=w.group: progress(f"{g} THP {m}", a),
        )  # fmt: skip
        results.append({**wd, "times": stats, "skipped": {**unavailable, **errors}})
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
