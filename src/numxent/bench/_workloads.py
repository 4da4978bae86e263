"""Workloads: which operation, which shape, which dtype, and their input data.

A workload is one benchmark group, named ``f"{op}|{n}x{c}|{dtype}"`` in the
JSON results, the report and the pytest-benchmark suite alike. Its inputs are
made from a fixed seed, so the THP worker process rebuilds the very same
arrays.

This module needs NumPy only (no Numba, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NAMED_SHAPES", "OPS", "Workload", "make_data", "parse_shapes"]

#: What each op computes; every op's ratios are to ``np.copyto`` of its logits.
OPS = {
    "ce": "cross_entropy, int64 hard labels, mean, loss and gradient",
    "ce_fwd": "cross_entropy, int64 hard labels, mean, loss only (forward)",
    "bce": "binary_cross_entropy_with_logits, {0,1} targets, mean, loss and gradient",
    "bce_fwd": "binary_cross_entropy_with_logits, {0,1} targets, mean, loss only",
}

_LARGE = [(1_000_000, 10), (262_144, 100), (65_536, 1_000), (8_192, 32_000)]
_SMALL = [(64, 10), (256, 1_000)]
#: The built-in shape lists ``--shapes`` accepts by name. "large": arrays far
#: bigger than the caches, 10 to 32,000 classes (float32 8192x32000 is 1 GB);
#: "small": calls where the per-call overhead (validation included) dominates;
#: "quick": a few MB per array, enough to leave the caches, and one small call.
NAMED_SHAPES = {
    "large": _LARGE,
    "small": _SMALL,
    "default": _LARGE + _SMALL,
    "quick": [(16_384, 100), (2_048, 1_000), (64, 10)],
}


@dataclass(frozen=True, order=True)
class Workload:
    op: str
    n: int
    c: int
    dtype: str

    @property
    def group(self) -> str:
        """The benchmark group name, ``op|NxC|dtype``.

        >>> Workload("ce", 1000, 10, "float32").group
        'ce|1000x10|float32'
        """
        return f"{self.op}|{self.n}x{self.c}|{self.dtype}"

    @property
    def elements(self) -> int:
        return self.n * self.c

    @property
    def copy_bytes(self) -> int:
        """Bytes ``np.copyto`` of the logits moves: read once, write once."""
        return 2 * self.elements * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return {"op": self.op, "n": self.n, "c": self.c, "dtype": self.dtype}


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """Parse ``"1000000x10,262144x100"`` into ``[(1000000, 10), (262144, 100)]``.

    The names of :data:`NAMED_SHAPES` stand for their lists; ``_`` may group
    digits; a shape given twice is kept once.

    >>> parse_shapes("1_000x10, 64X3")
    [(1000, 10), (64, 3)]
    >>> parse_shapes("large")[-1]
    (8192, 32000)
    """
    shapes: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in NAMED_SHAPES:
            shapes.extend(s for s in NAMED_SHAPES[part] if s not in shapes)
            continue
        try:
            n, c = (int(v.replace("_", "")) for v in part.split("x"))
        except ValueError:
            raise ValueError(
                f"shape {part!r} is not NxC (for example 262144x100) or one of "
                + ", ".join(NAMED_SHAPES)
            ) from None
        if n < 1 or c < 1:
            raise ValueError(f"shape {part!r}: N and C must be at least 1")
        if (n, c) not in shapes:
            shapes.append((n, c))
    if not shapes:
        raise ValueError(f"no shapes in {text!r}")
    return shapes


def make_data(w: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """The workload's inputs: ``x`` logits (N, C) and ``y`` its target.

    ``y`` is int64 labels of shape (N,) for the ``ce`` ops and a {0, 1} array of
    the logits' shape and dtype for the ``bce`` ops. Same seed, same arrays.
    """
    rng = np.random.default_rng([seed, w.n, w.c])
    dtype = np.dtype(w.dtype)
    x = rng.standard_normal((w.n, w.c), dtype=dtype)
    x *= 3  # logits of a model part-way through training: a spread of exps
    if w.op.startswith("ce"):
        y = rng.integers(0, w.c, size=w.n, dtype=np.int64)
    else:
        y = (rng.random((w.n, w.c), dtype=np.float32) < 0.5).astype(dtype)
    return {"x": x, "y": y}
