"""Where should ``solver="auto"`` switch from the dense trust-region Newton to Newton-CG?

Times ``wibergian.argmin`` (forward only, ``torch.no_grad``, every other argument default) with
``solver="newton"`` and ``solver="newton_cg"`` on three generated (seeded) energies whose
derivatives come from autograd, at growing ``n``, in one process, and prints the ratio
``newton_cg / newton`` (below 1: Newton-CG is faster) and the peak size of the dense Hessians.

- ``smoother``: 1-D Lorentzian (robust) smoother, ``½||y - z||² + α Σ log(1 + (Δy)²/s²)``
  (non-convex, tridiagonal Hessian);
- ``logsumexp``: ``logsumexp(W y + c) + ½·0.1·||y||²`` with ``W`` ``(2n, n)`` (convex, dense
  Hessian);
- ``wells``: ``Σ (y² - a)²/4 + ½ yᵀ C y`` with a dense PSD ``C`` (non-convex, dense Hessian).

    python benchmarks/solver_auto_threshold.py [--sizes 16 32 64 128 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import time

import torch

import wibergian

DT = torch.float64


def smoother(y, z, log_alpha, log_s):
    d = y[:, 1:] - y[:, :-1]
    return 0.5 * ((y - z) ** 2).sum(-1) + log_alpha.exp() * torch.log1p(
        d * d / log_s.exp() ** 2).sum(-1)


def logsumexp(y, w, c):
    return torch.logsumexp(y @ w.T + c, -1) + 0.05 * (y * y).sum(-1)


def wells(y, a, c):
    return (((y * y - a) ** 2) / 4).sum(-1) + 0.5 * ((y @ c) * y).sum(-1)


def problem(name: str, n: int, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if name == "smoother":
        jumps = (torch.rand(b, n, generator=g) < 4 / n).to(DT) * torch.randn(b, n, generator=g,
                                                                               dtype=DT)
        z = jumps.cumsum(-1) + 0.1 * torch.randn(b, n, generator=g, dtype=DT)
        return smoother, z, (z, torch.tensor(-1.0, dtype=DT), torch.tensor(-2.0, dtype=DT))
    if name == "logsumexp":
        w = torch.randn(2 * n, n, generator=g, dtype=DT) / n**0.5
        c = torch.randn(b, 2 * n, generator=g, dtype=DT)
        return logsumexp, torch.zeros(b, n, dtype=DT), (w, c)
    m = torch.randn(n, n, generator=g, dtype=DT) / n
    a = 0.5 + torch.rand(n, generator=g, dtype=DT)
    return wells, 0.3 * torch.randn(b, n, generator=g, dtype=DT), (a, m @ m.T)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"B = {args.batch}, float64, best of {args.repeats}, {args.threads} thread(s); "
          "generated data (seed 0)")
    print(f"{'energy':<10} {'n':>5} {'newton s':>9} {'newton_cg s':>11} {'ratio':>6} "
          f"{'H MB':>7}  converged (newton / newton_cg)")
    for name in ("smoother", "logsumexp", "wells"):
        for n in args.sizes:
            energy, y0, params = problem(name, n, args.batch)
            out = {}
            for solver in ("newton", "newton_cg"):
                info = {}

                def run(solver=solver, info=info, energy=energy, y0=y0, params=params):
                    with torch.no_grad():
                        _, info["i"] = wibergian.argmin(energy, y0, params, solver=solver,
                                                        return_info=True, warn=False)

                out[solver] = (best_time(run, args.repeats), info["i"])
            (td, idn), (tc, icg) = out["newton"], out["newton_cg"]
            mb = args.batch * n * n * 8 / 2**20
            print(f"{name:<10} {n:>5} {td:>9.3f} {tc:>11.3f} {tc / td:>6.2f} {mb:>7.1f}  "
                  f"{int(idn.converged.sum())}/{args.batch} / {int(icg.converged.sum())}/"
                  f"{args.batch}", flush=True)


if __name__ == "__main__":
    main()
