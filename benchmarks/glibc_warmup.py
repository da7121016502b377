"""Whole ``argmin`` calls with and without the glibc threshold warm-up (``allocator.py``).

The warm-up is process state, so each measurement is a fresh interpreter: it builds the
workload, makes warm-up calls (compiling its kernels; Inductor's on-disk cache makes later
processes' builds short), then times ``--calls`` forward + backward calls and prints their
median. The parent alternates ``WIBERGIAN_GLIBC_WARMUP=0`` and ``=1`` children (the order
alternating by round) and reports per cell the median and 10-90 % range of the paired ratios
``warmed / not warmed`` (``< 1``: the warm-up is faster). glibc's default malloc (no
``MALLOC_*`` variables) in every child; one thread; ``compile=True``.

Cells: the dense ridge-logistic workload ``D`` (``bench.user.DenseUser``, ``B = 1000``,
generated, seed 0) at each ``--ns`` and ``W1`` (``bench.user.W1User``, multi-start, generated,
seed 0) at each ``--w1-batches``. Not a test: speeds are measured here, never asserted.

    python benchmarks/glibc_warmup.py [--ns 8,32,128] [--w1-batches 1000,20000] [--rounds 4]
        [--calls 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from paired import ratio_summary

CHILD = r"""
import statistics, sys, time
import torch
torch.set_num_threads(1)
from wibergian import allocator
from wibergian.bench.user import DenseData, DenseUser, W1User
from wibergian.bench.w1 import make_w1

kind, size, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = (DenseUser(DenseData(1000, size), compile=True) if kind == "D"
     else W1User(make_w1(size), compile=True))
for _ in range(3):
    m.gradient()
ts = []
for _ in range(calls):
    t = time.perf_counter()
    m.gradient()
    ts.append(time.perf_counter() - t)
print(statistics.median(ts), allocator.STATE["warmed"])
"""


def child(kind: str, size: int, calls: int, warm: bool) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(WIBERGIAN_GLIBC_WARMUP="1" if warm else "0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(size), str(calls)],
                         capture_output=True, text=True, env=env, check=True)
    seconds, warmed = out.stdout.split()[-2:]
    if (warmed == "True") != warm:
        raise RuntimeError(f"the child's warm-up state is {warmed}, expected {warm}")
    return float(seconds)


def cell(name: str, kind: str, size: int, rounds: int, calls: int) -> None:
    ts: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for warm in ((False, True) if r % 2 == 0 else (True, False)):
            ts[warm].append(child(kind, size, calls, warm))
    ratio, lo, hi = ratio_summary(ts[True], ts[False])
    print(f"{name}: not warmed {statistics.median(ts[False]):.4f} s, warmed "
          f"{statistics.median(ts[True]):.4f} s; warmed/not {ratio:.3f} "
          f"(10-90 % {lo:.3f}-{hi:.3f}, {rounds} process pairs, median of {calls} calls each)",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="8,32,128")
    ap.add_argument("--w1-batches", default="1000,20000")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()
    for n in [int(v) for v in args.ns.split(",") if v]:
        cell(f"D n = {n:3d}, B = 1000", "D", n, args.rounds, args.calls)
    for b in [int(v) for v in args.w1_batches.split(",") if v]:
        cell(f"W1 B = {b}", "W1", b, args.rounds, args.calls)


if __name__ == "__main__":
    main()
