"""Batched L-BFGS with a per-problem backtracking (Armijo) line search.

Each problem keeps the pairs ``s_k = y_{k+1} - y_k``, ``z_k = g_{k+1} - g_k`` of its last ``m``
iterations in a ring buffer shared by the batch (a slot written in place per iteration, so no
``(B, m, n)`` copy is made: at ``n = 512²`` the shifting buffer cost half the solver's time), and
the direction ``d = -H_k g`` comes from the two-loop recursion, run for all problems at once.
Pairs with ``s·z ≤ 0`` are skipped (their slot is marked invalid). A failed line search resets that
problem's memory (steepest descent next). An accepted point whose gradient is NaN/Inf is
replaced by a shorter step, and a start there is moved slightly (``nonfinite.py``). L-BFGS ends
near, not at, a minimum: ``argmin``'s final damped Newton step makes the point the fixed point
that the implicit gradient assumes.

An energy that declares ``value_and_gradient(y, *params) -> ((B,), (B, n))`` gets it called at
the first trial point of every line search (usually accepted): one pass instead of a value pass
there and a gradient pass after. Problems that needed a backtrack get a separate gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..derivatives import (
    declares_value_and_gradient,
    energy_value,
    gradient,
    value_and_gradient,
)
from ..energy import EnergyFn
from .base import SolveResult
from .nonfinite import finite_start, rows_finite, shorter_finite_step


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

    def _direction(self, g: Tensor, s: Tensor, z: Tensor, sz: Tensor, valid: Tensor, pos: int,
                   last: Tensor) -> Tensor:
        """Two-loop recursion over the ring buffer ``s, z`` ``(B, m, n)`` whose newest slot is
        ``pos - 1``; ``sz`` ``(B, m)`` the products ``s·z`` kept from when each slot was written;
        ``valid`` ``(B, m)``; ``last`` ``(B,)`` the slot of each problem's newest
        valid pair (for the initial scaling). Slots are views: no ``(B, m, n)`` copies."""
        m = s.shape[1]
        order = [(pos - 1 - j) % m for j in range(m)]  # newest first
        rho = torch.where(valid, 1.0 / torch.where(valid, sz, 1.0), 0.0)
        q = g.clone()
        alphas = {}
        for i in order:
            a = rho[:, i] * torch.linalg.vecdot(s[:, i], q)
            q = torch.addcmul(q, a.unsqueeze(-1), z[:, i], value=-1.0)
            alphas[i] = a
        rows = torch.arange(g.shape[0], device=g.device)
        has = valid[rows, last]
        z_last = z[rows, last]
        zz = torch.linalg.vecdot(z_last, z_last)
        gamma = torch.where(has & (zz > 0), sz[rows, last] / zz.clamp_min(1e-300), 1.0)
        r = gamma.unsqueeze(-1) * q
        for i in reversed(order):
            beta = rho[:, i] * torch.linalg.vecdot(z[:, i], r)
            r = torch.addcmul(r, (alphas[i] - beta).unsqueeze(-1), s[:, i])
        return -r

    def _run(self, energy: EnergyFn, y: Tensor, params: list[Tensor]) -> SolveResult:
        b, n = y.shape
        dev, dt = y.device, y.dtype
        m = self.history
        s = torch.zeros(b, m, n, dtype=dt, device=dev)
        z = torch.zeros(b, m, n, dtype=dt, device=dev)
        sz = torch.zeros(b, m, dtype=dt, device=dev)
        valid = torch.zeros(b, m, dtype=torch.bool, device=dev)
        pos = 0  # ring buffer: the next slot to write (shared by all problems)
        last = torch.zeros(b, dtype=torch.long, device=dev)  # each problem's newest good slot
        fused = declares_value_and_gradient(energy)
        y, (e, g), perturbed = finite_start(
            lambda z: value_and_gradient(energy, z, params), y, "LBFGS")
        tol = self.tol if self.tol is not None else (1e-8 if dt == torch.float64 else 1e-5)
        iters = torch.zeros(b, dtype=torch.long, device=dev)
        converged = g.abs().amax(-1) <= tol
        stuck = torch.zeros(b, dtype=torch.bool, device=dev)
        for _ in range(self.max_iter):
            active = ~converged & ~stuck
            if not bool(active.any()):
                break
            d = self._direction(g, s, z, sz, valid, pos, last)
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
            g_first, first_ok = None, None
            for k in range(self.max_backtracks):
                trial = y + step.unsqueeze(-1) * d
                if k == 0 and fused:  # the full step is usually accepted
                    e_trial, g_first = value_and_gradient(energy, trial, params)
                else:
                    e_trial = energy_value(energy, trial, params)
                ok = active & ~accepted & torch.isfinite(e_trial)
                ok = ok & (e_trial <= e + self.c1 * step * slope)
                if k == 0:
                    first_ok = ok
                y_new = torch.where(ok.unsqueeze(-1), trial, y_new)
                e_new = torch.where(ok, e_trial, e_new)
                accepted = accepted | ok
                if bool((accepted | ~active).all()):
                    break
                step = torch.where(accepted, step, step * 0.5)
            if g_first is not None and bool((first_ok | ~accepted).all()):
                g_new = g_first  # every accepted problem took the full step
            else:
                g_new = gradient(energy, y_new, params)
            bad_g = accepted & ~rows_finite(g_new)  # never stop on a point without a gradient
            if bool(bad_g.any()):
                y_new, e_new, g_new, accepted = shorter_finite_step(
                    energy, params, y, e, g, d, step, slope, self.c1,
                    (y_new, e_new, g_new, accepted), bad_g)
            sk, zk = y_new - y, g_new - g
            skzk = torch.linalg.vecdot(sk, zk)
            good = accepted & (skzk > 1e-12 * sk.norm(dim=-1) * zk.norm(dim=-1))
            # one slot per iteration for every problem; a problem without a good pair this time
            # marks the slot invalid (its oldest pair leaves the memory a step early)
            s[:, pos] = sk
            z[:, pos] = zk
            sz[:, pos] = skzk
            valid[:, pos] = good
            last = torch.where(good, pos, last)
            pos = (pos + 1) % m
            failed = active & ~accepted
            valid = valid & ~failed.unsqueeze(-1)
            y, e, g = y_new, e_new, torch.where(accepted.unsqueeze(-1), g_new, g)
            iters = iters + active.long()
            converged = converged | (active & (g.abs().amax(-1) <= tol))
            # A problem whose steepest-descent search fails even at the smallest step is stuck:
            # it stops here and stays reported as not converged.
            stuck = stuck | (failed & fresh & ~converged)
        return SolveResult(y=y, converged=converged, iterations=iters, energy=e, grad=g,
                           perturbed=perturbed)

