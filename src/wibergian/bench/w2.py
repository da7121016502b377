"""W2, the pose-like benchmark workload (``n = 40``).

Problem ``b`` has per-row confidences ``w_b ∈ [0.1, 1]^68`` and observations ``x_b ∈ R^68``; with
learnable ``A`` (68×40) and ``σ`` (40,)

    E_b(y) = Σ_i w_bi (A_i·y - x_bi)² + Σ_j (σ_j y_j)²,

i.e. 68 weighted data rows plus the prior rows ``σ·y``. The minimiser solves
``(Aᵀ W_b A + diag σ²) y = Aᵀ W_b x_b``: one 40×40 factorisation per problem. Loss: mean
squared error to the known ``y_b``.

All data is **generated** (seeded). Shared by every method (torch, JAX, Theseus, TorchOpt)
through ``workloads.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

W2_ROWS = 68
W2_DIM = 40


@dataclass
class W2Data:
    """A generated W2 instance.

    Attributes:
        w: row confidences ``(B, 68)`` in ``[0.1, 1]``.
        x: observations ``(B, 68)``.
        y_true: the known solutions ``(B, 40)``.
        A: initial learnable matrix ``(68, 40)`` (the generating matrix, perturbed).
        sigma: initial learnable prior scales ``(40,)`` (0.1).
    """

    w: Tensor
    x: Tensor
    y_true: Tensor
    A: Tensor
    sigma: Tensor

    @property
    def batch(self) -> int:
        return int(self.w.shape[0])

    def numpy(self) -> dict[str, np.ndarray]:
        keys = ("w", "x", "y_true", "A", "sigma")
        return {k: getattr(self, k).detach().cpu().numpy() for k in keys}


def make_w2(batch: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> W2Data:
    """Generate W2: ``x_b = A_true y_b + 0.05 ε``; the learnable ``A`` starts at
    ``A_true + 0.1 N(0, 1)/√40``."""
    if batch < 1:
        raise ValueError(f"W2 batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    a_true = torch.randn(W2_ROWS, W2_DIM, generator=gen, dtype=dtype) / W2_DIM**0.5
    y = torch.randn(batch, W2_DIM, generator=gen, dtype=dtype)
    x = y @ a_true.T + 0.05 * torch.randn(batch, W2_ROWS, generator=gen, dtype=dtype)
    w = 0.1 + 0.9 * torch.rand(batch, W2_ROWS, generator=gen, dtype=dtype)
    a0 = a_true + 0.1 * torch.randn(W2_ROWS, W2_DIM, generator=gen, dtype=dtype) / W2_DIM**0.5
    return W2Data(w=w, x=x, y_true=y, A=a0, sigma=torch.full((W2_DIM,), 0.1, dtype=dtype))


def w2_energy(y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
    """W2 energy ``(B,)`` for ``y`` ``(B, 40)``."""
    r = y @ A.T - x
    return (w * r * r).sum(-1) + ((sigma * y) ** 2).sum(-1)


class W2Energy:
    """W2 energy with closed forms: ``∇E = 2(Aᵀ W (A y - x) + σ² y)``,
    ``∇²E = 2(Aᵀ W A + diag σ²)``."""

    def __call__(self, y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
        return w2_energy(y, w, x, A, sigma)

    def gradient(self, y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
        return 2.0 * ((w * (y @ A.T - x)) @ A + sigma**2 * y)

    def hessian(self, y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
        # 2(Aᵀ W A + diag σ²) in one (B, 40, 40) buffer: the factor 2 rides on A (68×40) and
        # the prior goes onto the diagonal in place (no diag_embed temporary)
        h = torch.einsum("ri,br,rj->bij", 2.0 * A, w, A)
        torch.diagonal(h, dim1=-2, dim2=-1).add_(2.0 * sigma**2)
        return h


def w2_normal_matrix(w: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
    """``Aᵀ W_b A + diag σ²`` per problem, ``(B, 40, 40)``."""
    m = torch.einsum("ri,br,rj->bij", A, w, A)
    return m + torch.diag_embed((sigma**2).expand(w.shape[0], -1))


def w2_design(w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The stacked least-squares system ``([√w_b ⊙ A; diag σ], [√w_b ⊙ x_b; 0])``:
    shapes ``(B, 108, 40)`` and ``(B, 108)``."""
    sw = w.sqrt()
    top = sw.unsqueeze(-1) * A
    prior = torch.diag_embed(sigma.expand(w.shape[0], -1))
    rhs = torch.cat([sw * x, torch.zeros(w.shape[0], W2_DIM, dtype=x.dtype)], -1)
    return torch.cat([top, prior], 1), rhs


def w2_loss(y: Tensor, y_true: Tensor) -> Tensor:
    """Mean squared error to the known solutions."""
    return ((y - y_true) ** 2).mean()
