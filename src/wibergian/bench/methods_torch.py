"""PyTorch methods: ours (``wibergian.argmin`` / ``wibergian.lstsq``) and autograd baselines.

Every method of a workload starts from the same generated data and the same initial parameters,
and its ``backward`` returns the gradient of the loss w.r.t. the learnable parameters as float64
numpy arrays keyed by parameter name.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import wibergian
from wibergian.solvers import LBFGS, NewtonTrustRegion, QuadraticSolve

from . import fused
from .common import (
    DAMPING,
    TOL_DIRECT,
    TOL_ITERATIVE,
    TOL_UNROLLED,
    W1_ITERS,
    W3_ITERS,
    BenchMethod,
    MethodInfo,
)
from .unrolled import unrolled_lbfgs, unrolled_newton
from .workloads import (
    W1Data,
    W1Energy,
    W2Data,
    W2Energy,
    W3Data,
    W3Energy,
    w1_best_candidate,
    w1_energy,
    w1_loss,
    w2_design,
    w2_energy,
    w2_loss,
    w2_normal_matrix,
    w3_loss,
)


def _leaves(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items()}


def _grads(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {}
    for k, p in params.items():
        g = p.grad
        out[k] = np.zeros(tuple(p.shape)) if g is None else g.detach().double().numpy().copy()
        p.grad = None
    return out


class _TorchMethod(BenchMethod):
    params: dict[str, torch.Tensor]
    #: uses a shared ``torch.compile`` kernel (``fused.py``): ``prepare`` runs one step so the
    #: compilation is timed apart, like JAX's
    uses_fused: bool = False

    @property
    def jit_compiled(self) -> bool:
        return self.uses_fused and fused.enabled()

    def prepare(self) -> float:
        if not self.jit_compiled:
            return 0.0
        t = time.perf_counter()
        self.gradient()
        return time.perf_counter() - t

    def loss(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self) -> Any:
        return self.loss()

    def backward(self, ctx: Any) -> dict[str, np.ndarray]:
        ctx.backward()
        return _grads(self.params)


# ---------------------------------------------------------------------------------------- W1


class W1Ours(_TorchMethod):
    """``wibergian.argmin`` with the core's trust-region Newton (20 fixed iterations) and the
    damped implicit adjoint. ``closed_form`` selects the energy with declared derivatives."""

    uses_fused = True

    def __init__(self, data: W1Data, damping: float = DAMPING, closed_form: bool = True,
                 name: str | None = None, tol: float | None = None):
        self.d = data
        self.damping = damping
        self.energy = W1Energy() if closed_form else w1_energy
        self.params = _leaves(m=data.m, s0=data.s0, s1=data.s1)
        if tol is None:
            self.solver = NewtonTrustRegion(max_iter=W1_ITERS, fixed_iterations=True)
        else:  # Optimistix's rule: at most W1_ITERS iterations, stop once converged
            self.solver = NewtonTrustRegion(max_iter=W1_ITERS, tol=tol)
        label = name or ("ours" if closed_form else "ours (autograd derivatives)")
        if tol is not None and name is None:
            label = "ours (stops when converged)"
        how = "closed-form" if closed_form else "autograd"
        stop = "" if tol is None else (
            f", ≤ {W1_ITERS} iterations, each problem stopping at ‖∇E‖∞ ≤ {tol:g} or when no "
            "decrease is representable")
        self.info = MethodInfo(label, "wibergian",
                               f"damped implicit (λ={damping}), dense Cholesky, {how} "
                               f"derivatives{stop}", damping,
                               TOL_DIRECT if tol is None else TOL_ITERATIVE,
                               stops_when_converged=tol is not None)

    def loss(self) -> torch.Tensor:
        p = self.params
        y0 = w1_best_candidate(self.d.a, self.d.c, p["m"], p["s0"], p["s1"])
        y = wibergian.argmin(self.energy, y0, (self.d.a, self.d.c, p["m"], p["s0"], p["s1"]),
                             damping=self.damping, solver=self.solver, final_step=False,
                             warn=False)
        return w1_loss(y, self.d.g)


class W1Unrolled(_TorchMethod):
    """Autograd through the same 20 trust-region Newton iterations (closed-form derivatives,
    so the baseline does not pay for double backward)."""

    uses_fused = True

    def __init__(self, data: W1Data, iters: int = W1_ITERS):
        self.d = data
        self.iters = iters
        self.params = _leaves(m=data.m, s0=data.s0, s1=data.s1)
        name = "torch unrolled" if iters == W1_ITERS else f"torch unrolled ({iters} iterations)"
        what = f"autograd through {iters} Newton iterations" + (
            "" if iters == W1_ITERS else " (as many as the slowest problem needs to converge)")
        self.info = MethodInfo(name, "torch", what, 0.0, TOL_UNROLLED,
                               stops_when_converged=iters != W1_ITERS)

    def loss(self) -> torch.Tensor:
        p = self.params
        ps = (self.d.a, self.d.c, p["m"], p["s0"], p["s1"])
        y0 = w1_best_candidate(self.d.a, self.d.c, p["m"], p["s0"], p["s1"])
        en = W1Energy()
        y = unrolled_newton(en, lambda y: (en.gradient(y, *ps), en.hessian(y, *ps)), y0, ps,
                            self.iters)
        return w1_loss(y, self.d.g)


# ---------------------------------------------------------------------------------------- W2


class W2OursLstsq(_TorchMethod):
    """``wibergian.lstsq`` on the stacked system ``[√w ⊙ A; diag σ]`` (Cholesky closed form)."""

    def __init__(self, data: W2Data):
        self.d = data
        self.params = _leaves(A=data.A, sigma=data.sigma)
        self.info = MethodInfo("ours (lstsq)", "wibergian", "closed-form least-squares VJP", 0.0,
                               TOL_DIRECT)

    def loss(self) -> torch.Tensor:
        a, b = w2_design(self.d.w, self.d.x, self.params["A"], self.params["sigma"])
        return w2_loss(wibergian.lstsq(a, b, method="cholesky"), self.d.y_true)


class W2OursArgmin(_TorchMethod):
    """``wibergian.argmin`` on the quadratic energy with ``QuadraticSolve`` (one Cholesky of the
    closed-form Hessian; refined to ``||∇E||_∞ ≤ 1e-10``). Its factor serves the backward: reused
    outright at ``λ = 0`` (two triangular solves), and as the proof that ``H`` is positive
    definite at ``λ > 0`` (one factorisation of ``H + λI``, no semi-definiteness test)."""

    def __init__(self, data: W2Data, damping: float = DAMPING, name: str | None = None):
        self.d = data
        self.damping = damping
        self.params = _leaves(A=data.A, sigma=data.sigma)
        self.solver = QuadraticSolve()
        how = ("forward factor reused" if damping == 0 else
               "Cholesky of H + λI, positive definiteness from the forward factor")
        self.info = MethodInfo(name or f"ours (quadratic, λ={damping:g})", "wibergian",
                               f"damped implicit (λ={damping:g}), {how}", damping, TOL_DIRECT)

    def loss(self) -> torch.Tensor:
        p = self.params
        y0 = torch.zeros(self.d.batch, self.d.y_true.shape[1], dtype=self.d.x.dtype)
        y = wibergian.argmin(W2Energy(), y0, (self.d.w, self.d.x, p["A"], p["sigma"]),
                             damping=self.damping, solver=self.solver, final_step=False,
                             warn=False)
        return w2_loss(y, self.d.y_true)


class W2AutogradCholesky(_TorchMethod):
    """Autograd through ``cholesky`` + ``cholesky_solve`` of the normal equations."""

    def __init__(self, data: W2Data, solve: str = "cholesky"):
        self.d = data
        self.solve = solve
        self.params = _leaves(A=data.A, sigma=data.sigma)
        self.info = MethodInfo(f"torch autograd ({solve})", "torch",
                               f"autograd through torch.linalg.{solve}", 0.0, TOL_DIRECT)

    def loss(self) -> torch.Tensor:
        p = self.params
        m = w2_normal_matrix(self.d.w, p["A"], p["sigma"])
        rhs = (self.d.w * self.d.x) @ p["A"]
        if self.solve == "cholesky":
            y = torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(m)).squeeze(-1)
        else:
            y = torch.linalg.solve(m, rhs)
        return w2_loss(y, self.d.y_true)


def w2_reference_gradient(data: W2Data) -> dict[str, np.ndarray]:
    """An independent dense gradient of W2's loss (for tests): autograd through
    ``torch.linalg.solve`` of the normal equations, float64."""
    m = W2AutogradCholesky(data, solve="solve")
    return m.gradient()


# ---------------------------------------------------------------------------------------- W3


class W3Ours(_TorchMethod):
    """``wibergian.argmin`` with L-BFGS forward and matrix-free (CG) damped implicit backward."""

    def __init__(self, data: W3Data, damping: float = DAMPING, iters: int = W3_ITERS,
                 tol: float = 1e-9, cg_tol: float = 1e-6):
        self.d = data
        self.cg_tol = cg_tol
        self.damping = damping
        self.energy = W3Energy(data.shape)
        self.params = _leaves(filters=data.filters, alpha=data.alpha, scale=data.scale)
        self.solver = LBFGS(max_iter=iters, tol=tol)
        self.info = MethodInfo("ours", "wibergian",
                               f"damped implicit (λ={damping}), matrix-free CG on "
                               f"closed-form HVPs (tol {cg_tol:g})",
                               damping, TOL_ITERATIVE)

    def loss(self) -> torch.Tensor:
        p = self.params
        y = wibergian.argmin(self.energy, self.d.noisy,
                             (self.d.noisy, p["filters"], p["alpha"], p["scale"]),
                             damping=self.damping, solver=self.solver, linear_solver="cg",
                             cg_tol=self.cg_tol, final_step=False, warn=False)
        return w3_loss(y, self.d.clean)


class W3Unrolled(_TorchMethod):
    """Autograd through the same number of L-BFGS iterations (graph kept throughout)."""

    def __init__(self, data: W3Data, iters: int = W3_ITERS):
        self.d = data
        self.iters = iters
        self.energy = W3Energy(data.shape)
        self.params = _leaves(filters=data.filters, alpha=data.alpha, scale=data.scale)
        self.info = MethodInfo("torch unrolled", "torch",
                               f"autograd through {iters} L-BFGS iterations", 0.0, TOL_UNROLLED)

    def loss(self) -> torch.Tensor:
        p = self.params
        y = unrolled_lbfgs(self.energy, self.d.noisy, (self.d.noisy, p["filters"], p["alpha"],
                                                        p["scale"]), self.iters)
        return w3_loss(y, self.d.clean)


def w2_energy_check(data: W2Data) -> float:
    """Largest |closed-form - autograd| gradient of W2's energy at a random point (sanity)."""
    y = torch.randn(data.batch, data.y_true.shape[1], dtype=data.x.dtype, requires_grad=True)
    e = w2_energy(y, data.w, data.x, data.A, data.sigma).sum()
    (g,) = torch.autograd.grad(e, y)
    return float((g - W2Energy().gradient(y, data.w, data.x, data.A, data.sigma)).abs().max())


def w1_iterations_to_converge(data: W1Data, tol: float) -> int:
    """How many of the (at most 20) Newton iterations the slowest problem needs to converge."""
    p = (data.a, data.c, data.m, data.s0, data.s1)
    y0 = w1_best_candidate(*p)
    res = NewtonTrustRegion(max_iter=W1_ITERS, tol=tol).minimize(W1Energy(), y0, p)
    return int(res.iterations.max())
