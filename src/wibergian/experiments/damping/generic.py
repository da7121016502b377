"""Gradient distributions and training sweeps for an experiment trained by the shared Trainer.

An experiment enters the study as a `Task` (fusion, end-to-end line fitting, pose): a model
factory, its loss, its training data, a held-out metric and a way to cut the training data into
problems and batches. Nothing in the experiment is changed: the method is imposed on every
``wibergian.argmin`` call (`regimes.imposed`), clipping and the optimiser are the Trainer's.

Rules (all experiments):

- *diverged*: the Trainer stopped on a non-finite loss, gradient or parameter, the solver raised,
  or some parameter exceeded ``task.explode_threshold`` in magnitude at the end;
- *collapsed*: finished, but the held-out metric is worse than the untrained model's;
- paired differences are per (optimiser, lr) cell over seeds, method − ridge, on runs where
  both finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from wibergian.progress import phase
from wibergian.train import NonFiniteError, TrainConfig, Trainer

from .regimes import (
    CLIP_FACTOR,
    DAMPING,
    METHOD_SPECS,
    RELATIVE_FACTOR,
    CurvatureLog,
    global_grad_norm,
    imposed,
    method_context,
)
from .stats import paired_difference, tail_report


@dataclass
class Task:
    """One experiment as the study sees it.

    Attributes:
        name: short name (``fusion_zoo``, ``endtoend``, ...).
        data: what the data are (generated / real-tracker output on generated video / ...).
        make_model: ``seed -> model`` (the untrained model; seeded initialisation).
        loss_fn: the experiment's training loss ``(model, batch) -> (loss, metrics)``.
        train_data: what the Trainer samples (tensors tuple or ``(step, generator) -> batch``).
        problems: ``(size, count, seed) -> iterator of batches`` of training problems, used for
            the per-problem (size 1) and per-batch gradient norms.
        evaluate: ``model -> held-out metric`` (forward only).
        metric: name of the metric; ``higher_is_better`` its direction.
        explode_threshold: |parameter| above this at the end counts as diverged.
        dtype: the model's dtype.
    """

    name: str
    data: str
    make_model: Callable[[int], nn.Module]
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    train_data: Any
    problems: Callable[[int, int, int], Iterator[Any]]
    evaluate: Callable[[nn.Module], float]
    metric: str
    higher_is_better: bool
    explode_threshold: float = 1e4
    optimizer_factory: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _norms(task: Task, model: nn.Module, batches: Iterator[Any]) -> np.ndarray:
    out = []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        try:
            loss, _ = task.loss_fn(model, batch)
            loss.backward()
            out.append(global_grad_norm(model))
        except (FloatingPointError, RuntimeError, ValueError):
            out.append(math.inf)
    model.zero_grad(set_to_none=True)
    return np.asarray(out, dtype=float)


def gradient_distribution(task: Task, n_problems: int, n_batches: int, batch: int,
                          quiet: bool, seed: int = 0) -> dict[str, Any]:
    """Per-problem and per-batch gradient norms at the initial parameters (λ = 0, ridge, floor),
    the curvature at the solutions, the relative λ and the clipping threshold."""
    model = task.make_model(seed)
    out: dict[str, Any] = {"task": task.name, "data": task.data, "n_problems": n_problems,
                           "n_batches": n_batches, "batch": batch, "at": "initial parameters",
                           "methods": {}}
    raw: dict[str, dict[str, np.ndarray]] = {}
    with phase(f"damping {task.name}: gradient distributions", total=3, unit="method",
               quiet=quiet) as p:
        for name in ("lambda0", "ridge", "floor"):
            m = METHOD_SPECS[name]
            log = CurvatureLog()
            with imposed(float(m.damping), m.regulariser, log if name == "lambda0" else None):
                per_problem = _norms(task, model, task.problems(1, n_problems, seed))
                per_batch = _norms(task, model, task.problems(batch, n_batches, seed + 1))
            out["methods"][name] = {"per_problem": tail_report(per_problem),
                                    "per_batch": tail_report(per_batch)}
            raw[name] = {"per_problem": per_problem, "per_batch": per_batch}
            if name == "lambda0":
                hmin, hmean = log.values()
                out["solutions"] = int(hmin.numel())
                out["frac_curvature_below_lambda"] = float((hmin < DAMPING).double().mean())
                out["frac_curvature_nonpositive"] = float((hmin <= 0).double().mean())
                out["median_min_curvature"] = float(hmin.median())
                out["median_mean_curvature"] = float(hmean.median())
                out["relative_lambda"] = RELATIVE_FACTOR * float(hmean.median())
                fin = per_batch[np.isfinite(per_batch)]
                out["clip"] = CLIP_FACTOR * float(np.median(fin))
            p.update()
    out["_raw"] = raw
    return out


@dataclass
class SweepSpec:
    """Optimiser x lr grid, methods, seeds and budget of one task's training sweep."""

    lrs: dict[str, list[float]]
    methods: list[str]
    seeds: list[int]
    steps: int
    batch_size: int
    momentum: float = 0.9


def _config(kind: str, lr: float, spec: SweepSpec, seed: int, clip: float | None
            ) -> TrainConfig:
    opt, mom = {"sgd": ("sgd", 0.0), "momentum": ("sgd", spec.momentum), "asgd": ("asgd", 0.0),
                "adam": ("adam", 0.0)}[kind]
    return TrainConfig(steps=spec.steps, batch_size=spec.batch_size, lr=lr, optimizer=opt,
                       momentum=mom, seed=seed, checkpoint_every=0, quiet=True, plot=False,
                       log_every=max(1, spec.steps // 10), grad_clip=clip)


def train_one(task: Task, method: str, kind: str, lr: float, seed: int, spec: SweepSpec,
              relative_lambda: float, clip: float) -> dict[str, Any]:
    """Train one run; returns status, held-out metric and gradient-norm statistics."""
    m = METHOD_SPECS[method]
    torch.manual_seed(seed)
    model = task.make_model(seed)
    cfg = _config(kind, lr, spec, seed, clip if m.clip else None)
    rec: dict[str, Any] = {"method": method, "optimizer": kind, "lr": lr, "seed": seed}
    t0 = time.perf_counter()
    opt = task.optimizer_factory(model, cfg) if task.optimizer_factory else None
    with method_context(m, relative_lambda):
        try:
            res = Trainer(model, task.loss_fn, task.train_data, cfg, optimizer=opt).fit()
            gn = [h["grad_norm"] for h in res.history if h.get("split") == "train"]
            rec.update(status="completed", final_loss=res.final_loss,
                       grad_norm_max_over_median=(max(gn) / float(np.median(gn)))
                       if gn and np.median(gn) > 0 else None)
        except NonFiniteError as err:
            rec.update(status="diverged", step=err.step, reason=str(err).splitlines()[0])
        except (FloatingPointError, RuntimeError, ValueError) as err:
            rec.update(status="diverged", reason=f"{type(err).__name__}: {err}"[:200])
        if rec["status"] == "completed":
            big = max(float(p.detach().abs().max()) for p in model.parameters())
            if not math.isfinite(big) or big > task.explode_threshold:
                rec.update(status="diverged", reason=f"parameters exploded (max |w| = {big:.3g})")
        if rec["status"] == "completed":
            try:
                rec["metric"] = float(task.evaluate(model))
            except (FloatingPointError, RuntimeError, ValueError) as err:
                rec.update(status="diverged", reason=f"evaluation failed: {err}"[:200])
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def train_sweep(task: Task, spec: SweepSpec, relative_lambda: float, clip: float,
                quiet: bool) -> dict[str, Any]:
    """Every method x (optimiser, lr) x seed of ``spec``; cells with counts and paired CIs."""
    init = float(task.evaluate(task.make_model(spec.seeds[0])))
    combos = [(k, lr) for k, lrs in spec.lrs.items() for lr in lrs]
    total = len(combos) * len(spec.methods) * len(spec.seeds)
    records = []
    with phase(f"damping {task.name}: training sweep", total=total, unit="run",
               quiet=quiet) as p:
        for kind, lr in combos:
            for method in spec.methods:
                for seed in spec.seeds:
                    records.append(train_one(task, method, kind, lr, seed, spec,
                                             relative_lambda, clip))
                    p.update()
    worse = (lambda v: v < init) if task.higher_is_better else (lambda v: v > init)
    cells = []
    for kind, lr in combos:
        cell: dict[str, Any] = {"optimizer": kind, "lr": lr, "methods": {}}
        for method in spec.methods:
            rs = [r for r in records if (r["optimizer"], r["lr"], r["method"]) ==
                  (kind, lr, method)]
            vals = [r.get("metric") for r in rs]
            fin = [v for v in vals if v is not None]
            cell["methods"][method] = {
                "diverged": sum(r["status"] == "diverged" for r in rs),
                "collapsed": sum(worse(v) for v in fin), "runs": len(rs),
                "metric": vals, "median_metric": float(np.median(fin)) if fin else None,
                "grad_norm_max_over_median": [r.get("grad_norm_max_over_median") for r in rs],
            }
        if "ridge" in spec.methods:
            ref = [np.nan if v is None else v for v in cell["methods"]["ridge"]["metric"]]
            cell["paired_vs_ridge"] = {
                mth: paired_difference(
                    [np.nan if v is None else v for v in cell["methods"][mth]["metric"]], ref)
                for mth in spec.methods if mth != "ridge"}
        cells.append(cell)
    return {"task": task.name, "data": task.data, "metric": task.metric,
            "higher_is_better": task.higher_is_better, "initial_metric": init,
            "relative_lambda": relative_lambda, "clip": clip, "steps": spec.steps,
            "batch_size": spec.batch_size, "seeds": spec.seeds, "lrs": spec.lrs,
            "momentum": spec.momentum,
            "divergence_rule": "non-finite loss/gradient/parameter, solver error, or |w| > "
                               f"{task.explode_threshold:g} at the end",
            "collapse_rule": f"finished, held-out {task.metric} worse than the untrained "
                             f"model's ({init:.4g})",
            "cells": cells, "runs": records}
