"""TorchOpt's implicit differentiation (``torchopt.diff.implicit.custom_root``) with conjugate
gradients and ``ridge = λ``, the same damped linear system as ours.

The forward runs the core's own solver without gradient (the same iterations as ours), so the
two methods differ only in how the gradient is obtained. TorchOpt's CG runs on the whole batch
as one block-diagonal system (one global step size), as its API does.
"""

from __future__ import annotations

import warnings

import torch

from wibergian.solvers import NewtonTrustRegion

from .common import DAMPING, TOL_ITERATIVE, W1_ITERS, MethodInfo
from .methods_torch import _leaves, _TorchMethod
from .workloads import W1Data, W1Energy, W2Data, W2Energy, w1_best_candidate, w1_loss, w2_loss

# TorchOpt 0.7.3 calls the deprecated functorch.vjp on every backward: silence that warning.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchopt\..*")


def _solve(damping: float, maxiter: int):
    import torchopt

    return torchopt.linear_solve.solve_cg(ridge=damping, maxiter=maxiter, rtol=1e-12, atol=0.0)


class W1TorchOpt(_TorchMethod):
    """W1 with ``custom_root(∇E, argnums=(1, 2, 3), solve=solve_cg(ridge=λ))``."""

    uses_fused = True

    def __init__(self, data: W1Data, damping: float = DAMPING, maxiter: int = 200):
        from torchopt.diff.implicit import custom_root

        self.d = data
        self.params = _leaves(m=data.m, s0=data.s0, s1=data.s1)
        energy = W1Energy()
        newton = NewtonTrustRegion(max_iter=W1_ITERS, fixed_iterations=True)

        def optimality(y, m, s0, s1, a, c):
            return energy.gradient(y, a, c, m, s0, s1)

        # TorchOpt 0.7.3 maps argnums correctly only when the differentiated arguments come
        # first (MaskedOptimalityFn indexes its inputs by absolute position): keep them first.
        @custom_root(optimality, argnums=(1, 2, 3), solve=_solve(damping, maxiter))
        def solve(y0, m, s0, s1, a, c):
            return newton.minimize(energy, y0, (a, c, m, s0, s1)).y

        self._solve = solve
        import torchopt

        self.info = MethodInfo("torchopt ridge-CG", f"torchopt {torchopt.__version__}",
                               f"custom_root, CG with ridge={damping}", damping, TOL_ITERATIVE)

    def loss(self) -> torch.Tensor:
        p = self.params
        y0 = w1_best_candidate(self.d.a, self.d.c, p["m"], p["s0"], p["s1"])
        y = self._solve(y0, p["m"], p["s0"], p["s1"], self.d.a, self.d.c)
        return w1_loss(y, self.d.g)


class W2TorchOpt(_TorchMethod):
    """W2 with the closed-form forward and ``custom_root`` + CG(ridge=λ) backward."""

    def __init__(self, data: W2Data, damping: float = DAMPING, maxiter: int = 400):
        from torchopt.diff.implicit import custom_root

        self.d = data
        self.params = _leaves(A=data.A, sigma=data.sigma)
        energy = W2Energy()

        def optimality(y, A, sigma, w, x):
            return energy.gradient(y, w, x, A, sigma)

        @custom_root(optimality, argnums=(1, 2), solve=_solve(damping, maxiter))
        def solve(y0, A, sigma, w, x):
            with torch.no_grad():
                h = energy.hessian(y0, w, x, A, sigma)
                rhs = 2.0 * ((w * x) @ A)
                return torch.cholesky_solve(rhs.unsqueeze(-1),
                                            torch.linalg.cholesky(h)).squeeze(-1)

        self._solve = solve
        import torchopt

        self.info = MethodInfo("torchopt ridge-CG", f"torchopt {torchopt.__version__}",
                               f"custom_root, CG with ridge={damping}", damping, TOL_ITERATIVE)

    def loss(self) -> torch.Tensor:
        p = self.params
        y0 = torch.zeros(self.d.batch, self.d.y_true.shape[1], dtype=self.d.x.dtype)
        y = self._solve(y0, p["A"], p["sigma"], self.d.w, self.d.x)
        return w2_loss(y, self.d.y_true)
