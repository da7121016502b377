"""What ``compile=True``'s guard on the energy's Python state costs (``trace_guard.py``).

    OMP_NUM_THREADS=1 python benchmarks/trace_guard_cost.py [--repeats 7] [--batch 1000]

1. ``trace_guard.describe`` (the fingerprint, computed once per ``argmin`` call), microseconds per
   call, on the benchmark's energies: ``logistic_energy`` (bench/user.py), ``w1_energy``
   (bench/w1.py), the callable object ``W1Energy``, and ``ArgminLayer``'s energy around a small
   ``nn.Module`` (two linear layers, a buffer).
2. One ``argmin(..., compile=True)`` forward+backward (kernels already compiled), with the guard
   (fingerprint + the value check of the first reused kernel's first row against eager) against
   the same call with ``CompiledEnergy.refresh`` patched to do nothing (the unguarded path), on
   the dense logistic workload (B = ``--batch``, n = 10) and W1 (multi-start over K = 72 wells).
   Calls alternate; CPU-time medians over ``--repeats``. The paired difference is below the
   timing noise of a shared machine, so the guard's share is also measured directly: the CPU
   time spent inside ``refresh`` and the value checks during guarded calls (an eager call on one
   row costs more there than alone, its data cold after the compiled kernels), and as the cost
   from 1 (one fingerprint plus the counted value checks) over the unguarded call's time.

All data are generated (seeded: ``DenseData(B, 10, seed=0)``, ``make_w1(B, seed=0)``); one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

import wibergian
from wibergian import compiled, retrace
from wibergian.bench.user import DenseData, logistic_energy
from wibergian.bench.w1 import W1Energy, make_w1, w1_energy
from wibergian.trace_guard import describe


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b = nn.Linear(16, 1)
        self.register_buffer("scale", torch.ones(4))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(y * self.scale))).squeeze(-1) + ((y - x) ** 2).sum(-1)


def _us_per_call(fn: Callable[[], object], loops: int = 2000, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - t) / loops * 1e6)
    return statistics.median(times)


def fingerprint_costs(repeats: int) -> dict[str, tuple[float, float]]:
    layer = wibergian.ArgminLayer(_Small())
    layer(torch.zeros(2, 4), torch.zeros(2, 4))  # builds its energy function
    layer_fn = next(iter(layer._energy_fns.values()))
    d, w = DenseData(4, 10, seed=0), make_w1(4, seed=0)
    row = {"logistic": (logistic_energy, torch.zeros(1, 10, dtype=torch.float64),
                        (d.x[:1], d.t[:1], d.log_lam, d.mu)),
           "w1": (w1_energy, w.g[:1], (w.a[:1], w.c[:1], w.m, w.s0, w.s1))}
    costs = {}
    print("1. microseconds per call (median): trace_guard.describe (the fingerprint); the value "
          "check (the eager energy on one row)")
    for name, energy, check in [("logistic_energy (bench/user.py)", logistic_energy, "logistic"),
                                ("w1_energy (bench/w1.py)", w1_energy, "w1"),
                                ("W1Energy() (callable object)", W1Energy(), None),
                                ("ArgminLayer's energy, small nn.Module", layer_fn, None)]:
        fp = _us_per_call(lambda e=energy: describe(e), repeats=repeats)
        line = f"   {name:40s} describe {fp:8.1f}"
        if check is not None:
            fn, y, ps = row[check]
            with torch.no_grad():
                vc = _us_per_call(lambda fn=fn, y=y, ps=ps: fn(y, *ps), repeats=repeats)
            line += f"   value check {vc:8.1f}"
            costs[check] = (fp * 1e-6, vc * 1e-6)
        print(line)
    return costs


def _step(energy: Callable[..., torch.Tensor], y0: torch.Tensor, params: tuple, **kw: object
          ) -> None:
    leaves = [p.detach().clone().requires_grad_(p.is_floating_point() and p.dim() <= 1)
              for p in params]
    y = wibergian.argmin(energy, y0, tuple(leaves), compile=True, warn=False, **kw)
    y.square().sum().backward()


def _guard_in_call(run: Callable[[], None], calls: int) -> tuple[float, float, float]:
    """(value checks per call, CPU seconds per call in ``refresh`` and in the value checks),
    measured inside guarded calls (kernels already built)."""
    spent = {"refresh": 0.0, "check": 0.0, "checks": 0}
    refresh, check = retrace.Retracing.refresh, retrace.Retracing._checked_reuse

    def timed_refresh(self):  # type: ignore[no-untyped-def]
        t = time.thread_time()
        refresh(self)
        spent["refresh"] += time.thread_time() - t

    def timed_check(self, key, *args):  # type: ignore[no-untyped-def]
        armed = self._group.get(key, -1) in self._unchecked
        spent["checks"] += armed and key[0] in retrace._CHECKED
        t = time.thread_time()
        out = check(self, key, *args)
        spent["check"] += time.thread_time() - t
        return out

    retrace.Retracing.refresh = timed_refresh  # type: ignore[method-assign]
    retrace.Retracing._checked_reuse = timed_check  # type: ignore[method-assign]
    try:
        for _ in range(calls):
            run()
    finally:
        retrace.Retracing.refresh = refresh  # type: ignore[method-assign]
        retrace.Retracing._checked_reuse = check  # type: ignore[method-assign]
    return spent["checks"] / calls, spent["refresh"] / calls, spent["check"] / calls


def call_costs(batch: int, repeats: int, costs: dict[str, tuple[float, float]]) -> None:
    d = DenseData(batch, 10, seed=0)
    w = make_w1(batch, seed=0)
    cands = torch.stack([w.a, w.c], -1)
    work = {
        f"dense logistic, B = {batch}, n = 10": ("logistic", lambda: _step(
            logistic_energy, torch.zeros(batch, 10, dtype=torch.float64),
            (d.x, d.t, d.log_lam, d.mu))),
        f"W1, B = {batch}, K = 72 candidates": ("w1", lambda: _step(
            w1_energy, cands[:, 0], (w.a, w.c, w.m, w.s0, w.s1), candidates=cands)),
    }
    real = retrace.Retracing.refresh
    print(f"2. argmin(compile=True) forward+backward, CPU seconds (median of {repeats}): guarded "
          "against unguarded")
    for name, (check, run) in work.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()  # compile
        checks, in_refresh, in_checks = _guard_in_call(run, repeats)
        before = compiled.RETRACES["count"]
        guarded, bare = [], []
        for _ in range(repeats):
            for patched, into in ((False, guarded), (True, bare)):
                if patched:
                    retrace.Retracing.refresh = lambda self: None  # type: ignore[method-assign]
                t = time.process_time()  # CPU seconds: less disturbed by other processes
                run()
                into.append(time.process_time() - t)
                retrace.Retracing.refresh = real  # type: ignore[method-assign]
        g, b = statistics.median(guarded), statistics.median(bare)
        diffs = [x - y for x, y in zip(guarded, bare, strict=True)]
        mean = statistics.mean(diffs)
        half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
        print(f"   {name:38s} {g:.4f} vs {b:.4f}: ratio {g / b:.3f}, paired difference mean "
              f"{mean * 1e3:+.2f} ms (95 % CI ±{half * 1e3:.2f}); re-traces "
              f"{compiled.RETRACES['count'] - before}")
        print(f"   {'':38s} inside the calls: refresh {in_refresh * 1e6:.0f} µs, {checks:.1f} "
              f"value checks {in_checks * 1e6:.0f} µs (CPU per call) = "
              f"{(in_refresh + in_checks) / b:.2%} of the unguarded call; from 1: "
              f"{(costs[check][0] + checks * costs[check][1]) / b:.2%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    costs = fingerprint_costs(args.repeats)
    call_costs(args.batch, args.repeats, costs)


if __name__ == "__main__":
    main()
