"""The fitting energy of the lifting, ``E(θ, z)``, with closed-form gradient and Hessian.

Used by :func:`lifting.solve` through ``wibergian.argmin`` (see :mod:`.lifting` for the
linear problem it is built from).
"""

from __future__ import annotations

import torch
from torch import Tensor


class FitEnergy:
    """``E(y; params)`` of :class:`LinearProblem` for ``y = (θ, z)``, batched as (F·K, 1 + n).

    ``params = (a0, a1, a2, target, w, prior, delta)`` with a* (P, R, n), target and w (P, R),
    prior (P, n), delta (P,) (ignored by the L2 loss). Residual rows come in (x, y) pairs; the
    pseudo-Huber loss ``ρ(q) = 2δ²(√(1 + q/δ²) - 1)`` acts on the weighted squared norm ``q`` of
    each pair.

    Closed forms (used by ``wibergian.argmin`` instead of autograd), with ``J = ∂r/∂y =
    [-A'z, -A]``, ``A' = dA/dθ``, ``φ = ρ'(q)`` per pair (1 for L2) and ``c = φ ω`` per row:

        ∇E = 2 Jᵀ (c r) + 2 (0, π² z)
        ∇²E = 2 Jᵀ diag(c) J + 2 Σ c r ∂²r + Σ_pairs ρ''(q) ∂q ∂qᵀ + 2 diag(0, π²)

    where ``∂²r/∂θ² = -A''z``, ``∂²r/∂θ∂z = -A'`` and ``∂q = 2 Σ_pair ω r J``.
    """

    def __init__(self, loss: str) -> None:
        if loss not in ("l2", "huber"):
            raise ValueError(f"loss must be 'l2' or 'huber', got {loss!r}")
        self.loss = loss

    @staticmethod
    def _parts(yv: Tensor, a0: Tensor, a1: Tensor, a2: Tensor, target: Tensor) -> tuple[
        Tensor, Tensor, Tensor, Tensor, Tensor
    ]:
        theta, z = yv[:, :1], yv[:, 1:]
        c, s = torch.cos(theta)[..., None], torch.sin(theta)[..., None]
        a = a0 + c * a1 + s * a2
        ap = c * a2 - s * a1
        app = -(c * a1 + s * a2)
        r = target - (a @ z.unsqueeze(-1)).squeeze(-1)
        jac = torch.cat([-(ap @ z.unsqueeze(-1)), -a], dim=-1)  # (P, R, 1 + n)
        return r, jac, ap, (app @ z.unsqueeze(-1)).squeeze(-1), z

    def _pair_q(self, r: Tensor, w: Tensor) -> Tensor:
        return (w * r * r).reshape(r.shape[0], -1, 2).sum(-1)

    def _phi(self, q: Tensor, delta: Tensor) -> Tensor:
        """ρ'(q) per pair, repeated over its two rows: (P, R)."""
        if self.loss == "l2":
            return torch.ones_like(q).repeat_interleave(2, dim=-1)
        phi = torch.rsqrt(1.0 + q / delta.pow(2)[:, None])
        return phi.repeat_interleave(2, dim=-1)

    def __call__(self, yv: Tensor, a0: Tensor, a1: Tensor, a2: Tensor, target: Tensor,
                 w: Tensor, prior: Tensor, delta: Tensor) -> Tensor:
        theta, z = yv[:, :1], yv[:, 1:]
        a = a0 + torch.cos(theta)[..., None] * a1 + torch.sin(theta)[..., None] * a2
        r = target - (a @ z.unsqueeze(-1)).squeeze(-1)
        q = self._pair_q(r, w)
        if self.loss == "l2":
            data = q.sum(-1)
        else:
            d2 = delta.pow(2)[:, None]
            data = (2.0 * d2 * (torch.sqrt(1.0 + q / d2) - 1.0)).sum(-1)
        return data + (prior * z).pow(2).sum(-1)

    def gradient(self, yv: Tensor, a0: Tensor, a1: Tensor, a2: Tensor, target: Tensor,
                 w: Tensor, prior: Tensor, delta: Tensor) -> Tensor:
        r, jac, _, _, z = self._parts(yv, a0, a1, a2, target)
        coef = w * self._phi(self._pair_q(r, w), delta)
        g = 2.0 * (jac.transpose(-1, -2) @ (coef * r).unsqueeze(-1)).squeeze(-1)
        gp = 2.0 * prior.pow(2) * z
        return g + torch.cat([torch.zeros_like(gp[:, :1]), gp], dim=-1)

    def hessian(self, yv: Tensor, a0: Tensor, a1: Tensor, a2: Tensor, target: Tensor,
                w: Tensor, prior: Tensor, delta: Tensor) -> Tensor:
        r, jac, ap, appz, _ = self._parts(yv, a0, a1, a2, target)
        q = self._pair_q(r, w)
        coef = w * self._phi(q, delta)
        h = 2.0 * jac.transpose(-1, -2) @ (coef.unsqueeze(-1) * jac)
        t = coef * r
        h_tt = -2.0 * (t * appz).sum(-1)  # (P,)
        h_tz = -2.0 * (ap.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)  # (P, n)
        second = torch.zeros_like(h)
        second[:, 0, 0] = h_tt
        second[:, 0, 1:] = h_tz
        second[:, 1:, 0] = h_tz
        h = h + second
        if self.loss == "huber":
            d2 = delta.pow(2)[:, None]
            rho2 = -0.5 / d2 * torch.rsqrt(1.0 + q / d2).pow(3)  # (P, pairs)
            dq = 2.0 * ((w * r).unsqueeze(-1) * jac).reshape(r.shape[0], -1, 2, jac.shape[-1])
            dq = dq.sum(2)  # (P, pairs, 1 + n)
            h = h + torch.einsum("pq,pqi,pqj->pij", rho2, dq, dq)
        pd = 2.0 * prior.pow(2)
        return h + torch.diag_embed(torch.cat([torch.zeros_like(pd[:, :1]), pd], dim=-1))
