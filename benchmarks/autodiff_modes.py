"""Cost of each autodiff mode through ``argmin``, as ratios to the default reverse mode.

Generated data (seed 0): B robust line fits (Welsch, n = 2, 12 points each with outliers),
float64, one thread, default options. Every mode runs interleaved in the same process; the
figure is the median of ``--repeats`` rounds, divided by the median of "forward + backward".

    python benchmarks/autodiff_modes.py --batch 2000 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.autograd.forward_ad as fwAD

import wibergian


def welsch(y, x, t, log_sigma):
    r = t - y[:, :1] - y[:, 1:2] * x
    return -torch.exp(-(r * r) / torch.exp(2 * log_sigma)).sum(-1) + 1e-2 * (y * y).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2000, help="problems per call (B)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    g = torch.Generator().manual_seed(0)
    b, dt = args.batch, torch.float64
    x = torch.linspace(-1, 1, 12, dtype=dt).expand(b, 12).clone()
    t = 0.3 + 0.8 * x + 0.05 * torch.randn(b, 12, generator=g, dtype=dt)
    t[:, ::5] += 2.0
    y0 = torch.tensor([[0.3, 0.8]], dtype=dt).expand(b, 2).clone()
    ls = torch.tensor(-0.5, dtype=dt)

    def solve(tt, s):
        return wibergian.argmin(welsch, y0, (x, tt, s))

    def forward_no_grad():
        with torch.no_grad():
            solve(t, ls)

    def reverse():
        tt = t.clone().requires_grad_(True)
        solve(tt, ls).sum().backward()

    def forward_mode():
        with fwAD.dual_level():
            y = solve(fwAD.make_dual(t, torch.ones_like(t)), ls)
            fwAD.unpack_dual(y).tangent.sum()

    def func_grad():
        torch.func.grad(lambda tt: solve(tt, ls).sum())(t)

    def double_backward():
        s = ls.clone().requires_grad_(True)
        (gs,) = torch.autograd.grad(solve(t, s).square().sum(), s, create_graph=True)
        gs.backward()

    def vmap4():
        torch.func.vmap(lambda s: solve(t, s))(ls + torch.arange(4, dtype=dt) * 0.01)

    def loop4():
        with torch.no_grad():
            for k in range(4):
                solve(t, ls + 0.01 * k)

    modes = {"forward + backward (reference)": reverse, "forward only, no_grad": forward_no_grad,
             "forward + forward-mode tangent": forward_mode, "torch.func.grad": func_grad,
             "forward + double backward (create_graph)": double_backward,
             "torch.func.vmap over 4 parameter values": vmap4,
             "4 separate no_grad calls (vmap's loop)": loop4}
    times: dict[str, list[float]] = {k: [] for k in modes}
    for fn in modes.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["forward + backward (reference)"])
    print(f"B = {b}, n = 2, float64, 1 thread, median of {args.repeats}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:45s} {med * 1e3:8.1f} ms   {med / ref:5.2f}x")


if __name__ == "__main__":
    main()
