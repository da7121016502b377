"""Compiled kernels with and without the matrix-vector rewrite (``wibergian/matvec.py``).

For the dense ridge-logistic energy of ``wibergian.bench.user`` (``logistic_energy``,
``z = X y`` with ``X`` ``(B, 64, K)``, generated data, seed 0, float64, one thread) at each
``K``, the ``compile=True`` kernels (``CompiledEnergy``, as ``argmin(compile=True)`` builds
them) are built with the pass off (``off``: Inductor's own lowering), with the default choice
(``auto``, what ships), and with every rewritable product forced to one form (``unroll`` /
``extern``), and timed interleaved in one process (each round runs every variant once, in a
rotating order); eager rows are the baseline:

- ``value``: ``E(y)`` ``(B,)`` (multi-start scores, line-search trial points); eager: the energy;
- ``vgh``: ``(E, ∇E, ∇²E)``; eager: the hand-written closed form
  (``bench.user.logistic_value_gradient_hessian``);
- ``mixed``: the backward's ``(∇E, ∂<∇E, u>/∂(log λ, μ))``; eager: ``CompiledEnergy._mixed``
  uncompiled (autograd's double backward);
- ``candidates``: multi-start's scores of ``C`` candidates ``(B, C)``; eager: one energy call
  per candidate (what multi-start does without the kernel).

Printed: the median milliseconds per call and each compiled variant's ratio to ``off`` and to
eager (``< 1``: faster). Not a test: speeds are measured here, never asserted.

    python benchmarks/matvec_lowering.py [--ks 2,4,8,16,32,64,128] [--batch 1000] [--rounds 15]
        [--kernels value,vgh,mixed] [--variants off,auto,unroll,extern] [--shared]
        [--dtype float64|float32] [--candidates 4]

``--shared``: one ``X`` ``(64, K)`` for all problems (``auto`` then rewrites to one ``mm``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from wibergian import compiled as comp
from wibergian import matvec
from wibergian.bench.user import DenseData, logistic_energy, logistic_value_gradient_hessian

VARIANTS = ("off", "auto", "unroll", "extern")
KERNELS = ("value", "vgh", "mixed", "candidates")
CANDIDATES = 4  # multi-start candidates per problem (--candidates)


def build(variant: str, kernel: str, y: torch.Tensor, ps: list[torch.Tensor]
          ) -> Callable[[], Any] | None:
    """A compiled ``kernel`` of a fresh ``CompiledEnergy`` built with the pass as ``variant``
    says (the flags are restored after the build: a kernel keeps the graph it was built from)."""
    old = (comp.LOWER_MATVEC, matvec.FORCE)
    comp.LOWER_MATVEC = variant != "off"
    matvec.FORCE = variant if variant in ("unroll", "extern") else None
    try:
        ce = comp.CompiledEnergy(lambda yy, *pp: logistic_energy(yy, *pp))
        u = torch.ones_like(y)
        call: Callable[[], Any] = {
            "value": lambda: ce(y, *ps),
            "vgh": lambda: ce.value_gradient_hessian(y, *ps),
            "mixed": lambda: ce.mixed_vjp(y, u, ps, (2, 3)),
            "candidates": lambda: ce.candidate_values(_cands(y), *ps),
        }[kernel]
        with torch.no_grad():
            call()
        if ce.error is not None or ce.optional_errors:
            print(f"  {variant} {kernel}: fell back ({ce.error or ce.optional_errors})")
            return None
        return call
    finally:
        comp.LOWER_MATVEC, matvec.FORCE = old


def _cands(y: torch.Tensor) -> torch.Tensor:
    """``CANDIDATES`` multi-start candidates ``(B, C, K)`` around ``y`` (fixed)."""
    g = torch.Generator().manual_seed(1)
    return y.unsqueeze(1) + torch.randn(y.shape[0], CANDIDATES, y.shape[1], generator=g,
                                        dtype=y.dtype)


def eager(kernel: str, y: torch.Tensor, ps: list[torch.Tensor]) -> Callable[[], Any]:
    ce = comp.CompiledEnergy(logistic_energy)
    u = torch.ones_like(y)
    c = _cands(y)
    return {"value": lambda: logistic_energy(y, *ps),
            "vgh": lambda: logistic_value_gradient_hessian(y, *ps),
            "mixed": lambda: ce._mixed((2, 3), y, u, *ps),
            "candidates": lambda: torch.stack([logistic_energy(c[:, j], *ps)
                                               for j in range(c.shape[1])], 1)}[kernel]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="2,4,8,16,32,64,128", help="reduction lengths K (= n)")
    p.add_argument("--batch", type=int, default=1000, help="problems B")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (median reported)")
    p.add_argument("--kernels", default="value,vgh,mixed", help="comma-separated: " +
                   ",".join(KERNELS))
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " +
                   ",".join(VARIANTS))
    p.add_argument("--shared", action="store_true",
                   help="one X (64, K) shared by all problems (the 'mm' form) instead of X_b")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--candidates", type=int, default=CANDIDATES,
                   help="multi-start candidates C of the candidates kernel")
    args = p.parse_args()
    globals()["CANDIDATES"] = args.candidates
    torch.set_num_threads(1)
    variants = [v for v in args.variants.split(",") if v]
    print(f"B = {args.batch}, M = 64, {'shared' if args.shared else 'batched'} X, {args.dtype}, 1 "
          f"thread; thresholds: unroll "
          f"{matvec.UNROLL_MIN_K} ≤ K ≤ {matvec.UNROLL_MAX_K}, extern up to K = "
          f"{matvec.EXTERN_MAX_K}; median ms of {args.rounds} interleaved rounds")
    for k in (int(s) for s in args.ks.split(",")):
        d = DenseData(args.batch, k, dtype=getattr(torch, args.dtype))
        y = 0.1 * d.y_true
        ps = [d.x[0].contiguous() if args.shared else d.x, d.t, d.log_lam, d.mu]
        for kernel in args.kernels.split(","):
            fns: dict[str, Callable[[], Any]] = {"eager": eager(kernel, y, ps)}
            for v in variants:
                if v == "unroll" and k > 64:  # a K-term graph: minutes of compilation
                    continue
                f = build(v, kernel, y, ps)
                if f is not None:
                    fns[v] = f
            times: dict[str, list[float]] = {name: [] for name in fns}
            names = list(fns)
            with torch.no_grad():
                for f in fns.values():
                    f()
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        t = time.perf_counter()
                        fns[name]()
                        times[name].append(time.perf_counter() - t)
            med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
            off = med.get("off")
            cells = []
            for name, ms in med.items():
                cell = f"{name} {ms:.3f}"
                if name != "eager":
                    cell += f" ({ms / med['eager']:.2f}× eager"
                    cell += f", {ms / off:.2f}× off)" if off and name != "off" else ")"
                cells.append(cell)
            print(f"K={k:4d} {kernel:6s} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
