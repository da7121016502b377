"""Train and compare the methods of the end-to-end study on generated robust line fitting.

Methods (all evaluated with the same robust fit, the same hypotheses and the same held-out
generated test set):

- ``uniform``: weights 1, kernel width ``c`` picked by grid search on generated training
  problems (no network);
- ``e2e``: weight network and ``c`` trained end to end through the argmin, damping 0.1;
- ``e2e_undamped``: the same with damping 0 (plain implicit differentiation, Samuel & Tappen);
- ``classifier``: the network trained as a per-point inlier classifier (binary cross-entropy
  on the labels), then plugged into the fit with ``c`` picked by grid search;
- ``unrolled``: network and ``c`` trained through 10 IRLS iterations by plain autograd;
- ``unrolled_newton``: the same through 10 guarded Levenberg-Marquardt Newton steps.

Unrolled models are evaluated with the argmin fit, like every other method.

Training uses the shared trainer (one run folder per method and seed, checkpoints, resume).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from wibergian.train import NonFiniteError, TrainConfig, Trainer, seed_everything

from .data import LABEL, LineSpec, make_generator, sample_batch, test_batch, train_sampler
from .model import LineFitModel, param_error, welsch_line_energy

METHODS = ("uniform", "e2e", "e2e_undamped", "classifier", "unrolled", "unrolled_newton")
C_GRID = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)
GRID_STREAM = 13


@dataclass
class StudySettings:
    """Sizes of one study (defaults: the full study; ``quick()`` a small one)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    n_test: int = 1000
    n_grid: int = 512
    unroll_iters: int = 10
    fail_threshold: float = 0.1
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    @classmethod
    def quick(cls) -> StudySettings:
        return cls(steps=60, seeds=[0], n_test=300, n_grid=256)


def _fit_loss(model: LineFitModel, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    theta = model(batch)
    err = ((theta - batch["theta"]) ** 2).sum(-1)
    return err.mean(), {"err": float(err.detach().sqrt().median()),
                        "c": float(model.log_c.detach().exp())}


def _bce_loss(model: LineFitModel, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    logits = model.net(batch["feats"])
    loss = F.binary_cross_entropy_with_logits(logits, batch["inlier"])
    acc = ((logits > 0).to(logits.dtype) == batch["inlier"]).to(logits.dtype).mean()
    return loss, {"acc": float(acc)}


def evaluate(model: LineFitModel, batch: dict[str, Tensor], fail: float) -> dict[str, float]:
    """Parameter error ``||θ* - θ_true||`` on ``batch``: median, mean, RMSE, failure rate."""
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        theta = model(batch)
    dt = time.perf_counter() - t0
    e = param_error(theta, batch["theta"])
    with torch.no_grad():  # curvature of the fit at its solution: how flat are the minima?
        w = model.weights(batch)
        c = model.log_c.exp().reshape(1, 1).expand(w.shape[0], 1)
        h = welsch_line_energy.hessian(theta, batch["u"], batch["v"], w, c)
        hmin = torch.linalg.eigvalsh(h)[:, 0]
    return {"median": float(e.median()), "mean": float(e.mean()),
            "rmse": float(e.pow(2).mean().sqrt()), "fail_rate": float((e > fail).double().mean()),
            "ms_per_problem": 1e3 * dt / e.numel(), "hmin_median": float(hmin.median()),
            "frac_hmin_below_0.1": float((hmin < 0.1).double().mean())}


def grid_search_c(model: LineFitModel, batch: dict[str, Tensor]) -> float:
    """The ``c`` of ``C_GRID`` with the lowest mean squared parameter error on ``batch``."""
    best, best_c = math.inf, C_GRID[0]
    for c in C_GRID:
        model.log_c.data.fill_(math.log(c))
        with torch.no_grad():
            mse = float(((model(batch) - batch["theta"]) ** 2).sum(-1).mean())
        if mse < best:
            best, best_c = mse, c
    model.log_c.data.fill_(math.log(best_c))
    return best_c


def _train(model: LineFitModel, loss_fn: Any, cfg: TrainConfig, seed: int, spec: LineSpec,
           run_dir: Path | None, resume: bool = False) -> dict[str, Any]:
    sampler = train_sampler(seed, spec)
    sampler.batch_size = cfg.batch_size
    out: dict[str, Any] = {"diverged": False}
    try:
        res = Trainer(model, loss_fn, sampler, cfg, run_dir=run_dir, resume=resume).fit()
        gn = [h["grad_norm"] for h in res.history if h.get("split") == "train"]
        med = float(torch.tensor(gn).median()) if gn else None
        out.update(stop_reason=res.stop_reason, final_loss=res.final_loss,
                   max_grad_norm=max(gn) if gn else None, median_grad_norm=med,
                   grad_spikes=sum(g > 10 * med for g in gn) if gn else None)
    except NonFiniteError as exc:
        out.update(diverged=True, stop_reason="non_finite", error=str(exc).splitlines()[0],
                   step=exc.step)
    return out


def run_method(method: str, seed: int, st: StudySettings, spec: LineSpec, out_dir: Path | None,
               test: dict[str, Tensor], quiet: bool = True,
               resume: bool = False) -> dict[str, Any]:
    """Train (where needed) and evaluate one method for one seed; returns a result record.

    ``resume``: continue (or reload, when complete) the run folders already in ``out_dir``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    seed_everything(seed)
    kw: dict[str, Any] = {"mode": "argmin", "damping": 0.1}
    if method == "uniform":
        kw = {"mode": "uniform"}
    elif method == "e2e_undamped":
        kw["damping"] = 0.0
    elif method in ("unrolled", "unrolled_newton"):
        kw = {"mode": method, "unroll_iters": st.unroll_iters}
    model = LineFitModel(spec.feat_dim, **kw).double()
    cfg = TrainConfig(steps=st.steps, batch_size=st.batch_size, lr=st.lr, seed=seed,
                      checkpoint_every=max(1, st.steps // 2), log_every=1, quiet=quiet,
                      extra={"method": method, "data": LABEL, "spec": asdict(spec),
                             "unroll_iters": st.unroll_iters})
    run_dir = None if out_dir is None else out_dir / "runs" / f"{method}_seed{seed}"
    grid = sample_batch(st.n_grid, make_generator(GRID_STREAM, seed), spec)
    rec: dict[str, Any] = {"method": method, "seed": seed}
    t0 = time.perf_counter()
    if method == "uniform":
        rec["c"] = grid_search_c(model, grid)
    elif method == "classifier":
        rec.update(_train(model, _bce_loss, cfg, seed, spec, run_dir, resume))
        rec["c"] = grid_search_c(model, grid)
    else:
        rec.update(_train(model, _fit_loss, cfg, seed, spec, run_dir, resume))
        rec["c"] = float(model.log_c.detach().exp())
    rec["train_seconds"] = time.perf_counter() - t0
    if rec.get("diverged"):
        rec.update({k: math.nan for k in ("median", "mean", "rmse", "fail_rate")})
    else:
        rec.update(evaluate(for_evaluation(model), test, st.fail_threshold))
    return rec


def for_evaluation(model: LineFitModel) -> LineFitModel:
    """Evaluation always uses the argmin fit (unrolled models are evaluated through the same
    robust fit as every other method, so only the *training* differs)."""
    if model.mode in ("unrolled", "unrolled_newton"):
        model.mode = "argmin"
    return model


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-method mean ± std over seeds of the test metrics, and divergence counts."""
    rows = []
    for m in METHODS:
        rs = [r for r in records if r["method"] == m]
        if not rs:
            continue
        ok = [r for r in rs if not r.get("diverged")]
        row: dict[str, Any] = {"method": m, "seeds": len(rs), "diverged": len(rs) - len(ok)}
        for k in ("median", "mean", "rmse", "fail_rate", "train_seconds", "ms_per_problem", "c"):
            vals = torch.tensor([float(r[k]) for r in ok if k in r], dtype=torch.float64)
            row[k] = float(vals.mean()) if len(vals) else math.nan
            row[k + "_std"] = float(vals.std()) if len(vals) > 1 else 0.0
        gns = [r["max_grad_norm"] for r in ok if r.get("max_grad_norm") is not None]
        row["max_grad_norm"] = max(gns) if gns else None
        sp = [r["grad_spikes"] for r in ok if r.get("grad_spikes") is not None]
        row["grad_spikes"] = sum(sp) if sp else None
        for k in ("hmin_median", "frac_hmin_below_0.1"):
            vals = [float(r[k]) for r in ok if k in r]
            row[k] = sum(vals) / len(vals) if vals else math.nan
        rows.append(row)
    return rows


DESCRIPTIONS = {
    "uniform": "(a) uniform weights, c by grid search",
    "e2e": "(b) MLP end to end through argmin, λ=0.1",
    "e2e_undamped": "(c) same, λ=0 (Samuel & Tappen)",
    "classifier": "(d) MLP as inlier classifier (BCE), c by grid",
    "unrolled": "(e) MLP through 10 unrolled IRLS steps",
    "unrolled_newton": "(f) MLP through 10 unrolled LM-Newton steps",
}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table (mean ± std over seeds)."""
    lines = ["| method | seeds (diverged) | median ‖Δθ‖ | mean ‖Δθ‖ | failures (‖Δθ‖>0.1) | "
             "c | max grad norm (spikes) | test h_min < 0.1 | train s | test ms/problem |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gn = ("-" if r["max_grad_norm"] is None
              else f"{r['max_grad_norm']:.3g} ({r['grad_spikes']})")
        lines.append(
            f"| {DESCRIPTIONS[r['method']]} | {r['seeds']} ({r['diverged']}) | "
            f"{r['median']:.4f} ± {r['median_std']:.4f} | {r['mean']:.4f} ± {r['mean_std']:.4f} "
            f"| {100 * r['fail_rate']:.1f}% ± {100 * r['fail_rate_std']:.1f} | {r['c']:.3f} | "
            f"{gn} | {100 * r['frac_hmin_below_0.1']:.1f}% | {r['train_seconds']:.1f} | "
            f"{r['ms_per_problem']:.2f} |")
    return "\n".join(lines)


def run_study(out_dir: Path | None, st: StudySettings, spec: LineSpec | None = None,
              log: Any = print, resume: bool = False) -> dict[str, Any]:
    """All methods × seeds; writes ``endtoend_results.json`` in ``out_dir`` when given.

    ``resume``: continue interrupted run folders (finished ones are reloaded, not retrained)."""
    spec = spec or LineSpec()
    test = test_batch(st.n_test, 0, spec)
    records = []
    for seed in st.seeds:
        for m in st.methods:
            rec = run_method(m, seed, st, spec, out_dir, test, resume=resume)
            records.append(rec)
            log(f"[endtoend] seed {seed} {m:13s} median {rec['median']:.4f} mean "
                f"{rec['mean']:.4f} fail {rec['fail_rate']:.3f} c {rec['c']:.3f} "
                f"({rec['train_seconds']:.1f} s){' DIVERGED' if rec.get('diverged') else ''}")
    rows = summarise(records)
    result = {"label": LABEL, "settings": asdict(st), "spec": asdict(spec),
              "test_set": f"{st.n_test} held-out generated problems (a stream disjoint from "
                          "training and grid search)",
              "records": records, "summary": rows}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "endtoend_results.json").write_text(json.dumps(result, indent=1, default=str))
    return result
