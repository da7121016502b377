"""How often the CG back end needs the last-resort cap on random saddles (issue 13).

    OMP_NUM_THREADS=1 python benchmarks/cg_saddle_stress.py [--seed 1] [--cases 1500]

Generated data (seeded): per case a dtype (float64/float32), λ ∈ {0.1, 1e-3, 2}, n ∈ [2, 40],
a spectrum log-uniform over 1e-3…1e8 (float64) or 1e-3…1e3 (float32) mixed with exact 1, 0 and
1e-3, up to two eigenvalues in (-3·max(λ, 0.1), 0), and in half the cases ȳ and ∂∇E/∂w aligned
with the most negative direction. Each case runs the backward (``vjp``, CG, ridge) on a
quadratic energy and prints: cases where λ is well above the dtype's resolution of H's spectrum
(``λ ≥ 1e3·eps·||H||``), how many of those the cap ``||u|| ≤ ||ȳ||/λ`` had to shrink (the
detection and shifted re-solve should do the work), and bound violations (any case).
"""

from __future__ import annotations

import argparse
import random

import torch

from wibergian.adjoint import AdjointSpec, vjp


def _case(rng: random.Random):
    dtype = rng.choice([torch.float64, torch.float32])
    lam = rng.choice([0.1, 1e-3, 2.0])
    n = rng.randint(2, 40)
    top = 8.0 if dtype == torch.float64 else 3.0
    ev = torch.tensor([10.0 ** rng.uniform(-3, top) if rng.random() > 0.3
                       else rng.choice([1.0, 0.0, 1e-3]) for _ in range(n)], dtype=torch.float64)
    for i in range(rng.randint(0, min(2, n - 1))):
        ev[i] = -max(lam, 0.1) * rng.choice([rng.uniform(1e-6, 0.5), rng.uniform(0.5, 0.999),
                                             rng.uniform(1.0, 3.0)])
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    hmat = q @ torch.diag(ev) @ q.T
    hmat = (0.5 * (hmat + hmat.T)).to(dtype)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64)
    gbar = torch.randn(1, n, generator=g, dtype=torch.float64)
    if rng.random() < 0.5:
        c[:, 0] += 10 * q[:, 0]
        gbar += 10 * q[:, 0]
    return dtype, lam, hmat, c.to(dtype), gbar.to(dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=1500)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    checked = capped = violations = 0
    for i in range(args.cases):
        dtype, lam, hmat, c, gbar = _case(rng)

        def energy(y, w, hmat=hmat, c=c):
            return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

        w = torch.zeros(3, dtype=dtype, requires_grad=True)
        spec = AdjointSpec(energy, lam, "ridge", "cg", "implicit", warn=False)
        (gw,) = vjp(spec, torch.zeros(1, hmat.shape[0], dtype=dtype), (w,), gbar)
        bound = float(torch.linalg.matrix_norm(c.double(), 2) * gbar.double().norm() / lam)
        slack = 1 + (1e-9 if dtype == torch.float64 else 1e-4)
        violations += int(not float(gw.double().norm()) <= bound * slack)
        hnorm = float(torch.linalg.matrix_norm(hmat.double(), 2))
        if lam >= 1e3 * torch.finfo(dtype).eps * hnorm:
            checked += 1
            if spec.record["bound_capped"]:
                capped += 1
                print(f"case {i}: capped ({dtype}, λ={lam}, n={hmat.shape[0]})", flush=True)
    print(f"seed {args.seed}: {checked} cases checked, {capped} capped, "
          f"{violations} bound violations (of {args.cases})")


if __name__ == "__main__":
    main()
