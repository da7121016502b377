"""What one ``argmin`` call reports: :class:`ArgminInfo` (per-problem diagnostics; the backward
fills ``info.backward``) and the forward pass's warnings drawn from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import FallbackWarning, NonConvergenceWarning, NonSmoothWarning, warn


@dataclass
class ArgminInfo:
    """Per-problem diagnostics of one ``argmin`` call.

    Forward fields are filled at once; ``backward`` fields after ``.backward()`` has run.

    Attributes:
        iterations: ``(B,)`` inner-solver iterations (``-1`` when a black box does not say).
        converged: ``(B,)`` inner solver reached its tolerance.
        grad_norm: ``(B,)`` ``||∇_y E||`` at the returned point.
        energy: ``(B,)`` energy at the returned point.
        start_index: ``(B,)`` chosen candidate (multi-start only).
        final_step_accepted: ``(B,)`` whether the final damped Newton step was kept (it is
            rejected where it would raise the energy).
        forward_fallbacks: problems whose final-step solve needed the eigenvalue fallback.
        compile_s: seconds spent compiling in this call (``compile=True``; 0 once cached).
        saddle: ``(B,)`` bool, the problem ended at a stationary point where the solver's
            second-order check found negative curvature (such problems are also not
            converged); ``None`` when the solver does not check (only ``"newton"`` and
            ``"newton_cg"`` do). ``num_saddle`` counts them.
        solver: the inner solver's name (what ``solver="auto"`` chose).
        perturbed_starts: problems whose start the solver moved because the energy's
            derivatives were not finite there (``solvers/nonfinite.py``).
        backward: filled by the backward pass: ``backward_fallbacks`` (count),
            ``min_eigenvalue`` (``(B,)`` where an eigendecomposition ran), ``backward_residual``
            (``(B,)`` relative residual of the linear solve), ``cg_iterations``,
            ``reused_factor`` (the solver's Cholesky factor served the backward),
            ``cg_shifted`` (CG problems re-solved with a shift after negative curvature),
            ``bound_capped`` (problems whose ``u`` the ``1/λ`` cap shrank beyond rounding).
    """

    iterations: Tensor
    converged: Tensor
    grad_norm: Tensor
    energy: Tensor
    start_index: Tensor | None = None
    final_step_accepted: Tensor | None = None
    forward_fallbacks: int = 0
    backend: str = "dense"
    compile_s: float = 0.0
    perturbed_starts: int = 0
    backward: dict[str, Any] = field(default_factory=dict)
    saddle: Tensor | None = None
    solver: str = ""

    @property
    def num_not_converged(self) -> int:
        return int((~self.converged).sum())

    @property
    def num_saddle(self) -> int:
        return 0 if self.saddle is None else int(self.saddle.sum())


def forward_warnings(info: ArgminInfo, b: int) -> None:
    """The forward pass's warnings about ``b`` problems (moved starts, non-finite gradients at the
    end, non-convergence, final-step fallbacks), attributed to the caller's line."""
    if info.perturbed_starts:
        warn(f"argmin: the energy's derivatives were not finite at the start of "
             f"{info.perturbed_starts} of {b} problems (a non-differentiable point such as "
             "sqrt(||y - x||²) at y = x); the solver started from a slightly moved point "
             "(counted in info.perturbed_starts)", NonSmoothWarning)
    lost = int((~torch.isfinite(info.grad_norm)).sum())
    if lost:
        warn(f"argmin: {lost} of {b} problems end at a point where the energy is finite but its "
             "gradient is NaN/Inf (a non-differentiable point such as sqrt(||y - x||²) at "
             "y = x); a backward pass through them raises NonFiniteDerivativeError",
             NonSmoothWarning)
    if info.num_not_converged > lost:
        worst = float(info.grad_norm.nan_to_num(0.0, 0.0, 0.0).max())
        at_saddle = f", {info.num_saddle} at a saddle" if info.num_saddle else ""
        warn(f"argmin: {info.num_not_converged - lost} of {b} problems did not converge"
             f"{at_saddle} (max ||∇E|| = {worst:.3g}); gradients there are approximate",
             NonConvergenceWarning)
    if info.forward_fallbacks:
        warn(f"argmin: the final Newton step met a Hessian that is not positive semi-definite "
             f"in {info.forward_fallbacks} of {b} problems (a saddle or a non-converged point); "
             "used the eigenvalue-clamp fallback (counted in info.forward_fallbacks)",
             FallbackWarning)
