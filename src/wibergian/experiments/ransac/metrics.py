"""Held-out evaluation: mean squared error of the estimated inlier mean."""

from __future__ import annotations

import torch

from .data import ToyBatch
from .energy import estimate_mean


def mse_of_sigma(sigma: float, test: ToyBatch, chunk: int = 2000) -> float:
    """``mean_b (t*_b(σ) - mu_b)²`` over the test problems (forward only)."""
    return mse_and_se_of_sigma(sigma, test, chunk)[0]


def mse_and_se_of_sigma(sigma: float, test: ToyBatch, chunk: int = 2000) -> tuple[float, float]:
    """``(MSE, its standard error over the test problems sd/sqrt(n))`` at a fixed σ."""
    errs = []
    with torch.no_grad():
        for i in range(0, test.x.shape[0], chunk):
            x = test.x[i:i + chunk]
            t = estimate_mean(x, torch.full((x.shape[0],), float(sigma), dtype=x.dtype), 0.1)
            errs.append((t - test.mu[i:i + chunk]) ** 2)
    e = torch.cat(errs)
    se = float(e.std() / e.numel() ** 0.5) if e.numel() > 1 else float("nan")
    return float(e.mean()), se


def mse_of_median(test: ToyBatch) -> float:
    """Baseline: the sample median of all points (the average of the two middle ones)."""
    return float(((torch.quantile(test.x, 0.5, dim=1) - test.mu) ** 2).mean())


def mse_of_mean(test: ToyBatch) -> float:
    """Baseline: the plain mean of all points."""
    return float(((test.x.mean(dim=1) - test.mu) ** 2).mean())
