"""Figures of the damping study: gradient-norm CCDFs, stability regions, the toy's slopes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .stats import TAIL_FRACTION, ccdf  # noqa: E402

COLORS = {"lambda0": "tab:red", "ridge": "tab:blue", "floor": "tab:green",
          "relative": "tab:purple", "clip0": "tab:orange", "clip_ridge": "tab:cyan"}
LABELS = {"lambda0": "λ = 0", "ridge": "λ = 0.1 ridge", "floor": "λ = 0.1 floor",
          "relative": "relative λ", "clip0": "λ = 0 + clip", "clip_ridge": "λ = 0.1 + clip"}


def plot_ccdf(raw: dict[str, dict[str, np.ndarray]], stats: dict[str, Any], title: str,
              path: Path) -> Path:
    """Two log-log panels (per problem, per batch): P(|g| > x) for each method, with the
    fitted tail exponent α in the legend. ``raw[method][kind]`` are the norms."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("per_problem", "per_batch"), strict=True):
        for method, vals in raw.items():
            v = vals[kind]
            v = v[np.isfinite(v) & (v > 0)]
            if v.size < 2:
                continue
            x, p = ccdf(v)
            tail = stats[method][kind].get("tail", {})
            a = tail.get("alpha")
            lab = LABELS.get(method, method) + (f" (α = {a:.2f})" if a is not None else "")
            ax.loglog(x, p, color=COLORS.get(method), label=lab, lw=1.4)
        ax.set_xlabel("gradient norm |g|")
        ax.set_ylabel("P(|g| > x)")
        ax.set_title(kind.replace("_", " "))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} — α: Hill estimate on the top {100 * TAIL_FRACTION:g} %",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stability(cells: list[dict[str, Any]], methods: list[str], title: str,
                   path: Path) -> Path:
    """One panel per optimiser: lr (columns) x method (rows); colour = fraction of runs that
    diverged or collapsed, text = diverged/collapsed counts."""
    kinds = list(dict.fromkeys(c["optimizer"] for c in cells))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds) + 1, 0.45 * len(methods)
                                                      + 1.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        cs = [c for c in cells if c["optimizer"] == kind]
        grid = np.zeros((len(methods), len(cs)))
        for j, c in enumerate(cs):
            for i, m in enumerate(methods):
                b = c["methods"][m]
                grid[i, j] = (b["diverged"] + b["collapsed"]) / max(b["runs"], 1)
                ax.text(j, i, f"{b['diverged']}/{b['collapsed']}", ha="center", va="center",
                        fontsize=7)
        ax.imshow(grid, cmap="Reds", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(cs)), [f"{c['lr']:g}" for c in cs], fontsize=8)
        ax.set_yticks(range(len(methods)), [LABELS.get(m, m) for m in methods], fontsize=8)
        ax.set_xlabel("learning rate")
        ax.set_title(kind, fontsize=9)
    fig.suptitle(title + "\ncell text: diverged/collapsed runs; colour: fraction of runs that "
                 "failed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_basin(basin: dict[str, Any], path: Path) -> Path:
    """Held-out MSE over σ, and its slope against the mean per-draw implicit gradient."""
    rows = basin["rows"]
    s = np.array([r["sigma"] for r in rows])

    def col(k: str) -> np.ndarray:
        return np.array([r[k] for r in rows])

    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    a.errorbar(s, col("test_mse"), yerr=1.96 * col("test_mse_se"), fmt="o-", color="k",
               capsize=2)
    a.axvline(basin["best_fixed_sigma"], color="gray", ls=":")
    a.set_ylabel(f"held-out MSE ({basin['n_test']} problems)")
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    b.errorbar(s, col("fd_slope"), yerr=1.96 * col("fd_slope_se"), fmt="o-", color="k",
               capsize=2, label="finite-difference slope of held-out MSE")
    b.plot(s, col("fd_slope_continuous"), "--", color="gray",
           label="… from problems whose t* moved continuously")
    b.plot(s, col("fd_slope_jumps"), ":", color="gray",
           label=f"… from problems whose t* jumped (|Δt*| > {basin['jump_threshold']:g})")
    b.errorbar(s, col("mean_grad_lambda0"), yerr=1.96 * col("mean_grad_lambda0_se"), fmt="s-",
               color=COLORS["lambda0"], capsize=2, label="mean implicit gradient, λ = 0")
    b.errorbar(s, col("mean_grad_ridge"), yerr=1.96 * col("mean_grad_ridge_se"), fmt="^-",
               color=COLORS["ridge"], capsize=2, label="mean implicit gradient, λ = 0.1")
    b.axhline(0, color="k", lw=0.6)
    b.set_xlabel("σ")
    b.set_ylabel("d(held-out MSE)/dσ")
    b.set_yscale("symlog", linthresh=1.0)
    b.grid(True, alpha=0.3)
    b.legend(fontsize=7)
    fig.suptitle("MLESAC toy (generated): the implicit gradient misses the jumps of t*; "
                 "error bars 95 %", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
