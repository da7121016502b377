"""An adapter for any minimiser the user already has (``scipy.optimize.minimize`` by default).

Two modes:

- ``"joint"``: one call on the concatenation of all problems, minimising ``Σ_b E_b``. Because
  problems are independent, the joint minimiser is the stack of per-problem minimisers. Fast;
  convergence is then judged per problem from its own gradient.
- ``"per_problem"``: one call per problem; the other problems are held at their current values
  while problem ``b`` is evaluated (each evaluation costs one batched energy call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..derivatives import energy_value, gradient
from ..energy import EnergyFn
from .base import SolveResult

# fun(x) -> (value, gradient) as numpy float64; x0 numpy (n,); returns the minimiser (n,)
Minimizer = Callable[[Callable[[np.ndarray], tuple[float, np.ndarray]], np.ndarray], np.ndarray]


def scipy_minimizer(method: str = "L-BFGS-B", **options: Any) -> Minimizer:
    """A :data:`Minimizer` running ``scipy.optimize.minimize(fun, x0, jac=True, method=...)``."""
    from scipy.optimize import minimize

    def run(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray) -> np.ndarray:
        return np.asarray(minimize(fun, x0, jac=True, method=method, options=options).x)

    return run


@dataclass
class BlackBox:
    """Wrap an external minimiser as a batched :class:`~wibergian.solvers.base.Solver`.

    Attributes:
        minimizer: ``minimizer(fun, x0) -> x`` where ``fun(x) -> (E, ∇E)`` in numpy float64.
        mode: ``"joint"`` or ``"per_problem"``.
        tol: gradient tolerance used to report convergence per problem.
    """

    minimizer: Minimizer = field(default_factory=lambda: scipy_minimizer("L-BFGS-B", gtol=1e-12))
    mode: str = "joint"
    tol: float = 1e-6

    def minimize(self, energy: EnergyFn, y0: Tensor, params: Sequence[Tensor]) -> SolveResult:
        if self.mode not in ("joint", "per_problem"):
            raise ValueError(f"BlackBox.mode must be 'joint' or 'per_problem', got {self.mode!r}")
        ps = [p.detach() for p in params]
        y = y0.detach().clone()
        b, n = y.shape

        def as_t(x: np.ndarray) -> Tensor:
            return torch.as_tensor(x, dtype=y.dtype, device=y.device)

        with torch.no_grad():
            if self.mode == "joint":

                def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
                    yy = as_t(x).reshape(b, n)
                    e = energy_value(energy, yy, ps).sum()
                    g = gradient(energy, yy, ps)
                    return float(e), g.reshape(-1).double().cpu().numpy()

                x = self.minimizer(fun, y.reshape(-1).double().cpu().numpy())
                y = as_t(x).reshape(b, n)
            else:
                for i in range(b):

                    def fun_i(x: np.ndarray, i: int = i) -> tuple[float, np.ndarray]:
                        yy = y.clone()
                        yy[i] = as_t(x)
                        e = energy_value(energy, yy, ps)[i]
                        g = gradient(energy, yy, ps)[i]
                        return float(e), g.double().cpu().numpy()

                    y[i] = as_t(self.minimizer(fun_i, y[i].double().cpu().numpy()))
            g = gradient(energy, y, ps)
        converged = g.abs().amax(-1) <= self.tol
        iters = torch.full((b,), -1, dtype=torch.long, device=y.device)  # unknown to the adapter
        return SolveResult(y=y, converged=converged, iterations=iters)
