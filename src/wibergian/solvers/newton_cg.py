"""Matrix-free trust-region Newton-CG (Steihaug-Toint) for large problems.

Each outer iteration minimises the quadratic model ``m_b(d) = g_bᵀd + ½ dᵀH_b d`` inside the
ball ``||d|| ≤ Δ_b`` by truncated conjugate gradients on Hessian-vector products
(:func:`steihaug_cg`), for all problems at once with a mask per problem. CG stops at the first of

- a residual ``||H d + g|| ≤ min(0.5, sqrt(||g|| / ||g₀||))·||g||`` (superlinear forcing,
  invariant to the energy's scale; ``g₀`` the gradient at the start),
- an iterate leaving the ball (the step is cut at the boundary),
- a direction ``p`` of non-positive curvature ``pᵀHp ≤ 0``: the step follows ``p`` to the
  boundary (the negative-curvature exit),

so ``H`` need not be positive definite. The step is accepted where ``ρ = (E(y) - E(y + d)) /
(-m(d)) > 1e-4``; ``ρ < 0.25`` shrinks ``Δ_b`` to ``||d||/4``, ``ρ > 0.75`` with the step on the
boundary doubles it. ``Δ₀`` is the length of the Cauchy step ``||g||³ / gᵀHg`` (``||g||`` when
``gᵀHg ≤ 0``) unless given.

A problem stops when ``||g_b||_∞ ≤ tol`` or when the predicted decrease is below the
floating-point resolution of ``E``, **and** a Lanczos probe (``curvature.py``) finds no
eigenvalue of ``H_b`` below ``-τ``. Where it does (a saddle), the next step is the Ritz vector
times ``±Δ_b`` (sign: downhill) and the problem carries on. Problems still at such a point when
the iterations run out are returned with ``saddle`` set and ``converged`` false.

When at most half of the problems still run (``active_rows.py``), those alone carry on as a
sub-batch: their state is sliced, the parameters too (the multi-start rule, checked once against
the full batch's energies), and the gradient graph is rebuilt on those rows, so the last
iterations' Hessian-vector products (the CG steps and the Lanczos probe) no longer read every
problem's data. A problem's probe keeps the start vector it has in the full batch, so each
problem's iterates are the same either way (tested bit for bit on CPU).

A trial point where the gradient is NaN/Inf counts as a rejected step (the radius shrinks), and
a start there is moved slightly (``nonfinite.py``).

Hessian-vector products come from the energy's declared ``hvp_operator`` when it has one, else
from autograd, reverse over reverse with the gradient's graph kept for the whole iteration
(``derivatives.hvp_operator``). Memory is ``O(B·n)`` (a few ``(B, n)`` vectors, the gradient's
graph, and the ``(B, k, n)`` Lanczos basis of the probe); no ``n×n`` matrix is formed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..derivatives import energy_value, hvp_operator, value_and_gradient
from ..energy import EnergyFn
from .active_rows import ActiveRows
from .base import SolveResult
from .curvature import negative_curvature_lanczos
from .nonfinite import finite_start, rows_finite

_ACCEPT = 1e-4


def _to_boundary(z: Tensor, p: Tensor, radius: Tensor) -> Tensor:
    """The ``τ ≥ 0`` with ``||z + τp|| = Δ`` (``z`` inside the ball), ``(B,)``."""
    pp = torch.linalg.vecdot(p, p).clamp_min(torch.finfo(p.dtype).tiny)
    zp = torch.linalg.vecdot(z, p)
    zz = torch.linalg.vecdot(z, z)
    disc = (zp * zp + pp * (radius * radius - zz)).clamp_min(0.0)
    return (-zp + disc.sqrt()) / pp


def steihaug_cg(
    hvp: Callable[[Tensor], Tensor],
    g: Tensor,
    radius: Tensor,
    active: Tensor,
    max_iter: int,
    g0norm: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Steihaug-Toint truncated CG for ``min g·d + ½ dᵀHd, ||d|| ≤ Δ``, per problem.

    Args:
        hvp: ``v ↦ H v`` for ``v`` ``(B, n)``.
        g: gradients ``(B, n)``; radius: ``Δ`` ``(B,)``; active: problems to solve ``(B,)``.
        max_iter: CG iterations per problem.
        g0norm: ``||g||`` at the solver's start ``(B,)``, the scale of the forcing term
            (``None``: the current ``||g||``, i.e. a forcing of 0.5).

    Returns:
        ``(d, Hd, boundary, negative, products)``: steps ``(B, n)`` (zero where inactive), their
        products with ``H`` (tracked, no extra product), whether the step ended on the
        boundary, whether negative curvature was met (both ``(B,)``), products spent.
    """
    z = torch.zeros_like(g)
    hz = torch.zeros_like(g)
    r = g.clone()
    p = -r
    rr = torch.linalg.vecdot(r, r)
    gnorm = rr.sqrt()
    scale = gnorm if g0norm is None else g0norm
    stop_at = torch.clamp((gnorm / scale).sqrt(), max=0.5) * gnorm
    run = active & (gnorm > 0)
    boundary = torch.zeros_like(run)
    negative = torch.zeros_like(run)
    products = 0
    for _ in range(max_iter):
        if not bool(run.any()):
            break
        hp = hvp(torch.where(run[:, None], p, 0.0))
        products += 1
        php = torch.linalg.vecdot(p, hp)
        neg = run & (php <= 0)
        alpha = rr / torch.where(php > 0, php, 1.0)
        z_try = z + alpha[:, None] * p
        out = run & ~neg & (z_try.norm(dim=-1) >= radius)
        edge = neg | out
        tau = _to_boundary(z, p, radius)
        step = torch.where(edge, tau, torch.where(run, alpha, 0.0))
        z = z + step[:, None] * p
        hz = hz + step[:, None] * hp
        inner = run & ~edge
        r_new = r + torch.where(inner, alpha, 0.0)[:, None] * hp
        rr_new = torch.linalg.vecdot(r_new, r_new)
        done = inner & (rr_new.sqrt() <= stop_at)
        beta = rr_new / torch.where(rr > 0, rr, 1.0)
        p = torch.where(inner[:, None], -r_new + beta[:, None] * p, p)
        r, rr = r_new, torch.where(inner, rr_new, rr)
        boundary |= edge
        negative |= neg
        run = inner & ~done
    return z, hz, boundary, negative, products


@dataclass
class NewtonCG:
    """Matrix-free trust-region Newton-CG, batched (``solver="newton_cg"``; ``"auto"`` above
    ``AUTO_DENSE_MAX`` variables).

    Attributes:
        max_iter: outer iterations per problem.
        tol: gradient tolerance ``||g||_∞`` (``None``: ``1e-8`` in float64, ``1e-5`` in float32).
        cg_max_iter: CG iterations per outer iteration (``None``: ``min(n, 500)``).
        radius0: initial trust radius (``None``: the Cauchy step's length).
        max_radius: radius cap.
        second_order: probe ``H`` for negative curvature before declaring a problem converged.
        lanczos_steps: Lanczos steps of that probe.
        record: after each call: ``hvps`` (Hessian-vector products, each over the problems
            then running), ``cg_iterations``, ``escapes`` (negative-curvature steps taken at
            stationary points) and ``sub_batches`` (times the running problems went on alone).
    """

    max_iter: int = 200
    tol: float | None = None
    cg_max_iter: int | None = None
    radius0: float | None = None
    max_radius: float = 1e10
    second_order: bool = True
    lanczos_steps: int = 20
    record: dict[str, Any] = field(default_factory=dict)

    def minimize(self, energy: EnergyFn, y0: Tensor, params: Sequence[Tensor]) -> SolveResult:
        with torch.no_grad():
            return self._run(energy, y0.detach().clone(), [p.detach() for p in params])

    def _run(self, energy: EnergyFn, y: Tensor, params: list[Tensor]) -> SolveResult:
        b, n = y.shape
        dt, dev = y.dtype, y.device
        y, (e, _), perturbed = finite_start(
            lambda z: value_and_gradient(energy, z, params), y, "NewtonCG")
        g, hvp = hvp_operator(energy, y, params)
        self._counts = {"hvps": 0, "cg_iterations": 0, "escapes": 0, "sub_batches": 0}
        if self.radius0 is not None:
            radius = torch.full((b,), float(self.radius0), dtype=dt, device=dev)
        else:
            hg = hvp(g)
            self._counts["hvps"] += 1
            gg = torch.linalg.vecdot(g, g)
            ghg = torch.linalg.vecdot(g, hg)
            cauchy = torch.where(ghg > 0, gg * gg.sqrt() / torch.where(ghg > 0, ghg, 1.0),
                                 gg.sqrt())
            radius = torch.where(cauchy > 0, cauchy, 1.0).clamp(1e-8, self.max_radius)
        flag = torch.zeros(b, dtype=torch.bool, device=dev)
        st = _State(y=y, e=e, g=g, radius=radius,
                    g0norm=g.norm(dim=-1).clamp_min(torch.finfo(dt).tiny),
                    converged=flag, saddle=flag.clone(), pending=flag.clone(),
                    iters=torch.zeros(b, dtype=torch.long, device=dev), rows=None, total=b)
        self._loop(energy, params, st, hvp, 0)
        self.record.update(self._counts)
        return SolveResult(y=st.y, converged=st.converged, iterations=st.iters, energy=st.e,
                           grad=st.g, saddle=st.saddle & ~st.converged, perturbed=perturbed)

    def _loop(self, energy: EnergyFn, params: list[Tensor], st: _State,
              hvp: Callable[[Tensor], Tensor], start: int) -> None:
        """Iterations ``start … max_iter`` on the problems of ``st`` (updated in place). When at
        most a fraction of them is still running, those alone carry on as a sub-batch
        (``active_rows.py``; the rest are done and their state is final)."""
        b, n = st.y.shape
        dt = st.y.dtype
        tol = self.tol if self.tol is not None else (1e-8 if dt == torch.float64 else 1e-5)
        cg_iter = self.cg_max_iter if self.cg_max_iter is not None else min(n, 500)
        resolution = 10 * torch.finfo(dt).eps
        counts = self._counts
        subset = ActiveRows(energy, params, b)
        y, e, g, radius = st.y, st.e, st.g, st.radius
        converged, pending, iters = st.converged, st.pending, st.iters
        saddle = st.saddle
        for it in range(start, self.max_iter + 1):
            live = ~converged
            running = int(live.sum())
            if running < b and subset.wants(running):
                rows = live.nonzero().flatten()
                ps = subset.params_for(rows, y, e)
                if ps is not None:
                    st.update(y=y, e=e, g=g, radius=radius, converged=converged,
                              pending=pending, iters=iters, saddle=saddle)
                    sub = st.take(rows)
                    sub.g, sub_hvp = hvp_operator(subset.energy, sub.y, ps)
                    counts["sub_batches"] += 1
                    self._loop(subset.energy, ps, sub, sub_hvp, it)
                    st.put(rows, sub)
                    return
            cand = ~converged & (pending | (g.abs().amax(-1) <= tol))
            escape = torch.zeros_like(cand)
            if bool(cand.any()):
                if self.second_order:
                    escape, u, curv, k = negative_curvature_lanczos(
                        hvp, y, cand, self.lanczos_steps, rows=st.rows, total=st.total)
                    counts["hvps"] += k
                converged = converged | (cand & ~escape)
            saddle = escape
            active = ~converged
            if it == self.max_iter or not bool(active.any()):
                break
            d, hd, edge, _, k = steihaug_cg(hvp, g, radius, active & ~escape, cg_iter,
                                            st.g0norm)
            counts["hvps"] += k
            counts["cg_iterations"] += k
            if bool(escape.any()):  # step along the negative-curvature direction, downhill
                counts["escapes"] += int(escape.sum())
                sign = torch.where(torch.linalg.vecdot(g, u) > 0, -1.0, 1.0).to(dt)
                step = (sign * radius)[:, None] * u
                d = torch.where(escape[:, None], step, d)
                hd = torch.where(escape[:, None], (curv[:, None] * step), hd)
                edge = edge | escape
            pred = -(torch.linalg.vecdot(g, d) + 0.5 * torch.linalg.vecdot(d, hd))
            y_new = y + d
            e_new = energy_value(energy, y_new, params)
            actual = e - e_new
            rho = actual / torch.where(pred > 0, pred, 1.0)
            ok = active & (pred > 0) & torch.isfinite(e_new) & (rho > _ACCEPT)
            dn = d.norm(dim=-1)
            radius = torch.where(active & ~ok | (active & (rho < 0.25)), 0.25 * dn, radius)
            radius = torch.where(ok & (rho > 0.75) & edge, 2.0 * radius, radius)
            radius = radius.clamp(torch.finfo(dt).tiny, self.max_radius)
            pending = active & ~escape & (pred <= resolution * (1 + e.abs()))
            iters = iters + active.long()
            if bool(ok.any()):
                y_acc = torch.where(ok[:, None], y_new, y)
                g_acc, hvp_acc = hvp_operator(energy, y_acc, params)
                bad = ok & ~rows_finite(g_acc)  # never step onto a point without a gradient
                if bool(bad.any()):
                    ok = ok & ~bad
                    radius = torch.where(bad, 0.25 * dn, radius)
                    y_acc = torch.where(ok[:, None], y_new, y)
                    g_acc, hvp_acc = hvp_operator(energy, y_acc, params)
                y, g, hvp = y_acc, g_acc, hvp_acc
                e = torch.where(ok, e_new, e)
        st.update(y=y, e=e, g=g, radius=radius, converged=converged, pending=pending,
                  iters=iters, saddle=saddle)


@dataclass
class _State:
    """Newton-CG's per-problem state, ``(b, …)``; ``rows`` ``(b,)``: the problems' indices in
    the solve's batch of ``total`` (``None``: the whole batch)."""

    y: Tensor
    e: Tensor
    g: Tensor
    radius: Tensor
    g0norm: Tensor
    converged: Tensor
    saddle: Tensor
    pending: Tensor
    iters: Tensor
    rows: Tensor | None
    total: int

    _PER_ROW = ("y", "e", "g", "radius", "g0norm", "converged", "saddle", "pending", "iters")

    def update(self, **values: Tensor) -> None:
        for k, v in values.items():
            setattr(self, k, v)

    def take(self, idx: Tensor) -> _State:
        """The problems ``idx`` ``(k,)`` as a state of their own."""
        got = {k: getattr(self, k).index_select(0, idx) for k in self._PER_ROW}
        return _State(**got, rows=idx if self.rows is None else self.rows[idx],
                      total=self.total)

    def put(self, idx: Tensor, sub: _State) -> None:
        """Write ``sub`` (from :meth:`take` with ``idx``) back into rows ``idx``."""
        for k in self._PER_ROW:
            setattr(self, k, getattr(self, k).index_copy(0, idx, getattr(sub, k)))
