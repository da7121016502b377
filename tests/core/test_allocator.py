"""glibc's adaptive malloc thresholds, warmed by the first ``argmin`` call (``allocator.py``).

Each case runs in a fresh interpreter: the thresholds are process state. Whether a block is
served by ``mmap`` is read from glibc's chunk header (the ``IS_MMAPPED`` bit of the size word
just before the pointer)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wibergian import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="needs 64-bit Linux glibc")

PROBE = r"""
import ctypes
import torch
import wibergian
from wibergian import allocator

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def mmapped(nbytes):
    block = libc.malloc(nbytes)
    size = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value
    libc.free(block)
    return bool(size & 2)


first = mmapped(16 << 20)  # served by mmap; its free sets the thresholds to 16 / 32 MiB
y = wibergian.argmin(lambda y, a: ((y - a) ** 2).sum(-1), torch.zeros(3, 2, dtype=torch.float64),
                     (torch.ones(3, 2, dtype=torch.float64),), compile=False)
assert torch.allclose(y, torch.ones(3, 2, dtype=torch.float64))
print(first, mmapped(24 << 20), allocator.STATE["warmed"])
"""


def _run(**env: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_the_first_argmin_call_moves_glibc_to_its_ceiling():
    """After the call a 24 MiB block comes from the heap (mmap threshold 32 MiB); without the
    warm-up glibc's own rule (threshold 16 MiB after the first probe) serves it by mmap."""
    assert _run(WIBERGIAN_GLIBC_WARMUP="1") == ["True", "False", "True"]


def test_the_environment_variable_turns_it_off():
    assert _run(WIBERGIAN_GLIBC_WARMUP="0") == ["True", "True", "False"]


def test_warm_runs_once_and_reports_the_same_answer(monkeypatch):
    monkeypatch.setattr(allocator, "STATE", {"checked": False, "warmed": False})
    monkeypatch.setattr(allocator, "ENABLED", True)
    calls = []
    real = allocator._glibc

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(allocator, "_glibc", counting)
    assert allocator.warm() is True
    assert allocator.warm() is True
    assert len(calls) == 1


def test_disabled_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "STATE", {"checked": False, "warmed": False})
    monkeypatch.setattr(allocator, "ENABLED", False)
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("must not load libc"))
    assert allocator.warm() is False
    assert allocator.STATE == {"checked": True, "warmed": False}
