"""Theseus on W2 (only when ``theseus`` imports): a custom cost function with analytic
Jacobians, dense Cholesky Gauss-Newton, implicit backward mode.

Theseus is not in the ``bench`` extra: ``pip install theseus-ai`` fails here (its dependency
scikit-sparse needs SuiteSparse headers to build). It imports without that dependency (only the
CHOLMOD sparse solver is lost) when installed with ``--no-deps`` into a separate directory on
``PYTHONPATH``; see ``docs/benchmarks.md``.

Residual ``r_b(y) = [√w_b ⊙ (A y - x_b); σ ⊙ y]`` (108,), Jacobian ``[√w_b ⊙ A; diag σ]``.
"""

from __future__ import annotations

import torch

from .common import TOL_DIRECT, MethodInfo
from .methods_torch import _leaves, _TorchMethod
from .workloads import W2_DIM, W2_ROWS, W2Data, w2_loss


def _cost_class():
    import theseus as th

    class W2Cost(th.CostFunction):
        def __init__(self, y, a, sigma, w, x, weight, name=None):
            super().__init__(weight, name=name)
            self.y, self.a, self.sigma, self.w, self.x = y, a, sigma, w, x
            self.register_optim_vars(["y"])
            self.register_aux_vars(["a", "sigma", "w", "x"])

        def _parts(self):
            a = self.a.tensor.reshape(-1, W2_ROWS, W2_DIM)
            sw = self.w.tensor.sqrt()
            return a, sw

        def error(self):
            a, sw = self._parts()
            y = self.y.tensor
            top = sw * ((a @ y.unsqueeze(-1)).squeeze(-1) - self.x.tensor)
            return torch.cat([top, self.sigma.tensor * y], -1)

        def jacobians(self):
            a, sw = self._parts()
            b = self.y.tensor.shape[0]
            top = sw.unsqueeze(-1) * a
            prior = torch.diag_embed(self.sigma.tensor.expand(b, -1))
            return [torch.cat([top, prior], 1)], self.error()

        def dim(self):
            return W2_ROWS + W2_DIM

        def _copy_impl(self, new_name=None):
            return W2Cost(self.y.copy(), self.a.copy(), self.sigma.copy(), self.w.copy(),
                          self.x.copy(), self.weight.copy(), name=new_name)

    return th, W2Cost


class W2Theseus(_TorchMethod):
    """``th.TheseusLayer`` with Gauss-Newton (2 iterations, dense Cholesky), implicit mode."""

    def __init__(self, data: W2Data):
        th, cost_cls = _cost_class()
        self.d = data
        self.params = _leaves(A=data.A, sigma=data.sigma)
        dt = data.x.dtype
        y = th.Vector(W2_DIM, name="y", dtype=dt)
        a = th.Variable(torch.zeros(1, W2_ROWS * W2_DIM, dtype=dt), name="a")
        sigma = th.Variable(torch.zeros(1, W2_DIM, dtype=dt), name="sigma")
        w = th.Variable(data.w, name="w")
        x = th.Variable(data.x, name="x")
        obj = th.Objective(dtype=dt)
        obj.add(cost_cls(y, a, sigma, w, x, th.ScaleCostWeight(torch.ones(1, 1, dtype=dt))))
        opt = th.GaussNewton(obj, max_iterations=2, step_size=1.0,
                             linear_solver_cls=th.CholeskyDenseSolver)
        self.layer = th.TheseusLayer(opt)
        self.info = MethodInfo("theseus (Gauss-Newton)", f"theseus {th.__version__}",
                               "TheseusLayer, implicit backward, analytic Jacobians", 0.0,
                               TOL_DIRECT)

    def loss(self) -> torch.Tensor:
        p = self.params
        inputs = {"y": torch.zeros(self.d.batch, W2_DIM, dtype=self.d.x.dtype),
                  "a": p["A"].reshape(1, -1), "sigma": p["sigma"].reshape(1, -1)}
        sol, _ = self.layer.forward(inputs, optimizer_kwargs={"backward_mode": "implicit"})
        return w2_loss(sol["y"], self.d.y_true)
