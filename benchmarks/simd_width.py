"""The library's compiled kernels at Inductor's default vector width and at 256 bits.

``vector_width.SIMD_BITS`` chooses the SIMD width of the kernels ``compile=True`` (and the
default ``compile="auto"`` after its switch) builds from a user's energy. This script builds the
same kernels twice in one process, once with Inductor's own choice (``None``: 512-bit
``VectorizedN`` tiles on an AVX-512 CPU) and once with what ships (``"auto"``: 256 bits where
Inductor would go wider), and times them interleaved (each round calls both, in alternating
order, ``benchmarks/paired.py``), one thread:

- ``vgh``: the compiled value-gradient-Hessian of the dense ridge-logistic energy ``D``
  (``bench.user.logistic_energy``, ``X`` ``(B, 64, n)``, generated, seed 0), ``B = 1000``;
- ``whole``: one ``argmin(compile=True)`` forward + backward (``bench.user.DenseUser``) on ``D``
  at each ``n``, and on ``W1`` (``bench.user.W1User``, multi-start over the wells, generated,
  seed 0) at ``B = 1000``; both objects' kernels are built (untimed) before the rounds.

Printed: median seconds of each, the median and 10-90 % range of the per-round ratios
``auto / default`` (``< 1``: the narrower vectors are faster), and the largest difference of
the results (0 when bit-identical). Not a test: speeds are measured here, never asserted.

    OMP_NUM_THREADS=1 python benchmarks/simd_width.py [--ns 2,8,16,32,128] [--rounds 15]
        [--kinds vgh,whole] [--dtype float64|float32] [--no-w1]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from paired import paired_rounds

from wibergian import vector_width
from wibergian.compiled import CompiledEnergy


def _report(name: str, ts: dict[str, list[float]], ratio: float, lo: float, hi: float,
            diff: float, rounds: int) -> None:
    print(f"{name}: default {statistics.median(ts['default']):.4f} s, 256-bit "
          f"{statistics.median(ts['auto']):.4f} s; 256-bit/default {ratio:.3f} (10-90 % "
          f"{lo:.3f}-{hi:.3f}, {rounds} rounds); max |difference| {diff:.1e}", flush=True)




def vgh(n: int, rounds: int, dtype: torch.dtype) -> None:
    from wibergian.bench.user import DenseData, logistic_energy

    d = DenseData(1000, n, dtype=dtype)
    y = 0.1 * torch.randn(1000, n, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ps = (d.x, d.t, d.log_lam, d.mu)
    kernels = {}
    outs = {}
    for key, setting in (("default", None), ("auto", "auto")):
        vector_width.SIMD_BITS = setting
        kernels[key] = CompiledEnergy(logistic_energy)
        outs[key] = kernels[key].value_gradient_hessian(y, *ps)
    vector_width.SIMD_BITS = "auto"
    diff = max(float((a - b).abs().max()) for a, b in zip(outs["default"], outs["auto"],
                                                          strict=True))
    calls = {k: (lambda ce=ce: ce.value_gradient_hessian(y, *ps)) for k, ce in kernels.items()}
    ts, ratio, lo, hi = paired_rounds(calls, rounds, "default", "auto")
    _report(f"vgh  D n = {n:3d}, {dtype}", ts, ratio, lo, hi, diff, rounds)


def whole(name: str, make, rounds: int) -> None:
    methods, grads = {}, {}
    for key, setting in (("default", None), ("auto", "auto")):
        vector_width.SIMD_BITS = setting
        methods[key] = make()
        grads[key] = methods[key].gradient()
        methods[key].gradient()

    def call(key: str):
        vector_width.SIMD_BITS = None if key == "default" else "auto"
        return methods[key].gradient()

    diff = max(float(abs(grads["default"][k] - grads["auto"][k]).max()) for k in grads["auto"])
    calls = {k: (lambda k=k: call(k)) for k in methods}
    ts, ratio, lo, hi = paired_rounds(calls, rounds, "default", "auto")
    vector_width.SIMD_BITS = "auto"
    _report(f"whole {name}", ts, ratio, lo, hi, diff, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="2,8,16,32,128")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--kinds", default="vgh,whole")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--no-w1", action="store_true", help="skip the W1 whole-call comparison")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    ns = [int(v) for v in args.ns.split(",") if v]
    kinds = set(args.kinds.split(","))
    print(f"Inductor's default ISA here: {_default_isa()}; 'auto' compiles at "
          f"{_auto_bits()} bits", flush=True)
    from wibergian.bench.user import DenseData, DenseUser, W1User
    from wibergian.bench.w1 import make_w1

    if "vgh" in kinds:
        for n in ns:
            vgh(n, args.rounds, dtype)
    if "whole" in kinds:
        for n in ns:
            data = DenseData(1000, n, dtype=dtype)
            whole(f"D n = {n:3d}, B = 1000, {dtype}", lambda data=data: DenseUser(
                data, compile=True), max(3, args.rounds if n < 128 else args.rounds // 3))
        if not args.no_w1:
            w1 = make_w1(1000, dtype=dtype)
            whole(f"W1 B = 1000, {dtype}", lambda: W1User(w1, compile=True), args.rounds)


def _default_isa() -> str:
    from torch._inductor import cpu_vec_isa

    return str(cpu_vec_isa.pick_vec_isa()) or "none"


def _auto_bits() -> str:
    vector_width._choice.clear()
    bits = vector_width.simd_bits(torch.device("cpu"))
    return "Inductor's default" if bits is None else str(bits)


if __name__ == "__main__":
    main()
