"""The MLESAC toy (generated data) in the damping study.

Three measurements, all on problems from ``wibergian.experiments.ransac.data``:

1. ``gradient_distribution``: at fixed σ, the per-problem gradient ``g_b = d(t*_b - mu_b)²/dσ``
   for λ = 0, λ = 0.1 ridge and the floor (in 1-D the floor is ``1 / max(E'', λ)``), the
   per-batch gradient (mean of ``batch`` consecutive g_b), their tails, and the fraction of
   solutions with ``E''(t*) < λ``.
2. ``train_sweep``: every method x optimiser x learning rate x seed, all runs of one method in
   one batched argmin per update (`optim.RunOptimizer`); divergence = |σ| > 1000 or not finite
   (the ransac experiment's rule), collapse = finished with a held-out MSE above the initial
   σ's; evaluation of every finished run on the same held-out problems.
3. ``basin_switching``: on a large held-out set, over a grid of σ, the held-out MSE, its
   central finite-difference slope, and the mean per-draw implicit gradient (λ = 0 and 0.1),
   with the slope split into the part from problems whose t* moved continuously and the part
   from problems whose t* jumped to another mode between σ - h and σ + h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from wibergian.experiments.ransac.data import ToyBatch, test_set, train_batch
from wibergian.experiments.ransac.energy import estimate_mean
from wibergian.progress import phase

from .optim import RunOptimizer
from .regimes import DAMPING, METHOD_SPECS, RELATIVE_FACTOR, imposed
from .stats import paired_difference, tail_report

SIGMA_MAX = 1000.0
#: |Δt*| above this between σ - h and σ + h counts as a jump to another mode (data units; the
#: inlier spread is 4).
JUMP = 1.0


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def solutions(batch: ToyBatch, sigma: float, chunk: int = 5000) -> np.ndarray:
    """``t*_b(σ)`` of every problem (the core's forward: best data point + Newton, λ = 0.1)."""
    out = []
    with torch.no_grad():
        for sl in _chunks(batch.x.shape[0], chunk):
            x = batch.x[sl]
            out.append(estimate_mean(x, torch.full((x.shape[0],), float(sigma), dtype=x.dtype),
                                     DAMPING).numpy())
    return np.concatenate(out)


def implicit_gradients(batch: ToyBatch, t: np.ndarray, sigma: float, damping: float,
                       regulariser: str = "ridge") -> tuple[np.ndarray, np.ndarray]:
    """``(g_b, E''(t*_b))``: the per-problem gradient ``2 (t* - mu) dt*/dσ`` in closed form,

        E'' = Σ_i w_i (2/σ²)(1 - 2 d_i²/σ²),   ∂E'/∂σ = Σ_i 4 d_i w_i / σ³ (d_i²/σ² - 1),
        dt*/dσ = -∂E'/∂σ / (E'' + λ)   (ridge)   or   / max(E'', λ)   (floor),

    with ``d_i = t* - x_i`` and ``w_i = exp(-d_i²/σ²)``. Equal to the core's gradient (tested in
    tests/damping against ``estimate_mean``'s backward) and one forward serves every method.
    """
    x, mu = batch.x.numpy(), batch.mu.numpy()
    d = t[:, None] - x
    w = np.exp(-d * d / sigma**2)
    h = (w * (2 / sigma**2) * (1 - 2 * d * d / sigma**2)).sum(1)
    cross = (4 * d * w / sigma**3 * (d * d / sigma**2 - 1)).sum(1)
    if regulariser == "floor":
        denom = np.maximum(h, damping)
    else:
        denom = h + damping
    with np.errstate(divide="ignore", invalid="ignore"):
        dt = -cross / denom
    return 2 * (t - mu) * dt, h


def gradient_distribution(n: int, sigmas: list[float], batch: int, quiet: bool
                          ) -> dict[str, Any]:
    """Per-problem and per-batch |g| at each σ for λ = 0, ridge, floor (module doc, item 1)."""
    data = test_set(n, 7)  # its own stream seed: not the held-out set of the other items
    out: dict[str, Any] = {"n_problems": n, "batch": batch, "sigmas": sigmas, "at": {}}
    raw: dict[str, dict[str, np.ndarray]] = {}
    with phase("damping toy: gradient distributions", total=len(sigmas) * 3, unit="method",
               quiet=quiet) as p:
        for sg in sigmas:
            block: dict[str, Any] = {}
            t = solutions(data, sg)
            for name in ("lambda0", "ridge", "floor"):
                m = METHOD_SPECS[name]
                g, h = implicit_gradients(data, t, sg, float(m.damping), m.regulariser)
                nb = (g.size // batch) * batch
                gb = np.abs(g[:nb].reshape(-1, batch).mean(1))
                block[name] = {"per_problem": tail_report(np.abs(g)),
                               "per_batch": tail_report(gb)}
                raw[f"{sg:g}/{name}"] = {"per_problem": np.abs(g), "per_batch": gb}
                if name == "lambda0":
                    block["frac_curvature_below_lambda"] = float((h < DAMPING).mean())
                    block["frac_curvature_nonpositive"] = float((h <= 0).mean())
                    block["median_curvature"] = float(np.median(h))
                p.update()
            out["at"][f"{sg:g}"] = block
    out["_raw"] = raw
    return out


@dataclass
class ToySweep:
    """Settings of the toy's training sweep."""

    seeds: int = 10
    steps: int = 3000
    sigma0: float = 2.0
    lrs: dict[str, list[float]] = field(default_factory=lambda: {
        "sgd": [0.01, 0.1, 0.5, 2.0], "momentum": [1e-3, 1e-2, 0.05, 0.2],
        "asgd": [0.01, 0.1, 0.5, 2.0], "adam": [0.01, 0.1, 1.0]})
    methods: list[str] = field(default_factory=lambda: list(METHOD_SPECS))
    n_eval: int = 2000
    n_calibrate: int = 2000   # training problems for the relative λ and the clip threshold


def relative_lambda(sigma0: float, n: int = 2000) -> tuple[float, float]:
    """Scale-relative λ of the toy: ``RELATIVE_FACTOR × median E''(t*)`` at σ0 on training
    problems (seed stream 0, update 1..n), and that median."""
    b = train_batch(list(range(n)), 1)
    _, h = implicit_gradients(b, solutions(b, sigma0), sigma0, DAMPING)
    med = float(np.median(h))
    return RELATIVE_FACTOR * med, med


def clip_threshold(sigma0: float, n: int = 2000) -> float:
    """``CLIP_FACTOR ×`` median |g| at σ0 with λ = 0 on training problems (one per update,
    as the toy trains)."""
    from .regimes import CLIP_FACTOR
    b = train_batch(list(range(n)), 1)
    g, _ = implicit_gradients(b, solutions(b, sigma0), sigma0, 0.0)
    return CLIP_FACTOR * float(np.median(np.abs(g)))


def _mse_many(sigmas: np.ndarray, test: ToyBatch, chunk_runs: int = 40) -> np.ndarray:
    """Held-out MSE of each σ (one batched argmin per group of runs)."""
    out = np.full(sigmas.shape, np.nan)
    n = test.x.shape[0]
    ok = np.flatnonzero(np.isfinite(sigmas))
    for sl in _chunks(ok.size, chunk_runs):
        idx = ok[sl]
        x = test.x.repeat(idx.size, 1)
        s = torch.tensor(np.repeat(sigmas[idx], n), dtype=x.dtype)
        with torch.no_grad():
            t = estimate_mean(x, s, DAMPING)
        err = ((t - test.mu.repeat(idx.size)) ** 2).view(idx.size, n).mean(1)
        out[idx] = err.numpy()
    return out


def train_sweep(cfg: ToySweep, quiet: bool) -> dict[str, Any]:
    """Item 2 on the toy: every method x (optimiser, lr) x seed (module docstring)."""
    combos = [(k, lr) for k, lrs in cfg.lrs.items() for lr in lrs]
    seeds = list(range(cfg.seeds))
    kinds = [k for k, _ in combos for _ in seeds]
    lrs = [lr for _, lr in combos for _ in seeds]
    run_seeds = [s for _ in combos for s in seeds]
    r = len(kinds)
    lam_rel, med_curv = relative_lambda(cfg.sigma0, cfg.n_calibrate)
    clip = clip_threshold(cfg.sigma0, cfg.n_calibrate)
    test = test_set(cfg.n_eval, 0)
    init_mse = float(_mse_many(np.array([cfg.sigma0]), test)[0])
    result: dict[str, Any] = {
        "data": "generated (MLESAC toy)", "seeds": seeds, "steps": cfg.steps,
        "sigma0": cfg.sigma0, "lrs": cfg.lrs, "relative_lambda": lam_rel,
        "median_curvature_at_sigma0": med_curv, "clip": clip, "n_eval": cfg.n_eval,
        "initial_test_mse": init_mse,
        "divergence_rule": f"|sigma| > {SIGMA_MAX:g} or not finite after an update",
        "collapse_rule": "finished, but held-out MSE above the initial sigma's",
        "methods": {},
    }
    finals: dict[str, np.ndarray] = {}
    with phase("damping toy: training sweep", total=len(cfg.methods) * cfg.steps, unit="update",
               quiet=quiet) as p:
        for name in cfg.methods:
            m = METHOD_SPECS[name]
            lam = m.resolve(lam_rel)
            opt = RunOptimizer(kinds, lrs, [clip if m.clip else 0.0] * r,
                               torch.full((r,), cfg.sigma0, dtype=torch.float64))
            alive = torch.ones(r, dtype=torch.bool)
            div_step = np.zeros(r, dtype=int)
            online = np.zeros(r)
            tail_from = int(cfg.steps * 0.8)
            for k in range(1, cfg.steps + 1):
                b = train_batch(run_seeds, k)
                s = torch.where(alive, opt.w, torch.ones_like(opt.w)).requires_grad_(True)
                with imposed(lam, m.regulariser):
                    t = estimate_mean(b.x, s, lam)
                err = (t - b.mu) ** 2
                (err * alive).sum().backward()
                g = torch.nan_to_num(s.grad, nan=math.inf)
                new = opt.step(g, alive)
                if k > tail_from:
                    online += err.detach().numpy()
                bad = alive & (~torch.isfinite(new) | (new.abs() > SIGMA_MAX))
                div_step[bad.numpy()] = k
                alive = alive & ~bad
                p.update()
            w = opt.evaluation_weights().numpy().copy()
            w[~alive.numpy()] = np.nan
            finals[name] = w
            mse = _mse_many(np.abs(w), test)
            online /= max(cfg.steps - tail_from, 1)
            online[~alive.numpy()] = np.nan
            result["methods"][name] = {"lambda": lam, "regulariser": m.regulariser,
                                       "clip": clip if m.clip else None,
                                       "cells": _cells(combos, cfg.seeds, mse, online,
                                                       div_step, init_mse, w)}
    result["paired_vs_ridge"] = _paired(result["methods"], combos)
    return result


def _cells(combos: list[tuple[str, float]], n: int, mse: np.ndarray, online: np.ndarray,
           div_step: np.ndarray, init: float, w: np.ndarray) -> list[dict[str, Any]]:
    cells = []
    for i, (kind, lr) in enumerate(combos):
        sl = slice(i * n, (i + 1) * n)
        e = mse[sl]
        div = int((div_step[sl] > 0).sum())
        fin = e[np.isfinite(e)]
        cells.append({
            "optimizer": kind, "lr": lr, "seeds": n, "diverged": div,
            "collapsed": int((fin > init).sum()),
            "test_mse": [None if not np.isfinite(v) else float(v) for v in e],
            "online_loss": [None if not np.isfinite(v) else float(v) for v in online[sl]],
            "final_sigma": [None if not np.isfinite(v) else float(v) for v in w[sl]],
            "median_test_mse": float(np.median(fin)) if fin.size else None,
        })
    return cells


def _paired(methods: dict[str, Any], combos: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Per (optimiser, lr) and method: paired difference of held-out MSE, method − ridge."""
    rows = []
    if "ridge" not in methods:
        return rows
    for i, (kind, lr) in enumerate(combos):
        ref = methods["ridge"]["cells"][i]["test_mse"]
        row: dict[str, Any] = {"optimizer": kind, "lr": lr}
        for name, block in methods.items():
            if name == "ridge":
                continue
            a = block["cells"][i]["test_mse"]
            row[name] = paired_difference([np.nan if v is None else v for v in a],
                                          [np.nan if v is None else v for v in ref])
        rows.append(row)
    return rows


def basin_switching(n: int, sigmas: list[float], h: float, quiet: bool) -> dict[str, Any]:
    """Item 3: held-out MSE over σ, its finite-difference slope and the mean implicit gradient
    (module docstring). Also the best fixed σ of the grid, with the MSE's standard error."""
    test = test_set(n, 0)
    mu = test.mu.numpy()
    rows = []
    with phase("damping toy: basin switching", total=len(sigmas), unit="sigma",
               quiet=quiet) as p:
        for sg in sigmas:
            t0 = solutions(test, sg)
            g0, _ = implicit_gradients(test, t0, sg, 0.0)
            g1, _ = implicit_gradients(test, t0, sg, DAMPING)
            tm, tp = solutions(test, sg - h), solutions(test, sg + h)
            em, ep = (tm - mu) ** 2, (tp - mu) ** 2
            e0 = (t0 - mu) ** 2
            jump = np.abs(tp - tm) > JUMP
            per = (ep - em) / (2 * h)
            rows.append({
                "sigma": sg, "test_mse": float(e0.mean()),
                "test_mse_se": float(e0.std(ddof=1) / math.sqrt(n)),
                "fd_slope": float(per.mean()),
                "fd_slope_se": float(per.std(ddof=1) / math.sqrt(n)),
                "fd_slope_continuous": float(np.where(jump, 0.0, per).mean()),
                "fd_slope_jumps": float(np.where(jump, per, 0.0).mean()),
                "frac_jumped": float(jump.mean()),
                "mean_grad_lambda0": float(g0.mean()),
                "mean_grad_lambda0_se": float(g0.std(ddof=1) / math.sqrt(n)),
                "mean_grad_ridge": float(g1.mean()),
                "mean_grad_ridge_se": float(g1.std(ddof=1) / math.sqrt(n)),
            })
            p.update()
    best = min(rows, key=lambda r: r["test_mse"])
    return {"n_test": n, "h": h, "jump_threshold": JUMP, "rows": rows,
            "best_fixed_sigma": best["sigma"], "best_fixed_mse": best["test_mse"],
            "best_fixed_mse_se": best["test_mse_se"],
            "data": "generated (MLESAC toy), held-out stream seed 0"}


__all__ = ["ToySweep", "basin_switching", "gradient_distribution", "train_sweep"]
