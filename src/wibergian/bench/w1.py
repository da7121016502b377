"""W1, the fusion-like benchmark workload (``n = 2``).

Problem ``b`` has ``K = 72`` candidate points ``(a_bk, c_bk)`` around a ground truth ``g_b`` and
the energy

    E_b(y) = -Σ_k m_k exp(-(y_0 - a_bk)²/s0_k² - (y_1 - c_bk)²/s1_k²)

with learnable ``m, s0, s1`` (shape ``(K,)``, initial 1, 10, 10). Candidates ``k < 43`` (60 %)
are inliers ``g_b + N(0, 3²)``; the other 29 are outliers uniform in ``[-60, 60]²`` (absolute
coordinates). ``g_b`` is uniform in ``[-20, 20]²``. Forward: start at the candidate of lowest
energy (an ``O(B·K²)`` search, chunked), then 20 damped Newton iterations. Loss: mean over
problems of ``||y*_b - g_b||_1``.

All data is **generated** (seeded). Shared by every method (torch, JAX, TorchOpt) through
``workloads.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import fused, w1_fused_energy
from .w1_search import best_index

K_WELLS = 72
N_INLIERS = 43  # 60 % of 72, rounded


@dataclass
class W1Data:
    """A generated W1 instance.

    Attributes:
        a, c: candidate coordinates, each ``(B, K)``.
        g: ground truth ``(B, 2)``.
        m, s0, s1: initial learnable parameters, each ``(K,)`` (1, 10, 10).
    """

    a: Tensor
    c: Tensor
    g: Tensor
    m: Tensor
    s0: Tensor
    s1: Tensor

    @property
    def batch(self) -> int:
        return int(self.a.shape[0])

    def numpy(self) -> dict[str, np.ndarray]:
        """The same instance as numpy arrays (for the JAX methods)."""
        keys = ("a", "c", "g", "m", "s0", "s1")
        return {k: getattr(self, k).detach().cpu().numpy() for k in keys}


def make_w1(batch: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> W1Data:
    """Generate W1 with ``batch`` problems (seeded; one draw per call, so instances of different
    sizes are different draws)."""
    if batch < 1:
        raise ValueError(f"W1 batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    g = (torch.rand(batch, 2, generator=gen, dtype=dtype) * 2 - 1) * 20.0
    inl = g.unsqueeze(1) + 3.0 * torch.randn(batch, N_INLIERS, 2, generator=gen, dtype=dtype)
    n_out = K_WELLS - N_INLIERS
    out = (torch.rand(batch, n_out, 2, generator=gen, dtype=dtype) * 2 - 1) * 60.0
    pts = torch.cat([inl, out], dim=1)
    ones = torch.ones(K_WELLS, dtype=dtype)
    return W1Data(
        a=pts[..., 0].contiguous(),
        c=pts[..., 1].contiguous(),
        g=g,
        m=ones.clone(),
        s0=10.0 * ones,
        s1=10.0 * ones,
    )


def w1_energy(y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """W1 energy ``(B,)`` for ``y`` ``(B, 2)``, candidates ``a, c`` ``(B, K)``, params ``(K,)``."""
    u = (y[:, :1] - a) ** 2 / s0**2 + (y[:, 1:] - c) ** 2 / s1**2
    return -(m * torch.exp(-u)).sum(-1)


class W1Energy:
    """W1 energy with closed-form gradient and Hessian (the core's ``Energy`` protocol).

    With ``w_k = m_k exp(-u_k)``, ``p_k = 2(y_0 - a_k)/s0_k²``, ``q_k = 2(y_1 - c_k)/s1_k²``:
    ``∇E = (Σ w_k p_k, Σ w_k q_k)`` and
    ``∇²E = Σ w_k [[2/s0_k² - p_k², -p_k q_k], [-p_k q_k, 2/s1_k² - q_k²]]``.

    Every evaluation runs over blocks of ``rows`` problems: the ``(rows, K)`` temporaries then
    stay in cache (one ``(20000, 72)`` float64 temporary is 11 MB, and eager PyTorch at that size
    is bound by memory traffic and page faults; blocks of 2048 rows measured ~10x faster here).
    ``value_gradient_hessian`` returns all three from one exponential per term.
    """

    def __init__(self, rows: int = 2048):
        self.rows = rows
        self._columns = w1_fused_energy.ColumnBlocks()

    def _blocks(self, fn, y: Tensor, a: Tensor, c: Tensor, *shared: Tensor):
        b, r = y.shape[0], self.rows
        if b <= r:
            return fn(y, a, c, *shared)
        outs = [fn(y[i : i + r], a[i : i + r], c[i : i + r], *shared) for i in range(0, b, r)]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(z) for z in zip(*outs, strict=True))
        return torch.cat(outs)

    def __call__(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> Tensor:
        return self._blocks(w1_energy, y, a, c, m, s0, s1)

    def gradient(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> Tensor:
        return self._blocks(_w1_gradient, y, a, c, m, s0, s1)

    def hessian(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> Tensor:
        return self._blocks(_w1_vgh, y, a, c, m, s0, s1)[2]

    def value_gradient_hessian(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(E (B,), ∇E (B, 2), ∇²E (B, 2, 2))`` in one pass: one fused loop when nothing is
        tracked by autograd and ``torch.compile`` is on (``w1_fused_energy.py``)."""
        tracked = torch.is_grad_enabled() and any(
            t.requires_grad for t in (y, a, c, m, s0, s1))
        if fused.enabled() and not tracked and y.dtype == torch.float64:
            return w1_fused_energy.value_gradient_hessian(self._columns, y, a, c, m, s0, s1)
        return self._blocks(_w1_vgh, y, a, c, m, s0, s1)


def _w1_gradient(y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """Differentiable closed-form gradient ``(B, 2)``."""
    i0, i1 = 1.0 / s0**2, 1.0 / s1**2
    d0, d1 = y[:, :1] - a, y[:, 1:] - c
    w = m * torch.exp(-(d0 * d0 * i0 + d1 * d1 * i1))
    return 2.0 * torch.stack([(w * d0 * i0).sum(-1), (w * d1 * i1).sum(-1)], dim=-1)


def _w1_vgh(
    y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Value, gradient and Hessian from one exponential per well, in few passes over ``(B, K)``:
    with ``t0 = (y_0 - a) i0``, ``t1 = (y_1 - c) i1`` (``i = 1/s²``) and ``w = m exp(-u)``,
    ``∇E = 2 (Σ w t0, Σ w t1)`` and ``∇²E = [[2 Σ w i0 - 4 Σ w t0², -4 Σ w t0 t1], [·, 2 Σ w i1 -
    4 Σ w t1²]]``; the ``Σ w i`` terms are matrix-vector products."""
    i0, i1 = 1.0 / s0**2, 1.0 / s1**2
    d0, d1 = y[:, :1] - a, y[:, 1:] - c
    t0, t1 = d0 * i0, d1 * i1
    u = torch.addcmul(d0 * t0, d1, t1)
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (y, a, c, m, s0, s1))
    w = torch.exp(-u) * m if tracked else u.neg_().exp_().mul_(m)  # in place when untracked
    wt0, wt1 = w * t0, w * t1
    g = torch.stack([wt0.sum(-1), wt1.sum(-1)], -1) * 2.0
    h00 = 2.0 * (w @ i0) - 4.0 * torch.linalg.vecdot(wt0, t0)
    h11 = 2.0 * (w @ i1) - 4.0 * torch.linalg.vecdot(wt1, t1)
    h01 = -4.0 * torch.linalg.vecdot(wt0, t1)
    h = torch.stack([torch.stack([h00, h01], -1), torch.stack([h01, h11], -1)], -2)
    return -w.sum(-1), g, h


def w1_best_candidate(
    a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor, chunk_bytes: int = 4 << 20
) -> Tensor:
    """The candidate of lowest energy per problem, ``(B, 2)``, without gradient.

    Evaluates every problem's energy at each of its ``K`` candidates (``B·K²`` exponentials):
    fused by ``torch.compile`` where available, else in float64 blocks of about
    ``chunk_bytes`` (see ``w1_search.py``).
    """
    idx = best_index(a, c, m, s0, s1, chunk_bytes)
    return torch.stack([a.gather(1, idx[:, None]), c.gather(1, idx[:, None])], -1)[:, 0].detach()


def w1_loss(y: Tensor, g: Tensor) -> Tensor:
    """Mean over problems of ``||y_b - g_b||_1``."""
    return (y - g).abs().sum(-1).mean()
