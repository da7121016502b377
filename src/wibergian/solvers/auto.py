"""``solver="auto"``: the dense trust-region Newton for small problems, Newton-CG for large ones.

The dense Newton forms and factors ``H`` ``(B, n, n)`` every iteration (``n`` reverse passes
through autograd unless the energy declares its Hessian): cheap and robust for small ``n``,
quadratic in memory and at least quadratic in time as ``n`` grows. Newton-CG only needs
Hessian-vector products and ``O(B·n)`` memory. The threshold was chosen by measurement
(``benchmarks/solver_auto_threshold.py``, see ``docs/method.md``).
"""

from __future__ import annotations

from .newton import NewtonTrustRegion
from .newton_cg import NewtonCG

AUTO_DENSE_MAX = 40
"""Largest ``n`` for which ``solver="auto"`` picks the dense trust-region Newton."""

SOLVER_NAMES = ("auto", "newton", "newton_cg", "lbfgs", "scipy", "quadratic")


def choose_solver(n: int, requested: str = "auto") -> str:
    """``"newton"`` for ``n ≤ AUTO_DENSE_MAX``, ``"newton_cg"`` above, unless one is named."""
    if requested != "auto":
        return requested
    return "newton" if n <= AUTO_DENSE_MAX else "newton_cg"


__all__ = ["AUTO_DENSE_MAX", "SOLVER_NAMES", "NewtonCG", "NewtonTrustRegion", "choose_solver"]
