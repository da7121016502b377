"""The Newton solver's own overheads, before against after, in one process (issue 14, newton).

    OMP_NUM_THREADS=1 python benchmarks/newton_overheads.py --old <git rev> [--n 8 32]
        [--batch 1000] [--rounds 12]

Runs ``argmin(logistic_energy, zeros, (X, t, log λ, μ))`` forward + backward, every default (the
``D`` workload's user energy: ridge-logistic, generated, seed 0, ``wibergian.bench.user``) with
the library at ``--old`` (``git archive`` of that revision's ``src/wibergian``, imported as a
second package) and with the library on the path, eager and ``compile=True``. Rounds are
paired and interleaved (the order alternates). Prints the medians, the median of the paired
ratios new/old with its 10-90 % range, and whether ``y*``, the parameter gradients and the info
fields (iterations, converged, energy, saddle, forward fallbacks) are bit-identical.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def paired_times(call: Any, rounds: int) -> tuple[dict[str, list[float]], list[float], float,
                                                   float]:
    """Seconds of ``call("old")`` and ``call("new")`` over ``rounds`` interleaved rounds (the
    order alternating), the sorted paired new/old ratios and their 10 % and 90 % quantiles."""
    ts: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(rounds):
        for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
            t0 = time.perf_counter()
            call(k)
            ts[k].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(ts["new"], ts["old"], strict=True))
    return ts, ratios, ratios[int(0.1 * (len(ratios) - 1))], ratios[round(0.9 * (len(ratios) - 1))]

def _old_package(rev: str, into: Path) -> object:
    """Import ``src/wibergian`` at ``rev`` as the package ``wibergian_old``."""
    root = Path(__file__).resolve().parents[1]
    tar = into / "old.tar"
    with tar.open("wb") as f:
        subprocess.run(["git", "-C", str(root), "archive", rev, "src/wibergian"], stdout=f,
                       check=True)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    (into / "src" / "wibergian").rename(into / "wibergian_old")
    sys.path.insert(0, str(into))
    return importlib.import_module("wibergian_old")


def _energy():
    def energy(y, x, t, log_lam, mu):  # a fresh function object: its own compile cache
        z = (x @ y.unsqueeze(-1)).squeeze(-1)
        nll = (torch.nn.functional.softplus(z) - t * z).sum(-1)
        return nll + 0.5 * log_lam.exp() * ((y - mu) ** 2).sum(-1)
    return energy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="git revision of the 'before' library")
    ap.add_argument("--n", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import wibergian
    from wibergian.bench.user import DenseData

    with tempfile.TemporaryDirectory() as tmp:
        mods = {"old": _old_package(args.old, Path(tmp)), "new": wibergian}
        for n in args.n:
            d = DenseData(args.batch, n)

            def run(mod, energy, comp, d=d, n=n):
                ll = d.log_lam.clone().requires_grad_()
                mu = d.mu.clone().requires_grad_()
                y, info = mod.argmin(energy, torch.zeros(args.batch, n, dtype=d.x.dtype),
                                     (d.x, d.t, ll, mu), warn=False, compile=comp,
                                     return_info=True)
                ((y - d.y_true) ** 2).sum(-1).mean().backward()
                return y.detach(), info, ll.grad, mu.grad

            for comp in (False, True):
                energies = {k: _energy() for k in mods}
                o, w = (run(mods[k], energies[k], comp) for k in ("old", "new"))  # + compile
                same = all((a is None and b is None) or torch.equal(a, b) for a, b in [
                    (o[0], w[0]), (o[2], w[2]), (o[3], w[3]),
                    (o[1].iterations, w[1].iterations), (o[1].converged, w[1].converged),
                    (o[1].energy, w[1].energy), (o[1].saddle, w[1].saddle)])
                same = same and o[1].forward_fallbacks == w[1].forward_fallbacks
                ts, ratios, lo, hi = paired_times(
                    lambda k, e=energies, c=comp: run(mods[k], e[k], c), args.rounds)
                old_s, new_s = statistics.median(ts["old"]), statistics.median(ts["new"])
                print(f"n={n} B={args.batch} compile={comp}: identical={same}; old "
                      f"{old_s:.4f} s, new {new_s:.4f} s; new/old median "
                      f"{statistics.median(ratios):.3f} (10-90 % {lo:.3f}-"
                      f"{hi:.3f}, {args.rounds} paired rounds)", flush=True)


if __name__ == "__main__":
    main()
