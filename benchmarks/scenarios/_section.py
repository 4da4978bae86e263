"""The interface every scenario section has, and the child process some use.

A section is a :class:`Section`: its flag (``--training``), the report's
title and introduction, its options (each ``--<flag>-<name>`` on the command
line, with ``--quick`` overrides), the modules it needs, and three functions:

``run(opts, threads, on_step) -> dict``
    the measurement, ``{"rows": [...]}`` at least; ``opts`` is every option
    (defaults, ``--quick``'s, then the command line's), ``threads`` the
    report's ``--threads``, ``on_step(message)`` called after each of
    ``steps(opts)`` steps (the progress bar);
``markdown(result) -> str``
    the report's section under its title and introduction;
``summary(result) -> list[str]``
    the lines the terminal prints.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: the folder that holds ``scenarios``: a child process imports it from there
_BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: run "children" in this process: the tests' toy sizes, without an
#: interpreter and torch start-up per child
IN_PROCESS = False


@dataclass(frozen=True)
class Section:
    key: str  # results.json's key, e.g. "small_training"
    flag: str  # the command-line flag without "--", e.g. "small-training"
    help: str
    title: str
    intro: str
    run: Callable[[dict, int, Callable[[str], None]], dict]
    markdown: Callable[[dict], str]
    summary: Callable[[dict], list[str]]
    #: option name -> (default, help); the option's type is its default's
    options: dict[str, tuple[Any, str]] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    #: modules the section imports: it is skipped with a note without them
    requires: tuple[str, ...] = ()
    steps: Callable[[dict], int] = lambda opts: 1

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(f"--{self.flag}")
        group.add_argument(f"--{self.flag}", action="store_true", dest=self.key,
                           help=f"also run this section: {self.help}")  # fmt: skip
        for name, (default, text) in self.options.items():
            quick = f"; --quick {self.quick[name]}" if name in self.quick else ""
            group.add_argument(
                f"--{self.flag}-{name.replace('_', '-')}",
                dest=f"{self.key}__{name}",
                type=type(default),
                metavar=type(default).__name__.upper(),
                help=f"{text} (default {default}{quick})",
            )

    def options_from(self, args: argparse.Namespace) -> dict[str, Any]:
        """Every option's value: given, else ``--quick``'s, else the default."""
        opts = {name: default for name, (default, _) in self.options.items()}
        if args.quick:
            opts.update(self.quick)
        for name in self.options:
            value = getattr(args, f"{self.key}__{name}", None)
            if value is not None:
                opts[name] = value
        return opts


def ints(text: str) -> list[int]:
    """``"32,64"`` -> ``[32, 64]``; ``"all"`` stands for the CPU count."""
    return [
        (os.cpu_count() or 1) if p.strip() == "all" else int(p)
        for p in str(text).split(",")
        if p.strip()
    ]


def run_child(module: str, cfg: dict, function: str = "child") -> dict:
    """``scenarios.<module>.<function>(cfg)`` in a fresh process (the report's
    child environment: the same numxent) and its JSON result; a failed child
    raises with the last lines of its stderr."""
    from numxent.bench._machine import child_env

    if IN_PROCESS:  # through JSON all the same: what a child could return
        fn = getattr(importlib.import_module(f"scenarios.{module}"), function)
        return json.loads(json.dumps(fn(json.loads(json.dumps(cfg)))))
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([_BENCHMARKS, env["PYTHONPATH"]])
    code = (
        "import json, sys\n"
        f"from scenarios.{module} import {function}\n"
        f"print(json.dumps({function}(json.loads(sys.argv[1]))))"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(
            f"{module} child exited {proc.returncode}: {' | '.join(tail)}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])
