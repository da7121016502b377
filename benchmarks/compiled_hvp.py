"""One Hessian-vector product: eager (through the gradient's retained graph) against
``compile=True``'s kernel (``compiled_hvp.py``), in one process.

    OMP_NUM_THREADS=1 python benchmarks/compiled_hvp.py [--rounds 9] [--w3-size 512]

Workloads (float64, one thread): ``D``, the ridge-logistic energy at n = 128, B = 1,000
(generated, seed 0; ``wibergian.bench.user``), and ``W3``, the 512×512 denoising energy as a user
writes it (``conv2d`` + Lorentzian penalty; scikit-image's ``camera()`` with generated noise,
seed 0; ``wibergian.bench.user_w2w3``), skipped without scikit-image. Prints the compile seconds,
the medians of ``--rounds`` interleaved rounds (alternating order), the median paired ratio
compiled / eager with its 10-90 % range, and the largest difference of the two products.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from paired import paired_rounds


def _compare(name: str, energy, y: torch.Tensor, params: tuple, rounds: int) -> None:
    from wibergian.compiled import CompiledEnergy
    from wibergian.derivatives import hvp_operator

    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    _, eager = hvp_operator(energy, y, params)
    ce = CompiledEnergy(energy)
    t0 = time.perf_counter()
    first = ce.hvp(y, v, params)
    built = time.perf_counter() - t0
    if first is None:
        print(f"{name}: the kernel could not be built ({ce.optional_errors})")
        return
    diff = float((first - eager(v)).abs().max())
    calls = {"eager": lambda: eager(v), "compiled": lambda: ce.hvp(y, v, params)}
    ts, ratio, lo, hi = paired_rounds(calls, rounds, "eager", "compiled")
    print(f"{name}: first compiled call {built:.1f} s; eager {statistics.median(ts['eager']):.4f}"
          f" s, compiled {statistics.median(ts['compiled']):.4f} s; compiled/eager median "
          f"{ratio:.2f} (10-90 % {lo:.2f}-{hi:.2f}, {rounds} rounds); "
          f"max |difference| {diff:.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--w3-size", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from wibergian.bench.user import DenseData, logistic_energy

    d = DenseData(1000, 128)
    y = 0.1 * torch.randn(1000, 128, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    _compare("D n = 128, B = 1,000", logistic_energy, y, (d.x, d.t, d.log_lam, d.mu),
             args.rounds)
    try:
        from wibergian.bench.user_w2w3 import w3_user_energy
        from wibergian.bench.w3 import make_w3

        w3 = make_w3(args.w3_size)
    except ImportError as exc:
        print(f"W3 skipped: {exc}")
        return
    _compare(f"W3 {args.w3_size}x{args.w3_size}", w3_user_energy(w3.shape), w3.noisy.clone(),
             (w3.noisy, w3.filters, w3.alpha, w3.scale), args.rounds)


if __name__ == "__main__":
    main()
