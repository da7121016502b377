"""The backward's solve at ``y*`` from the final step's factor at the nearby solver point.

The final damped step factors ``M₀ = H(y₀) + λI`` at the solver's point ``y₀`` and moves to
``y* = y₀ - M₀⁻¹∇E(y₀)``; the backward solves ``M u = ȳ`` with ``M = H(y*) + λI``. At a
converged point the two matrices differ by rounding-level amounts (on the dense ridge-logistic
workload ``||H(y*) - H(y₀)||_F`` has median 6e-12 at n = 8, 6e-10 at n = 32, largest 5e-8:
``docs/factorisations.md``), so instead of a new factorisation (and a semi-definiteness
certificate, a second one) :func:`refined_solve` runs iterative refinement with ``M₀``'s factor
as the preconditioner:

    u₀ = M₀⁻¹ ȳ,    u_{k+1} = u_k + M₀⁻¹ (ȳ - M u_k)

(``M u`` is one batched matrix-vector product with ``H(y*)``, which the forward built), which
converges like ``||M₀⁻¹(M - M₀)||^k ≤ (||ΔH||/λ)^k``. A problem is solved this way when

- ``H(y*)`` is positive semi-definite: the forward certified it (``AdjointSpec.psd``), or
  ``H(y₀)`` was certified (``HessianFactor.psd``) and ``||H(y*) - H(y₀)||_F ≤ sqrt(eps)·λ`` —
  then ``λ_min(H(y*)) ≥ -sqrt(eps)·λ`` (Weyl), where the ridge solve and the bound-preserving
  fallback (eigenvalues clamped at 0) differ by at most a relative ``sqrt(eps)``, so the
  certificate carries over — or else ``spectral.certify_psd`` passes on those problems alone;
- the refinement's residual ``||ȳ - M u|| / ||ȳ||`` falls to ``RESIDUAL`` (float64; ``sqrt`` of
  it in float32) within :data:`MAX_STEPS` refinements.

Every other problem (not certified at ``y₀``, moved too far, a non-finite ``H``, not converged)
goes through ``linsolve.dense_solve`` as before, so its factorisation, certificate and fallbacks
are unchanged. ``SolveStats.refined`` counts the problems solved here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .cholesky import HessianFactor, cholesky_apply
from .linsolve import SolveStats, dense_solve
from .spectral import certify_psd

#: refinements at most, after the first solve with the nearby factor
MAX_STEPS = 3
#: the relative residual ``||ȳ - M u|| / ||ȳ||`` a refined problem must reach (float64)
RESIDUAL = 1e-13


@dataclass
class NearbyFactor:
    """The final step's factor ``factor`` of ``H(y₀) + λI`` at the solver's point (its ``psd``:
    the problems whose ``H(y₀)`` was certified positive semi-definite) and ``close`` ``(B,)``:
    where ``||H(y*) - H(y₀)||_F ≤ sqrt(eps)·λ`` (measured by :func:`nearby_factor` in the
    forward, so ``H(y₀)`` itself is not kept for the backward)."""

    factor: HessianFactor
    close: Tensor


def nearby_factor(factor: HessianFactor, h_pre: Tensor, h_star: Tensor, damping: float
                  ) -> NearbyFactor | None:
    """The :class:`NearbyFactor` for a backward at ``y*`` (``None`` where refinement cannot
    apply: no damping, another shift, no certificate, other shapes)."""
    if (damping <= 0 or factor.shift != damping or factor.psd is None
            or factor.chol.shape != h_star.shape or h_pre.shape != h_star.shape):
        return None
    margin = torch.finfo(h_star.dtype).eps ** 0.5 * damping
    return NearbyFactor(factor, torch.linalg.matrix_norm(h_star - h_pre) <= margin)


def refined_solve(near: NearbyFactor, h: Tensor, rhs: Tensor, damping: float,
                  psd_known: bool | Tensor = False) -> tuple[Tensor, SolveStats] | None:
    """``(H + λI)⁻¹ rhs`` for ``h`` ``(B, n, n)`` and ``rhs`` ``(B, n)`` (ridge, ``λ > 0``), by
    refinement from ``near`` where it applies and by ``dense_solve`` elsewhere (see the module
    doc); ``None`` when it applies nowhere. ``psd_known``: ``H`` itself certified (by row)."""
    f = near.factor
    if (damping <= 0 or f.shift != damping or f.psd is None or f.chol.shape != h.shape
            or near.close.shape != h.shape[:1]):
        return None
    close = f.ok & near.close
    known = psd_known if isinstance(psd_known, Tensor) else torch.full_like(f.ok, psd_known)
    carried = close & (f.psd | known)
    # the rest are certified at y* itself (a Cholesky of H - τI over those rows only): then only
    # the factorisation of H + λI is spared
    unsure = (f.ok & ~carried).nonzero().flatten()
    if unsure.numel():
        carried = carried.index_copy(0, unsure, certify_psd(h.index_select(0, unsure)))
    if not bool(carried.any()):
        return None
    tol = RESIDUAL if h.dtype == torch.float64 else RESIDUAL ** 0.5
    scale = rhs.norm(dim=-1).clamp_min(torch.finfo(h.dtype).tiny)
    u = cholesky_apply(f.chol, rhs)
    for _ in range(MAX_STEPS + 1):
        r = rhs - torch.baddbmm((damping * u).unsqueeze(-1), h, u.unsqueeze(-1)).squeeze(-1)
        res = r.norm(dim=-1) / scale
        done = carried & (res <= tol)
        if bool((done == carried).all()):
            break
        u = u + cholesky_apply(f.chol, r)
    stats = SolveStats(reused_factor=True, residual=res, refined=int(done.sum()))
    stats.fallback_mask = torch.zeros_like(done)
    stats.nonfinite_mask = torch.zeros_like(done)
    rest = (~done).nonzero().flatten()
    if rest.numel():  # the problems refinement does not serve: the direct solve, as before
        known = psd_known[rest] if isinstance(psd_known, Tensor) else psd_known
        u_r, st = dense_solve(h[rest], rhs[rest], damping, "ridge", psd_known=known)
        u = u.index_copy(0, rest, u_r)
        stats.fallbacks = st.fallbacks
        for name in ("fallback_mask", "nonfinite_mask"):
            part = getattr(st, name)
            if part is not None:
                getattr(stats, name)[rest] = part
        if st.min_eigenvalue is not None:
            stats.min_eigenvalue = torch.full_like(res, float("nan")).index_copy(
                0, rest, st.min_eigenvalue)
        r_rest = rhs[rest] - torch.baddbmm((damping * u_r).unsqueeze(-1), h[rest],
                                           u_r.unsqueeze(-1)).squeeze(-1)
        stats.residual = res.index_copy(0, rest, r_rest.norm(dim=-1) / scale[rest])
    return u, stats
