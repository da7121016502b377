"""compile=True's multi-start: one fused candidate kernel against one compiled call per
candidate, in one process (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/multistart_fused.py [--batch 1000 4096] [--rounds 10]

Scores W1's candidates (``wibergian.bench.w1``: **generated**, seed 0, K = C = 72 wells, the
user's plain ``w1_energy``) with ``CompiledEnergy.candidate_values`` (the energy ``vmap``-ed over
the candidates, traced and compiled: what ``argmin(..., candidates=..., compile=True)`` uses)
and with 72 calls of the compiled energy on ``(B, 2)`` (the route before, and the fallback).
Rounds are interleaved; prints each route's median seconds, the median paired ratio
fused / per-candidate with its 10-90 % range, and the largest difference of the energies (they
must agree to rounding). Compile time is excluded (one untimed call each first).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wibergian.bench.w1 import make_w1
from wibergian.bench.workloads import w1_energy
from wibergian.compiled import CompiledEnergy


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1000, 4096])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for b in args.batch:
        d = make_w1(b)
        ps = (d.a, d.c, d.m, d.s0, d.s1)
        cand = torch.stack([d.a, d.c], -1)
        ce = CompiledEnergy(w1_energy)

        def per_candidate(ce=ce, cand=cand, ps=ps) -> torch.Tensor:
            return torch.stack([ce(cand[:, j].contiguous(), *ps)
                                for j in range(cand.shape[1])], 1)

        def fused(ce=ce, cand=cand, ps=ps) -> torch.Tensor:
            out = ce.candidate_values(cand, *ps)
            assert out is not None, ce.optional_errors
            return out

        with torch.no_grad():
            diff = float((fused() - per_candidate()).abs().max())
            tf, tp = [], []
            for r in range(args.rounds):
                order = (fused, per_candidate) if r % 2 == 0 else (per_candidate, fused)
                for fn in order:
                    (tf if fn is fused else tp).append(_time(fn))
        ratios = sorted(f / p for f, p in zip(tf, tp, strict=True))
        lo, hi = ratios[len(ratios) // 10], ratios[-1 - len(ratios) // 10]
        print(f"B = {b}: fused {statistics.median(tf):.4f} s, per-candidate "
              f"{statistics.median(tp):.4f} s; fused/per-candidate median "
              f"{statistics.median(ratios):.3f} (10-90 %: {lo:.3f}-{hi:.3f}); max |ΔE| {diff:.2e}")


if __name__ == "__main__":
    main()
