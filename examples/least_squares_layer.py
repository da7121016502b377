"""Learn a design-matrix regulariser through a rank-deficient least-squares layer.

Many small regression tasks (generated): each has ``m = 8`` training samples of ``p = 20``
features, so the design matrix ``X`` (8 x 20) is rank-deficient and the least-squares fit is
not unique. ``wibergian.lstsq`` returns the minimum-norm solution (pseudo-inverse) and its
derivative (Golub-Pereyra). Fitting in rescaled coordinates,

    β*(s) = s ⊙ argmin_γ ||X diag(s) γ - y||²   (minimum-norm γ),

is the minimum of ``Σ_j β_j² / s_j²`` among the interpolants: the per-feature scales ``s``
are a learnt regulariser (a prior on which features matter). The true weights of every task
are supported on the same 4 features; ``s`` starts at 1 (plain minimum-norm interpolation) and
is learnt by Adam on each task's *held-out* query error, i.e. bilevel learning with the
least-squares problem as the inner level. Prints the held-out error before and after, and the
learnt scales.

    python examples/least_squares_layer.py [--quick] [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import time

import torch

import wibergian

P_FEATURES, M_TRAIN, M_QUERY, SUPPORT = 20, 8, 20, 4


def make_tasks(n: int, g: torch.Generator, noise: float = 0.05) -> dict[str, torch.Tensor]:
    """``n`` generated tasks: ``x`` (n, 8, 20), ``y`` (n, 8), ``xq`` (n, 20, 20), ``yq``."""
    dt = torch.float64
    w = torch.zeros(n, P_FEATURES, dtype=dt)
    w[:, :SUPPORT] = torch.randn(n, SUPPORT, generator=g, dtype=dt)
    x = torch.randn(n, M_TRAIN, P_FEATURES, generator=g, dtype=dt)
    xq = torch.randn(n, M_QUERY, P_FEATURES, generator=g, dtype=dt)
    y = (x @ w[..., None]).squeeze(-1) + noise * torch.randn(n, M_TRAIN, generator=g, dtype=dt)
    yq = (xq @ w[..., None]).squeeze(-1)
    return {"x": x, "y": y, "xq": xq, "yq": yq}


def fit(t: dict[str, torch.Tensor], log_s: torch.Tensor) -> torch.Tensor:
    """``β*`` (n, 20): minimum-norm least squares in the coordinates scaled by ``s``."""
    s = log_s.exp()
    gamma = wibergian.lstsq(t["x"] * s, t["y"], method="pinv")
    return gamma * s


def query_mse(t: dict[str, torch.Tensor], beta: torch.Tensor) -> torch.Tensor:
    return ((t["xq"] @ beta[..., None]).squeeze(-1) - t["yq"]).pow(2).mean()


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and test tasks")
    ap.add_argument("--steps", type=int, default=None, help="Adam updates (default 300, quick 80)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = args.steps or (80 if args.quick else 300)
    g = torch.Generator().manual_seed(args.seed)
    test = make_tasks(500 if args.quick else 2000, torch.Generator().manual_seed(10**6))
    rank = int(torch.linalg.matrix_rank(test["x"][0]))
    log_s = torch.zeros(P_FEATURES, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_s], lr=0.05)
    with torch.no_grad():
        before = float(query_mse(test, fit(test, log_s)))
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        tasks = make_tasks(64, g)
        loss = query_mse(tasks, fit(tasks, log_s))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 5) == 0:
            print(f"step {step:4d}  query mse {loss.item():.4f}")
    with torch.no_grad():
        after = float(query_mse(test, fit(test, log_s)))
    s = log_s.detach().exp()
    res = {"rank": rank, "mse_before": before, "mse_after": after,
           "scale_support": float(s[:SUPPORT].mean()), "scale_other": float(s[SUPPORT:].mean()),
           "seconds": time.perf_counter() - t0}
    print(f"generated tasks; X is {M_TRAIN}x{P_FEATURES} of rank {rank} < {P_FEATURES} unknowns "
          "(rank-deficient: pseudo-inverse path)")
    print(f"held-out query MSE: {before:.4f} -> {after:.4f}  ({res['seconds']:.1f} s)")
    print(f"learnt scales: mean {res['scale_support']:.3f} on the {SUPPORT} true features, "
          f"{res['scale_other']:.3f} on the other {P_FEATURES - SUPPORT}")
    return res


if __name__ == "__main__":
    main()
