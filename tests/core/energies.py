"""Test energies with parameters, shared by the core tests (float64)."""

from __future__ import annotations

import torch
from torch import Tensor


def quadratic(y: Tensor, l_mat: Tensor, b: Tensor) -> Tensor:
    """½ yᵀ (L Lᵀ + I) y - bᵀ y; L (n, n) shared, b (B, n) batched."""
    q = l_mat @ l_mat.T + torch.eye(l_mat.shape[0], dtype=y.dtype)
    return 0.5 * ((y @ q) * y).sum(-1) - (b * y).sum(-1)


def logsumexp(y: Tensor, w: Tensor, c: Tensor, alpha: Tensor) -> Tensor:
    """logsumexp(W y + c) + ½ α ||y||²; W (K, n), c (B, K), alpha scalar."""
    return torch.logsumexp(y @ w.T + c, dim=-1) + 0.5 * alpha * (y * y).sum(-1)


def welsch(y: Tensor, x: Tensor, t: Tensor, log_sigma: Tensor) -> Tensor:
    """Robust line fit: -Σ_i exp(-(t_i - y0 - y1 x_i)² / σ²) + 1e-2 ||y||²; x, t (B, N)."""
    r = t - y[:, :1] - y[:, 1:2] * x
    s2 = torch.exp(2 * log_sigma)
    return -torch.exp(-(r * r) / s2).sum(-1) + 1e-2 * (y * y).sum(-1)


def nonconvex(y: Tensor, a: Tensor, k: Tensor) -> Tensor:
    """Σ_j (y_j² - a_j)² / 4 + k·sin(y_0) y_1-ish coupling: a double well per coordinate."""
    return (((y * y - a) ** 2) / 4).sum(-1) + k * torch.sin(y[:, 0]) * y[:, 1]


def make_cases(seed: int = 0) -> dict[str, tuple]:
    """name -> (energy, y0, params) with every floating param requiring grad."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    b, n = 3, 3

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dt)

    cases = {
        "quadratic": (quadratic, r(b, n), (0.5 * r(n, n), r(b, n))),
        "logsumexp": (logsumexp, r(b, n) * 0.1, (r(5, n), r(b, 5), torch.tensor(0.7, dtype=dt))),
    }
    x = torch.linspace(-1, 1, 12, dtype=dt).expand(b, 12).clone()
    t = 0.3 + 0.8 * x + 0.05 * r(b, 12)
    t[:, ::5] += 2.0  # outliers
    cases["welsch"] = (
        welsch,
        torch.tensor([[0.3, 0.8]], dtype=dt).expand(b, 2).clone() + 0.05 * r(b, 2),
        (x, t, torch.tensor(-0.5, dtype=dt)),
    )
    cases["nonconvex"] = (
        nonconvex,
        torch.tensor([[1.0, -1.0]], dtype=dt).expand(b, 2).clone() + 0.1 * r(b, 2),
        (1.0 + 0.2 * r(2).abs(), torch.tensor(0.1, dtype=dt)),
    )
    return {
        k: (e, y0, tuple(p.clone().requires_grad_(True) for p in ps))
        for k, (e, y0, ps) in cases.items()
    }
