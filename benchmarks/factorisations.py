"""Cholesky factorisations per ``argmin`` call and its time, before against after, one process.

    OMP_NUM_THREADS=1 python benchmarks/factorisations.py --old <git rev> [--workloads D8 D32 W1]
        [--batch 1000] [--rounds 12] [--no-compile]

One forward + backward of the user's-energy rows with every default (``wibergian.bench.user``;
**generated** data, seed 0): ``D8``/``D32`` = ``argmin(logistic_energy, zeros, (X, t, log λ,
μ))`` with ``n = 8``/``32``, ``W1`` = ``argmin(w1_energy, ..., candidates=the K wells)`` with its
loss; eager and ``compile=True``. The library at ``--old`` (``git archive`` of that revision's
``src/wibergian``, imported as ``wibergian_old``) runs beside the one on the path. Prints, per
workload and mode: the matrices factored (every call of the package's ``cholesky`` /
``shifted_cholesky``, batch rows summed) and the calls, whether ``y*``, the gradients and the
info fields are bit-identical, and the median seconds per call with the median of the paired
ratios new/old and its 10-90 % range (rounds interleaved, the order alternating).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from newton_overheads import _old_package, paired_times  # noqa: E402


def _count_factorisations(pkg: Any) -> collections.Counter:
    """Wrap the package's Cholesky entry points wherever a module imported them; the counter
    gets ``matrices`` (rows factored) and ``calls``."""
    counts: collections.Counter = collections.Counter()
    chol_mod = sys.modules[pkg.__name__ + ".cholesky"]
    entries = {name: getattr(chol_mod, name) for name in ("cholesky", "shifted_cholesky")
               if hasattr(chol_mod, name)}
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith(pkg.__name__ + ".") or mod is chol_mod:
            continue
        for name, real in entries.items():
            if getattr(mod, name, None) is real:
                def counted(m, *a, _real=real, **k):
                    counts["matrices"] += m.shape[0]
                    counts["calls"] += 1
                    return _real(m, *a, **k)
                setattr(mod, name, counted)
    return counts


def _workload(name: str, batch: int):
    """``(make_energy, data, run)`` for one workload; ``run(pkg, energy, compile)`` returns
    ``(y*, info, gradients)``."""
    from wibergian.bench.user import DenseData, logistic_energy
    from wibergian.bench.workloads import make_w1, w1_energy, w1_loss

    if name.startswith("D"):
        n = int(name[1:])
        d = DenseData(batch, n)

        def make_energy():
            return lambda *a: logistic_energy(*a)  # a fresh object: its own compile cache

        def run(pkg, energy, comp):
            ll, mu = d.log_lam.clone().requires_grad_(), d.mu.clone().requires_grad_()
            y, info = pkg.argmin(energy, torch.zeros(batch, n, dtype=d.x.dtype),
                                 (d.x, d.t, ll, mu), warn=False, compile=comp, return_info=True)
            ((y - d.y_true) ** 2).sum(-1).mean().backward()
            return y.detach(), info, (ll.grad, mu.grad)
        return make_energy, run
    w = make_w1(batch)
    cands = torch.stack([w.a, w.c], -1)

    def make_energy():
        return lambda *a: w1_energy(*a)

    def run(pkg, energy, comp):
        ps = [p.clone().requires_grad_() for p in (w.m, w.s0, w.s1)]
        y, info = pkg.argmin(energy, cands[:, 0], (w.a, w.c, *ps), candidates=cands,
                             warn=False, compile=comp, return_info=True)
        w1_loss(y, w.g).backward()
        return y.detach(), info, tuple(p.grad for p in ps)
    return make_energy, run


def _identical(o: tuple, w: tuple) -> bool:
    pairs = [(o[0], w[0]), *zip(o[2], w[2], strict=True)]
    pairs += [(getattr(o[1], f), getattr(w[1], f)) for f in
              ("iterations", "converged", "energy", "saddle", "final_step_accepted")]
    same = all((a is None and b is None) or torch.equal(a, b) for a, b in pairs)
    return same and o[1].forward_fallbacks == w[1].forward_fallbacks and (
        o[1].backward.get("backward_fallbacks") == w[1].backward.get("backward_fallbacks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="git revision of the 'before' library")
    ap.add_argument("--workloads", nargs="+", default=["D8", "D32", "W1"])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--no-compile", action="store_true", help="eager rows only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import wibergian

    with tempfile.TemporaryDirectory() as tmp:
        pkgs = {"old": _old_package(args.old, Path(tmp)), "new": wibergian}
        counters = {k: _count_factorisations(p) for k, p in pkgs.items()}
        for name in args.workloads:
            make_energy, run = _workload(name, args.batch)
            for comp in (False,) if args.no_compile else (False, True):
                energies = {k: make_energy() for k in pkgs}
                for k in pkgs:  # warm-up (and compile)
                    run(pkgs[k], energies[k], comp)
                out, counts = {}, {}
                for k in pkgs:
                    counters[k].clear()
                    out[k] = run(pkgs[k], energies[k], comp)
                    counts[k] = dict(counters[k])
                ts, ratios, lo, hi = paired_times(
                    lambda k, f=run, e=energies, c=comp: f(pkgs[k], e[k], c), args.rounds)
                print(f"{name} B={args.batch} compile={comp}: factorised matrices (calls) old "
                      f"{counts['old'].get('matrices', 0)} ({counts['old'].get('calls', 0)}), new "
                      f"{counts['new'].get('matrices', 0)} ({counts['new'].get('calls', 0)}); "
                      f"identical={_identical(out['old'], out['new'])}; old "
                      f"{statistics.median(ts['old']):.4f} s, new "
                      f"{statistics.median(ts['new']):.4f} s; new/old median "
                      f"{statistics.median(ratios):.3f} (10-90 % {lo:.3f}-"
                      f"{hi:.3f}, {args.rounds} paired rounds)", flush=True)


if __name__ == "__main__":
    main()
