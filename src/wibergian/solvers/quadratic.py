"""Exact minimisation of energies that are quadratic in ``y`` (least squares and the like).

For ``E(y) = ½ yᵀ H y - bᵀ y + c`` (``H`` may depend on the parameters, not on ``y``) the minimiser
is one Newton step from any point: ``y* = y₀ - H^-1 ∇E(y₀)``. ``QuadraticSolve`` takes that step
with a Cholesky factor of ``H`` and refines it with the same factor while ``||∇E||_∞`` is above the
tolerance (rounding on an ill-conditioned ``H``). It keeps the factor (``SolveResult.factor``,
``shift = 0``, ``constant = True``), which lets the backward

- skip the positive semi-definiteness test (the factorisation proved ``H`` positive definite), and
- reuse the factor outright when ``damping = 0``: the exact closed-form derivative of a
  quadratic's minimiser then costs two triangular solves per problem and no new factorisation.

Where ``H`` is not positive definite (rank-deficient least squares, say) the step is the
minimum-norm pseudo-inverse one, ``-Σ_{h_i > τ} q_i q_iᵀ ∇E / h_i`` with
``τ = sqrt(eps)·max(1, max_i |h_i|)``; such problems are counted in ``pinv_problems`` and the
factor is not offered to the backward. A negative eigenvalue below ``-τ`` means the energy is
unbounded below: that problem is marked not converged.

The energy must really be quadratic in ``y``: nothing checks that ``H`` is constant, but a
non-quadratic energy shows up as a gradient that the refinement cannot bring under the tolerance
(``converged`` false, and ``argmin`` warns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..cholesky import HessianFactor, cholesky, cholesky_apply
from ..derivatives import gradient, gradient_and_hessian
from ..energy import EnergyFn
from .base import SolveResult
from .nonfinite import finite_start


@dataclass
class QuadraticSolve:
    """Closed-form minimiser of a quadratic energy; keeps the Cholesky factor for the backward.

    Attributes:
        refine: extra steps with the same factor when the gradient is above ``tol``.
        tol: gradient tolerance ``||∇E||_∞`` relative to ``1 + ||∇E(y₀)||_∞`` (``None``: by dtype,
            ``1e-10`` in float64 and ``1e-4`` in float32).
        record: after each call, ``pinv_problems`` (problems solved by the pseudo-inverse).
    """

    refine: int = 2
    tol: float | None = None
    record: dict[str, int] = field(default_factory=dict)

    def minimize(self, energy: EnergyFn, y0: Tensor, params: Sequence[Tensor]) -> SolveResult:
        with torch.no_grad():
            ps = [p.detach() for p in params]
            y = y0.detach().clone()
            y, (g, h), _ = finite_start(lambda z: gradient_and_hessian(energy, z, ps), y,
                                        "QuadraticSolve")
            chol, ok = cholesky(h)
            step = cholesky_apply(chol, g)
            ok = ok & torch.isfinite(step).all(-1)
            bounded = torch.ones_like(ok)
            if not bool(ok.all()):
                step[~ok], bounded[~ok] = _pinv_step(h[~ok], g[~ok])
            y -= step
            tol = self.tol if self.tol is not None else (
                1e-10 if y.dtype == torch.float64 else 1e-4)
            scale = 1.0 + g.abs().amax(-1)
            iters = torch.ones(y.shape[0], dtype=torch.long, device=y.device)
            for k in range(self.refine + 1):  # one gradient per point visited
                g = gradient(energy, y, ps)
                small = g.abs().amax(-1) <= tol * scale
                fix = ~small & ok
                if k == self.refine or not bool(fix.any()):
                    break
                y[fix] -= cholesky_apply(chol[fix], g[fix])
                iters += fix.long()
            converged = bounded & small
            self.record["pinv_problems"] = int((~ok).sum())
        return SolveResult(y=y, converged=converged, iterations=iters,
                           factor=HessianFactor(chol, ok, shift=0.0, constant=True))


def _pinv_step(h: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-norm step ``H^+ g`` ``(b, n)`` and whether each energy is bounded below."""
    evals, evecs = torch.linalg.eigh(h)
    tau = (torch.finfo(h.dtype).eps ** 0.5) * evals.abs().amax(-1, keepdim=True).clamp_min(1.0)
    keep = evals > tau
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), 0.0)
    coeff = (evecs.mT @ g.unsqueeze(-1)).squeeze(-1) * inv
    return (evecs @ coeff.unsqueeze(-1)).squeeze(-1), evals[:, 0] >= -tau[:, 0]
