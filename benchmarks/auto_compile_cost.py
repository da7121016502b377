"""What ``compile="auto"`` (argmin's default) costs and buys on one energy, per phase.

Runs, in one process, ``argmin`` forward + backward of the dense ridge-logistic energy
(``wibergian.bench.user``, generated data, seed 0) with every default until ``compile="auto"``
switches (20 calls and 200,000 unknowns by default), then 4 times more, printing each call's wall
time and ``info.compile_s``. The summary gives the eager and compiled medians, the compiling
calls' seconds, and the break-even count (compiled calls after which compiling has paid for
itself). ``--cold`` points Inductor at an empty cache directory first (what a fresh machine
pays); without it the user's cache is used (what a second run pays).

    python benchmarks/auto_compile_cost.py --n 8 --batch 1000 [--cold] [--after 20]
    python benchmarks/auto_compile_cost.py --energy readme --batch 64 --unknowns 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="unknowns per problem (default 8)")
    ap.add_argument("--batch", type=int, default=1000, help="problems (default 1000)")
    ap.add_argument("--after", type=int, default=None,
                    help="eager calls before compiling (default: the library's AFTER_CALLS)")
    ap.add_argument("--unknowns", type=int, default=None,
                    help="unknowns (Σ B·n) the eager calls must solve first (default: the "
                         "library's AFTER_UNKNOWNS; 0 to switch on the call count alone)")
    ap.add_argument("--cold", action="store_true", help="start from an empty Inductor cache")
    ap.add_argument("--energy", choices=("logistic", "readme"), default="logistic",
                    help="logistic (default; --n, --batch) or the README's robust mean "
                         "(n = 1, --batch problems of 40 points)")
    args = ap.parse_args(argv)
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="wibergian-inductor-")
    import torch

    import wibergian
    from wibergian import auto_compile
    from wibergian.bench.user import DenseData, logistic_energy, own_function

    torch.set_num_threads(1)
    after = auto_compile.AFTER_CALLS if args.after is None else args.after
    if after < 1:
        print("auto compilation is switched off (WIBERGIAN_AUTO_COMPILE_AFTER=0)")
        return 2
    gen = torch.Generator().manual_seed(0)
    if args.energy == "logistic":
        d = DenseData(args.batch, args.n)
        energy = own_function(logistic_energy)
        lam = d.log_lam.clone().requires_grad_()
        y0 = torch.zeros(args.batch, args.n, dtype=d.x.dtype)
        params: tuple = (d.x, d.t, lam, d.mu)
        target = d.y_true
    else:
        def energy(t, x, sigma):  # the README's, verbatim
            return -torch.exp(-(x - t) ** 2 / sigma ** 2).sum(-1)

        target = torch.empty(args.batch, 1).uniform_(-40, 40, generator=gen)
        x = torch.cat([target + torch.randn(args.batch, 20, generator=gen),
                       torch.empty(args.batch, 20).uniform_(-40, 40, generator=gen)], 1)
        lam = torch.tensor(3.0, requires_grad=True)
        y0 = x.median(1, keepdim=True).values
        params = (x, lam)
    walls: list[float] = []

    def call() -> float:
        t = time.perf_counter()
        y, info = wibergian.argmin(energy, y0, params, warn=False, return_info=True)
        ((y - target) ** 2).sum().backward()
        lam.grad = None
        walls.append(time.perf_counter() - t)
        print(f"call {len(walls):4d}: {walls[-1]:8.3f} s  (compile_s {info.compile_s:.3f})",
              flush=True)
        return info.compile_s

    with auto_compile.auto_compile_after(after, unknowns=args.unknowns):
        while auto_compile.AUTO["compiled"] == 0 and len(walls) < 5000:
            call()
        if auto_compile.AUTO["compiled"] == 0:
            print("no switch within 5000 calls")
            return 1
        switch = len(walls)  # the call that compiled
        for _ in range(4):  # a late kernel (the backward's) may compile on the next call
            call()
    eager = statistics.median(walls[:switch - 1])
    steady = statistics.median(walls[switch + 1:])
    first = walls[switch - 1] + walls[switch]
    saved = eager - steady
    what = f"D n={args.n}" if args.energy == "logistic" else "README energy n=1"
    print(f"\n{what} B={args.batch} ({'empty' if args.cold else 'existing'} Inductor "
          f"cache, generated data): {switch - 1} eager calls before the switch; eager "
          f"{eager:.3f} s/call, compiled {steady:.3f} s/call ({eager / steady:.2f}x), the "
          f"compiling calls {first:.1f} s")
    if saved > 0:
        print(f"break-even after {(first - 2 * steady) / saved:.0f} compiled calls")
    else:
        print("compiled calls are not faster here: compiling never pays off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
