"""Figures in the style of the paper's Fig. 2 (σ over the iterations; the energy of one sample)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .energy import rbf_energy  # noqa: E402
from .train import MethodRun  # noqa: E402

COLOURS = {"damped": "tab:green", "undamped": "tab:purple"}


def plot_sigma(runs: dict[str, MethodRun], path: Path, sigma_max: float) -> Path:
    """|σ| against the update for every seed of each method (log scale), blow-ups marked ×.

    The energy depends on σ² only, so |σ| is the kernel width whatever the sign.
    """
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), sharey=True,
                             squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items(), strict=True):
        steps = np.arange(run.sigma.shape[0])
        c = COLOURS.get(name, "tab:blue")
        for j in range(run.sigma.shape[1]):
            ax.plot(steps, np.abs(run.sigma[:, j]), color=c, lw=0.7, alpha=0.6)
            d = run.diverged_step[j]
            if d is not None:
                prev = np.abs(run.sigma[d - 1, j])
                ax.plot([d], [min(max(prev, 1e-3), sigma_max)], "x", color="red", ms=9, mew=2)
        ax.axhline(sigma_max, color="red", ls=":", lw=1, label=f"blow-up threshold {sigma_max:g}")
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_title(f"{name} (λ = {run.damping:g}): {run.n_diverged} of "
                     f"{run.sigma.shape[1]} diverged")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left", fontsize=8)
    axes[0][0].set_ylabel("|σ| (kernel width)")
    fig.suptitle("Learning σ on generated MLESAC problems (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_energy(x: torch.Tensor, mu: float, n_inliers: int, sigmas: dict[str, float | None],
                minimisers: dict[str, float], path: Path) -> Path:
    """E(t; σ) of one generated sample for each method's learned σ, minimiser marked +.

    Args:
        x: ``(N,)`` points, the first ``n_inliers`` are inliers.
        mu: the inlier mean (target).
        sigmas: method -> σ (None: the method diverged, panel says so).
        minimisers: method -> t* for that σ.
    """
    names = list(sigmas)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.6), squeeze=False)
    xs = x.detach().double()
    grid = torch.linspace(float(xs.min()) - 5, float(xs.max()) + 5, 1500, dtype=torch.float64)
    for ax, name in zip(axes[0], names, strict=True):
        s = sigmas[name]
        ax.plot(xs[n_inliers:], np.zeros(len(xs) - n_inliers), "|", color="red", ms=10,
                label="outliers")
        ax.plot(xs[:n_inliers], np.zeros(n_inliers), "|", color="blue", ms=14, mew=2,
                label="inliers")
        ax.axvline(mu, color="blue", ls=":", lw=1, label="inlier mean")
        if s is None:
            ax.set_title(f"{name}: diverged, no σ")
        else:
            e = rbf_energy(grid[:, None], xs[None, :].expand(len(grid), -1),
                           torch.full((len(grid), 1), float(s), dtype=torch.float64))
            ax.plot(grid, e, color=COLOURS.get(name, "k"), lw=1.2)
            t = minimisers[name]
            et = float(rbf_energy(torch.tensor([[t]], dtype=torch.float64), xs[None],
                                  torch.tensor([[float(s)]], dtype=torch.float64))[0])
            ax.plot([t], [et], "+", color="green", ms=16, mew=3, label="minimiser t*")
            ax.set_title(f"{name}: σ = {abs(s):.3g}, t* - mean = {t - mu:+.2f}")
        ax.set_xlabel("t")
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("E(t; σ)")
    fig.suptitle("Energy of one generated held-out sample with each method's learned σ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(rows: list[dict], path: Path) -> Path:
    """Diverged fraction per (lr, momentum) setting for both methods (bar chart)."""
    labels = [f"lr={r['lr']:g}\nm={r['momentum']:g}" for r in rows]
    pos = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 3.6))
    for off, name in ((-0.2, "damped"), (0.2, "undamped")):
        frac = [r[name]["diverged"] / r["seeds"] for r in rows]
        ax.bar(pos + off, frac, width=0.4, color=COLOURS[name], label=name)
    ax.set_xticks(pos, labels, fontsize=7)
    ax.set_ylabel("fraction of seeds diverged")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("Sweep over step size and momentum (generated data)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
