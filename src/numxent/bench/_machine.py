"""What the numbers were measured on: CPU, cores, memory, threading, versions."""

from __future__ import annotations

import datetime
import os
import platform
import sys

__all__ = ["child_env", "load_average", "machine_info", "versions"]

# import names, in the report's order, and distribution names that differ
_LIBRARIES = ("numxent", "numpy", "numba", "torch", "sklearn", "scipy", "jax",
              "matplotlib")  # fmt: skip
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}
_SIMD = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a benchmark child process, ``extra``
    variables set, and PYTHONPATH leading to the numxent this process
    imported (so the child runs the same code even when it is not
    installed)."""
    import numxent

    env = {**os.environ, **extra}
    src = os.path.dirname(os.path.dirname(os.path.abspath(numxent.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [src, env.get("PYTHONPATH")] if p)
    return env


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo() -> dict:
    """Model name, physical cores and SIMD flags from /proc/cpuinfo (Linux)."""
    cpus = []
    for block in _read("/proc/cpuinfo").split("\n\n"):
        pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
        if fields := {k.strip(): v.strip() for k, v in pairs}:
            cpus.append(fields)
    if not cpus:
        return {}
    flags = set(cpus[0].get("flags", "").split())
    cores = {(c.get("physical id"), c["core id"]) for c in cpus if "core id" in c}
    return {
        "model": cpus[0].get("model name"),
        "simd": [f for f in _SIMD if f in flags],
        "physical_cores": len(cores) or None,
    }


def _mem_total_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def _thp_mode() -> str | None:
    """The bracketed choice of the kernel's transparent-huge-page setting."""
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    chosen = [w.strip("[]") for w in text.split() if w.startswith("[")]
    return chosen[0] if chosen else text.strip() or None


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries (``None``: not installed).

    A library already imported reports its ``__version__``; the others are
    looked up in the installed metadata, without importing them.
    """
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        version = getattr(sys.modules.get(name), "__version__", None)
        if version is None:
            try:
                version = metadata.version(_DISTRIBUTIONS.get(name, name))
            except metadata.PackageNotFoundError:
                pass
        out[name] = version
    return out


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (other work skews the timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _threading_layer(nx) -> str | None:
    """numxent's threading layer; a parallel-sized call starts it if needed."""
    if nx.threading_layer() is None:
        import numpy as np

        x = np.zeros((1024, 128), dtype=np.float32)
        try:
            nx.cross_entropy(x, np.zeros(1024, dtype=np.int64), return_grad=True)
        except Exception:
            return None
    return nx.threading_layer()


def machine_info(threads: int, command: str) -> dict:
    """The machine, the settings that change the numbers, the date and command."""
    import numba

    import numxent as nx

    cpu = _cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu": cpu.get("model") or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "simd": cpu.get("simd"),
        "logical_cpus": os.cpu_count(),
        "physical_cores": cpu.get("physical_cores"),
        "usable_cpus": affinity,
        "memory_gib": _mem_total_gib(),
        "os": platform.platform(),
        "threads": threads,
        "numba_threading_layer": _threading_layer(nx),
        "numba_svml": getattr(numba.config, "USING_SVML", None),
        "transparent_hugepage": _thp_mode(),
        "load_average_end": load_average(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "versions": versions(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
    }
