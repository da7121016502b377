"""glibc's adaptive ``malloc`` thresholds, taken to their ceiling once per process.

A solve at ``B = 1000``, ``n = 32`` allocates and frees multi-megabyte temporaries many times
per call (Hessians ``(B, n, n)``: 8 MiB; a compiled kernel's ``X · w`` ``(B, M, n)``: 16 MiB).
glibc serves an allocation above its *mmap threshold* with a fresh ``mmap`` (page-faulted in
on first touch, unmapped on ``free``) and hands heap memory back to the OS whenever more than
its *trim threshold* is free at the top of the heap. Both start at 128 KiB and rise by
themselves: freeing an ``mmap``-ed chunk of ``S`` bytes (``S`` ≤ 32 MiB on 64-bit) sets them
to ``S`` and ``2S``. A process that has freed only 8-16 MiB buffers sits at 16 / 32 MiB, where
a call whose temporaries peak above 32 MiB trims the heap and page-faults it in again on every
call.

:func:`warm` allocates and frees one block just under 32 MiB, so glibc's own adaptive rule
moves the thresholds to their ceilings (32 / 64 MiB): the state any process reaches once it
frees a 32 MiB buffer, and the setting the benchmark calls "tuned". It stays within glibc's
adaptive mode (no ``mallopt``; the thresholds never fall), touches no pages, and is done once,
at the first ``argmin`` call on CPU tensors. Measured (``python benchmarks/glibc_warmup.py``,
fresh processes, paired): see docs/method.md "Allocator".

Nothing is done on other C libraries or platforms, on 32-bit builds, when the environment
variable ``WIBERGIAN_GLIBC_WARMUP=0`` is set, or when :data:`ENABLED` is ``False``; where the
user fixed the thresholds (``MALLOC_MMAP_THRESHOLD_``, ``mallopt``) glibc's adaptive mode is
off and the block changes nothing. :data:`STATE` records whether it ran.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: ``False``: never warm (also ``WIBERGIAN_GLIBC_WARMUP=0`` in the environment)
ENABLED = os.environ.get("WIBERGIAN_GLIBC_WARMUP", "1") != "0"
#: just under glibc's 64-bit ``DEFAULT_MMAP_THRESHOLD_MAX`` (32 MiB), header and page included
BLOCK_BYTES = 32 * 1024 * 1024 - 64 * 1024
#: ``checked``: :func:`warm` has decided; ``warmed``: it allocated and freed the block
STATE = {"checked": False, "warmed": False}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or sys.maxsize <= 2**32:
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version  # absent on musl and other C libraries
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def warm() -> bool:
    """Take glibc's adaptive thresholds to their ceiling (once per process); whether the block
    was allocated and freed, now or before."""
    if STATE["checked"]:
        return STATE["warmed"]
    STATE["checked"] = True
    if not ENABLED:
        return False
    libc = _glibc()
    if libc is None:
        return False
    block = libc.malloc(BLOCK_BYTES)
    if not block:
        return False
    libc.free(block)
    STATE["warmed"] = True
    return True
