"""Autograd's batched ``Xᵀ w`` as a row product (``row_matvec.py``), against ``torch.bmm`` as is.

    OMP_NUM_THREADS=1 python benchmarks/row_matvec.py [--rounds 15] [--batch 1000]

For each shape ``(B, M, K)`` (``X`` contiguous ``(B, M, K)``, ``w`` ``(B, M, 1)``) times
``torch.bmm(X.mT, w)`` (what a backward pass through ``X @ y`` computes) and ``bmm(wᵀ, X)ᵀ``
(the rewrite), interleaved and in alternating order, one thread, and prints the median of the
paired ratios rewrite / as-is with its 10-90 % range and whether the results are equal
(``max |difference|``). Random data (seed 0), float64. The whole-call effect on the ridge-logistic
workload is ``benchmarks/newton_overheads.py --old <rev> --n 128`` (Newton-CG).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from paired import paired_rounds

SHAPES = [(64, 8), (8, 64), (64, 32), (32, 64), (64, 128), (128, 64), (512, 32), (2000, 128),
          (8, 8)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, one thread, float64, B = {args.batch}")
    for m, k in SHAPES:
        b = max(1, args.batch if m * k <= 8192 else args.batch * 8192 // (m * k))
        x = torch.randn(b, m, k, generator=gen, dtype=torch.float64)
        w = torch.randn(b, m, 1, generator=gen, dtype=torch.float64)
        calls = {"as is": lambda x=x, w=w: torch.bmm(x.mT, w),
                 "row": lambda x=x, w=w: torch.bmm(w.mT, x).mT}
        diff = float((calls["as is"]() - calls["row"]()).abs().max())
        ts, ratio, lo, hi = paired_rounds(calls, args.rounds, "as is", "row")
        print(f"B={b:5d} M={m:4d} K={k:4d} (M·K={m * k:6d}): as is "
              f"{statistics.median(ts['as is']) * 1e3:8.3f} ms, row "
              f"{statistics.median(ts['row']) * 1e3:8.3f} ms; row/as-is median "
              f"{ratio:.2f} (10-90 % {lo:.2f}-{hi:.2f}); max |diff| {diff:.1e}",
              flush=True)


if __name__ == "__main__":
    main()
