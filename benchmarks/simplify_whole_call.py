"""compile=True on the user's ridge-logistic energy: whole forward + backward, graph passes on/off.

    OMP_NUM_THREADS=1 python benchmarks/simplify_whole_call.py [--ns 2,8,32,128] [--rounds 12]

The dense workload ``D`` (**generated**, seed 0; ``bench/user.py``), ``argmin(energy, zeros,
(X, t, log λ, μ), compile=True)`` and the loss's backward, with every other default. Two energy
objects (so two kernel caches) in one process, called alternately: "off" traces the Hessian as
before ``simplify.py`` (``compiled.FUNC_MIN_N = 16``, no simplification), "on" with this
version's defaults (``FUNC_MIN_N = 4``, simplified). Prints each median and the geometric mean of
the paired ratios off/on with a 95% interval (±2 standard errors of the mean log ratio), and
checks that both give the same gradients. B = 1,000, except 100 at n = 128 (where ``"auto"``
picks Newton-CG, which does not use the dense Hessian: the passes should change nothing there).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import wibergian
import wibergian.compiled as comp
from wibergian.bench.user import DenseData, logistic_energy

CONFIGS = {"off": (16, False), "on": (4, True)}


def paired(n: int, batch: int, rounds: int) -> str:
    d = DenseData(batch, n)
    energies = {k: (lambda y, *p: logistic_energy(y, *p)) for k in CONFIGS}
    log_lam = d.log_lam.clone().requires_grad_(True)
    mu = d.mu.clone().requires_grad_(True)

    def run(key: str) -> tuple[torch.Tensor, torch.Tensor]:
        comp.FUNC_MIN_N, comp.SIMPLIFY_GRAPH = CONFIGS[key]
        log_lam.grad = mu.grad = None
        y = wibergian.argmin(energies[key], torch.zeros(batch, n, dtype=d.x.dtype),
                             (d.x, d.t, log_lam, mu), warn=False, compile=True)
        ((y - d.y_true) ** 2).sum(-1).mean().backward()
        return log_lam.grad.clone(), mu.grad.clone()

    old = comp.FUNC_MIN_N, comp.SIMPLIFY_GRAPH
    try:
        grads = {k: run(k) for k in CONFIGS}  # compiles
        agree = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
                    for a, b in zip(grads["off"], grads["on"], strict=True))
        times: dict[str, list[float]] = {k: [] for k in CONFIGS}
        for i in range(rounds):
            for key in (list(CONFIGS) if i % 2 == 0 else list(CONFIGS)[::-1]):
                t = time.perf_counter()
                run(key)
                times[key].append(time.perf_counter() - t)
    finally:
        comp.FUNC_MIN_N, comp.SIMPLIFY_GRAPH = old
    logs = [math.log(a / b) for a, b in zip(times["off"], times["on"], strict=True)]
    m, se = statistics.mean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
    return (f"n={n} B={batch}: off {statistics.median(times['off']):.4f} s, on "
            f"{statistics.median(times['on']):.4f} s (medians of {rounds}); off/on "
            f"{math.exp(m):.2f}x [95% {math.exp(m - 2 * se):.2f}, {math.exp(m + 2 * se):.2f}]; "
            f"gradients agree to {agree:.1e} (relative); compile fallbacks "
            f"{comp.FALLBACKS['count']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="2,8,32,128", help="dimensions (comma-separated)")
    ap.add_argument("--rounds", type=int, default=12, help="paired rounds per dimension")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for n in (int(s) for s in args.ns.split(",")):
        print(paired(n, 100 if n >= 128 else 1000, args.rounds), flush=True)


if __name__ == "__main__":
    main()
