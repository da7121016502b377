"""What every inner solver returns, and the protocol a custom solver implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from ..cholesky import HessianFactor
from ..energy import EnergyFn


@dataclass
class SolveResult:
    """The outcome of an inner minimisation, per problem.

    Attributes:
        y: the solution ``(B, n)`` (detached).
        converged: ``(B,)`` bool.
        iterations: ``(B,)`` int64, iterations each problem ran.
        factor: optionally, a Cholesky factor of the Hessian at ``y`` that the backward may
            reuse (see :class:`~wibergian.linsolve.HessianFactor`).
        energy, grad: optionally, ``E`` ``(B,)`` and ``∇E`` ``(B, n)`` at ``y``, which spare
            ``argmin`` re-evaluating them for its diagnostics.
        hessian: optionally, the symmetric ``∇²E`` ``(B, n, n)`` at ``y``: the final step (and,
            when that step is not taken, the backward) reuses it instead of rebuilding it.
        saddle: optionally, ``(B,)`` bool: the problem ended at a stationary point where the
            solver's second-order check found negative curvature (``None``: not checked).
        perturbed: optionally, ``(B,)`` bool: problems whose start was moved because the
            derivatives were not finite there (see ``solvers/nonfinite.py``).
        psd: optionally, ``(B,)`` bool: ``H`` at ``y`` passed the dense solve's
            semi-definiteness certificate (``spectral.certify_psd``), so the final step (and,
            when that step is not taken, the backward) skips it there (``None``: not tested).
    """

    y: Tensor
    converged: Tensor
    iterations: Tensor
    factor: HessianFactor | None = None
    energy: Tensor | None = None
    grad: Tensor | None = None
    hessian: Tensor | None = None
    saddle: Tensor | None = None
    perturbed: Tensor | None = None
    psd: Tensor | None = None


class Solver(Protocol):
    """A batched minimiser: ``minimize(energy, y0, params) -> SolveResult``.

    ``params`` arrive detached: the forward solve is never differentiated (the adjoint supplies
    the gradient).
    """

    def minimize(self, energy: EnergyFn, y0: Tensor, params: Sequence[Tensor]) -> SolveResult: ...
