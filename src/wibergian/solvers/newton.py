"""Batched trust-region (Levenberg-Marquardt damped) Newton.

Each problem ``b`` keeps its own damping ``μ_b`` and takes the step
``d_b = -(H_b + μ_b I)^-1 g_b``. The step is accepted when the energy falls; the ratio
``ρ = (E(y) - E(y + d)) / (-(gᵀd + ½ dᵀHd))`` of actual to predicted decrease adapts ``μ_b``:
``ρ > 0.75`` shrinks it by 3, ``ρ < 0.25`` grows it by 2, a rejected step grows it by 4. An
indefinite ``H_b + μ_b I`` (Cholesky fails) is treated as a rejected step. A problem stops when
``||g_b||_∞ ≤ tol`` (default ``1e-8`` in float64, ``1e-5`` in float32), when its step is below
``step_tol``, or when the predicted decrease falls under the floating-point resolution of the
energy (``10·eps·(1 + |E|)``: no further progress is representable). Stopped problems are
masked out. A trial point where the gradient or Hessian is NaN/Inf counts as a rejected step, and
a start there is moved slightly (``nonfinite.py``).

A minimum, not a saddle: before a problem is declared converged, its Hessian is tested for
positive semi-definiteness (``curvature.negative_curvature_dense``: the dense solve's Cholesky
certificate, then an inertia test and ``eigh`` only where it fails). The certificate is returned
(``SolveResult.psd``), so the final step and the backward at the same point do not repeat it.
Where ``H_b`` has eigenvalues below ``-τ`` the next step is ``±Δ_b`` times the unit vector
``Σ_{λ_i < -τ} |λ_i| q_i`` (its whole negative eigenspace, downhill; ``Δ_b`` starts at
``1 + ||y_b||_∞``, quarters when the step is rejected and doubles when it does well) and the
problem carries on. Problems still at such a point when the iterations run out are returned
with ``saddle`` set and ``converged`` false.

Each iteration evaluates the energy, gradient and Hessian once, at the trial point
(``derivatives.value_gradient_hessian``), and carries them over where the step is accepted: a
rejected step does not recompute the derivatives at the unchanged point, and an energy that
declares ``value_gradient_hessian`` pays one pass per iteration instead of three. Only the
problems still active are factored (on the iterations that test for "every problem stopped"):
a stopped problem's ``H + μI`` does not change, and its step is masked out anyway. When few
problems are left active they alone are evaluated (``active_rows.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cholesky import cholesky_apply, shifted_cholesky, work_buffer
from ..derivatives import value_gradient_hessian
from ..energy import EnergyFn
from .active_rows import ActiveRows
from .base import SolveResult
from .curvature import negative_curvature_dense
from .nonfinite import finite_start, rows_finite


@dataclass
class NewtonTrustRegion:
    """Trust-region Newton for small dense problems (``solver="auto"`` picks it for ``n ≤ 40``).

    Attributes:
        max_iter: iteration cap per problem.
        tol: gradient tolerance ``||g||_∞`` (``None``: by dtype).
        step_tol: a step shorter than this (∞-norm) also counts as converged.
        mu0: initial Levenberg-Marquardt damping.
        fixed_iterations: run exactly ``max_iter`` accepted-or-rejected iterations, ignoring
            ``tol`` (for benchmarks that fix the work; the second-order check runs once, at the
            end).
        second_order: test ``H`` for negative curvature before declaring a problem converged.
        check_every: test "every problem stopped" (one host synchronisation) every this many
            iterations; in between, stopped problems are masked on the device. ``None``: 1 on
            the CPU (reading a CPU flag costs nothing), 4 on an accelerator.
    """

    max_iter: int = 100
    tol: float | None = None
    step_tol: float = 1e-12
    mu0: float = 1e-3
    fixed_iterations: bool = False
    second_order: bool = True
    check_every: int | None = None

    def minimize(self, energy: EnergyFn, y0: Tensor, params: Sequence[Tensor],
                 start: tuple[Tensor, Tensor, Tensor] | None = None) -> SolveResult:
        """``start``: ``(E, ∇E, ∇²E)`` at ``y0`` when the caller has them (``argmin`` does,
        from its start check: ``checks.start_energy``)."""
        with torch.no_grad():
            return self._run(energy, y0.detach().clone(), [p.detach() for p in params], start)

    def _run(self, energy: EnergyFn, y: Tensor, params: list[Tensor],
             start: tuple[Tensor, Tensor, Tensor] | None = None) -> SolveResult:
        b, n = y.shape
        dev, dt = y.device, y.dtype
        mu = torch.full((b,), self.mu0, dtype=dt, device=dev)
        iters = torch.zeros(b, dtype=torch.long, device=dev)
        converged = torch.zeros(b, dtype=torch.bool, device=dev)
        y, (e, g, h), perturbed = finite_start(
            lambda z: value_gradient_hessian(energy, z, params), y, "NewtonTrustRegion",
            first=start)
        tol = self.tol if self.tol is not None else (1e-8 if dt == torch.float64 else 1e-5)
        resolution = 10 * torch.finfo(dt).eps
        pending = torch.zeros(b, dtype=torch.bool, device=dev)  # stopped: check 2nd order first
        escape = torch.zeros(b, dtype=torch.bool, device=dev)
        radius = 1 + y.abs().amax(-1)  # escape step length
        u = torch.zeros_like(y)  # escape direction (set by the second-order check)
        psd = torch.zeros(b, dtype=torch.bool, device=dev)  # H certified (spectral.certify_psd)
        work = work_buffer(b, n, y) if n > 2 else None  # every iteration's H + μI, factored
        every = self.check_every or (1 if dev.type == "cpu" else 4)
        # the loop reads a flag every iteration anyway (the CPU default): a few more reads cost
        # nothing there and spare whole-tensor selects (else everything stays on the device)
        sync = every == 1 and dev.type == "cpu"
        escaping = False  # a problem escapes a saddle this iteration (the second-order check)
        subset = ActiveRows(energy, params, b)  # the last iterations' few active problems
        for it in range(self.max_iter):
            gmax = g.abs().amax(-1)
            rows = None  # the problems to factor (None: all)
            if not self.fixed_iterations:
                converged, escape, u, psd = self._check(converged, pending | (gmax <= tol), h,
                                                        psd)
                escaping = not sync or bool(escape.any())
                active = ~converged
                if it % every == 0:
                    rows = active.nonzero().flatten()  # the loop's host synchronisation
                    if rows.numel() == 0:
                        break
                    rows = None if rows.numel() == b else rows
            else:
                active = torch.ones(b, dtype=torch.bool, device=dev)
            if rows is None:  # H + μI, factored in the one work buffer of the solve
                chol, pd = shifted_cholesky(h, mu, out=work)
                d = -cholesky_apply(chol, g)
            else:  # a stopped problem's H + μI does not change: factor the active ones only
                chol, pd_rows = shifted_cholesky(
                    h[rows], mu[rows], out=None if work is None else work[: rows.numel()])
                d = torch.zeros_like(g).index_copy_(0, rows, -cholesky_apply(chol, g[rows]))
                pd = torch.zeros_like(active).index_copy_(0, rows, pd_rows)
            d = torch.where((pd & active).unsqueeze(-1), d, torch.zeros_like(d))
            d = torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
            # escapes along the negative curvature, downhill, to the radius (masked on the
            # device: no host sync)
            sign = torch.where((g * u).sum(-1) > 0, -radius, radius)
            d = torch.where(escape.unsqueeze(-1), sign.unsqueeze(-1) * u, d)
            pd = pd | escape
            y_new = y + d
            part = (subset.evaluate(rows, y_new, y, e, g, h)
                    if rows is not None and subset.wants(rows.numel()) else None)
            e_new, g_new, h_new = (part if part is not None
                                   else value_gradient_hessian(energy, y_new, params))
            # the model's decrease -(gᵀd + ½dᵀHd): for the Newton step (H + μI)d = -g, so
            # dᵀHd = -gᵀd - μ|d|² and no product with H is needed; an escape step has no such
            # identity (computed only when there is one)
            gd = (g * d).sum(-1)
            pred = 0.5 * (mu * (d * d).sum(-1) - gd)
            if escaping:
                dhd = (d * (h @ d.unsqueeze(-1)).squeeze(-1)).sum(-1)
                pred = torch.where(escape, -(gd + 0.5 * dhd), pred)
            actual = e - e_new
            ok = pd & active & torch.isfinite(e_new) & (actual >= 0) & (pred > 0)
            ok = ok & rows_finite(g_new, h_new, sync=sync)  # never step where derivatives are not
            rho = torch.where(ok, actual / torch.where(pred > 0, pred, torch.ones_like(pred)), 0.0)
            if sync and bool(ok.all()):  # every step taken: nothing to select
                y, e, g, h = y_new, e_new, g_new, h_new
            else:
                y = torch.where(ok.unsqueeze(-1), y_new, y)
                e = torch.where(ok, e_new, e)
                g = torch.where(ok.unsqueeze(-1), g_new, g)
                h = torch.where(ok[:, None, None], h_new, h)
            mu = torch.where(ok & (rho > 0.75), mu / 3.0, mu)
            mu = torch.where(ok & (rho < 0.25), mu * 2.0, mu)
            mu = torch.where(active & ~ok, mu * 4.0, mu).clamp(1e-12, 1e12)
            radius = torch.where(escape & ~ok, radius / 4, radius)
            radius = torch.where(escape & ok & (rho > 0.75), radius * 2, radius)
            iters = iters + active.long()
            if not self.fixed_iterations:
                small = ok & (d.abs().amax(-1) <= self.step_tol * (1 + y.abs().amax(-1)))
                flat = pd & active & (pred.abs() <= resolution * (1 + e.abs()))
                pending = (small | flat) & ~escape
        # g is the gradient at the final y (carried with every accepted step)
        stop = pending | (g.abs().amax(-1) <= tol)
        converged, saddle, _, psd = self._check(converged, stop, h, psd)
        return SolveResult(y=y, converged=converged, iterations=iters, energy=e, grad=g,
                           hessian=h, perturbed=perturbed,
                           saddle=saddle if self.second_order else None,
                           psd=psd if self.second_order else None)

    def _check(self, converged: Tensor, stop: Tensor, h: Tensor, psd: Tensor
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Problems that ``stop`` and are not yet converged become converged unless ``H`` has
        negative curvature: ``(converged, negative, direction, psd)``. ``psd`` is updated for the
        problems checked; a certified problem converges, so it never moves again and its
        certificate stays valid at the returned point."""
        cand = stop & ~converged
        if not self.second_order or not bool(cand.any()):
            zero = torch.zeros_like(h[:, 0])
            return converged | cand, torch.zeros_like(cand), zero, psd
        neg, u, _, checked = negative_curvature_dense(h, cand)
        return converged | (cand & ~neg), neg, u, torch.where(cand, checked, psd)
