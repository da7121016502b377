"""Figures of the drift study and of the end-to-end study (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


def plot_drift(res: dict[str, Any], path: Path) -> Path:
    """Three panels: damped-vs-exact error against ``h_min`` per λ (wells and MLESAC), and the
    two-well bifurcation sweep (exact, damped, finite differences)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sets = [("wells", res["wells"])]
    ml = res["mlesac"]
    key = "4.0" if "4.0" in ml else next(iter(ml))
    sets.append((f"MLESAC σ={key}", ml[key]))
    for ax, (name, r) in zip(axes[:2], sets, strict=True):
        h = r["per_problem_h_min"]
        hs = sorted(x for x in h if x > 0)
        for i, (lam, v) in enumerate(r["damped_vs_exact"].items()):
            col = f"C{i}"
            ax.plot(h, v["per_problem_rel_err"], ".", ms=2, alpha=0.4, color=col)
            ax.plot(hs, [float(lam) / (x + float(lam)) for x in hs], "-", lw=1, color=col,
                    label=f"λ={lam} (line: λ/(h_min+λ))")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("smallest Hessian eigenvalue h_min at y*")
        ax.set_ylabel("‖J_λ − J_exact‖ / ‖J_exact‖ per problem")
        ax.set_title(f"{name} (generated)")
        ax.legend(fontsize=7)
    b = res["bifurcation"]
    ax = axes[2]
    ax.plot(b["s"], b["exact"], label="exact implicit (λ=0)")
    ax.plot(b["s"], b["damped"], label=f"damped (λ={b['lambda']})")
    ax.plot(b["s"], b["fd"], ".", ms=3, label="finite differences")
    ax2 = ax.twinx()
    ax2.plot(b["s"], b["h_min"], "k:", lw=1, label="h_min")
    ax2.set_ylabel("h_min (dotted)")
    ax.set_ylim(-5, 1.5)
    ax.set_xlabel("separation s of the two wells")
    ax.set_ylabel("dy*_0 / ds")
    ax.set_title("two wells: the minimum flattens, then splits")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_endtoend(records: list[dict[str, Any]], path: Path) -> Path:
    """Held-out median parameter error per method and seed."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, m in enumerate(methods):
        vals = [r["median"] for r in records if r["method"] == m]
        ax.plot([i] * len(vals), vals, "o", alpha=0.7)
    ax.set_xticks(range(len(methods)), methods, rotation=15)
    ax.set_ylabel("held-out median ‖θ* − θ_true‖")
    ax.set_title("robust line fitting, generated data (one dot per seed)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grad_norms(out_dir: Path, path: Path,
                    methods: tuple[str, ...] = ("e2e", "e2e_undamped")) -> Path | None:
    """Gradient norm per update (from each run folder's metrics.jsonl), one line per seed."""
    import json

    runs = sorted((out_dir / "runs").glob("*_seed*"))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    drawn = False
    for i, m in enumerate(methods):
        for rd in runs:
            if rd.name.rsplit("_seed", 1)[0] != m or not (rd / "metrics.jsonl").is_file():
                continue
            recs = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()
                    if line.strip()]
            recs = [r for r in recs if r.get("split") == "train" and "grad_norm" in r]
            ax.plot([r["step"] for r in recs], [r["grad_norm"] for r in recs], color=f"C{i}",
                    lw=0.7, alpha=0.7, label=m if not any(
                        t.get_label() == m for t in ax.get_lines()) else None)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("gradient norm (before clipping)")
    ax.set_title("training through the argmin: λ = 0.1 (e2e) vs λ = 0 (generated data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
