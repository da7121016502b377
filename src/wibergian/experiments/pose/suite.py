"""The pose experiment end to end: every variant of the results table, on one dataset.

Variants (each evaluated on the held-out test frames, P1/P2/P3 in mm):

- ``untrained``: PPCA on the source poses, hand-set scalars, L2 (``untrained_huber``: the same
  with the pseudo-Huber loss);
- ``refit_ppca``: the PPCA simply refit on all training poses (reviewer 3's baseline), L2;
- ``trained_l2`` / ``trained_huber``: every parameter learnt through the argmin;
- ``learn_basis``: only μ, e, σ and the camera weights learnt (L2);
- ``grid_search``: the hand-tuned scalars (ρ, δ, T) of the Huber model searched on the
  training frames for as long as ``trained_huber`` took to train (multi-camera only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wibergian.progress import phase
from wibergian.train import TrainConfig

from .datasets import PoseData
from .evaluate import evaluate_model, predict, summary
from .grid_search import grid_search
from .model import ModelConfig, PoseModel
from .train import build_model, train_model


@dataclass
class SuiteSettings:
    """Sizes and budgets of a suite run."""

    num_models: int = 6
    num_basis: int = 12
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-2
    grid: int = 24
    modes: tuple[str, ...] = ("multi", "mono")
    mono_variants: tuple[str, ...] = ("untrained", "refit_ppca", "trained_l2", "trained_huber",
                                      "learn_basis")
    seed: int = 0

    @classmethod
    def quick(cls) -> SuiteSettings:
        return cls(num_models=3, num_basis=8, steps=40, batch_size=16, grid=16,
                   mono_variants=("untrained", "refit_ppca", "trained_l2"))


def _train_cfg(s: SuiteSettings, mode: str) -> TrainConfig:
    # monocular: each frame gives C liftings; keep the liftings per step equal across modes
    batch = max(s.batch_size // 4, 1) if mode == "mono" else s.batch_size
    return TrainConfig(steps=s.steps, batch_size=batch, lr=s.lr, seed=s.seed,
                       quiet=True, checkpoint_every=0, log_every=max(s.steps // 10, 1),
                       plot=False)


def run_suite(data: PoseData, s: SuiteSettings, out_dir: Path | None = None,
              log: callable = print, quiet: bool = False) -> tuple[dict, dict]:
    """Run every variant; returns ``(results, artefacts)``: the JSON-able results and, for the
    plots, the multi-camera predictions and trained models."""
    train, test = data.train(), data.test()
    results: dict = {
        "data": {"source": data.source, "generated_2d": bool(data.generated),
                 "train_frames": len(data.train_idx), "test_frames": len(data.test_idx),
                 "cameras": data.num_cameras},
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()},
    }
    art: dict = {"models": {}, "pred": {}}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small batched ops: one thread is faster on a busy machine
    try:
        for mode in s.modes:
            res: dict = {}
            results[mode] = res
            variants = ("untrained", "untrained_huber", "refit_ppca", "trained_l2",
                        "trained_huber", "learn_basis", "grid_search")
            if mode == "mono":
                variants = tuple(v for v in variants if v in s.mono_variants)
            huber_train_seconds = None
            with phase(f"pose {mode}", total=len(variants), unit="variant",
                       quiet=quiet) as prog:
                for name in variants:
                    loss = "huber" if "huber" in name or name == "grid_search" else "l2"
                    source = "train" if name == "refit_ppca" else "half"
                    model = build_model(data, ModelConfig(mode=mode, loss=loss, grid=s.grid),
                                        s.num_models, s.num_basis, source=source, seed=s.seed)
                    entry: dict = {"loss": loss, "pose_prior": source}
                    if name.startswith("trained") or name == "learn_basis":
                        learn = "basis" if name == "learn_basis" else "all"
                        run_dir = None if out_dir is None else out_dir / "runs" / f"{mode}_{name}"
                        model, tr = train_model(model, train, _train_cfg(s, mode), run_dir,
                                                learn=learn)
                        entry.update(train_seconds=tr["seconds"], steps=tr["steps"],
                                     learnable_parameters=tr["learnable_parameters"],
                                     learnt_scalars=model.scalars())
                        if name == "trained_huber":
                            huber_train_seconds = tr["seconds"]
                    elif name == "grid_search":
                        budget = huber_train_seconds or 30.0
                        g = grid_search(model, train, budget, seed=s.seed)
                        entry.update(search_seconds=g.seconds, budget_seconds=budget,
                                     configs_tried=len(g.tried), grid_size=g.grid_size,
                                     best_multipliers=g.best, best_train_P1=g.best_p1)
                    t0 = time.perf_counter()
                    m = evaluate_model(model, test)
                    entry.update(summary(m))
                    entry["eval_seconds"] = time.perf_counter() - t0
                    res[name] = entry
                    if mode == "multi":
                        art["models"][name] = model
                        art["pred"][name] = predict(model, test)[0]
                        art["per_frame"] = art.get("per_frame", {})
                        art["per_frame"][name] = m["per_frame_P1"]
                    elif name == "trained_l2":
                        art["models"]["mono_trained_l2"] = model
                    prog.update(1)
                    if not quiet:
                        log(f"[pose {mode}] {name:16s} P1 {m['P1']:.1f}  P2 {m['P2']:.1f}  "
                            f"P3 {m['P3']:.1f} mm")
        art["gt"] = test.poses3d
    finally:
        torch.set_num_threads(prev_threads)
    return results, art


def count_parameters(model: PoseModel) -> dict[str, int]:
    """Number of scalars per parameter tensor and in total (all learnable)."""
    out = {n: p.numel() for n, p in model.named_parameters()}
    out["total"] = sum(out.values())
    return out


LABELS = {
    "untrained": "untrained (hand-set, L2)",
    "untrained_huber": "untrained (hand-set, Huber)",
    "refit_ppca": "PPCA refit on training poses (L2)",
    "trained_l2": "trained, L2",
    "trained_huber": "trained, Huber",
    "learn_basis": "trained, L2, only μ, e, σ, camera weights",
    "grid_search": "grid search of ρ, δ, T (Huber), matched time",
}


def markdown_table(results: dict) -> str:
    """The results table (one row per variant and mode) as markdown."""
    lines = ["| mode | variant | P1 (mm) | P1 median | P1 p90 | > 500 mm | P2 (mm) | P3 (mm) | "
             "samples | learnt params | train / search time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("multi", "mono"):
        for name, r in results.get(mode, {}).items():
            secs = r.get("train_seconds", r.get("search_seconds"))
            extra = ""
            if name == "grid_search":
                extra = f" ({r['configs_tried']} of {r['grid_size']} configs)"
            lines.append(
                f"| {'4-camera' if mode == 'multi' else 'monocular'} | {LABELS.get(name, name)} "
                f"| {r['P1']:.1f} | {r.get('P1_median', float('nan')):.1f} | "
                f"{r.get('P1_p90', float('nan')):.1f} | {r.get('over_500mm', '')} | "
                f"{r['P2']:.1f} | {r['P3']:.1f} | {r['frames']} | "
                f"{r.get('learnable_parameters', 0)} | "
                f"{'' if secs is None else f'{secs:.0f}'}{extra} |"
            )
    return "\n".join(lines)
