"""What ``compile="auto"`` (argmin's default) costs and buys on one energy, per phase.

Runs, in one process, ``argmin`` forward + backward of the dense ridge-logistic energy
(``wibergian.bench.user``, generated data, seed 0) with every default, ``AFTER + 3`` times, and
prints each call's wall time and ``info.compile_s``: the ``AFTER`` eager calls, the call that
compiles, and the compiled steady state. Each phase's median and the break-even count (calls
after which compiling has paid for itself: compile seconds / seconds saved per call) close the
output. ``--cold`` points Inductor at an empty cache directory first (what a fresh machine
pays); without it the user's cache is used (what a second run pays).

    python benchmarks/auto_compile_cost.py --n 8 --batch 1000 [--cold] [--after 20]
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
    ap.add_argument("--cold", action="store_true", help="start from an empty Inductor cache")
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
    d = DenseData(args.batch, args.n)
    energy = own_function(logistic_energy)
    lam = d.log_lam.clone().requires_grad_()
    y0 = torch.zeros(args.batch, args.n, dtype=d.x.dtype)
    walls, compile_s = [], []
    with auto_compile.auto_compile_after(after):
        for i in range(after + 4):
            t = time.perf_counter()
            y, info = wibergian.argmin(energy, y0, (d.x, d.t, lam, d.mu), warn=False,
                                       return_info=True)
            ((y - d.y_true) ** 2).sum().backward()
            walls.append(time.perf_counter() - t)
            compile_s.append(info.compile_s)
            lam.grad = None
            print(f"call {i + 1:3d}: {walls[-1]:8.3f} s  (compile_s {info.compile_s:.3f})",
                  flush=True)
    eager = statistics.median(walls[:after])
    steady = statistics.median(walls[after + 2:])
    first = walls[after] + walls[after + 1]  # the compiling call (+ a backward kernel built late)
    saved = eager - steady
    print(f"\nD n={args.n} B={args.batch} ({'empty' if args.cold else 'existing'} Inductor "
          f"cache, generated data): eager {eager:.3f} s/call, compiled {steady:.3f} s/call "
          f"({eager / steady:.2f}x), compiling calls {first:.1f} s")
    if saved > 0:
        print(f"break-even after {(first - 2 * steady) / saved:.0f} compiled calls")
    else:
        print("compiled calls are not faster here: compiling never pays off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
