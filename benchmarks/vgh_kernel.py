"""The compiled value-gradient-Hessian kernel with and without the identity-buffer pass.

For the dense ridge-logistic energy of ``wibergian.bench.user`` (``logistic_energy``, workload
``D``: ``X`` ``(B, 64, n)``, generated data, seed 0, float64, one thread) at each ``n``, the
``compile=True`` kernel ``value_gradient_hessian`` (``CompiledEnergy``, as ``argmin`` builds it)
is built with ``index_consts.ENABLED`` off (``off``: Inductor evaluates ``eye`` from indices in
the kernel) and on (``on``: what ships, ``eye`` stored as a buffer, ``index_consts.py``), and
the two are timed interleaved in one process (each round calls both once, in alternating
order). The eager baseline is the hand-written closed form
(``bench.user.logistic_value_gradient_hessian``). Each variant's outputs are checked equal to
the other's (value, gradient, Hessian; relative max difference printed).

Printed: median milliseconds per call, ``on/off`` (``< 1``: the pass is faster) and
``on/eager``. Not a test: speeds are measured here, never asserted. glibc's allocator matters
for the multi-MB buffers each call allocates; to compare allocators run it twice:

    OMP_NUM_THREADS=1 python benchmarks/vgh_kernel.py [--ns 8,16,32] [--batch 1000] [--rounds 21]
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
from wibergian.bench.user import DenseData, logistic_energy, logistic_value_gradient_hessian


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="8,16,32", help="unknowns per problem (comma-separated)")
    ap.add_argument("--batch", type=int, default=1000, help="problems B")
    ap.add_argument("--rounds", type=int, default=21, help="timed rounds (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    env = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
           if k in os.environ}
    print(f"vgh kernel, D workload (generated, seed 0), B = {args.batch}, float64, 1 thread, "
          f"malloc: {env or 'glibc default'}")
    print(f"{'n':>4} {'off ms':>8} {'on ms':>8} {'eager ms':>9} {'on/off':>7} {'on/eager':>9} "
          f"{'max rel diff':>12}")
    for n in (int(s) for s in args.ns.split(",")):
        d = DenseData(args.batch, n)
        y = 0.3 * torch.randn(args.batch, n, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
        ps = [d.x, d.t, d.log_lam, d.mu]
        calls = {"off": build(False, y, ps), "on": build(True, y, ps),
                 "eager": functools.partial(logistic_value_gradient_hessian, y, *ps)}
        diff = max(rel(a, b) for a, b in zip(calls["on"](), calls["off"](), strict=True))
        times: dict[str, list[float]] = {k: [] for k in calls}
        order = list(calls)
        with torch.no_grad():
            for f in calls.values():  # warm
                f()
            for r in range(args.rounds):
                for k in (order if r % 2 == 0 else order[::-1]):
                    t = time.perf_counter()
                    calls[k]()
                    times[k].append(time.perf_counter() - t)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(f"{n:>4} {med['off']:>8.2f} {med['on']:>8.2f} {med['eager']:>9.2f} "
              f"{med['on'] / med['off']:>7.3f} {med['on'] / med['eager']:>9.3f} {diff:>12.1e}")


if __name__ == "__main__":
    main()
