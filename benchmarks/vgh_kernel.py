"""The compiled value-gradient-Hessian kernel with and without the identity-buffer pass.

For the dense ridge-logistic energy of ``wibergian.bench.user`` (``logistic_energy``, workload
``D``: ``X`` ``(B, 64, n)``, generated data, seed 0, float64, one thread) at each ``n``, the
``compile=True`` kernel ``value_gradient_hessian`` (``CompiledEnergy``, as ``argmin`` builds it)
is built with ``index_consts.ENABLED`` off (``off``: Inductor evaluates ``eye`` from indices in
the kernel) and on (``on``: what ships, ``eye`` stored as a buffer, ``index_consts.py``), and
the two are timed interleaved in one process (each round calls both once, in alternating
order). The eager baseline is the hand-written closed form
(``bench.user.logistic_value_gradient_hessian``). The two kernels' outputs are compared
(value, gradient, Hessian; the largest relative difference printed: 0 when bit-identical).

Printed: median milliseconds per call, the median and 10-90 % range of the per-round ratios
``on/off`` (``< 1``: the pass is faster) and ``on/eager``. ``--whole``: the same comparison for
one ``argmin`` forward + backward of ``bench.user.DenseUser(compile=True)`` (each built with
the pass off or on; compilation untimed). Not a test: speeds are measured here, never
asserted. glibc's allocator matters for the multi-MB buffers each call allocates; to compare
allocators run it twice:

    OMP_NUM_THREADS=1 python benchmarks/vgh_kernel.py [--ns 8,16,32] [--batch 1000] [--rounds 21]
        [--whole] [--clock wall|cpu]
    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 OMP_NUM_THREADS=1 \\
        python benchmarks/vgh_kernel.py
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from wibergian import compiled as comp
from wibergian import index_consts
from wibergian.bench.user import (
    DenseData,
    DenseUser,
    logistic_energy,
    logistic_value_gradient_hessian,
)


def build(enabled: bool, y: torch.Tensor, ps: list[torch.Tensor]) -> Callable[[], Any]:
    """The compiled ``value_gradient_hessian`` of a fresh ``CompiledEnergy`` built with the pass
    ``enabled`` or not (the flag is restored after the build: a kernel keeps its graph)."""
    old = index_consts.ENABLED
    index_consts.ENABLED = enabled
    try:
        ce = comp.CompiledEnergy(lambda yy, *pp: logistic_energy(yy, *pp))
        with torch.no_grad():
            ce.value_gradient_hessian(y, *ps)
        if ce.error is not None:
            raise RuntimeError(f"the kernel fell back to eager: {ce.error}")
        return lambda: ce.value_gradient_hessian(y, *ps)
    finally:
        index_consts.ENABLED = old


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


#: the clock (``--clock``): wall time, or this thread's CPU time (on a machine shared with
#: other work, CPU time leaves out the time-slices the thread waits)
CLOCK = time.perf_counter


def paired(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls``, ``rounds`` rounds, each calling every one once in
    a rotating order (after one untimed warm call each)."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for f in calls.values():
        f()
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            t = CLOCK()
            calls[k]()
            times[k].append(CLOCK() - t)
    return times


def ratio_range(on: list[float], off: list[float]) -> str:
    """Median and 10-90 % range of the per-round ratios ``on / off`` (paired)."""
    r = sorted(a / b for a, b in zip(on, off, strict=True))
    q = statistics.quantiles(r, n=10)
    return f"{statistics.median(r):.3f} [{q[0]:.3f}, {q[-1]:.3f}]"


def whole_call(n: int, batch: int, rounds: int) -> None:
    """One ``argmin`` forward + backward of ``DenseUser(compile=True)``, the pass off / on."""
    d = DenseData(batch, n)
    calls = {}
    for name, enabled in (("off", False), ("on", True)):
        m = DenseUser(d, compile=True)
        old = index_consts.ENABLED
        index_consts.ENABLED = enabled
        try:
            m.gradient()  # builds (compiles) the kernels with the pass as set
        finally:
            index_consts.ENABLED = old
        calls[name] = m.gradient
    times = paired(calls, rounds)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"{n:>4} {med['off']:>8.1f} {med['on']:>8.1f}  {ratio_range(times['on'], times['off'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="8,16,32", help="unknowns per problem (comma-separated)")
    ap.add_argument("--batch", type=int, default=1000, help="problems B")
    ap.add_argument("--rounds", type=int, default=21, help="timed rounds (median reported)")
    ap.add_argument("--whole", action="store_true",
                    help="time one argmin forward + backward (DenseUser, compile=True) instead")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or the thread's CPU time (for a machine shared with others)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
    torch.set_num_threads(1)
    env = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
           if k in os.environ}
    ns = [int(s) for s in args.ns.split(",")]
    print(f"D workload (generated, seed 0), B = {args.batch}, float64, 1 thread, "
          f"malloc: {env or 'glibc default'}, median of {args.rounds} paired rounds, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.2f}")
    if args.whole:
        print("argmin forward + backward, compile=True (ms); on/off: median [10-90 %] of the "
              "per-round ratios")
        print(f"{'n':>4} {'off':>8} {'on':>8}  on/off")
        for n in ns:
            whole_call(n, args.batch, args.rounds)
        return
    print("compiled value_gradient_hessian per call (ms); on/off: median [10-90 %] of the "
          "per-round ratios; rel diff: max|on - off| / max|off| over (E, g, H)")
    print(f"{'n':>4} {'off':>8} {'on':>8} {'eager':>8} {'on/eager':>9} {'rel diff':>9}  on/off")
    for n in ns:
        d = DenseData(args.batch, n)
        y = 0.3 * torch.randn(args.batch, n, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
        ps = [d.x, d.t, d.log_lam, d.mu]
        calls = {"off": build(False, y, ps), "on": build(True, y, ps),
                 "eager": functools.partial(logistic_value_gradient_hessian, y, *ps)}
        diff = max(rel(a, b) for a, b in zip(calls["on"](), calls["off"](), strict=True))
        with torch.no_grad():
            times = paired(calls, args.rounds)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(f"{n:>4} {med['off']:>8.2f} {med['on']:>8.2f} {med['eager']:>8.2f} "
              f"{med['on'] / med['eager']:>9.3f} {diff:>9.1e}  "
              f"{ratio_range(times['on'], times['off'])}")


if __name__ == "__main__":
    main()
