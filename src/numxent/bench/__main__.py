"""Entry point of ``python -m numxent.bench`` and the ``numxent-bench`` script."""

from __future__ import annotations

import sys

from ._cli import main as _main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark report (see ``numxent-bench --help``); exit status."""
    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
