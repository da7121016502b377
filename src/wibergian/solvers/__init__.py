"""Inner solvers: batched minimisers with a convergence mask per problem."""

from .base import Solver, SolveResult
from .blackbox import BlackBox, scipy_minimizer
from .lbfgs import LBFGS
from .multistart import best_candidate
from .newton import NewtonTrustRegion
from .newton_cg import NewtonCG
from .quadratic import QuadraticSolve

__all__ = [
    "LBFGS",
    "BlackBox",
    "NewtonCG",
    "NewtonTrustRegion",
    "QuadraticSolve",
    "SolveResult",
    "Solver",
    "best_candidate",
    "scipy_minimizer",
]
