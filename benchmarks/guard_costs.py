"""What the guarantees of issue 13 cost, each against a baseline run in the same process.

    OMP_NUM_THREADS=1 python benchmarks/guard_costs.py [--repeats 5]

1. CG with negative curvature (the issue's case: n = 100, one eigenvalue -0.09, the others
   log-uniform in [0.025, 25], 40 right-hand sides, float64, λ = 0.1): Hessian-vector products
   and time of ``cg_solve`` against the same spectrum with +0.09 instead (no fallback).
2. The dense semi-definiteness certificate: ``dense_solve`` (Cholesky of H + λI and of H - τI)
   against the Cholesky of H + λI alone, B = 10,000 positive definite Hessians, n = 10.
3. The per-iterate finiteness checks of the default Newton solver: ``argmin`` forward+backward on
   a robust (Welsch) line fit, B = 2,000, against the same call with the checks patched out.

All data are generated (seeded); times are medians over ``--repeats`` runs on one thread.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

import wibergian
from wibergian.linsolve import cg_solve, cholesky, cholesky_apply, dense_solve
from wibergian.solvers import newton


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cg_case(repeats: int) -> None:
    n, b = 100, 40
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(0.025), math.log(25.0),
                                                                 generator=g))
    rhs = torch.randn(b, n, generator=g, dtype=torch.float64)
    out = {}
    for name, first in (("psd twin (+0.09)", 0.09), ("negative (-0.09)", -0.09)):
        ev[0] = first
        hmat = q @ torch.diag(ev) @ q.T
        calls = [0]

        def hvp(p: torch.Tensor, hmat: torch.Tensor = hmat, calls: list = calls) -> torch.Tensor:
            calls[0] += 1
            return p @ hmat

        x, stats = cg_solve(hvp, rhs, 0.1)
        products = calls[0]
        t = _median_time(lambda hvp=hvp: cg_solve(hvp, rhs, 0.1), repeats)
        ratio = float((x.norm(dim=-1) / rhs.norm(dim=-1) * 0.1).max())
        out[name] = t
        print(f"  {name:18s} batched HVPs {products:4d}  time {t * 1e3:7.1f} ms  fallbacks "
              f"{stats.fallbacks:2d}/{b}  max ||v||·λ/||g|| = {ratio:.3f}")
    print(f"  negative / psd time ratio: {out['negative (-0.09)'] / out['psd twin (+0.09)']:.2f}")


def dense_certificate(repeats: int) -> None:
    b, n, lam = 10_000, 10, 0.1
    g = torch.Generator().manual_seed(0)
    a = torch.randn(b, n, n, generator=g, dtype=torch.float64)
    h = a @ a.mT / n + 0.01 * torch.eye(n, dtype=torch.float64)
    rhs = torch.randn(b, n, generator=g, dtype=torch.float64)
    eye = lam * torch.eye(n, dtype=torch.float64)

    def plain() -> torch.Tensor:
        chol, _ = cholesky(h + eye)
        return cholesky_apply(chol, rhs)

    t_plain = _median_time(plain, repeats)
    t_cert = _median_time(lambda: dense_solve(h, rhs, lam), repeats)
    print(f"  Cholesky of H + λI only {t_plain * 1e3:7.1f} ms   dense_solve (with certificate) "
          f"{t_cert * 1e3:7.1f} ms   ratio {t_cert / t_plain:.2f}")


def newton_checks(repeats: int) -> None:
    b, m = 2000, 40
    g = torch.Generator().manual_seed(1)
    x = torch.linspace(-1, 1, m, dtype=torch.float64).expand(b, m).clone()
    t = 0.3 + 0.8 * x + 0.05 * torch.randn(b, m, generator=g, dtype=torch.float64)
    t[:, ::7] += 2.0
    log_sigma = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)

    def energy(y, x, t, log_sigma):
        r = t - y[:, :1] - y[:, 1:2] * x
        return -torch.exp(-(r * r) / torch.exp(2 * log_sigma)).sum(-1) + 1e-2 * (y * y).sum(-1)

    y0 = torch.tensor([[0.2, 0.7]], dtype=torch.float64).expand(b, 2).clone()

    def run() -> None:
        y = wibergian.argmin(energy, y0, (x, t, log_sigma), warn=False)
        y.sum().backward()

    t_on = _median_time(run, repeats)
    real = newton.rows_finite
    newton.rows_finite = lambda *ts: torch.ones(ts[0].shape[0], dtype=torch.bool)
    try:
        t_off = _median_time(run, repeats)
    finally:
        newton.rows_finite = real
    print(f"  checks patched out {t_off * 1e3:7.1f} ms   default {t_on * 1e3:7.1f} ms   "
          f"ratio {t_on / t_off:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("1. CG, the issue's case (float64)")
    cg_case(args.repeats)
    print("2. dense semi-definiteness certificate (B = 10,000, n = 10, float64)")
    dense_certificate(args.repeats)
    print("3. Newton's per-iterate finiteness checks (argmin forward + backward, B = 2,000)")
    newton_checks(args.repeats)


if __name__ == "__main__":
    main()
