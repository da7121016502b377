"""compile=True, ``n < FUNC_MIN_N``: the compiled Hessian kernel with and without simplification.

    OMP_NUM_THREADS=1 python benchmarks/onehot_reverse.py [--ns 2,3,4] [--rounds 30] [--calls 10]

The dense workload ``D`` (**generated**, seed 0; ``bench/user.py``: B = 1,000 problems, 64 rows,
float64) at ``y = y_true / 2``: one call of the compiled ``value_gradient_hessian`` (what each
Newton iteration of ``argmin(..., compile=True)`` calls) built three ways in one process, each
its own energy object and kernel cache:

- ``reverse``: the reverse route traced as is (``compiled.SIMPLIFY_REVERSE = False``), the
  baseline;
- ``simplified``: the reverse route simplified (``simplify.py`` + ``onehot.py``: the products
  with the one-hot cotangents ``e_i`` become column selects; this version's default for
  ``n < FUNC_MIN_N``);
- ``func``: the ``torch.func`` route, folded and simplified (the default from ``FUNC_MIN_N``).

Rounds interleave the three (order rotating); a sample is ``--calls`` back-to-back calls. Prints
per route the median ms per call and the geometric mean of the paired ratios route/reverse with a
95% interval (±2 standard errors of the mean log ratio), the rules that fired, and the largest
difference of the outputs from the baseline's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

import wibergian.compiled as comp
from wibergian import matvec
from wibergian.bench.user import DenseData, logistic_energy
from wibergian.bench.w1 import make_w1, w1_energy
from wibergian.simplify import simplify_graph

#: route → (compiled.FUNC_MIN_N, compiled.SIMPLIFY_REVERSE, matvec.NARROW_M)
ROUTES = {"reverse": (None, False, None), "onehot": (None, True, None),
          "narrow": (None, False, 2), "both": (None, True, 2), "func": (1, True, 2)}


Case = tuple[Callable[..., torch.Tensor], torch.Tensor, list[torch.Tensor]]


def _case(name: str, n: int) -> Case:
    """``(energy, y, params)``: ``D`` at ``y = y_true / 2`` or ``W1`` (``n = 2``, B = 1,000) at
    each problem's first well."""
    if name == "w1":
        w = make_w1(1000)
        return w1_energy, torch.stack([w.a[:, 0], w.c[:, 0]], -1), [w.a, w.c, w.m, w.s0, w.s1]
    d = DenseData(1000, n)
    return logistic_energy, 0.5 * d.y_true, [d.x, d.t, d.log_lam, d.mu]


def _kernel(route: str, energy: Callable[..., torch.Tensor], y: torch.Tensor,
            ps: list[torch.Tensor]) -> comp.CompiledEnergy:
    """A compiled energy whose Hessian kernel is built (first call) the ``route`` way."""
    ce = comp.CompiledEnergy(lambda y, *p: energy(y, *p))
    old = comp.FUNC_MIN_N, comp.SIMPLIFY_REVERSE, matvec.NARROW_M
    comp.FUNC_MIN_N, comp.SIMPLIFY_REVERSE, matvec.NARROW_M = ROUTES[route]
    try:
        ce.value_gradient_hessian(y, *ps)
    finally:
        comp.FUNC_MIN_N, comp.SIMPLIFY_REVERSE, matvec.NARROW_M = old
    if ce.error is not None:
        raise RuntimeError(f"{route}: {ce.error}")
    return ce


def paired(name: str, n: int, rounds: int, calls: int, routes: list[str]) -> list[str]:
    energy, y, ps = _case(name, n)
    fired = _fired(energy, y, ps)
    kernels = {r: _kernel(r, energy, y, ps) for r in routes}
    want = kernels["reverse"].value_gradient_hessian(y, *ps)
    diffs = {r: max((a - b).abs().max().item() for a, b in zip(
        kernels[r].value_gradient_hessian(y, *ps), want, strict=True)) for r in routes}
    times: dict[str, list[float]] = {r: [] for r in routes}
    names = list(routes)
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        for r in order:
            f = kernels[r].value_gradient_hessian
            t = time.perf_counter()
            for _ in range(calls):
                f(y, *ps)
            times[r].append((time.perf_counter() - t) / calls)
    lines = [f"{name} n={y.shape[1]} B=1000: rules fired on the reverse graph {fired}"]
    for r in routes:
        lines.append(f"  {r:10s} {1e3 * statistics.median(times[r]):.3f} ms/call (median of "
                     f"{rounds}x{calls}); /reverse {_ratio(times[r], times['reverse'])}; max "
                     f"|diff| {diffs[r]:.1e}; compiled in {kernels[r].compile_seconds:.1f} s")
    if "func" in times and "both" in times:
        lines.append(f"  func/both {_ratio(times['func'], times['both'])} (FUNC_MIN_N's choice)")
    return lines


def _ratio(a: list[float], b: list[float]) -> str:
    """Geometric mean of the paired ratios a/b with a 95% interval (±2 standard errors)."""
    logs = [math.log(x / y) for x, y in zip(a, b, strict=True)]
    m, se = statistics.mean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
    return f"{math.exp(m):.3f}x [95% {math.exp(m - 2 * se):.3f}, {math.exp(m + 2 * se):.3f}]"


def whole(n: int, rounds: int, old: str = "reverse", new: str = "both") -> str:
    """One ``argmin(..., compile=True)`` forward + backward of ``D`` (``bench.user.DenseUser``),
    its Hessian kernel built the ``old`` way and the ``new`` way (:data:`ROUTES`), two energy
    objects in one process, called alternately; ``new``/``old`` paired."""
    import wibergian
    from wibergian.bench.user import DenseUser

    d = DenseData(1000, n)
    users = {k: DenseUser(d, compile=True) for k in (old, new)}

    def run(key: str) -> list[torch.Tensor]:
        m = users[key]
        for p in m.params.values():
            p.grad = None
        saved = comp.FUNC_MIN_N, comp.SIMPLIFY_REVERSE, matvec.NARROW_M
        comp.FUNC_MIN_N, comp.SIMPLIFY_REVERSE, matvec.NARROW_M = ROUTES[key]
        try:
            m.loss().backward()
        finally:
            comp.FUNC_MIN_N, comp.SIMPLIFY_REVERSE, matvec.NARROW_M = saved
        return [p.grad.clone() for p in m.params.values()]

    grads = {k: run(k) for k in users}  # compiles
    for _ in range(2):
        for k in users:
            run(k)
    agree = max((a - b).abs().max().item() for a, b in zip(grads[old], grads[new], strict=True))
    times: dict[str, list[float]] = {k: [] for k in users}
    for i in range(rounds):
        for k in ((old, new) if i % 2 == 0 else (new, old)):
            t = time.perf_counter()
            run(k)
            times[k].append(time.perf_counter() - t)
    assert wibergian.compiled.FALLBACKS["count"] == 0
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return (f"n={n} whole argmin forward+backward: {old} {med[old]:.2f} ms, {new} "
            f"{med[new]:.2f} ms (medians of {rounds}); {new}/{old} "
            f"{_ratio(times[new], times[old])}; gradients differ by {agree:.1e}")


def _fired(energy: Callable[..., torch.Tensor], y: torch.Tensor, ps: list[torch.Tensor]
           ) -> dict[str, int]:
    """The rules ``simplify_graph`` fires on the traced reverse-route graph."""
    from torch.fx.experimental.proxy_tensor import make_fx

    ce = comp.CompiledEnergy(energy)
    return simplify_graph(make_fx(ce._vgh, tracing_mode="fake")(y, *ps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="2,3,4", help="dimensions (comma-separated)")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds per dimension")
    ap.add_argument("--calls", type=int, default=10, help="kernel calls per timed sample")
    ap.add_argument("--energy", choices=("d", "w1"), default="d",
                    help="d: the ridge-logistic D; w1: the W1 wells (n = 2, no product)")
    ap.add_argument("--routes", default=",".join(ROUTES),
                    help=f"routes to build, 'reverse' always (of {', '.join(ROUTES)})")
    ap.add_argument("--whole", default=None, metavar="OLD,NEW",
                    help="also time the whole argmin call, two routes (e.g. reverse,both)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for n in (int(s) for s in args.ns.split(",")):
        routes = ["reverse"] + [r for r in args.routes.split(",") if r in ROUTES and r != "reverse"]
        print("\n".join(paired(args.energy, n, args.rounds, args.calls, routes)), flush=True)
        if args.whole and args.energy == "d":
            print(whole(n, args.rounds, *args.whole.split(",")), flush=True)


if __name__ == "__main__":
    main()
