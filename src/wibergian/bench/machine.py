"""The machine a benchmark ran on, its load, and peak-memory measurement.

Peak memory: Linux keeps the process's resident-set high-water mark (``VmHWM`` in
``/proc/self/status``); writing ``5`` to ``/proc/self/clear_refs`` resets it to the current
resident size. A measurement is therefore ``VmHWM`` after the call minus ``VmRSS`` before it,
taken around each forward and each backward. This sees every allocator (PyTorch's CPU
allocator, XLA's buffers, numpy) at page granularity, not only Python objects (which is all
``tracemalloc`` sees). To make freed tensors leave the resident set, glibc is told to serve
every allocation above 64 KiB by ``mmap`` (``mallopt(M_MMAP_THRESHOLD)``), so that memory a
previous call freed is not silently reused below the baseline, and ``malloc_trim(0)`` runs
before each measurement so that heap pages freed earlier are handed back too. That setting
costs eager, allocation-heavy code about 2x (every large temporary becomes an mmap and page
faults), so the timed rounds run with a fixed 32 MiB threshold and a 64 MiB trim threshold (the
ceilings glibc's adaptive thresholds reach by themselves, so timings match the default
behaviour) and memory is measured in a separate untimed step. Where ``clear_refs`` is not
writable the figures are reported as unavailable (``None``), never guessed.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
SMALL_THRESHOLD = 64 * 1024
TIMING_THRESHOLD = 32 * 1024 * 1024


def set_malloc_threshold(nbytes: int = SMALL_THRESHOLD) -> bool:
    """Ask glibc to ``mmap`` every allocation above ``nbytes`` (fixed, not adaptive), and to
    trim the heap only when more than ``2·nbytes`` is free at its top.

    The trim threshold is what glibc's adaptive mode sets beside the mmap threshold; fixing only
    the mmap threshold leaves trimming at 128 KiB, and then every freed multi-megabyte heap
    buffer is handed back and page-faulted in again (W3's L-BFGS at 512x512 measured 1.5-4.3 s
    per solve that way, against a steady 1.3 s with the matching trim threshold).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
        return ok and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * nbytes))
    except OSError:
        return False


def trim() -> bool:
    """Return freed heap pages to the OS (``malloc_trim(0)``), so that a later reuse of them
    shows in the resident set again."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def rss_mib() -> float | None:
    """Current resident set size in MiB."""
    v = _status_kib("VmRSS")
    return None if v is None else v / 1024.0


def reset_peak() -> bool:
    """Reset the resident high-water mark to the current RSS; ``False`` if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float | None:
    """Resident high-water mark since the last :func:`reset_peak`, MiB."""
    v = _status_kib("VmHWM")
    return None if v is None else v / 1024.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> tuple[float, float, float]:
    """1, 5 and 15-minute load averages."""
    return os.getloadavg()


def describe(threads: int) -> dict[str, Any]:
    """Cores, CPU model, memory, library versions and thread settings."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": threads,
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["memory_gib"] = None
    from importlib import metadata

    for mod, dist in (("jax", "jax"), ("jaxlib", "jaxlib"), ("jaxopt", "jaxopt"),
                      ("optimistix", "optimistix"), ("torchopt", "torchopt"),
                      ("theseus", "theseus-ai")):
        if mod in sys.modules:
            try:
                info[mod] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                info[mod] = getattr(sys.modules[mod], "__version__", "?")
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info
