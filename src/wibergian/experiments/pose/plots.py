"""Figures of the pose experiment (matplotlib, Agg backend, PNG files).

- :func:`plot_reconstructions`: reconstructions (red) against ground truth (blue) for a low,
  a median and a high-error test frame, one column per method (paper Fig. 4).
- :func:`plot_sorted_errors`: per-frame P1 of several methods, frames sorted by the error of a
  reference method (supplementary Fig. 1).
- :func:`plot_joint_weights`: learnt per-joint reprojection weights of each model, x and y
  image components, drawn on the model's mean pose (supplementary Fig. 2).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .skeleton import BONES, LEFT_JOINTS  # noqa: E402


def _draw_skeleton(ax, pose: Tensor, color: str, label: str | None = None) -> None:
    p = pose.detach().double()
    for i, (a, b) in enumerate(BONES):
        ls = "--" if b in LEFT_JOINTS else "-"
        ax.plot([p[a, 0], p[b, 0]], [p[a, 1], p[b, 1]], [p[a, 2], p[b, 2]], ls, color=color,
                lw=1.5, label=label if i == 0 else None)


def plot_reconstructions(preds: dict[str, Tensor], gt: Tensor, errors: list[float],
                         path: Path, title: str) -> Path:
    """preds {method: (N, 17, 3) mm}, gt (N, 17, 3) mm, errors (N,) used to pick 3 frames."""
    order = sorted(range(len(errors)), key=lambda i: errors[i])
    picks = [order[len(order) // 10], order[len(order) // 2], order[-max(len(order) // 20, 1)]]
    names = list(preds)
    fig = plt.figure(figsize=(3.2 * len(names), 3.2 * len(picks)))
    for r, i in enumerate(picks):
        g = gt[i] - gt[i, :1]
        for c, name in enumerate(names):
            ax = fig.add_subplot(len(picks), len(names), r * len(names) + c + 1,
                                 projection="3d")
            p = preds[name][i] - preds[name][i, :1]
            _draw_skeleton(ax, g, "tab:blue", "ground truth")
            _draw_skeleton(ax, p, "tab:red", name)
            err = float((p - g).norm(dim=-1).mean())
            ax.set_title(f"{name}\nframe {i}: P1 {err:.0f} mm", fontsize=8)
            lim = 800
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_zlim(-lim, lim)
            ax.set_xticklabels([])
            ax.set_yticklabels([])
            ax.set_zticklabels([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_sorted_errors(per_frame: dict[str, list[float]], reference: str, path: Path,
                       title: str) -> Path:
    """Per-frame P1 of each method, frames sorted by ``reference``'s error."""
    ref = per_frame[reference]
    order = sorted(range(len(ref)), key=lambda i: ref[i])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, errs in per_frame.items():
        ax.plot([errs[i] for i in order], ".", ms=3, label=name)
    ax.set_xlabel(f"test frame (sorted by {reference} error)")
    ax.set_ylabel("P1 (mm)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_joint_weights(log_joint_w: Tensor, mean: Tensor, path: Path, title: str) -> Path:
    """Heatmaps of ``exp(log_joint_w)`` (K, 17, 2) on the mean poses ``mean`` (K, 17, 3).

    Each model is drawn from the front (x-z plane of its aligned frame); joint colour = weight.
    """
    w = torch.exp(log_joint_w.detach().double())
    k = w.shape[0]
    vmin, vmax = float(w.min()), float(w.max())
    fig, axes = plt.subplots(k, 2, figsize=(5.5, 2.6 * k), squeeze=False)
    fig.subplots_adjust(right=0.8, hspace=0.3)
    sc = None
    for m in range(k):
        p = mean[m].detach().double()
        for c, comp in enumerate(("x", "y")):
            ax = axes[m, c]
            for a, b in BONES:
                ax.plot([p[a, 0], p[b, 0]], [p[a, 2], p[b, 2]], "-", color="0.7", lw=1)
            sc = ax.scatter(p[:, 0], p[:, 2], c=w[m, :, c], cmap="viridis", vmin=vmin,
                            vmax=vmax, s=40, zorder=3)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"model {m}: image {comp} weight", fontsize=8)
    if sc is not None:
        fig.colorbar(sc, cax=fig.add_axes((0.85, 0.25, 0.03, 0.5)), label="weight")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
