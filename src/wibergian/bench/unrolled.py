"""Differentiable copies of the core's inner solvers, for the unrolled-autograd baselines.

They run the same iterations as ``wibergian.solvers.NewtonTrustRegion`` (fixed iteration count)
and ``wibergian.solvers.LBFGS`` (fixed iteration count, Armijo backtracking), but keep autograd's
graph through every iteration, so ``loss.backward()`` differentiates the whole trajectory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

GradHess = Callable[[Tensor], tuple[Tensor, Tensor]]


def autograd_grad_hess(energy: Callable[..., Tensor], params: Sequence[Tensor]) -> GradHess:
    """``y ↦ (∇E, ∇²E)`` by double backward, differentiable w.r.t. ``y`` and ``params``."""

    def fn(y: Tensor) -> tuple[Tensor, Tensor]:
        if not y.requires_grad:
            y = y.requires_grad_(True)
        (g,) = torch.autograd.grad(energy(y, *params).sum(), y, create_graph=True)
        rows = [torch.autograd.grad(g[:, i].sum(), y, create_graph=True)[0]
                for i in range(y.shape[1])]
        return g, torch.stack(rows, 1)

    return fn


def unrolled_newton(
    energy: Callable[..., Tensor],
    grad_hess: GradHess,
    y0: Tensor,
    params: Sequence[Tensor],
    iters: int,
    mu0: float = 1e-3,
) -> Tensor:
    """``iters`` trust-region damped Newton iterations (the core's rule), differentiable.

    Step ``d = -(H + μI)^-1 g``; accepted when the energy falls; ``μ`` shrinks by 3 when the
    actual/predicted decrease ratio exceeds 0.75, grows by 2 below 0.25 and by 4 on rejection.
    """
    b, n = y0.shape
    y = y0
    mu = torch.full((b,), mu0, dtype=y0.dtype)
    eye = torch.eye(n, dtype=y0.dtype)
    e = energy(y, *params)
    for _ in range(iters):
        g, h = grad_hess(y)
        chol, info = torch.linalg.cholesky_ex(h + mu.detach()[:, None, None] * eye)
        pd = info == 0
        d = -torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1)
        d = torch.where(pd.unsqueeze(-1), d, torch.zeros_like(d))
        y_new = y + d
        e_new = energy(y_new, *params)
        pred = -((g * d).sum(-1) + 0.5 * (d * (h @ d.unsqueeze(-1)).squeeze(-1)).sum(-1))
        actual = e - e_new
        ok = (pd & torch.isfinite(e_new) & (actual >= 0) & (pred > 0)).detach()
        rho = torch.where(ok, actual / torch.where(pred > 0, pred, torch.ones_like(pred)), 0.0)
        rho = rho.detach()
        y = torch.where(ok.unsqueeze(-1), y_new, y)
        e = torch.where(ok, e_new, e)
        mu = torch.where(ok & (rho > 0.75), mu / 3.0, mu)
        mu = torch.where(ok & (rho < 0.25), mu * 2.0, mu)
        mu = torch.where(~ok, mu * 4.0, mu).clamp(1e-12, 1e12)
    return y


def unrolled_lbfgs(
    energy: Callable[..., Tensor],
    y0: Tensor,
    params: Sequence[Tensor],
    iters: int,
    history: int = 10,
    max_backtracks: int = 30,
    c1: float = 1e-4,
) -> Tensor:
    """``iters`` L-BFGS iterations with Armijo backtracking, differentiable (graph kept through
    every gradient, two-loop recursion and accepted step). For one problem or a batch that
    accepts together (the backtracking decision is taken on the whole batch)."""

    def grad(y: Tensor) -> tuple[Tensor, Tensor]:
        e = energy(y, *params)
        (g,) = torch.autograd.grad(e.sum(), y, create_graph=True)
        return e, g

    y = y0 if y0.requires_grad else y0.clone().requires_grad_(True)
    e, g = grad(y)
    ss: list[Tensor] = []
    zs: list[Tensor] = []
    for _ in range(iters):
        q = g
        alphas = []
        for s, z in reversed(list(zip(ss, zs, strict=True))):
            a = (s * q).sum(-1, keepdim=True) / (s * z).sum(-1, keepdim=True)
            q = q - a * z
            alphas.append(a)
        alphas.reverse()
        if ss:
            sz = (ss[-1] * zs[-1]).sum(-1, keepdim=True)
            gamma = sz / (zs[-1] * zs[-1]).sum(-1, keepdim=True)
            r = gamma * q
        else:
            r = q / g.norm(dim=-1, keepdim=True).clamp_min(1.0)
        for (s, z), a in zip(zip(ss, zs, strict=True), alphas, strict=True):
            beta = (z * r).sum(-1, keepdim=True) / (s * z).sum(-1, keepdim=True)
            r = r + (a - beta) * s
        d = -r
        slope = (g * d).sum(-1)
        step = 1.0
        for _ in range(max_backtracks):
            trial = y + step * d
            e_t = energy(trial, *params)
            if bool((e_t <= e + c1 * step * slope).all()):
                break
            step *= 0.5
        e_new, g_new = grad(trial)
        sk, zk = trial - y, g_new - g
        if bool(((sk * zk).sum(-1) > 0).all()):
            ss.append(sk)
            zs.append(zk)
            if len(ss) > history:
                ss.pop(0)
                zs.pop(0)
        y, e, g = trial, e_new, g_new
    return y
