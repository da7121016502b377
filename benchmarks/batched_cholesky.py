"""Batched Cholesky of many small matrices: LAPACK against batch-vectorised forms.

    OMP_NUM_THREADS=1 python benchmarks/batched_cholesky.py [--ns 2,4,8,16,24,32,40]
        [--batches 1000,20000] [--rounds 9] [--unrolled-max-n 8]
    OMP_NUM_THREADS=1 python benchmarks/batched_cholesky.py --whole [--ns 2,8,32] [--rounds 24]

Issue 14 asked whether a Cholesky written over the batch (one kernel for all ``B`` matrices
instead of ``B`` LAPACK calls) would beat ``torch.linalg.cholesky_ex`` for the dense Newton
solver's ``(B, n, n)`` factorisations at small ``n``. For each ``n`` and ``B`` the matrices are
generated SPD (``A Aᵀ/n + 0.1 I``, ``A`` ``(B, n, 2n)`` standard normal, seed 0, float64) and
factored (with a shift ``σ_b``, as the solvers do) by:

- ``lapack``: ``cholesky.shifted_cholesky`` with ``batch_cholesky.ENABLED = False`` (copy into
  one buffer with LAPACK's layout, factored in place; closed form on ``(B,)`` vectors for
  ``n ≤ 2``), what shipped before;
- ``kernel``: ``cholesky.shifted_cholesky`` as it ships inside an ``argmin`` call whose energy is
  compiled (``batch_cholesky.py``, C++ vectorised across the batch, for ``3 ≤ n ≤ 40``; the same
  closed forms for ``n ≤ 2``);
- ``columns``: a left-looking column algorithm in plain torch ops with the batch as the last,
  contiguous dimension (``(n, n, B)``: every operation is vectorised across the ``B`` problems;
  ``n`` steps, each a product-sum over the columns already computed);
- ``blocked``: a recursive 2x2 block algorithm (``L11`` recursively, ``L21 = A21 L11⁻ᵀ`` by a
  batched triangular solve, the Schur complement by ``baddbmm``, LAPACK below 16);
- ``unrolled``: the column algorithm written out per entry on ``(B,)`` vectors and compiled by
  ``torch.compile`` into one loop over the batch (only up to ``--unrolled-max-n``: its
  compilation grows with ``n³``; 47 s at ``n = 16`` here).

The solve with the factor (``cholesky.cholesky_apply``, one right-hand side per matrix) is
timed the same way, ``lapack`` against ``kernel``. Rounds are interleaved (each round times
every variant once); printed are the medians in ms, the ratio to ``lapack`` (``< 1``: faster)
and the largest difference of each factor from LAPACK's.

``--whole``: one ``argmin`` forward + backward of the dense ridge-logistic workload ``D``
(``bench.user.DenseUser``: B = 1,000, M = 64, generated, seed 0, every default, ``compile=True``
so in the compiled steady state of ``compile="auto"``), the kernels on and off in the same
process on the same energy (one compiled energy: only the factorisations differ), interleaved
rounds; prints wall and CPU seconds, the median and 10-90 % range of the paired ratios
kernel/LAPACK, and how far the loss and the parameter gradients differ. With ``--optimistix``
(JAX, jaxopt and optimistix installed) the bench's Optimistix anchor on the same data
(``bench.methods_jax.dense_methods``: jit, ``root_find`` Newton, ``ImplicitAdjoint``; set
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` as the bench
CLI does) is timed in the same rounds, forward and backward apart, and the paired ratio
ours (kernel) / Optimistix is printed. Not a test: speeds are measured here, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from wibergian import batch_cholesky
from wibergian.cholesky import cholesky_apply, shifted_cholesky, work_buffer


def spd(b: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(b, n, 2 * n, generator=gen, dtype=torch.float64)
    return a @ a.mT / n + 0.1 * torch.eye(n, dtype=torch.float64)


def columns(h: torch.Tensor) -> torch.Tensor:
    """Left-looking Cholesky with the batch last: ``L[j:, j] = (A[j:, j] - L[j:, :j] L[j, :j]ᵀ)``
    scaled by ``1/L[j, j]``, each step vectorised over ``(rows, B)``."""
    n = h.shape[-1]
    a = h.permute(1, 2, 0).contiguous()  # (n, n, B)
    out = torch.zeros_like(a)
    for j in range(n):
        v = a[j:, j] - (out[j:, :j] * out[j, :j].unsqueeze(0)).sum(1) if j else a[j:, j].clone()
        d = v[0].clamp_min(torch.finfo(h.dtype).tiny).sqrt()
        out[j, j] = d
        out[j + 1:, j] = v[1:] / d
    return out.permute(2, 0, 1)


def blocked(h: torch.Tensor, leaf: int = 16) -> torch.Tensor:
    n = h.shape[-1]
    if n <= leaf:
        return torch.linalg.cholesky_ex(h)[0]
    k = n // 2
    l11 = blocked(h[:, :k, :k], leaf)
    l21 = torch.linalg.solve_triangular(l11.mT, h[:, k:, :k], upper=True, left=False)
    l22 = blocked(torch.baddbmm(h[:, k:, k:], l21, l21.mT, alpha=-1), leaf)
    out = torch.zeros_like(h)
    out[:, :k, :k] = l11
    out[:, k:, :k] = l21
    out[:, k:, k:] = l22
    return out


def unrolled(h: torch.Tensor) -> torch.Tensor:
    n = h.shape[-1]
    a = h.permute(1, 2, 0)
    lo: list[list[torch.Tensor | None]] = [[None] * n for _ in range(n)]
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s = s - lo[j][k] * lo[j][k]  # type: ignore[operator]
        d = s.clamp_min(torch.finfo(h.dtype).tiny).sqrt()
        lo[j][j] = d
        for i in range(j + 1, n):
            v = a[i, j]
            for k in range(j):
                v = v - lo[i][k] * lo[j][k]  # type: ignore[operator]
            lo[i][j] = v / d
    z = torch.zeros_like(a[0, 0])
    return torch.stack([torch.stack([lo[i][j] if j <= i else z for j in range(n)], -1)
                        for i in range(n)], -2)


def _lapack(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    batch_cholesky.ENABLED = False
    try:
        return fn()
    finally:
        batch_cholesky.ENABLED = True


def _ratio_range(new: list[float], old: list[float]) -> str:
    r = sorted(a / b for a, b in zip(new, old, strict=True))
    q = lambda p: r[round(p * (len(r) - 1))]  # noqa: E731
    return f"{statistics.median(r):.3f} (10-90 % {q(0.1):.3f}-{q(0.9):.3f})"


def kernels(ns: list[int], batches: list[int], rounds: int, unrolled_max_n: int) -> None:
    print(f"float64, one thread, generated SPD matrices (seed 0), median of {rounds} "
          "interleaved rounds; ms, ratio to lapack, max |L - L_lapack|")
    for b in batches:
        for n in ns:
            h = spd(b, n)
            shift = torch.rand(b, dtype=h.dtype, generator=torch.Generator().manual_seed(1))
            buf = work_buffer(b, n, h) if n > 2 else None
            g = torch.randn(b, n, dtype=h.dtype, generator=torch.Generator().manual_seed(2))
            chol = shifted_cholesky(h, shift)[0].clone()
            variants: dict[str, Callable[[], torch.Tensor]] = {
                "lapack": lambda h=h, s=shift, o=buf: _lapack(lambda: shifted_cholesky(h, s, o)[0]),
                "kernel": lambda h=h, s=shift, o=buf: shifted_cholesky(h, s, o)[0],
                "columns": lambda h=h: columns(h),
                "blocked": lambda h=h: blocked(h),
                "solve lapack": lambda c=chol, g=g: _lapack(lambda: cholesky_apply(c, g)),
                "solve kernel": lambda c=chol, g=g: cholesky_apply(c, g),
            }
            if n <= unrolled_max_n:
                comp = torch.compile(unrolled, dynamic=False)
                variants["unrolled"] = lambda h=h, comp=comp: comp(h)
            m = h + torch.diag_embed(shift.unsqueeze(-1).expand(b, n))
            ref = torch.linalg.cholesky(m)
            err = {k: float((f() - ref).abs().max()) for k, f in variants.items()
                   if not k.startswith("solve") and k in ("lapack", "kernel")}
            for k in ("columns", "blocked", "unrolled"):  # these factor h itself (no shift)
                if k in variants:
                    err[k] = float((variants[k]() - torch.linalg.cholesky(h)).abs().max())
            x_ref = torch.linalg.solve(m, g)
            for k in ("solve lapack", "solve kernel"):
                err[k] = float((variants[k]() - x_ref).abs().max() / x_ref.abs().max())
            ts: dict[str, list[float]] = {k: [] for k in variants}
            for r in range(rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for k in order:
                    t0 = time.perf_counter()
                    variants[k]()
                    ts[k].append(time.perf_counter() - t0)
            med = {k: 1e3 * statistics.median(v) for k, v in ts.items()}
            base = {k: med["solve lapack" if k.startswith("solve") else "lapack"] for k in med}
            row = "  ".join(f"{k} {med[k]:.3f} ({med[k] / base[k]:.2f}x, {err[k]:.0e})"
                            for k in variants)
            print(f"B={b:6d} n={n:3d}  {row}", flush=True)


def whole(ns: list[int], rounds: int, optimistix: bool = False) -> None:
    from wibergian.bench.user import D_TOL, DenseData, DenseUser

    print(f"D workload (ridge-logistic, generated, seed 0), B = 1000, M = 64, float64, one "
          f"thread, compile=True, forward + backward; {rounds} paired interleaved rounds")
    for n in ns:
        data = DenseData(1000, n)
        user = DenseUser(data, compile=True)
        anchor = None
        if optimistix:
            import jax

            jax.config.update("jax_enable_x64", True)
            from wibergian.bench.methods_jax import dense_methods

            anchor = next(m for m in dense_methods(data.numpy(), D_TOL)
                          if m.info.name == "optimistix Newton")
            anchor.prepare()

        def call(enabled: bool, user=user) -> tuple[torch.Tensor, list[torch.Tensor], object]:
            batch_cholesky.ENABLED = enabled
            try:
                for p in user.params.values():
                    p.grad = None
                loss = user.loss()
                loss.backward()
                return loss.detach(), [p.grad.clone() for p in user.params.values()], None
            finally:
                batch_cholesky.ENABLED = True

        for _ in range(2):
            call(False), call(True)
        lo, go, _ = call(False)
        ln, gn, _ = call(True)
        dg = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                 for a, b in zip(gn, go, strict=True))
        wall: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        ox: dict[str, list[float]] = {"forward": [], "backward": []}
        for r in range(rounds):
            for en in ((False, True) if r % 2 == 0 else (True, False)):
                w0, c0 = time.perf_counter(), time.process_time()
                call(en)
                wall[en].append(time.perf_counter() - w0)
                cpu[en].append(time.process_time() - c0)
            if anchor is not None:
                w0 = time.perf_counter()
                ctx = anchor.forward()
                w1 = time.perf_counter()
                anchor.backward(ctx)
                ox["forward"].append(w1 - w0)
                ox["backward"].append(time.perf_counter() - w1)
        med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in wall}
        print(f"n={n:3d}  wall {med[False][0]:.4f} -> {med[True][0]:.4f} s, kernel/lapack "
              f"{_ratio_range(wall[True], wall[False])}; cpu {med[False][1]:.4f} -> "
              f"{med[True][1]:.4f} s, {_ratio_range(cpu[True], cpu[False])}; loss rel diff "
              f"{abs(float(ln - lo)) / abs(float(lo)):.1e}, gradients rel diff {dg:.1e}",
              flush=True)
        if anchor is not None:
            tot = [a + b for a, b in zip(ox["forward"], ox["backward"], strict=True)]
            print(f"       optimistix forward {statistics.median(ox['forward']):.4f} + backward "
                  f"{statistics.median(ox['backward']):.4f} s; ours (kernel) / optimistix "
                  f"{_ratio_range(wall[True], tot)}, ours (lapack) / optimistix "
                  f"{_ratio_range(wall[False], tot)} (wall)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ns", default=None, help="sizes (default 2,4,8,16,24,32,40; --whole 2,8,32)")
    ap.add_argument("--batches", default="1000,20000")
    ap.add_argument("--rounds", type=int, default=None, help="default 9; --whole 24")
    ap.add_argument("--unrolled-max-n", type=int, default=8)
    ap.add_argument("--whole", action="store_true", help="time whole argmin calls instead")
    ap.add_argument("--optimistix", action="store_true",
                    help="with --whole: time the Optimistix anchor in the same rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if batch_cholesky._kernel("factor", torch.float64) is None:
        raise SystemExit("the kernels could not be built here (no C++ toolchain)")
    if args.whole:  # compile=True: argmin itself turns the kernels on (batch_cholesky.active)
        whole([int(x) for x in (args.ns or "2,8,32").split(",")], args.rounds or 24,
              args.optimistix)
    else:
        with batch_cholesky.active(True):  # as inside an argmin call whose energy is compiled
            kernels([int(x) for x in (args.ns or "2,4,8,16,24,32,40").split(",")],
                    [int(x) for x in args.batches.split(",")], args.rounds or 9,
                    args.unrolled_max_n)


if __name__ == "__main__":
    main()
