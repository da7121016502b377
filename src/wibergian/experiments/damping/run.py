"""The study: sections (toy, fusion on the zoo, fusion on real trackers' output, end-to-end,
pose), each writing ``damping_<section>.json`` and its figures; ``damping.json`` merges them.

``damping.json``::

    {"study", "settings": {...}, "methods": {name: description}, "rules": {...},
     "sections": {name: {"data", "gradients": {...}, "sweep": {...}, "basin": {...}?,
                         "figures": [...], "wall_seconds"}},
     "missing": [names of sections that have no result in this folder]}

``gradients``: per method (lambda0, ridge, floor) the per-problem and per-batch gradient-norm
summaries with Hill tail fits (``tail.alpha``, ``tail.se``, ``tail.k``, ``tail.tail_fraction``),
and ``frac_curvature_below_lambda``. ``sweep.cells``: per (optimiser, lr) and method the
diverged / collapsed counts, metrics per seed, and ``paired_vs_ridge`` (method − ridge: mean,
ci95, n).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import generic, toy
from .plots import plot_basin, plot_ccdf, plot_stability
from .regimes import CLIP_FACTOR, DAMPING, METHODS, RELATIVE_FACTOR

SECTIONS = ("toy", "fusion_zoo", "fusion_real", "endtoend", "pose")

METHOD_TEXT = {
    "lambda0": "λ = 0: plain implicit differentiation (Samuel & Tappen 2009)",
    "ridge": f"λ = {DAMPING:g}, (H + λI)^-1: the paper's damped gradient",
    "floor": f"λ = {DAMPING:g}, eigenvalues floored: 1/max(h_i, λ)",
    "relative": f"ridge with λ = {RELATIVE_FACTOR:g} x median mean curvature tr(H)/n at the "
                "solutions, measured at the initial parameters on training data, then fixed",
    "clip0": f"λ = 0 with the global gradient norm clipped at {CLIP_FACTOR:g} x the median "
             "per-batch gradient norm at the initial parameters (λ = 0, training data)",
    "clip_ridge": f"λ = {DAMPING:g} ridge, clipped at the same threshold",
}


@dataclass
class TaskBudget:
    """Sizes of one Trainer-based section."""

    n_problems: int
    n_batches: int
    batch: int
    sweep: generic.SweepSpec


@dataclass
class StudySettings:
    """Every size of the study (``full()`` / ``quick()``)."""

    toy_dist_n: int = 50_000
    toy_dist_sigmas: list[float] = field(default_factory=lambda: [6.0, 20.0])
    toy_batch: int = 32
    toy_sweep: toy.ToySweep = field(default_factory=lambda: toy.ToySweep(
        seeds=5, steps=600, lrs={"sgd": [0.1, 0.5, 2.0], "momentum": [0.01, 0.05, 0.2],
                                 "asgd": [0.5, 2.0], "adam": [0.1, 1.0]}))
    basin_n: int = 40_000
    basin_sigmas: list[float] = field(default_factory=lambda: [
        4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0])
    basin_h: float = 0.25
    fusion: TaskBudget = field(default_factory=lambda: TaskBudget(200, 40, 32, generic.SweepSpec(
        lrs={"sgd": [30.0], "momentum": [3.0, 10.0, 30.0], "adam": [0.03]},
        methods=list(METHODS), seeds=[0, 1], steps=40, batch_size=64)))
    fusion_eval_frames: int | None = 800
    endtoend: TaskBudget = field(default_factory=lambda: TaskBudget(200, 40, 32,
                                 generic.SweepSpec(
        lrs={"momentum": [0.3, 3.0], "adam": [0.03]},
        methods=list(METHODS), seeds=[0, 1], steps=40, batch_size=32)))
    endtoend_n_test: int = 1000
    pose: TaskBudget = field(default_factory=lambda: TaskBudget(30, 8, 16, generic.SweepSpec(
        lrs={"momentum": [1.0], "adam": [0.01]}, methods=list(METHODS), seeds=[0],
        steps=20, batch_size=16)))
    pose_test_frames: int | None = 60
    quick: bool = False

    @classmethod
    def full(cls) -> StudySettings:
        return cls()

    @classmethod
    def quick_settings(cls) -> StudySettings:
        return cls(
            toy_dist_n=5000, toy_dist_sigmas=[6.0],
            toy_sweep=toy.ToySweep(seeds=2, steps=150, n_eval=300, lrs={
                "sgd": [0.5], "momentum": [0.05], "asgd": [0.5], "adam": [0.1]}),
            basin_n=4000, basin_sigmas=[4.0, 8.0, 16.0],
            fusion=TaskBudget(20, 4, 16, generic.SweepSpec(
                lrs={"momentum": [10.0], "adam": [0.03]},
                methods=["lambda0", "ridge", "clip0"], seeds=[0], steps=15, batch_size=32)),
            fusion_eval_frames=200,
            endtoend=TaskBudget(20, 4, 16, generic.SweepSpec(
                lrs={"momentum": [3.0]}, methods=["lambda0", "ridge"], seeds=[0], steps=10,
                batch_size=16)),
            endtoend_n_test=200,
            pose=TaskBudget(6, 2, 8, generic.SweepSpec(
                lrs={}, methods=[], seeds=[0], steps=1, batch_size=8)),
            pose_test_frames=20, quick=True)

    @classmethod
    def tiny(cls) -> StudySettings:
        """Smaller than quick, for the CLI test (``WIBERGIAN_DAMPING_TINY=1``)."""
        st = cls.quick_settings()
        st.toy_dist_n, st.basin_n, st.basin_sigmas = 400, 200, [6.0, 12.0]
        st.toy_sweep = toy.ToySweep(seeds=2, steps=4, n_eval=40, n_calibrate=100,
                                    lrs={"sgd": [0.5], "asgd": [0.5]})
        st.endtoend = TaskBudget(4, 2, 4, generic.SweepSpec(
            lrs={"momentum": [3.0]}, methods=["lambda0", "ridge", "clip0"], seeds=[0, 1],
            steps=2, batch_size=4))
        st.endtoend_n_test = 20
        return st


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write(out_dir: Path, name: str, block: dict[str, Any]) -> None:
    (out_dir / f"damping_{name}.json").write_text(json.dumps(_jsonable(block), indent=1,
                                                             allow_nan=False))


def run_toy(st: StudySettings, out_dir: Path, quiet: bool) -> dict[str, Any]:
    """Toy section: gradient CCDFs at fixed σ, the training sweep, basin switching."""
    t0 = time.perf_counter()
    dist = toy.gradient_distribution(st.toy_dist_n, st.toy_dist_sigmas, st.toy_batch, quiet)
    figs = []
    for sg in st.toy_dist_sigmas:
        raw = {m: dist["_raw"][f"{sg:g}/{m}"] for m in ("lambda0", "ridge", "floor")}
        stats = {m: dist["at"][f"{sg:g}"][m] for m in raw}
        f = plot_ccdf(raw, stats, f"MLESAC toy (generated), σ = {sg:g}, {st.toy_dist_n} "
                      f"problems, batch {st.toy_batch}", out_dir / f"damping_toy_ccdf_s{sg:g}.png")
        figs.append(f.name)
    sweep = toy.train_sweep(st.toy_sweep, quiet)
    cells = _toy_cells(sweep)
    sweep["cells"] = cells
    figs.append(plot_stability(cells, list(sweep["methods"]), "MLESAC toy (generated)",
                               out_dir / "damping_toy_stability.png").name)
    basin = toy.basin_switching(st.basin_n, st.basin_sigmas, st.basin_h, quiet)
    figs.append(plot_basin(basin, out_dir / "damping_toy_basin.png").name)
    block = {"data": "generated (MLESAC toy)", "gradients": dist, "sweep": sweep,
             "basin": basin, "figures": figs, "wall_seconds": round(time.perf_counter() - t0, 1)}
    _write(out_dir, "toy", block)
    return block


def _toy_cells(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """The toy's per-method cells regrouped as (optimiser, lr) -> method (generic layout)."""
    names = list(sweep["methods"])
    first = sweep["methods"][names[0]]["cells"]
    out = []
    for i, c in enumerate(first):
        cell: dict[str, Any] = {"optimizer": c["optimizer"], "lr": c["lr"], "methods": {}}
        for m in names:
            mc = sweep["methods"][m]["cells"][i]
            cell["methods"][m] = {"diverged": mc["diverged"], "collapsed": mc["collapsed"],
                                  "runs": mc["seeds"], "metric": mc["test_mse"],
                                  "median_metric": mc["median_test_mse"],
                                  "online_loss": mc["online_loss"]}
        pr = next((r for r in sweep["paired_vs_ridge"]
                   if (r["optimizer"], r["lr"]) == (c["optimizer"], c["lr"])), None)
        if pr is not None:
            cell["paired_vs_ridge"] = {k: v for k, v in pr.items() if k not in ("optimizer", "lr")}
        out.append(cell)
    return out


def run_task(task: generic.Task, budget: TaskBudget, out_dir: Path, quiet: bool
             ) -> dict[str, Any]:
    """A Trainer-based section: gradient CCDFs at the initial parameters, then the sweep."""
    t0 = time.perf_counter()
    dist = generic.gradient_distribution(task, budget.n_problems, budget.n_batches,
                                         budget.batch, quiet)
    figs = [plot_ccdf(dist["_raw"], dist["methods"],
                      f"{task.name}: {budget.n_problems} problems, {budget.n_batches} batches "
                      f"of {budget.batch}", out_dir / f"damping_{task.name}_ccdf.png").name]
    block: dict[str, Any] = {"data": task.data, "notes": task.notes, "gradients": dist}
    if budget.sweep.methods and budget.sweep.lrs:
        sweep = generic.train_sweep(task, budget.sweep, dist["relative_lambda"], dist["clip"],
                                    quiet)
        block["sweep"] = sweep
        figs.append(plot_stability(sweep["cells"], budget.sweep.methods, f"{task.name} "
                                   f"({task.data})", out_dir /
                                   f"damping_{task.name}_stability.png").name)
    block["figures"] = figs
    block["wall_seconds"] = round(time.perf_counter() - t0, 1)
    _write(out_dir, task.name, block)
    return block


def run_section(name: str, st: StudySettings, out_dir: Path, quiet: bool,
                fusion_data: Path | None = None, fusion_label: str | None = None
                ) -> dict[str, Any] | None:
    """Run one section (None when it has no data: fusion_real without ``fusion_data``)."""
    from . import tasks

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if name == "toy":
            return run_toy(st, out_dir, quiet)
        if name == "fusion_zoo":
            frames, label = tasks.zoo_frames(out_dir, st.quick)
            task = tasks.fusion_task(frames, "fusion_zoo", label,
                                     eval_frames=st.fusion_eval_frames)
            return run_task(task, st.fusion, out_dir, quiet)
        if name == "fusion_real":
            if fusion_data is not None:
                frames, label = load_fusion_data(fusion_data, fusion_label)
            else:
                found = shipped_real_trackers(st.quick)
                if found is None:
                    return None
                frames, label = found
            task = tasks.fusion_task(frames, "fusion_real", label,
                                     eval_frames=st.fusion_eval_frames)
            return run_task(task, st.fusion, out_dir, quiet)
        if name == "endtoend":
            return run_task(tasks.endtoend_task(st.endtoend_n_test), st.endtoend, out_dir,
                            quiet)
        if name == "pose":
            return run_task(tasks.pose_task(test_frames=st.pose_test_frames), st.pose, out_dir,
                            quiet)
        raise ValueError(f"unknown section {name!r}; choose from {SECTIONS}")
    finally:
        torch.set_num_threads(old)


REAL_LABEL = ("real trackers' output on generated video: OpenCV trackers run on video rendered "
              "from real photographs (scikit-image), exact ground truth")


def shipped_real_trackers(quick: bool) -> tuple[Any, str] | None:
    """The fusion experiment's shipped real-tracker set (``fusion.real.load_real``), or None
    when this installation does not have it."""
    try:
        from wibergian.experiments.fusion.real import load_real
    except ImportError:
        return None
    try:
        frames = load_real(quick=quick)
    except FileNotFoundError:
        return None
    return frames, REAL_LABEL + (" (quick: first 16 sequences)" if quick else "")


def load_fusion_data(path: Path, label: str | None) -> tuple[Any, str]:
    """A VOT-format folder (e.g. real trackers' output) as fusion frames, with its label."""
    from wibergian.experiments.fusion.data import frames_from_dataset
    from wibergian.experiments.fusion.vot import load_dataset

    ds = load_dataset(path)
    return frames_from_dataset(ds), label or f"VOT-format data from {Path(path).name}"


def merge(out_dir: Path, st: StudySettings) -> dict[str, Any]:
    """Collect every ``damping_<section>.json`` in ``out_dir`` into ``damping.json``."""
    sections, missing = {}, []
    for name in SECTIONS:
        p = out_dir / f"damping_{name}.json"
        if p.is_file():
            sections[name] = json.loads(p.read_text())
        else:
            missing.append(name)
    result = {
        "study": "does damping matter? (issue 16; docs/damping.md)",
        "settings": _jsonable(asdict(st)), "methods": METHOD_TEXT,
        "rules": {"divergence": "non-finite loss/gradient/parameter, solver error, or exploded "
                                "parameters (toy: |σ| > 1000)",
                  "collapse": "finished, held-out metric worse than the untrained model's",
                  "paired_difference": "per (optimiser, lr) over seeds: method − ridge, 95 % "
                                       "t-interval, runs where both finished",
                  "tail": "Hill estimator on the top 5 % of the norms (MLE of a Pareto tail)"},
        "sections": sections, "missing": missing,
    }
    (out_dir / "damping.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    return result
