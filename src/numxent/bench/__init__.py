"""numxent's benchmark report: ``python -m numxent.bench`` / ``numxent-bench``.

Times numxent's fused loss+gradient calls against ``np.copyto`` of the logits
(the memory roofline: the same bytes a fused pass moves), a straightforward
NumPy version, PyTorch eager (forward+backward and forward only, default and
with ``THP_MEM_ALLOC_ENABLE=1`` in a subprocess), ``torch.compile``,
scikit-learn's ``HalfMultinomialLoss.loss_gradient`` and JAX when installed,
all in one process, then writes ``report.md``, ``results.json``,
``readme_table.md`` and ``plot.png``. Start-up (``import numxent`` + first
call in a fresh process, warm and cold on-disk cache) is its own group.
Missing optional libraries are skipped with a note; tqdm (progress bar),
tabulate (aligned tables) and matplotlib (the plot) are optional too. The
scenario sections (training steps, estimator fits, ...) are a checkout's:
``python benchmarks/report.py``.

Typical commands::

    numxent-bench --quick --out /tmp/nxb          # under a minute
    numxent-bench --shapes large --dtypes float32,float64 --threads 2
    numxent-bench --readme-table /tmp/nxb/results.json   # README's table

Importing this package imports neither torch, scikit-learn, JAX nor matplotlib.
"""

from ._cli import main, run, write_report
from ._workloads import Workload, parse_shapes

__all__ = ["Workload", "main", "parse_shapes", "run", "write_report"]
