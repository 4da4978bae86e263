"""Scenario studies: numxent in a training loop, an estimator, a cluster.

Sections of the benchmark report that ``benchmarks/report.py`` adds to
``numxent-bench``'s kernel report (the package ships the kernel report only)::

    python benchmarks/report.py --quick --training --lm-head --out report/
    python benchmarks/report.py --ops none --sklearn-fit --threads 1 --out fit/

Each module here defines one :class:`~scenarios._section.Section` as
``SECTION``; :data:`SECTIONS` lists them in the report's order. Adding a
section: a module with ``run``, ``markdown``, ``summary`` and its
``SECTION``, and one line in :data:`SECTIONS`. Adding a workload to a
section: its ``run`` (and its rows' ``markdown``). Importing this package
imports neither torch, scikit-learn nor dask: the sections import them when
they run.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable

from . import (
    bf16_loss,
    compiled_step,
    dask_scale,
    lm_head,
    sklearn_fit,
    small_training,
    training,
)
from ._section import Section

__all__ = ["SECTIONS", "Section", "add_arguments", "run"]

SECTIONS: list[Section] = [
    training.SECTION,
    sklearn_fit.SECTION,
    dask_scale.SECTION,
    small_training.SECTION,
    compiled_step.SECTION,
    bf16_loss.SECTION,
    lm_head.SECTION,
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Each section's flag and options."""
    for section in SECTIONS:
        section.add_arguments(parser)


def run(
    args: argparse.Namespace, threads: int, note: Callable[[str], None]
) -> dict[str, dict]:
    """Run the sections ``args`` asks for, in :data:`SECTIONS` order, on
    ``threads`` threads; ``{key: section}`` for the report (title,
    introduction, options, the result, its Markdown and summary lines). A
    section whose modules are missing or that fails is left out with a
    ``note``: it never stops the report."""
    from numxent.bench._cli import Progress

    chosen = [(s, s.options_from(args)) for s in SECTIONS if getattr(args, s.key)]
    total = sum(s.steps(opts) for s, opts in chosen)
    progress = Progress(total, enabled=bool(chosen) and not args.quiet)
    out: dict[str, dict] = {}
    for section, opts in chosen:
        missing = [m for m in section.requires if importlib.util.find_spec(m) is None]
        if missing:
            note(f"{section.title} skipped: {', '.join(missing)} not installed")
            continue
        try:
            result = section.run(
                opts, threads, lambda m, g=section.flag: progress.advance(1, g, m)
            )
        except Exception as exc:  # one section's failure is a note
            note(f"{section.title} failed: {type(exc).__name__}: {exc}")
            continue
        out[section.key] = {
            "title": section.title,
            "intro": section.intro,
            "options": opts,
            **result,
            "markdown": section.markdown(result),
            "summary": section.summary(result),
        }
    progress.close()
    return out
