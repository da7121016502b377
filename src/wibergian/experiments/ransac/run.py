"""The experiment: train both methods over N seeds, evaluate, write ``ransac.json`` and figures.

JSON layout (``DIR/ransac.json``)::

    {"experiment", "data": "generated", "config": {...}, "divergence_rule": str,
     "damped":   {"damping", "final_sigma": [float|null], "diverged": int,
                  "diverged_at_step": [int|null], "max_abs_step": [float],
                  "test_mse": float|null, "test_mse_per_seed": [float|null],
                  "test_mse_all_seeds": float|null, "sigma_sign_changes": [int]},
     "undamped": {... same ...},
     "paired_difference": {"mean", "ci95": [lo, hi], "sd", "n", "n_dropped",
                           "damped_better", "undamped_better", "what"},
     "baselines": {"median": {"test_mse"}, "mean": {"test_mse"},
                   "initial_sigma": {"sigma", "test_mse"}},
     "wall_seconds": float}

``test_mse`` is the mean over the seeds that did not diverge of the held-out MSE with that
seed's final σ (null if every seed diverged); ``test_mse_all_seeds`` also scores a diverged
seed, with the last finite σ it reached (null if some seed's σ is not finite at all).
``test_mse_se_per_seed`` is the standard error of each seed's test MSE over the held-out problems
(sd / sqrt(n_test)); ``online_loss_last_20pct`` the mean training loss over the last 20 % of the
updates. With ``optimizer = "asgd"`` a run is evaluated with its averaged σ. ``paired_difference``
is damped − undamped test MSE over the seeds, with the 95 % t-interval.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..stats import paired_difference
from .data import ToySpec, test_set
from .energy import estimate_mean
from .metrics import mse_and_se_of_sigma, mse_of_mean, mse_of_median, mse_of_sigma
from .plots import plot_energy, plot_sigma, plot_sweep
from .train import SIGMA_MAX, MethodRun, RunSpec, train_runs, train_with_trainer

METHODS = ("damped", "undamped")


@dataclass
class RansacConfig:
    """Settings of one experiment (defaults: the documented default run, docs/ransac.md)."""

    seeds: int = 20
    steps: int = 3000
    lr: float = 1e-4
    momentum: float = 0.999
    sigma0: float = 2.0
    per_seed: int = 1
    damping: float = 0.1
    sigma_max: float = SIGMA_MAX
    n_test: int = 40_000
    first_seed: int = 0
    engine: str = "batched"
    optimizer: str = "sgd"
    spec: ToySpec = field(default_factory=ToySpec)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks = [
            (self.seeds >= 1, "seeds", "must be >= 1"),
            (self.steps >= 1, "steps", "must be >= 1"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", "must be a finite number > 0"),
            (0 <= self.momentum < 1, "momentum", "must be in [0, 1)"),
            (math.isfinite(self.sigma0) and self.sigma0 > 0, "sigma0", "must be > 0"),
            (self.per_seed >= 1, "per_seed", "must be >= 1"),
            (math.isfinite(self.damping) and self.damping > 0, "damping",
             "must be > 0 (the undamped method always uses 0)"),
            (self.sigma_max > self.sigma0, "sigma_max", "must exceed sigma0"),
            (self.n_test >= 1, "n_test", "must be >= 1"),
            (self.first_seed >= 0, "first_seed", "must be >= 0"),
            (self.engine in ("batched", "trainer"), "engine", "must be 'batched' or 'trainer'"),
            (self.optimizer in ("sgd", "asgd"), "optimizer", "must be 'sgd' or 'asgd'"),
            (self.optimizer == "sgd" or self.momentum == 0, "momentum",
             "must be 0 with optimizer 'asgd' (averaged SGD has no momentum)"),
        ]
        for ok, name, what in checks:
            if not ok:
                raise ValueError(f"ransac: {name} = {getattr(self, name)!r} {what}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextmanager
def single_thread():
    """Run with one intra-op thread: these are small tensors, and two threads contending on a
    shared 2-core machine were measured ~10x slower per operation."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _train(cfg: RansacConfig, damping: float, name: str, quiet: bool,
           out_dir: Path | None) -> MethodRun:
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    if cfg.engine == "batched":
        return train_runs(RunSpec.uniform(seeds, cfg.lr, cfg.momentum), damping, cfg.steps,
                          cfg.sigma0, cfg.per_seed, cfg.sigma_max, cfg.spec, quiet, desc=name,
                          optimizer=cfg.optimizer)
    runs = [train_with_trainer(sd, damping, cfg.steps, cfg.sigma0, cfg.lr, cfg.momentum,
                               cfg.per_seed, cfg.sigma_max, cfg.spec,
                               None if out_dir is None else out_dir / "runs" / f"{name}_{sd}",
                               quiet, optimizer=cfg.optimizer)
            for sd in seeds]
    average = None
    if cfg.optimizer == "asgd":
        average = np.array([np.nan if r.average is None else r.average[0] for r in runs])
    return MethodRun(damping, np.concatenate([r.sigma for r in runs], axis=1),
                     np.concatenate([r.loss for r in runs], axis=1),
                     np.concatenate([r.max_abs_step for r in runs]),
                     [r.diverged_step[0] for r in runs], [r.blowup_value[0] for r in runs],
                     average)


def _last_finite(run: MethodRun, j: int) -> float | None:
    col = run.sigma[:, j]
    ok = np.isfinite(col)
    return float(col[ok][-1]) if ok.any() else None


def sign_changes(run: MethodRun) -> list[int]:
    """Per seed, how often σ jumped through 0 (E depends on σ² only, so this is harmless for
    the energy but marks a step larger than |σ| itself)."""
    out = []
    for j in range(run.sigma.shape[1]):
        col = run.sigma[:, j]
        col = col[np.isfinite(col)]
        out.append(int((np.sign(col[1:]) * np.sign(col[:-1]) < 0).sum()))
    return out


def summarise(run: MethodRun, test: Any, cache: dict[float, float]) -> dict[str, Any]:
    """The JSON block of one method (see the module docstring)."""

    def mse(s: float) -> float:
        if s not in cache:
            cache[s], ses[s] = mse_and_se_of_sigma(s, test)
        return cache[s]

    ses: dict[float, float] = {}

    finals = run.final_sigma
    per_seed = [None if s is None else mse(s) for s in finals]
    kept = [v for v in per_seed if v is not None]
    fallback = [_last_finite(run, j) if s is None else s for j, s in enumerate(finals)]
    all_seeds = (None if any(s is None for s in fallback)
                 else float(np.mean([mse(s) for s in fallback])))
    return {
        "damping": run.damping,
        "final_sigma": finals,
        "diverged": run.n_diverged,
        "diverged_at_step": run.diverged_step,
        "max_abs_step": [float(v) if math.isfinite(v) else None for v in run.max_abs_step],
        "test_mse": float(np.mean(kept)) if kept else None,
        "test_mse_per_seed": per_seed,
        "test_mse_all_seeds": all_seeds,
        "test_mse_se_per_seed": [None if s is None or not math.isfinite(ses.get(s, math.nan))
                                 else ses[s] for s in finals],
        "sigma_sign_changes": sign_changes(run),
        "online_loss_last_20pct": _online(run),
    }


def _online(run: MethodRun) -> list[float | None]:
    """Per seed, the mean training loss over the last 20 % of the updates (None if diverged)."""
    k = max(1, run.loss.shape[0] // 5)
    tail = run.loss[-k:]
    return [None if not np.isfinite(tail[:, j]).all() else float(tail[:, j].mean())
            for j in range(tail.shape[1])]


def paired(result: dict[str, Any]) -> dict[str, Any]:
    """Held-out MSE, damped − undamped, paired over seeds (both methods see the same training
    problems and the same test set): mean, 95 % t-interval, and seeds where each is lower."""
    def vals(name: str) -> list[float]:
        return [math.nan if v is None else v for v in result[name]["test_mse_per_seed"]]

    out = paired_difference(vals("damped"), vals("undamped"))
    out["what"] = ("test MSE damped - undamped per seed (negative: damped better); seeds where "
                   "either diverged are dropped (n_dropped)")
    out["damped_better"] = out.pop("b_greater")
    out["undamped_better"] = out.pop("a_greater")
    return out


def run_experiment(cfg: RansacConfig, out_dir: Path, quiet: bool = False,
                   log=print) -> dict[str, Any]:
    """Train both methods, evaluate on ``cfg.n_test`` held-out problems, write JSON + figures."""
    cfg.validate()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with single_thread():
        runs = {}
        for name, lam in (("damped", cfg.damping), ("undamped", 0.0)):
            if not quiet:
                log(f"[ransac] training {name} (λ = {lam:g}): {cfg.seeds} seeds x "
                    f"{cfg.steps} updates")
            runs[name] = _train(cfg, lam, name, quiet, out_dir)
        if not quiet:
            log(f"[ransac] evaluating on {cfg.n_test} generated held-out problems")
        test = test_set(cfg.n_test, 0, cfg.spec)
        cache: dict[float, float] = {}
        result: dict[str, Any] = {
            "experiment": "MLESAC toy (Toso et al. 2019, Fig. 2): learn the kernel width σ",
            "data": "generated (10 inliers ~ N(U[-40,40], 4^2) among 100 outliers ~ U[-40,40])",
            "config": cfg.to_dict(),
            "divergence_rule": (f"sigma non-finite or |sigma| > {cfg.sigma_max:g} after an "
                                "update; the run is then frozen"),
        }
        for name, run in runs.items():
            result[name] = summarise(run, test, cache)
        result["paired_difference"] = paired(result)
        result["baselines"] = {
            "median": {"test_mse": mse_of_median(test)},
            "mean": {"test_mse": mse_of_mean(test)},
            "initial_sigma": {"sigma": cfg.sigma0, "test_mse": mse_of_sigma(cfg.sigma0, test)},
        }
        figures = write_figures(runs, result, test, cfg, out_dir)
    result["figures"] = figures
    result["wall_seconds"] = round(time.perf_counter() - t0, 2)
    (out_dir / "ransac.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    return result


def write_figures(runs: dict[str, MethodRun], result: dict[str, Any], test: Any,
                  cfg: RansacConfig, out_dir: Path) -> list[str]:
    """σ trajectories and the energy of one held-out sample; returns file names."""
    plot_sigma(runs, out_dir / "ransac_sigma.png", cfg.sigma_max)
    sig: dict[str, float | None] = {}
    for name in METHODS:
        finals = [s for s in result[name]["final_sigma"] if s is not None]
        sig[name] = float(np.median(np.abs(finals))) if finals else None
    x = test.x[:1]
    mins = {}
    with torch.no_grad():
        for name, s in sig.items():
            if s is not None:
                mins[name] = float(estimate_mean(x, torch.tensor([s], dtype=x.dtype), 0.1)[0])
    plot_energy(test.x[0], float(test.mu[0]), cfg.spec.n_inliers, sig, mins,
                out_dir / "ransac_energy.png")
    return ["ransac_sigma.png", "ransac_energy.png"]


def _fmt(v: Any, nd: int = 1) -> str:
    return "—" if v is None else f"{v:.{nd}f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The summary table of one ``ransac.json``."""
    cfg = result["config"]
    lines = [
        "| method | diverged | median abs final σ | median max abs Δσ | max abs Δσ (all seeds) "
        "| σ sign flips (all seeds) | test MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        r = result[name]
        fs = [abs(s) for s in r["final_sigma"] if s is not None]
        steps = [np.inf if v is None else v for v in r["max_abs_step"]]
        lines.append(
            f"| {name} (λ = {r['damping']:g}) | {r['diverged']} / {cfg['seeds']} "
            f"| {_fmt(float(np.median(fs)) if fs else None, 2)} "
            f"| {np.median(steps):.3g} | {max(steps):.3g} "
            f"| {sum(r.get('sigma_sign_changes', []))} | {_fmt(r['test_mse'])} |")
    b = result["baselines"]
    lines += [
        f"| initial σ = {b['initial_sigma']['sigma']:g} | — | — | — | — | — "
        f"| {_fmt(b['initial_sigma']['test_mse'])} |",
        f"| sample median | — | — | — | — | — | {_fmt(b['median']['test_mse'])} |",
        f"| plain mean | — | — | — | — | — | {_fmt(b['mean']['test_mse'])} |",
    ]
    return "\n".join(lines)


def run_sweep(cfg: RansacConfig, lrs: list[float], momenta: list[float], out_dir: Path,
              quiet: bool = False, log=print) -> dict[str, Any]:
    """Both methods at every (lr, momentum), ``cfg.seeds`` seeds each, in one batch per method.

    Writes ``ransac_sweep.json`` (rows with diverged counts, median |final σ|, test MSE) and
    ``ransac_sweep.png``.
    """
    cfg.validate()
    out_dir.mkdir(parents=True, exist_ok=True)
    combos = [(lr, m) for m in momenta for lr in lrs]
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    spec = RunSpec([s for _ in combos for s in seeds],
                   [lr for lr, _ in combos for _ in seeds],
                   [m for _, m in combos for _ in seeds])
    t0 = time.perf_counter()
    with single_thread():
        runs = {}
        for name, lam in (("damped", cfg.damping), ("undamped", 0.0)):
            if not quiet:
                log(f"[ransac sweep] {name}: {len(combos)} settings x {cfg.seeds} seeds x "
                    f"{cfg.steps} updates")
            runs[name] = train_runs(spec, lam, cfg.steps, cfg.sigma0, cfg.per_seed,
                                    cfg.sigma_max, cfg.spec, quiet, desc=f"sweep {name}")
        test = test_set(cfg.n_test, 0, cfg.spec)
        cache: dict[float, float] = {}
        rows = []
        n = cfg.seeds
        for i, (lr, m) in enumerate(combos):
            row: dict[str, Any] = {"lr": lr, "momentum": m, "seeds": n}
            for name, run in runs.items():
                sl = slice(i * n, (i + 1) * n)
                sub = MethodRun(run.damping, run.sigma[:, sl], run.loss[:, sl],
                                run.max_abs_step[sl], run.diverged_step[sl],
                                run.blowup_value[sl])
                s = summarise(sub, test, cache)
                fs = [abs(v) for v in s["final_sigma"] if v is not None]
                big = max(np.inf if v is None else v for v in s["max_abs_step"])
                row[name] = {"diverged": s["diverged"], "test_mse": s["test_mse"],
                             "median_abs_final_sigma": float(np.median(fs)) if fs else None,
                             "max_abs_step": float(big) if math.isfinite(big) else None}
            rows.append(row)
    out = {"data": "generated", "config": cfg.to_dict(), "rows": rows,
           "initial_sigma_test_mse": mse_of_sigma(cfg.sigma0, test),
           "wall_seconds": round(time.perf_counter() - t0, 2)}
    plot_sweep(rows, out_dir / "ransac_sweep.png")
    (out_dir / "ransac_sweep.json").write_text(
        json.dumps(out, indent=1, allow_nan=False))
    return out


def sweep_table(sweep: dict[str, Any]) -> str:
    """Markdown table of a sweep."""
    lines = ["| lr | momentum | diverged damped | diverged undamped | test MSE damped "
             "| test MSE undamped | median abs σ damped | median abs σ undamped |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sweep["rows"]:
        d, u, n = r["damped"], r["undamped"], r["seeds"]
        lines.append(
            f"| {r['lr']:g} | {r['momentum']:g} | {d['diverged']} / {n} | {u['diverged']} / {n} "
            f"| {_fmt(d['test_mse'])} | {_fmt(u['test_mse'])} "
            f"| {_fmt(d['median_abs_final_sigma'], 2)} | {_fmt(u['median_abs_final_sigma'], 2)} |")
    return "\n".join(lines)
