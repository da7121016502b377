"""Evaluation of a trained run: mean IoU on held-out frames, baselines, ``results.json``.

Per protocol and seed: the fused model (damped, λ from the settings), the same model trained
with λ = 0 (or ``"diverged at step k"``), the untrained model (its initialisation), mean
fusion, median fusion and every single tracker (sorted, best first), all as mean IoU over the
test frames; then a summary over seeds (mean, std, min, max).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from .data import Frames, baselines, frames_from_dataset, split
from .energy import FusionModel, corner_energy
from .train import FusionSettings, mean_iou, run_layout, torch_threads
from .vot import load_dataset

SUMMARY_KEYS = ("fused_damped", "fused_lambda0", "fused_init", "best_single", "median_fusion",
                "mean_fusion", "train_seconds_damped", "train_seconds_lambda0")


def load_frames(source: dict[str, Any]) -> Frames:
    ds = load_dataset(source["data"], experiment=source.get("experiment", "baseline"))
    return frames_from_dataset(ds, dtype=getattr(torch, source.get("dtype", "float32")))


def load_model(path: Path, settings: FusionSettings, n_trackers: int, damping: float,
               dtype: torch.dtype) -> FusionModel:
    model = settings.model(n_trackers, damping).to(dtype)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


@torch.no_grad()
def curvature_stats(model: FusionModel, frames: Frames, damping: float, chunk: int = 512
                    ) -> dict[str, float]:
    """Smallest eigenvalue of the Hessian ``H`` at the fused corners (normalised units): how
    often the curvature is comparable to the damping λ (where λ changes the gradient most)."""
    mins = []
    for i in range(0, len(frames), chunk):
        sub = frames.subset(torch.arange(i, min(i + chunk, len(frames))))
        w = model.wells(*sub.inputs())
        y = model.solve(w, sub.valid)
        for k in range(2):
            h = corner_energy.hessian(y[:, k], w["centres"][:, k], w["weights"],
                                      w["inv_var"][k].expand(len(sub), -1, -1))
            mins.append(torch.linalg.eigvalsh(h)[:, 0])
    e = torch.cat(mins).double()
    return {"median": float(e.median()), "p01": float(torch.quantile(e, 0.01)),
            "fraction_below_damping": float((e < damping).double().mean()),
            "fraction_non_positive": float((e <= 0).double().mean())}


def evaluate_seed(frames: Frames, run_dir: Path, protocol: str, seed: int,
                  settings: FusionSettings) -> dict[str, Any]:
    _, te = split(frames, protocol, seed)
    test = frames.subset(te)
    d = run_layout(run_dir, protocol, seed)
    records = json.loads((d / "records.json").read_text())
    T, dt = len(frames.trackers), frames.gt.dtype
    out: dict[str, Any] = {"seed": seed, "n_test_frames": len(test),
                           "n_train_frames": len(frames) - len(test)}
    with torch_threads(1):
        out["fused_init"] = mean_iou(settings.model(T).to(dt), test)
        damped = load_model(d / "model_damped.pt", settings, T, settings.damping, dt)
        out["fused_damped"] = mean_iou(damped, test)
        out["hessian_min_eig_damped_model"] = curvature_stats(damped, test, settings.damping)
        rec0 = records["lambda0"]
        if rec0["status"] == "completed":
            out["fused_lambda0"] = mean_iou(load_model(d / "model_lambda0.pt", settings, T, 0.0,
                                                       dt), test)
        else:
            out["fused_lambda0"] = f"diverged at step {rec0['step']}"
            out["lambda0_reason"] = rec0.get("reason", "")
    base = baselines(test)
    out.update(mean_fusion=base["mean_fusion"], median_fusion=base["median_fusion"],
               best_single=base["single_trackers"][0][1],
               best_single_name=base["single_trackers"][0][0],
               train_seconds_damped=records["damped"]["train_seconds"],
               train_seconds_lambda0=records["lambda0"]["train_seconds"],
               damped_status=records["damped"]["status"],
               solver_counts_damped=records["damped"].get("solver_counts"),
               solver_counts_lambda0=records["lambda0"].get("solver_counts"),
               single_trackers=base["single_trackers"])
    return out


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        vals = [r[key] for r in per_seed if isinstance(r.get(key), float)]
        if not vals:
            continue
        summary[key] = {"mean": statistics.fmean(vals),
                        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "min": min(vals), "max": max(vals), "n": len(vals)}
    summary["lambda0_diverged"] = [r["fused_lambda0"] for r in per_seed
                                   if isinstance(r["fused_lambda0"], str)]
    fused = [r["fused_damped"] for r in per_seed]
    margin_best = [r["fused_damped"] - r["best_single"] for r in per_seed]
    margin_median = [r["fused_damped"] - r["median_fusion"] for r in per_seed]
    spread = max(fused) - min(fused)
    summary["acceptance"] = {
        "margin_over_best_single": margin_best,
        "margin_over_median_fusion": margin_median,
        "fused_spread_over_seeds(max-min)": spread,
        "holds": bool(min(margin_best) > spread and min(margin_median) > spread),
    }
    return summary


def evaluate_run(run_dir: Path | str, frames: Frames | None = None) -> dict[str, Any]:
    """Evaluate every protocol and seed of a run; writes and returns ``results.json``."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    settings = FusionSettings(**run["settings"])
    frames = load_frames(run["source"]) if frames is None else frames
    results: dict[str, Any] = {"label": run["source"].get("label", ""),
                               "source": run["source"], "settings": run["settings"],
                               "metric": "mean IoU over the test frames", "protocols": {}}
    for protocol in run["protocols"]:
        per_seed = [evaluate_seed(frames, run_dir, protocol, s, settings) for s in run["seeds"]]
        results["protocols"][protocol] = {"summary": summarise(per_seed), "seeds": per_seed}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def fmt(stat: dict[str, float] | None, digits: int = 3) -> str:
    if stat is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """Table-1-style markdown: one column per protocol (mean ± std over seeds)."""
    protos = list(results["protocols"])
    names = {"frames": "Frames at random", "sequences": "Sequences at random"}
    head = "| Method | " + " | ".join(names.get(p, p) for p in protos) + " |"
    lines = [head, "|---" * (len(protos) + 1) + "|"]

    def row(label: str, key: str) -> str:
        cells = []
        for p in protos:
            s = results["protocols"][p]["summary"]
            cell = fmt(s.get(key), 1 if key.startswith("train_seconds") else 3)
            if key == "fused_lambda0" and s["lambda0_diverged"]:
                n = len(results["protocols"][p]["seeds"])
                cell = (f"{len(s['lambda0_diverged'])}/{n} seeds diverged "
                        f"({'; '.join(s['lambda0_diverged'])})"
                        + (f"; others {fmt(s.get(key))}" if key in s else ""))
            cells.append(cell)
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += [row("Best single tracker", "best_single"), row("Mean fusion", "mean_fusion"),
              row("Median fusion", "median_fusion"),
              row("Fusion, untrained (initialisation)", "fused_init"),
              row("Fusion λ = 0 (Samuel & Tappen)", "fused_lambda0"),
              row(f"Our fusion (λ = {results['settings']['damping']})", "fused_damped"),
              row("Training time, damped (s)", "train_seconds_damped")]
    return "\n".join(lines)
