"""Figures: energy landscape before/after training (paper Fig. 3), learnt per-tracker weights."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .data import Frames, single_tracker_iou  # noqa: E402
from .energy import FusionModel, corner_energy  # noqa: E402
from .geometry import iou  # noqa: E402
from .train import predict  # noqa: E402


def pick_frame(init: FusionModel, trained: FusionModel, test: Frames) -> int:
    """The test frame where training raised the fused IoU most (stated in the caption)."""
    gain = iou(predict(trained, test), test.gt) - iou(predict(init, test), test.gt)
    return int(gain.argmax())


@torch.no_grad()
def _landscape(model: FusionModel, one: Frames, corner: int, grid: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy of ``corner`` on ``grid`` (G, G, 2) normalised coords, and the minimiser (2,)."""
    w = model.wells(*one.inputs())
    y, _, _ = model(*one.inputs())
    g = grid.reshape(-1, 2)
    e = corner_energy(g, w["centres"][0, corner].expand(len(g), -1, -1),
                      w["weights"].expand(len(g), -1), w["inv_var"][corner].expand(len(g), -1, -1))
    return e.reshape(grid.shape[:2]), y[0, corner]


@torch.no_grad()
def plot_landscape(init: FusionModel, trained: FusionModel, test: Frames, index: int,
                   path: Path, label: str = "generated data") -> Path:
    """Top-left-corner energy of one frame, before and after training (pixels)."""
    one = test.subset(torch.tensor([index]))
    w = init.wells(*one.inputs())
    c, z = w["centre"][0], w["scale"][0]
    valid = one.valid[0]
    pts = w["centres"][0, 0][valid]
    gt = (one.gt[0, :2] - c) / z
    lo = torch.minimum(pts.min(0).values, gt) - 0.5
    hi = torch.maximum(pts.max(0).values, gt) + 0.5
    lo, hi = torch.maximum(lo, gt - 4), torch.minimum(hi, gt + 4)
    n = 160
    xs = torch.linspace(float(lo[0]), float(hi[0]), n, dtype=pts.dtype)
    ys = torch.linspace(float(lo[1]), float(hi[1]), n, dtype=pts.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)

    def px(u: torch.Tensor) -> torch.Tensor:
        return u * z + c

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, model, title in ((axes[0], init, "before training"), (axes[1], trained,
                                                                  "after training")):
        e, ymin = _landscape(model, one, 0, grid)
        gp = px(grid)
        cs = ax.contourf(gp[..., 0].numpy(), gp[..., 1].numpy(), e.numpy(), levels=30,
                         cmap="viridis")
        fig.colorbar(cs, ax=ax, shrink=0.85, label="E (top-left corner)")
        tw = model.wells(*one.inputs())["centres"][0, 0][valid]
        ax.scatter(*px(tw).T.numpy(), s=10, c="tab:blue", edgecolors="white", linewidths=0.4,
                   label="tracker corners (scale-corrected)")
        g = px(gt)
        ax.scatter([float(g[0])], [float(g[1])], marker="*", s=220, c="red",
                   edgecolors="k", label="ground truth")
        m = px(ymin)
        ax.scatter([float(m[0])], [float(m[1])], marker="X", s=120, c="yellow",
                   edgecolors="k", label="minimiser")
        ax.set_xlim(float(gp[..., 0].min()), float(gp[..., 0].max()))
        ax.set_ylim(float(gp[..., 1].max()), float(gp[..., 1].min()))  # image y points down
        ax.set_title(f"{title}")
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    axes[0].legend(loc="lower left", fontsize=7)
    seq = test.names[int(one.seq[0])]
    fig.suptitle(f"Fusion energy, top-left corner: {seq} frame {int(one.frame[0])} "
                 f"({label}; test frame with the largest IoU gain)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_weights(model: FusionModel, train: Frames, path: Path,
                 truth_file: Path | None = None, label: str = "generated data") -> Path:
    """Learnt per-tracker mass ``s_t``, well widths and box-scale corrections."""
    single = single_tracker_iou(train)
    order = torch.argsort(single, descending=True)
    s = (torch.exp(model.log_mass) / model.n_trackers).detach()
    sig = torch.exp(model.log_sigma).detach()
    kappa = torch.exp(model.log_box_scale).detach()
    truth = None
    if truth_file is not None and Path(truth_file).is_file():
        info = json.loads(Path(truth_file).read_text())["trackers"]
        by_name = {t["name"]: t for t in info}
        if all(n in by_name for n in train.trackers):
            truth = torch.tensor([by_name[n]["size_bias"] for n in train.trackers])
    ncol = 3 if truth is not None else 2
    fig, axes = plt.subplots(1, ncol, figsize=(5 * ncol, 4))
    ax = axes[0]
    ax.scatter(single.numpy(), s.numpy(), s=14)
    ax.set_xlabel("single-tracker IoU (training frames)")
    ax.set_ylabel("learnt mass s_t")
    ax.set_yscale("log")
    ax.set_title("learnt weight vs tracker quality")
    ax = axes[1]
    r = torch.arange(len(order))
    for k, (lab, mk) in enumerate((("σ_x top-left", "o"), ("σ_y top-left", "s"))):
        ax.scatter(r.numpy(), sig[0, order, k].numpy(), s=10, marker=mk, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("tracker rank (by training IoU)")
    ax.set_ylabel("learnt well width σ (box sizes)")
    ax.legend(fontsize=7)
    ax.set_title("learnt well widths (init 1.0)")
    if truth is not None:
        ax = axes[2]
        g = kappa.prod(-1).sqrt()
        ax.scatter(torch.exp(-truth).numpy(), g.numpy(), s=12)
        lim = [float(min(g.min(), torch.exp(-truth).min())),
               float(max(g.max(), torch.exp(-truth).max()))]
        ax.plot(lim, lim, "k--", lw=0.8, label="ideal correction")
        ax.set_xlabel("exp(-size bias) of the generated tracker")
        ax.set_ylabel("learnt scale correction sqrt(κ_w κ_h)")
        ax.legend(fontsize=7)
        ax.set_title("size-bias correction")
    fig.suptitle(f"Learnt per-tracker parameters ({label})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
