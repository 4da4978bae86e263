"""What the report sections that run in a child process share: the child's
launch and the section's own command line (``python -m numxent.bench.<name>``).

Each such module has ``DEFAULTS`` (its options), ``QUICK`` (the ``--quick``
overrides), ``child(cfg) -> {"rows": [...]}`` (run in the child, on the
threads the config names), ``run_<name>(**opts)`` and ``markdown(rows)``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable


def thread_count(value) -> int:
    """The ``threads`` option: a count, or ``"all"`` for every CPU."""
    return (os.cpu_count() or 1) if str(value) == "all" else int(value)


def shape_tuples(cfg: dict) -> dict:
    """A child config with its ``shapes`` as tuples again (JSON made them
    lists)."""
    return {**cfg, "shapes": [tuple(s) for s in cfg["shapes"]]}


def run_child(module: str, cfg: dict, label: str) -> list[dict]:
    """Run ``python -m numxent.bench.<module> --child <cfg>`` (a fresh process
    with the report's child environment) and return its rows; a failed child
    raises with the last lines of its stderr."""
    from ._machine import child_env

    proc = subprocess.run(
        [sys.executable, "-m", f"numxent.bench.{module}", "--child",
         json.dumps(cfg)],
        capture_output=True, text=True, env=child_env(),
    )  # fmt: skip
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(
            f"{label} child exited {proc.returncode}: {' | '.join(tail)}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])["rows"]


def section_main(
    argv,
    *,
    doc: str,
    defaults: dict,
    helps: dict,
    quick: dict,
    quick_help: str,
    run: Callable[..., list[dict]],
    child: Callable[[dict], dict],
    markdown: Callable[[list[dict]], str],
    child_cfg: Callable[[dict], dict] = lambda cfg: cfg,
    status: Callable[[list[dict]], int] = lambda rows: 0,
) -> int:
    """A section's command line: its options (``--json`` to keep the rows,
    ``--quick``), the Markdown table printed; the exit code from ``status``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    for key, default in defaults.items():
        p.add_argument(
            "--" + key.replace("_", "-"),
            type=type(default),
            help=f"{helps.get(key, key.replace('_', ' '))} (default {default})",
        )
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--quick", action="store_true", help=quick_help)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(child_cfg(json.loads(a.child)))))
        return 0
    opts = {k: v for k, v in vars(a).items() if k in defaults and v is not None}
    if a.quick:
        opts = {**quick, **opts}
    rows = run(**opts)
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return status(rows)
