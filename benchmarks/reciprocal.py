"""Division by a small broadcast operand as multiplication by its reciprocal (``reciprocal.py``),
off against on, in one process.

    OMP_NUM_THREADS=1 python benchmarks/reciprocal.py [--w1 1000 20000] [--dense 8]
        [--rounds 15]

For W1 (the user's energy with multi-start over its K = 72 wells, ``bench.user.W1User``) at each
batch size and the dense ridge-logistic energy (``DenseUser``, B = 1000) at each ``n``: two
``compile=True`` methods with their own energy objects, one traced with the pass off and one
with it on; then one forward + backward of each per round, interleaved (the order alternating).
Prints the medians, the median of the paired on/off ratios with its 10-90 % range, how many
divisions the pass rewrote, and the largest relative difference of ``y*`` and of the gradients.
Data: generated (seed 0).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import wibergian.reciprocal as rec
from wibergian.bench.user import DenseData, DenseUser, W1User
from wibergian.bench.w1 import make_w1


def _run(m) -> tuple[torch.Tensor, list[torch.Tensor]]:
    for p in m.params.values():
        p.grad = None
    loss = m.loss()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in m.params.values()]


def _compare(label: str, make, rounds: int) -> None:
    methods, outs, rewritten = {}, {}, {}
    for k, on in (("off", False), ("on", True)):
        rec.ENABLED = on
        before = rec.COUNTS["rewritten"]
        methods[k] = make()
        outs[k] = _run(methods[k])  # traces and compiles with the pass off / on
        rewritten[k] = rec.COUNTS["rewritten"] - before
    rec.ENABLED = True
    for m in methods.values():
        _run(m)
    ts: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        for k in (("off", "on") if r % 2 == 0 else ("on", "off")):
            t0 = time.perf_counter()
            _run(methods[k])
            ts[k].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(ts["on"], ts["off"], strict=True))
    lo, hi = ratios[len(ratios) // 10], ratios[-1 - len(ratios) // 10]
    (l0, g0), (l1, g1) = outs["off"], outs["on"]
    dg = max(float((a - b).norm() / b.norm().clamp_min(1e-300))
             for a, b in zip(g1, g0, strict=True))
    print(f"{label}: divisions rewritten {rewritten['on']}; off {statistics.median(ts['off']):.4f}"
          f" s, on {statistics.median(ts['on']):.4f} s; on/off median "
          f"{statistics.median(ratios):.3f} (10-90 % {lo:.3f}-{hi:.3f}, {rounds} paired rounds); "
          f"loss rel. diff {float((l1 - l0).abs() / l0.abs()):.1e}, gradients {dg:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--w1", type=int, nargs="*", default=[1000, 20000])
    ap.add_argument("--dense", type=int, nargs="*", default=[8])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for b in args.w1:
        d = make_w1(b)
        _compare(f"W1 B={b}", lambda d=d: W1User(d, compile=True), args.rounds)
    for n in args.dense:
        d = DenseData(1000, n)
        _compare(f"D n={n} B=1000", lambda d=d: DenseUser(d, compile=True), args.rounds)


if __name__ == "__main__":
    main()
