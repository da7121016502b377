"""Evaluation of a trained run: mean IoU on held-out frames, baselines, ``results.json``.

Per protocol and seed, all as mean IoU over the test frames: the fused model (damped, λ from
the settings), the same model trained with λ = 0, the untrained model (its initialisation),
mean fusion, median fusion, the best single tracker **chosen on the training frames**
(``best_single_train``: the honest baseline), the best single tracker on the test frames
(``best_single``: an oracle, it looks at the test data), the per-frame oracle (best tracker box
on each frame: an upper bound for any method that picks one tracker's box) and every single
tracker. Each training run has a status: ``completed``, ``diverged`` (training stopped or its
gradients or parameters blew up: see ``train.run_status``) or ``collapsed`` (completed, but its
held-out IoU is more than :data:`COLLAPSE_MARGIN` below the untrained model's).

Over seeds: mean, std, min, max of every number, and *paired* margins (per seed, our fusion
minus a baseline on the same split) with a 95 % t confidence interval over the seeds.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from ..stats import t_half_width
from .data import Frames, baselines, frames_from_dataset, split
from .energy import FusionModel, corner_energy
from .train import FusionSettings, mean_iou, run_layout, torch_threads
from .vot import load_dataset

SUMMARY_KEYS = ("fused_damped", "fused_lambda0", "fused_init", "fused_damped_train",
                "fused_init_train", "best_single_train",
                "best_single", "oracle_per_frame", "median_fusion", "mean_fusion",
                "train_seconds_damped", "train_seconds_lambda0")
#: A completed run whose held-out IoU is below the untrained model's by more than this is
#: ``collapsed`` (an IoU drop of 0.05 is far outside the seed-to-seed noise of a stable run).
COLLAPSE_MARGIN = 0.05
#: Paired margins reported over seeds: (name, our number, baseline).
MARGINS = (("fused − best single (chosen on train)", "fused_damped", "best_single_train"),
           ("fused − median fusion", "fused_damped", "median_fusion"),
           ("fused − untrained init", "fused_damped", "fused_init"),
           ("fused − fused λ=0", "fused_damped", "fused_lambda0"),
           ("λ=0 − best single (chosen on train)", "fused_lambda0", "best_single_train"),
           ("fused − untrained init, on the training frames", "fused_damped_train",
            "fused_init_train"))


def load_frames(source: dict[str, Any]) -> Frames:
    from .real import is_real_source, load_real, unpack

    dtype = getattr(torch, source.get("dtype", "float32"))
    if is_real_source(source["data"]):
        return load_real(quick=source["data"] == "real-quick", dtype=dtype)
    if str(source["data"]).endswith(".npz"):
        return frames_from_dataset(unpack(source["data"]), dtype=dtype)
    ds = load_dataset(source["data"], experiment=source.get("experiment", "baseline"))
    return frames_from_dataset(ds, dtype=dtype)


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


def apply_collapse(status: str, fused: float, init: float) -> str:
    """``collapsed`` when a completed run's held-out IoU is below the untrained model's by
    more than :data:`COLLAPSE_MARGIN`; otherwise the status unchanged."""
    if status == "completed" and fused < init - COLLAPSE_MARGIN:
        return "collapsed"
    return status


def evaluate_seed(frames: Frames, run_dir: Path, protocol: str, seed: int,
                  settings: FusionSettings, curvature: bool = True, train_iou: bool = False
                  ) -> dict[str, Any]:
    tr, te = split(frames, protocol, seed)
    test = frames.subset(te)
    d = run_layout(run_dir, protocol, seed)
    records = json.loads((d / "records.json").read_text())
    T, dt = len(frames.trackers), frames.gt.dtype
    out: dict[str, Any] = {"seed": seed, "n_test_frames": len(test),
                           "n_train_frames": len(frames) - len(test)}
    train = frames.subset(tr)
    with torch_threads(1):
        out["fused_init"] = mean_iou(settings.model(T).to(dt), test)
        if train_iou:     # generalisation gap: the same models on their training frames
            out["fused_init_train"] = mean_iou(settings.model(T).to(dt), train)
        for tag, lam in (("damped", settings.damping), ("lambda0", 0.0)):
            rec = records.get(tag)
            if rec is None:
                continue
            out[f"grad_norm_{tag}"] = rec.get("grad_norm")
            out[f"solver_counts_{tag}"] = rec.get("solver_counts")
            out[f"train_seconds_{tag}"] = rec["train_seconds"]
            if "best_step" in rec:
                out[f"best_step_{tag}"] = rec["best_step"]
            if rec["status"] == "diverged":
                out[f"fused_{tag}"] = f"diverged at step {rec['step']}"
                out[f"{tag}_status"] = "diverged"
                out[f"{tag}_reason"] = rec.get("reason", "")
                continue
            model = load_model(d / f"model_{tag}.pt", settings, T, lam, dt)
            out[f"fused_{tag}"] = mean_iou(model, test)
            if train_iou and tag == "damped":
                out["fused_damped_train"] = mean_iou(model, train)
            out[f"{tag}_status"] = apply_collapse(rec["status"], out[f"fused_{tag}"],
                                                  out["fused_init"])
            if curvature and tag == "damped":
                out["hessian_min_eig_damped_model"] = curvature_stats(model, test,
                                                                      settings.damping)
    base = baselines(test, train)
    out.update(mean_fusion=base["mean_fusion"], median_fusion=base["median_fusion"],
               oracle_per_frame=base["oracle_per_frame"],
               best_single_train=base["best_single_train"],
               best_single_train_name=base["best_single_train_name"],
               best_single=base["single_trackers"][0][1],
               best_single_name=base["single_trackers"][0][0],
               single_trackers=base["single_trackers"])
    return out


def paired_ci(diffs: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences and its t confidence interval over seeds.

    ``lo``/``hi`` are None with fewer than 2 seeds. ``verdict``: ``"wins"`` when the interval
    is above 0, ``"loses"`` when below, ``"inconclusive"`` otherwise (or with one seed).
    """
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None, "values": [],
                "verdict": "no data"}
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": 1, "mean": mean, "lo": None, "hi": None, "values": diffs,
                "verdict": "inconclusive"}
    half = t_half_width(diffs, level)
    lo, hi = mean - half, mean + half
    verdict = "wins" if lo > 0 else "loses" if hi < 0 else "inconclusive"
    return {"n": n, "mean": mean, "lo": lo, "hi": hi, "level": level, "values": diffs,
            "verdict": verdict}


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
                                   if isinstance(r.get("fused_lambda0"), str)]
    for tag in ("damped", "lambda0"):
        st = [r[f"{tag}_status"] for r in per_seed if f"{tag}_status" in r]
        if st:
            summary[f"{tag}_status_counts"] = {k: st.count(k) for k in sorted(set(st))}
    summary["paired_margins"] = {
        name: paired_ci([r[a] - r[b] for r in per_seed
                         if isinstance(r.get(a), float) and isinstance(r.get(b), float)])
        for name, a, b in MARGINS}
    return summary


def evaluate_run(run_dir: Path | str, frames: Frames | None = None, quiet: bool = False,
                 curvature: bool = True, train_iou: bool = False) -> dict[str, Any]:
    """Evaluate every protocol and seed of a run; writes and returns ``results.json``."""
    from wibergian.progress import phase

    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    settings = FusionSettings(**run["settings"])
    frames = load_frames(run["source"]) if frames is None else frames
    results: dict[str, Any] = {"label": run["source"].get("label", ""),
                               "source": run["source"], "settings": run["settings"],
                               "metric": "mean IoU over the test frames",
                               "collapse_margin": COLLAPSE_MARGIN, "protocols": {}}
    total = len(run["protocols"]) * len(run["seeds"])
    with phase("fusion: evaluation", total=total, unit="seed", quiet=quiet) as prog:
        for protocol in run["protocols"]:
            per_seed = []
            for s in run["seeds"]:
                per_seed.append(evaluate_seed(frames, run_dir, protocol, s, settings,
                                              curvature, train_iou))
                prog.update(1)
            results["protocols"][protocol] = {"summary": summarise(per_seed),
                                              "seeds": per_seed}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def compare_runs(run_a: Path | str, run_b: Path | str) -> dict[str, Any]:
    """Paired comparison of two evaluated runs on the same data: per protocol, ``A − B`` of
    the damped fused IoU on every seed both runs share (same seed = same split), with its
    95 % CI over seeds (:func:`paired_ci`)."""
    ra = json.loads((Path(run_a) / "results.json").read_text())
    rb = json.loads((Path(run_b) / "results.json").read_text())
    out: dict[str, Any] = {}
    for protocol, pa in ra["protocols"].items():
        pb = rb["protocols"].get(protocol)
        if pb is None:
            continue
        b_by_seed = {r["seed"]: r for r in pb["seeds"]}
        diffs = [r["fused_damped"] - b_by_seed[r["seed"]]["fused_damped"]
                 for r in pa["seeds"] if r["seed"] in b_by_seed
                 and isinstance(r.get("fused_damped"), float)
                 and isinstance(b_by_seed[r["seed"]].get("fused_damped"), float)]
        out[protocol] = paired_ci(diffs)
    return out


def fmt(stat: dict[str, float] | None, digits: int = 3) -> str:
    if stat is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def fmt_ci(m: dict[str, Any]) -> str:
    """``+0.012 [−0.004, +0.028] (n=10, inconclusive)``."""
    if m["mean"] is None:
        return "n/a"
    if m["lo"] is None:
        return f"{m['mean']:+.3f} (n={m['n']}, no CI)"
    return f"{m['mean']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}] (n={m['n']}, {m['verdict']})"


def _status_cell(s: dict[str, Any], tag: str) -> str:
    counts = s.get(f"{tag}_status_counts")
    if not counts:
        return ""
    return " (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")"


def markdown_table(results: dict[str, Any]) -> str:
    """Table-1-style markdown: one column per protocol (mean ± std over seeds), then the
    paired margins with their 95 % confidence intervals over seeds."""
    protos = list(results["protocols"])
    names = {"frames": "Frames at random", "sequences": "Sequences at random"}
    head = "| Method | " + " | ".join(names.get(p, p) for p in protos) + " |"
    lines = [head, "|---" * (len(protos) + 1) + "|"]

    def row(label: str, key: str, tag: str | None = None) -> str:
        cells = []
        for p in protos:
            s = results["protocols"][p]["summary"]
            cell = fmt(s.get(key), 1 if key.startswith("train_seconds") else 3)
            if key == "fused_lambda0" and s["lambda0_diverged"]:
                n = len(results["protocols"][p]["seeds"])
                cell = (f"{len(s['lambda0_diverged'])}/{n} seeds diverged "
                        f"({'; '.join(s['lambda0_diverged'])})"
                        + (f"; others {fmt(s.get(key))}" if key in s else ""))
            if tag is not None and key in s:
                cell += _status_cell(s, tag)
            cells.append(cell)
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += [row("Per-frame oracle (upper bound, looks at test)", "oracle_per_frame"),
              row("Best single tracker on test (oracle)", "best_single"),
              row("**Best single tracker chosen on train**", "best_single_train"),
              row("Mean fusion", "mean_fusion"),
              row("Median fusion", "median_fusion"),
              row("Fusion, untrained (initialisation)", "fused_init")]
    if any("fused_lambda0" in results["protocols"][p]["summary"]
           or results["protocols"][p]["summary"]["lambda0_diverged"] for p in protos):
        lines.append(row("Fusion λ = 0 (Samuel & Tappen)", "fused_lambda0", "lambda0"))
    lines += [row(f"Our fusion (λ = {results['settings']['damping']})", "fused_damped",
                  "damped"),
              row("Training time, damped (s)", "train_seconds_damped"),
              "", "Paired margins, mean [95 % CI over seeds]:", "",
              "| Margin | " + " | ".join(names.get(p, p) for p in protos) + " |",
              "|---" * (len(protos) + 1) + "|"]
    first = results["protocols"][protos[0]]["summary"]["paired_margins"]
    for name in first:
        cells = [results["protocols"][p]["summary"]["paired_margins"][name] for p in protos]
        if all(c["n"] == 0 for c in cells):
            continue
        lines.append(f"| {name} | " + " | ".join(fmt_ci(c) for c in cells) + " |")
    return "\n".join(lines)
