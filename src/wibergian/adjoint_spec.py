"""The backward's bookkeeping (the maths is in ``adjoint.py``).

- :class:`AdjointSpec`: everything a backward, forward-mode or double-backward pass needs
  besides the tensors (the energy, ``λ``, regulariser, back end, mode, the forward's factor or
  Hessian at the point and that Hessian's semi-definiteness certificate, where the diagnostics
  go).
- :func:`live_params`: detached copies of ``w`` whose gradient is wanted, as autograd leaves.
- :func:`raise_if_nonfinite`: the error for problems whose ``∇_y E`` or Hessian is NaN/Inf at the
  solution although the energy is finite there.
- :func:`record_solve`: the fallback warning and the diagnostics record (``info.backward``) of one
  regularised solve ``(H + λI) u = r`` (shapes ``(B, n)``; per-problem fields ``(B,)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .energy import EnergyFn
from .errors import FallbackWarning, nonfinite_derivative, warn
from .linsolve import HessianFactor, SolveStats
from .refine import NearbyFactor


@dataclass
class AdjointSpec:
    """Everything the backward pass needs besides the tensors."""

    energy: EnergyFn
    damping: float
    regulariser: str
    backend: str  # "dense" | "cg"
    mode: str  # "implicit" | "newton_step"
    cg_tol: float = 1e-10
    cg_max_iter: int | None = None
    record: dict[str, Any] = field(default_factory=dict)  # backward diagnostics land here
    factor: HessianFactor | None = None  # the forward's Cholesky factor at y*, if any
    hessian: Tensor | None = None  # the forward's symmetric ∇²E (B, n, n) at y_point, if any
    warn: bool = True  # FallbackWarning from the backward (argmin's warn=)
    psd: Tensor | None = None  # (B,) bool: `hessian` certified semi-definite by the forward
    nearby: NearbyFactor | None = None  # the final step's factor at y₀, refined from (refine.py)
    grad: Tensor | None = None  # the forward's ∇_y E (B, n) at y_point (implicit adjoint), if any


def live_params(params: Sequence[Tensor], needs: Sequence[bool]) -> list[Tensor]:
    """Detached copies of ``params``; those whose gradient is needed become leaves."""
    out = []
    for p, need in zip(params, needs, strict=True):
        q = p.detach()
        if need and q.is_floating_point():
            q = q.requires_grad_(True)
        out.append(q)
    return out


def raise_if_nonfinite(mask: Tensor | None, quantity: str) -> None:
    """Raise :class:`~wibergian.errors.NonFiniteDerivativeError` naming the problems where
    ``mask`` ``(B,)`` is set (``quantity``: what is NaN/Inf there)."""
    if mask is not None and bool(mask.any()):
        raise nonfinite_derivative("argmin backward (at the solution)", quantity, mask)


def hessian_name(spec: AdjointSpec) -> str:
    """What the solve applied: the Hessian (dense) or Hessian-vector products (CG)."""
    return "Hessian ∇²_y E" if spec.backend == "dense" else "Hessian-vector product"


def record_solve(spec: AdjointSpec, stats: SolveStats, b: int, what: str, capped: Tensor) -> None:
    """Warn about the fallbacks of a solve over ``b`` problems (``what``: the pass, e.g.
    ``"backward"``) and record its diagnostics in ``spec.record``; ``capped`` ``(B,)`` marks the
    problems whose solution the ``1/λ`` bound shrank."""
    if stats.fallbacks and spec.warn:
        warn(f"argmin {what}: {stats.fallbacks} of {b} problems had a Hessian that is not "
             "positive semi-definite (a saddle or a non-converged point); used the "
             "bound-preserving fallback (counted in info.backward['backward_fallbacks'])",
             FallbackWarning)
    spec.record.update(
        reused_factor=stats.reused_factor,
        backward_fallbacks=stats.fallbacks,
        backward_fallback_mask=stats.fallback_mask,
        min_eigenvalue=stats.min_eigenvalue,
        backward_residual=stats.residual,
        cg_iterations=stats.iterations,
        cg_shifted=stats.shifted,
        bound_capped=int(capped.sum()),
        refined=stats.refined,
    )


def report_solve(spec: AdjointSpec, stats: SolveStats, b: int, what: str, capped: Tensor) -> None:
    """A JVP's or differentiable VJP's solve: raise where its matrix was not finite, then
    :func:`record_solve`."""
    if stats.nonfinite_mask is not None:
        raise_if_nonfinite(stats.nonfinite_mask, hessian_name(spec))
    record_solve(spec, stats, b, what, capped)
