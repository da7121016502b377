"""Batched L-BFGS with a per-problem backtracking (Armijo) line search.

Each problem keeps its own ``m`` most recent pairs ``s_k = y_{k+1} - y_k``,
``z_k = g_{k+1} - g_k`` and the direction ``d = -H_k g`` comes from the two-loop recursion, run
for all problems at once. Pairs with ``s·z ≤ 0`` are skipped. A failed line search resets that
problem's memory (steepest descent next). L-BFGS ends near, not at, a minimum: ``argmin``'s final
damped Newton step makes the point the fixed point that the implicit gradient assumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..derivatives import energy_value, gradient
from ..energy import EnergyFn
from .base import SolveResult


@dataclass
class LBFGS:
    """Limited-memory BFGS, batched over independent problems.

    Attributes:
        max_iter: iteration cap.
        tol: gradient tolerance ``||g||_∞`` (``None``: 1e-8 in float64, 1e-5 in float32).
        history: memory size ``m``.
        max_backtracks: halvings of the step in the line search.
        c1: Armijo constant.
    """

    max_iter: int = 200
    tol: float | None = None
    history: int = 10
    max_backtracks: int = 30
    c1: float = 1e-4

    def minimize(self, energy: EnergyFn, y0: Tensor, params: Sequence[Tensor]) -> SolveResult:
        with torch.no_grad():
            return self._run(energy, y0.detach().clone(), [p.detach() for p in params])

    def _direction(self, g: Tensor, s: Tensor, z: Tensor, valid: Tensor) -> Tensor:
        # s, z: (B, m, n) newest last; valid: (B, m)
        rho = torch.where(valid, 1.0 / torch.where(valid, (s * z).sum(-1), 1.0), 0.0)
        q = g.clone()
        m = s.shape[1]
        alphas = []
        for i in reversed(range(m)):
            a = rho[:, i] * (s[:, i] * q).sum(-1)
            q = q - a.unsqueeze(-1) * z[:, i]
            alphas.append(a)
        alphas.reverse()
        last = valid[:, -1]
        zz = (z[:, -1] * z[:, -1]).sum(-1)
        sz = (s[:, -1] * z[:, -1]).sum(-1)
        gamma = torch.where(last & (zz > 0), sz / zz.clamp_min(1e-300), 1.0)
        r = gamma.unsqueeze(-1) * q
        for i in range(m):
            beta = rho[:, i] * (z[:, i] * r).sum(-1)
            r = r + (alphas[i] - beta).unsqueeze(-1) * s[:, i]
        return -r

    def _run(self, energy: EnergyFn, y: Tensor, params: list[Tensor]) -> SolveResult:
        b, n = y.shape
        dev, dt = y.device, y.dtype
        m = self.history
        s = torch.zeros(b, m, n, dtype=dt, device=dev)
        z = torch.zeros(b, m, n, dtype=dt, device=dev)
        valid = torch.zeros(b, m, dtype=torch.bool, device=dev)
        e = energy_value(energy, y, params)
        g = gradient(energy, y, params)
        tol = self.tol if self.tol is not None else (1e-8 if dt == torch.float64 else 1e-5)
        iters = torch.zeros(b, dtype=torch.long, device=dev)
        converged = g.abs().amax(-1) <= tol
        stuck = torch.zeros(b, dtype=torch.bool, device=dev)
        for _ in range(self.max_iter):
            active = ~converged & ~stuck
            if not bool(active.any()):
                break
            d = self._direction(g, s, z, valid)
            slope = (g * d).sum(-1)
            bad_dir = slope >= 0
            d = torch.where(bad_dir.unsqueeze(-1), -g, d)
            slope = torch.where(bad_dir, -(g * g).sum(-1), slope)
            # First iteration without memory: scale the steepest-descent step to unit length.
            fresh = ~valid.any(-1)
            scale = torch.where(fresh, 1.0 / d.norm(dim=-1).clamp_min(1e-300), 1.0).clamp(max=1.0)
            step = torch.where(active, scale, 0.0)
            accepted = torch.zeros(b, dtype=torch.bool, device=dev)
            y_new, e_new = y, e
            for _ in range(self.max_backtracks):
                trial = y + step.unsqueeze(-1) * d
                e_trial = energy_value(energy, trial, params)
                ok = active & ~accepted & torch.isfinite(e_trial)
                ok = ok & (e_trial <= e + self.c1 * step * slope)
                y_new = torch.where(ok.unsqueeze(-1), trial, y_new)
                e_new = torch.where(ok, e_trial, e_new)
                accepted = accepted | ok
                if bool((accepted | ~active).all()):
                    break
                step = torch.where(accepted, step, step * 0.5)
            g_new = gradient(energy, y_new, params)
            sk, zk = y_new - y, g_new - g
            good = accepted & ((sk * zk).sum(-1) > 1e-12 * sk.norm(dim=-1) * zk.norm(dim=-1))
            s = torch.where(good[:, None, None], torch.cat([s[:, 1:], sk.unsqueeze(1)], 1), s)
            z = torch.where(good[:, None, None], torch.cat([z[:, 1:], zk.unsqueeze(1)], 1), z)
            valid = torch.where(
                good.unsqueeze(-1), torch.cat([valid[:, 1:], good.unsqueeze(-1)], 1), valid
            )
            failed = active & ~accepted
            valid = valid & ~failed.unsqueeze(-1)
            y, e, g = y_new, e_new, torch.where(accepted.unsqueeze(-1), g_new, g)
            iters = iters + active.long()
            converged = converged | (active & (g.abs().amax(-1) <= tol))
            # A problem whose steepest-descent search fails even at the smallest step is stuck:
            # it stops here and stays reported as not converged.
            stuck = stuck | (failed & fresh & ~converged)
        return SolveResult(y=y, converged=converged, iterations=iters)
