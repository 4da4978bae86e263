"""The benchmark report with its scenario sections, from a checkout.

``numxent-bench``'s kernel report (every option of it) plus the sections of
``benchmarks/scenarios`` chosen by their flags, written to the same files
(``report.md``, ``results.json``, ``readme_table.md``, ``plot.png``)::

    python benchmarks/report.py --quick --training --lm-head --out report/
    python benchmarks/report.py --ops none --dask --dask-loss-gib 0.25 --out dask/
    python benchmarks/report.py --help        # every section's options

``--ops none`` runs the sections alone (no kernel grid, no start-up).
"""

import sys

import scenarios

from numxent.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/report.py", extra=scenarios))
