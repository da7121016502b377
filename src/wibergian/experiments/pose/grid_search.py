"""The reviewers' baseline: grid search over the few hand-tuned scalars at a matched budget.

Tome et al. tuned a handful of scalars by grid search (paper Table 3, marked ‡): the
regularisation scale ρ, the Huber scale δ and the fusion temperature T (one shared camera
weight is redundant with ρ and T, so it is not searched). This module evaluates configurations
of those multipliers on the *training* frames (P1, no gradients) in a seeded random order of a
full factorial grid until a wall-clock budget is spent, keeps the best, and reports how many
configurations fitted in the budget. Only those scalars change; μ, e, σ and the weights keep
their untrained values.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, field

import torch

from .datasets import PoseData
from .evaluate import evaluate_model
from .model import PoseModel

#: multipliers tried for each scalar (log-spaced around the hand-set value).
DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class GridResult:
    """Outcome of :func:`grid_search`.

    ``best``: {scalar: multiplier}; ``best_p1``: its training P1 (mm); ``tried``: list of
    (multipliers, training P1); ``seconds``: time spent; ``grid_size``: full grid size.
    """

    best: dict[str, float]
    best_p1: float
    tried: list[tuple[dict[str, float], float]] = field(default_factory=list)
    seconds: float = 0.0
    grid_size: int = 0


def _log_params(model: PoseModel) -> dict[str, torch.nn.Parameter]:
    out = {"reg": model.log_reg, "temp": model.log_temp}
    if model.config.loss == "huber":
        out["robust"] = model.log_robust
    return out


def apply(model: PoseModel, multipliers: dict[str, float]) -> None:
    """Set the searched scalars of ``model`` to ``hand-set value × multiplier``."""
    params = _log_params(model)
    with torch.no_grad():
        for name, m in multipliers.items():
            if name not in params:
                raise ValueError(f"unknown scalar {name!r}; expected one of {sorted(params)}")
            params[name].fill_(math.log(m))


def grid_search(model: PoseModel, train: PoseData, budget_seconds: float,
                multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS, seed: int = 0,
                min_configs: int = 1, frames: int | None = 96) -> GridResult:
    """Search the scalars of ``model`` (modified in place: left at the best configuration).

    Configurations are drawn without replacement, in a seeded random order, from the full
    grid ``multipliers ** num_scalars``, starting with the hand-set one (all 1), until
    ``budget_seconds`` have elapsed (at least ``min_configs`` are evaluated). Each is scored
    by P1 on a fixed seeded subset of ``frames`` training frames (all of them if ``None``),
    so that more configurations fit in the budget.
    """
    names = sorted(_log_params(model))
    grid = [dict(zip(names, combo, strict=True))
            for combo in itertools.product(multipliers, repeat=len(names))]
    rng = random.Random(seed)
    rng.shuffle(grid)
    if frames is not None and frames < train.num_frames:
        pick = sorted(rng.sample(range(train.num_frames), frames))
        train = train.subset(torch.tensor(pick))
    start = {n: 1.0 for n in names}
    grid = [start] + [g for g in grid if g != start]
    t0 = time.perf_counter()
    tried: list[tuple[dict[str, float], float]] = []
    for cfg in grid:
        if len(tried) >= min_configs and time.perf_counter() - t0 >= budget_seconds:
            break
        apply(model, cfg)
        p1 = float(evaluate_model(model, train)["P1"])
        tried.append((cfg, p1))
    best, best_p1 = min(tried, key=lambda t: t[1])
    apply(model, best)
    return GridResult(best=best, best_p1=best_p1, tried=tried,
                      seconds=time.perf_counter() - t0, grid_size=len(grid))
