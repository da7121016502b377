"""The MLESAC-style energy and its differentiable minimiser.

    E(t; x, σ) = Σ_i -exp(-(x_i - t)² / σ²)          t ∈ R (n = 1), x ∈ R^N, σ ≠ 0

The estimate of the inlier mean is ``t*(σ) = argmin_t E``, found by the core's multi-start
(every data point is a candidate start, the lowest-energy one is kept — "start from the best data
point") followed by trust-region Newton. Its gradient w.r.t. σ is the core's damped implicit
gradient ``dt*/dσ = -(E''(t*) + λ)^-1 ∂E'(t*)/∂σ``; nothing here differentiates E by hand.
"""

from __future__ import annotations

import torch
from torch import Tensor

import wibergian


def rbf_energy(y: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """``E(t; x, σ)`` for a batch.

    Args:
        y: ``(B, 1)`` locations ``t``.
        x: ``(B, N)`` data points of each problem.
        sigma: ``(B, 1)`` kernel width of each problem.

    Returns:
        ``(B,)`` energies.
    """
    return -torch.exp(-((x - y) ** 2) / sigma**2).sum(dim=-1)


def estimate_mean(
    x: Tensor, sigma: Tensor, damping: float, *, return_info: bool = False,
) -> Tensor | tuple[Tensor, wibergian.ArgminInfo]:
    """``t*(σ)`` for each problem, differentiable w.r.t. ``sigma`` (and ``x``).

    Args:
        x: ``(B, N)`` data points.
        sigma: ``(B,)`` or ``(B, 1)`` kernel widths (may require grad).
        damping: λ of the damped implicit gradient (0 = plain implicit differentiation).

    Returns:
        ``(B,)`` minimisers (and the core's ``ArgminInfo`` when ``return_info``).
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, N); got {tuple(x.shape)}")
    sig = sigma.reshape(-1, 1)
    if sig.shape[0] != x.shape[0]:
        raise ValueError(f"sigma has {sig.shape[0]} entries for {x.shape[0]} problems")
    out = wibergian.argmin(
        rbf_energy, x[:, :1].detach(), (x, sig), damping=damping,
        candidates=x.detach().unsqueeze(-1), return_info=return_info, warn=False,
    )
    if return_info:
        y, info = out
        return y[:, 0], info
    return out[:, 0]
