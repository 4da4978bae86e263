"""The benchmark report with its scenario sections, from a checkout.

``numxent-bench``'s kernel report (every option of it) plus the sections of
``benchmarks/scenarios`` chosen by their flags, written to the same files
(``report.md``, ``results.json``, ``readme_table.md``, ``plot.png``)::

    python benchmarks/report.py --quick --training --lm-head --out report/
    python benchmarks/report.py --ops none --dask --dask-loss-gib 0.25 --out dask/
    python benchmarks/report.py --help        # every section's options
    python benchmarks/report.py --write-docs  # the docs' tables from results/

``--ops none`` runs the sections alone (no kernel grid, no start-up).
``--write-docs [RESULTS_JSON]`` measures nothing: it rewrites the tables
between the ``numxent-bench`` markers of README.md, benchmarks/README.md and
docs/ from a results.json (``benchmarks/results/results.json`` by default;
see ``doc_tables.py``).
"""

import argparse
import os
import sys

import doc_tables
import scenarios

from numxent.bench import main as bench_main
from numxent.bench._cli import build_parser as bench_parser

PROG = "python benchmarks/report.py"


class Extra:
    """What this script adds to ``numxent-bench``: the sections and
    ``--write-docs``."""

    run = staticmethod(scenarios.run)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--write-docs", nargs="?", metavar="RESULTS_JSON",
            const=os.path.join(doc_tables.ROOT, doc_tables.RESULTS),
            help="rewrite the tables between the numxent-bench markers of "
            "README.md, benchmarks/README.md and docs/*.md from a results.json "
            f"(default {doc_tables.RESULTS}); runs nothing",
        )  # fmt: skip
        scenarios.add_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """This script's parser: ``numxent-bench``'s options and :class:`Extra`."""
    parser = bench_parser(PROG)
    Extra.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.write_docs:
        try:
            changed = doc_tables.write(args.write_docs)
        except (OSError, ValueError) as exc:
            parser.error(f"--write-docs: {exc}")
        print("rewrote " + (", ".join(changed) if changed else "nothing: up to date"))
        return 0
    return bench_main(argv, prog=PROG, extra=Extra)


if __name__ == "__main__":
    sys.exit(main())
