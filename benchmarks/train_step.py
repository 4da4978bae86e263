"""CPU training step, PyTorch's cross-entropy vs numxent.torch's drop-in.

The benchmark lives in :mod:`numxent.bench.training` (also run by
``numxent-bench --training``); this script is its command line::

    python benchmarks/train_step.py            # the report's sizes
    python benchmarks/train_step.py --quick    # batch and tokens 1,024
"""

import sys

from numxent.bench.training import main

if __name__ == "__main__":
    sys.exit(main())
