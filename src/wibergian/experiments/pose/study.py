"""The pose study over seeds with paired confidence intervals (``wibergian pose study``).

For every seed s (which seeds the simulated detector, k-means/PPCA and training alike) and
mode, every variant of :data:`VARIANTS` is built on the same data and evaluated on the same
held-out frames; differences to the baseline (untrained Huber) are paired by seed:

    d_s = P1(variant, s) - P1(untrained Huber, s),   mean(d) ± t_{0.975, n-1} · sd(d) / √n

(the relative gain is mean(d) / mean(P1 baseline)). Baselines are chosen on training data
only: the grid search scores its configurations on training frames, early stopping on a
validation split taken from the *end of the training frames* (never the test frames).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from wibergian.progress import phase
from wibergian.train import TrainConfig

from ..stats import t_half_width
from .augment import augmented_training_data, validation_split
from .datasets import PoseData
from .evaluate import evaluate_model, summary
from .grid_search import grid_search
from .model import ModelConfig
from .train import build_hybrid_model, build_model, train_model

#: variant -> (loss, how): how = "untrained", "refit", "grid", or a recipe dict
#: {"learn": preset (None: untrained), "augment": copies, "anchor": weight, "early": bool,
#:  "models": K, "basis": B, "prior": PPCA source (train.PRIOR_SOURCES)}; K, B and the prior
#: default to the study's (``--models``, ``--basis``, PPCA on the first half of the training
#: frames). The ``*_wide`` variants use one PPCA model (K = 1) of B = 16 components fit on
#: all training poses: chosen on the validation split of the training frames
#: (``pose study --validate``; docs/pose.md), where it halves the error with exact 2D input.
#: the wide pose prior: one PPCA model, 16 components, fit on all training poses.
WIDE: dict[str, object] = {"models": 1, "basis": 16, "prior": "train"}

VARIANTS: dict[str, tuple[str, object]] = {
    "untrained_l2": ("l2", "untrained"),
    "untrained_huber": ("huber", "untrained"),
    "refit_ppca": ("huber", "refit"),
    "trained_l2": ("l2", {"learn": "all"}),
    "trained_huber": ("huber", {"learn": "all"}),
    "huber_basis": ("huber", {"learn": "basis"}),
    "huber_no_basis": ("huber", {"learn": "no_basis"}),
    "grid_search": ("huber", "grid"),
    "huber_anchor": ("huber", {"learn": "all", "anchor": 0.1}),
    "huber_early": ("huber", {"learn": "all", "early": True}),
    "huber_augment": ("huber", {"learn": "all", "augment": 2}),
    "huber_no_basis_augment": ("huber", {"learn": "no_basis", "augment": 2}),
    "untrained_huber_wide": ("huber", {"learn": None, **WIDE}),
    "trained_huber_wide": ("huber", {"learn": "all", **WIDE}),
    "huber_wide_early": ("huber", {"learn": "all", "early": True, **WIDE}),
    "huber_wide_no_basis": ("huber", {"learn": "no_basis", **WIDE}),
    "huber_wide_augment": ("huber", {"learn": "all", "augment": 2, **WIDE}),
    "untrained_huber_hybrid": ("huber", {"learn": None, "hybrid": 16}),
    "trained_huber_hybrid": ("huber", {"learn": "all", "hybrid": 16}),
}

LABELS = {
    "untrained_l2": "untrained, L2",
    "untrained_huber": "untrained, Huber (baseline)",
    "refit_ppca": "PPCA refit on all training poses (Huber)",
    "trained_l2": "trained L2, all parameters",
    "trained_huber": "trained Huber, all parameters",
    "huber_basis": "trained Huber, only μ, e, σ, camera weights",
    "huber_no_basis": "trained Huber, all but μ, e",
    "grid_search": "grid search ρ, δ, T (Huber), matched time",
    "huber_anchor": "trained Huber, all, anchored to init",
    "huber_early": "trained Huber, all, early stopping on validation",
    "huber_augment": "trained Huber, all, augmented ×3",
    "huber_no_basis_augment": "trained Huber, all but μ, e, augmented ×3",
    "untrained_huber_wide": "untrained Huber, wide prior (K 1, B 16, all training poses)",
    "trained_huber_wide": "trained Huber, wide prior, all parameters",
    "huber_wide_early": "trained Huber, wide prior, all, early stopping on validation",
    "huber_wide_no_basis": "trained Huber, wide prior, all but μ, e",
    "huber_wide_augment": "trained Huber, wide prior, all, augmented ×3",
    "untrained_huber_hybrid": "untrained Huber, K models + 1 wide model",
    "trained_huber_hybrid": "trained Huber, K models + 1 wide model, all parameters",
}

BASELINE = "untrained_huber"


@dataclass
class StudySettings:
    """Sizes, budgets and what to run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    modes: tuple[str, ...] = ("multi", "mono")
    variants: tuple[str, ...] = tuple(VARIANTS)
    mono_variants: tuple[str, ...] = ("untrained_l2", "untrained_huber", "refit_ppca",
                                      "trained_l2", "trained_huber", "huber_no_basis",
                                      "huber_augment", "huber_no_basis_augment")
    num_models: int = 3
    num_basis: int = 8
    prior: str = "half"
    damping: float = 0.1
    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-2
    rotation_grid: int = 16
    validation_fraction: float = 0.2
    validation_gap: int = 12
    grid_frames: int = 96
    extra: dict = field(default_factory=dict)

    @classmethod
    def tiny(cls) -> StudySettings:
        """For tests: 2 seeds, few steps, 4-camera only, a handful of variants."""
        return cls(seeds=(0, 1), modes=("multi",), variants=(
            "untrained_l2", "untrained_huber", "refit_ppca", "trained_huber", "grid_search"),
            num_models=2, num_basis=4, steps=3, batch_size=8, rotation_grid=8, grid_frames=16)


def _train_cfg(s: StudySettings, mode: str, seed: int) -> TrainConfig:
    batch = max(s.batch_size // 4, 1) if mode == "mono" else s.batch_size
    return TrainConfig(steps=s.steps, batch_size=batch, lr=s.lr, seed=seed, quiet=True,
                       checkpoint_every=0, log_every=max(s.steps // 10, 1), plot=False)


def run_variant(name: str, data: PoseData, mode: str, s: StudySettings, seed: int,
                huber_seconds: float | None) -> dict:
    """Build (and train or search) one variant on ``data``'s training frames; evaluate on
    its test frames. Returns the summary row."""
    loss, how = VARIANTS[name]
    cfg = ModelConfig(mode=mode, loss=loss, grid=s.rotation_grid, damping=s.damping)
    source = "train" if how == "refit" else s.prior
    k, b = s.num_models, s.num_basis
    hybrid = int(how.get("hybrid", 0)) if isinstance(how, dict) else 0
    if isinstance(how, dict):
        k, b = int(how.get("models", k)), int(how.get("basis", b))
        source = str(how.get("prior", source))
        if how.get("learn") is None:
            how = "untrained"
    if hybrid:
        model = build_hybrid_model(data, cfg, k, b, hybrid, seed=seed)
        k, b, source = k + 1, max(b, hybrid), f"half + wide (train, B {hybrid})"
    else:
        model = build_model(data, cfg, k, b, source=source, seed=seed)
    row: dict = {"loss": loss, "models": k, "basis": b, "prior": source}
    train = data.train()
    if isinstance(how, dict):
        validation = None
        if how.get("early"):
            train, validation = validation_split(train, s.validation_fraction,
                                                 s.validation_gap)
        if how.get("augment"):
            train = augmented_training_data(train, int(how["augment"]), seed)
        model, info = train_model(model, train, _train_cfg(s, mode, seed), None,
                                  learn=str(how["learn"]), anchor=float(how.get("anchor", 0.0)),
                                  validation=validation)
        row.update(train_seconds=info["seconds"], learnable_parameters=info[
            "learnable_parameters"], train_frames=train.num_frames)
        if "best_step" in info:
            row["best_step"] = info["best_step"]
    elif how == "grid":
        budget = huber_seconds if huber_seconds is not None else 30.0
        g = grid_search(model, train, budget, seed=seed, frames=s.grid_frames)
        row.update(search_seconds=g.seconds, configs_tried=len(g.tried),
                   grid_size=g.grid_size, best_multipliers=g.best)
    m = evaluate_model(model, data.test())
    row.update(summary(m))
    # P1 on (up to) 96 of the training frames: the train / held-out gap shows overfitting
    tr = data.train()
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(tr.num_frames, generator=g)[: s.grid_frames].sort().values
    row["train_P1"] = float(evaluate_model(model, tr.subset(pick))["P1"])
    return row


def paired(values: list[float], base: list[float]) -> dict:
    """Mean paired difference, its 95 % t interval and the relative change to the base."""
    d = [v - b for v, b in zip(values, base, strict=True)]
    n = len(d)
    mean = statistics.fmean(d)
    half = t_half_width(d)
    return {"diff": mean, "ci": half, "rel": mean / statistics.fmean(base), "n": n}



def run_study(make_data: Callable[[int], PoseData], s: StudySettings,
              quiet: bool = False, out: Path | None = None) -> dict:
    """Every variant of every mode for every seed. ``make_data(seed)`` builds the data with
    that detector seed. Results are written to ``out`` (JSON) after every seed."""
    results: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v
                                  for k, v in asdict(s).items()}, "runs": {}}
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        jobs = [(seed, mode, v) for seed in s.seeds for mode in s.modes
                for v in (s.variants if mode == "multi" else
                          [x for x in s.variants if x in s.mono_variants])]
        with phase("pose study", total=len(jobs), unit="variant", quiet=quiet) as p:
            for seed in s.seeds:
                data = make_data(seed)
                results["data"] = {"source": data.source, "generated_2d": bool(data.generated),
                                   "train_frames": len(data.train_idx),
                                   "test_frames": len(data.test_idx)}
                for mode in s.modes:
                    huber_seconds = None
                    for name, jseed, jmode in [(v, js, jm) for js, jm, v in jobs]:
                        if jseed != seed or jmode != mode:
                            continue
                        t0 = time.perf_counter()
                        row = run_variant(name, data, mode, s, seed, huber_seconds)
                        row["seconds_total"] = time.perf_counter() - t0
                        if name == "trained_huber":
                            huber_seconds = row["train_seconds"]
                        results["runs"].setdefault(mode, {}).setdefault(name, {})[
                            str(seed)] = row
                        p.update(1)
                        p.note(f"seed {seed} {mode} {name}: P1 {row['P1']:.1f} mm "
                               f"(median {row['P1_median']:.1f})")
                if out is not None:
                    results["table"] = aggregate(results)
                    Path(out).write_text(json.dumps(results, indent=2))
    finally:
        torch.set_num_threads(prev)
    results["table"] = aggregate(results)
    return results


def aggregate(results: dict) -> dict:
    """Per mode and variant: mean P1 and the paired difference to the baseline over the seeds
    both have."""
    table: dict = {}
    for mode, runs in results["runs"].items():
        base = runs.get(BASELINE, {})
        for name, per_seed in runs.items():
            seeds = sorted(set(per_seed) & set(base), key=int)
            rows = [per_seed[k] for k in seeds]
            if not rows:
                continue
            entry = {
                "P1": statistics.fmean(r["P1"] for r in rows),
                "P1_median": statistics.fmean(r["P1_median"] for r in rows),
                "P1_p90": statistics.fmean(r["P1_p90"] for r in rows),
                "over_500mm": statistics.fmean(r["over_500mm"] for r in rows),
                "train_P1": statistics.fmean(r.get("train_P1", float("nan")) for r in rows),
                "samples": rows[0]["frames"], "seeds": [int(k) for k in seeds],
                "paired_vs_baseline": paired([r["P1"] for r in rows],
                                             [base[k]["P1"] for k in seeds]),
                "seconds": statistics.fmean(r.get("train_seconds", r.get("search_seconds", 0.0))
                                            for r in rows),
            }
            if name == "grid_search":
                entry["configs_tried"] = statistics.fmean(r["configs_tried"] for r in rows)
            table.setdefault(mode, {})[name] = entry
    return table


def markdown(results: dict) -> str:
    """The study table: mean P1, median, p90, outliers, paired difference to the baseline."""
    lines = ["| mode | variant | P1 mean (mm) | P1 median | P1 p90 | > 500 mm | Δ vs untrained "
             "Huber (95 % CI, paired) | rel. | P1 on training frames | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, rows in results["table"].items():
        for name, r in rows.items():
            pv = r["paired_vs_baseline"]
            ci = "" if math.isnan(pv["ci"]) else f" ± {pv['ci']:.1f}"
            delta = "—" if name == BASELINE else f"{pv['diff']:+.1f}{ci}"
            rel = "—" if name == BASELINE else f"{100 * pv['rel']:+.1f} %"
            extra = f" ({r['configs_tried']:.0f} configs)" if "configs_tried" in r else ""
            lines.append(
                f"| {'4-camera' if mode == 'multi' else 'monocular'} | "
                f"{LABELS.get(name, name)} | {r['P1']:.1f} | {r['P1_median']:.1f} | "
                f"{r['P1_p90']:.1f} | {r['over_500mm']:.1f} | {delta} | {rel} | "
                f"{r.get('train_P1', float('nan')):.1f} | {r['seconds']:.0f}{extra} |")
    return "\n".join(lines)
