"""Paired, interleaved timing rounds shared by the benchmark scripts (run them from the repo
root: ``python benchmarks/<script>.py``, which puts this directory on the path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_rounds(calls: dict[str, Callable[[], object]], rounds: int, base: str, other: str
                  ) -> tuple[dict[str, list[float]], float, float, float]:
    """Seconds of each of the two ``calls`` over ``rounds`` rounds, the order alternating, and
    the median of the paired ratios ``other / base`` with its 10 % and 90 % quantiles."""
    ts: dict[str, list[float]] = {base: [], other: []}
    for r in range(rounds):
        for key in ((base, other) if r % 2 == 0 else (other, base)):
            t0 = time.perf_counter()
            calls[key]()
            ts[key].append(time.perf_counter() - t0)
    return (ts, *ratio_summary(ts[other], ts[base]))


def ratio_summary(other: list[float], base: list[float]) -> tuple[float, float, float]:
    """The median of the paired ratios ``other / base`` with their 10 % and 90 % quantiles."""
    ratios = sorted(a / b for a, b in zip(other, base, strict=True))
    lo, hi = ratios[int(0.1 * (len(ratios) - 1))], ratios[round(0.9 * (len(ratios) - 1))]
    return statistics.median(ratios), lo, hi
