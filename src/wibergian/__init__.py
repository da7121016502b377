"""wibergian: the minimum of an energy function as a trainable layer.

``argmin`` returns ``y*(w) = argmin_y E(y; w)`` for a batch of problems, differentiable through
the trust-region damped implicit derivative ``dy*/dw = -(H + λI)^-1 ∂(∇_y E)/∂w``
(Toso, Campbell & Russell, NeurIPS 2019).
"""

from .argmin import ArgminInfo, argmin
from .auto_compile import auto_compile_after
from .errors import (
    CompileFallbackWarning,
    FallbackWarning,
    LinearSolveError,
    NonConvergenceWarning,
    NonFiniteDerivativeError,
    NonSmoothWarning,
    WibergianError,
    WibergianWarning,
)
from .jacobian import argmin_jacobian
from .layer import ArgminLayer
from .lstsq import lstsq
from .solvers import LBFGS, BlackBox, NewtonCG, NewtonTrustRegion, SolveResult, scipy_minimizer

__version__ = "0.1.0"

__all__ = [
    "LBFGS",
    "ArgminInfo",
    "ArgminLayer",
    "BlackBox",
    "CompileFallbackWarning",
    "FallbackWarning",
    "LinearSolveError",
    "NewtonCG",
    "NewtonTrustRegion",
    "NonConvergenceWarning",
    "NonFiniteDerivativeError",
    "NonSmoothWarning",
    "SolveResult",
    "WibergianError",
    "WibergianWarning",
    "argmin",
    "argmin_jacobian",
    "auto_compile_after",
    "lstsq",
    "scipy_minimizer",
]
