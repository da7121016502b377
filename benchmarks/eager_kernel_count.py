"""Why the eager default cannot match a jit-compiled library: kernels per derivative evaluation.

    OMP_NUM_THREADS=1 python benchmarks/eager_kernel_count.py

For the issue-14 user energies (**generated** data, seed 0: the dense ridge-logistic ``D`` at
n = 2, 8, 32 and W1, B = 1,000), counts the ATen kernels one eager
``derivatives.value_gradient_hessian`` launches (views, reshapes and allocations not counted)
and times it against one eager evaluation of the energy alone (median of 10 calls each). Each
kernel is a separate pass over memory; a jit compiler (XLA, or ``compile=True``'s Inductor)
fuses the same arithmetic into a few loops, so the eager Newton iteration costs a multiple of
the compiled one however the derivatives are arranged.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import profile

from wibergian.bench.user import DenseData, logistic_energy
from wibergian.bench.w1 import make_w1
from wibergian.bench.workloads import w1_energy
from wibergian.derivatives import value_gradient_hessian

NOT_KERNELS = {
    "aten::view", "aten::as_strided", "aten::select", "aten::slice", "aten::unsqueeze",
    "aten::squeeze", "aten::expand", "aten::transpose", "aten::t", "aten::permute",
    "aten::detach", "aten::alias", "aten::_unsafe_view", "aten::reshape", "aten::empty",
    "aten::empty_like", "aten::empty_strided", "aten::lift_fresh", "aten::resolve_conj",
    "aten::resolve_neg", "aten::result_type", "aten::is_nonzero", "aten::item",
    "aten::_local_scalar_dense", "aten::squeeze_", "aten::unsqueeze_", "aten::requires_grad_",
    "aten::set_", "aten::to", "aten::_to_copy", "aten::contiguous",
}


def _kernels(fn: Callable[[], object]) -> int:
    """Top-level ATen ops that compute (an op called from another ATen op is not counted)."""
    fn()
    with profile() as prof:
        fn()
    return sum(1 for e in prof.events()
               if e.name.startswith("aten::") and e.name not in NOT_KERNELS
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def _median_s(fn: Callable[[], object], reps: int = 10) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    cases = []
    for n in (2, 8, 32):
        d = DenseData(1000, n)
        y = 0.1 * torch.randn(1000, n, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
        cases.append((f"D, n = {n}", logistic_energy, y, (d.x, d.t, d.log_lam, d.mu)))
    w = make_w1(1000)
    cases.append(("W1", w1_energy, torch.stack([w.a[:, 0], w.c[:, 0]], -1),
                  (w.a, w.c, w.m, w.s0, w.s1)))
    print("| energy (B = 1,000) | kernels per eager value-gradient-Hessian | its time | "
          "the energy alone: kernels, time | ratio of times |")
    print("|---|---|---|---|---|")
    for name, energy, y, ps in cases:
        def vgh(energy=energy, y=y, ps=ps) -> object:
            return value_gradient_hessian(energy, y, ps)

        def value(energy=energy, y=y, ps=ps) -> object:
            with torch.no_grad():
                return energy(y, *ps)

        kv, tv = _kernels(vgh), _median_s(vgh)
        ke, te = _kernels(value), _median_s(value)
        print(f"| {name} | {kv} | {tv * 1e3:.2f} ms | {ke}, {te * 1e3:.2f} ms | "
              f"{tv / te:.1f} |")


if __name__ == "__main__":
    main()
