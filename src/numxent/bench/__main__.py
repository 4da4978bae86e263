"""Entry point of ``python -m numxent.bench`` and the ``numxent-bench`` script."""

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
