"""Times PyTorch in a process of its own, for settings read at ``import torch``.

``THP_MEM_ALLOC_ENABLE=1`` makes PyTorch's CPU allocator ask the kernel for
transparent huge pages, but only if it is set before torch is imported, so
the report runs this module as a subprocess with that variable set::

    THP_MEM_ALLOC_ENABLE=1 python -m numxent.bench._torch_worker < spec.json

The spec on stdin is ``{"threads", "repeat", "min_time", "budget", "order", "seed",
"workloads": [{"op", "n", "c", "dtype"}, ...], "peers": {peer_id: factory_id}}``;
the worker rebuilds each workload's data from the seed, times the peers with
the same protocol as the main process (``np.copyto`` included,
as a same-process check), prints one JSON object on stdout and progress lines
``PROGRESS <advance> <message>`` on stderr.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import numpy as np

    from ._peers import PEERS, PeerUnavailable, import_torch
    from ._timing import measure
    from ._workloads import Workload, make_data

    spec = json.load(sys.stdin)
    threads = int(spec["threads"])
    try:
        torch = import_torch()
    except PeerUnavailable as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    torch.set_num_threads(threads)
    try:  # keep numba's pool (used by nothing here) at the same size
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:
        pass

    def progress(message: str, advance: float) -> None:
        print(f"PROGRESS {advance} {message}", file=sys.stderr, flush=True)

    results = []
    for wd in spec["workloads"]:
        w = Workload(**wd)
        data = make_data(w, seed=int(spec.get("seed", 0)))
        fns, skipped = {}, {}
        for out_id, factory_id in [("copyto", "copyto"), *spec["peers"].items()]:
            peer = PEERS[factory_id]
            if w.op not in peer.ops:
                continue
            try:
                fns[out_id] = peer.factory(w, data, threads)
            except PeerUnavailable as exc:
                skipped[out_id] = str(exc)
        stats, errors = measure(
            fns,
            repeat=int(spec["repeat"]),
            min_time=float(spec["min_time"]),
            budget=float(spec["budget"]),
            order=spec.get("order", "block"),
            on_step=lambda m, a, g=w.group: progress(f"{g} THP {m}", a),
        )
        skipped.update(errors)
        results.append({**w.to_dict(), "times": stats, "skipped": skipped})
        del data, fns
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                "numpy": np.__version__,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
