"""How limiting are the assumptions? The damped gradient against the exact implicit gradient
and against finite differences of the minimiser actually computed (reviewer 3).

Three generated settings:

- **wells** (tracker-fusion-like): ``E(y; P) = -Σ_t m_t exp(-||y - a_t||² / σ_t²)``, ``y ∈ R²``,
  ``T`` wells with parameters ``P[b, t] = (m_t, a_t (2), log σ_t)``; non-convex. Minimised by
  multi-start (every well centre is a candidate) + trust-region Newton.
- **mlesac**: the MLESAC toy ``E(t; x, σ) = -Σ_i exp(-(x_i - t)²/σ²)`` (10 inliers ~ N(c, 4²),
  100 outliers ~ U[-40, 40]), parameter ``σ``; every data point is a start candidate.
- **early stopping**: the wells energy minimised from a fixed start with exactly ``k`` Newton
  iterations followed by the final damped step; the gradient of this truncated map by the
  implicit adjoint and by the differentiated step (``adjoint="newton_step"``).

Quantities (per problem): ``J_λ = dy*/dP`` from ``argmin``'s backward at damping ``λ``
(``λ = 0``: the exact implicit derivative), ``h_min`` the smallest Hessian eigenvalue at ``y*``,
central finite differences ``(y*(P + εδ) - y*(P - εδ)) / 2ε`` along a random unit direction
``δ`` (re-solving from scratch, candidates moving with ``P``), and a *jump* when
``||y*(P ± εδ) - y*(P)||`` exceeds ``20 ε ||J_0 δ|| + 1e-7``: the minimiser switched basin, so
finite differences are discontinuous there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import wibergian
from wibergian.solvers import NewtonTrustRegion

from .data import make_generator

DRIFT_STREAM = 21
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0)
EPSILONS = (1e-6, 1e-4, 1e-2, 1e-1)
H_BINS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, math.inf)


class WellsEnergy:
    """``E(y; P)`` for ``y`` (B, 2), ``P`` (B, T, 4) = ``(m, a_0, a_1, log σ)`` -> (B,).

    With ``d_t = y - a_t``, ``g_t = m_t exp(-||d_t||² / σ_t²)``, ``s_t = 1/σ_t²``:
    ``∇E = Σ_t 2 s_t g_t d_t``, ``∇²E = Σ_t g_t (2 s_t I - 4 s_t² d_t d_tᵀ)``."""

    @staticmethod
    def _parts(y: Tensor, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = y[:, None, :] - p[..., 1:3]
        s = torch.exp(-2 * p[..., 3])
        g = p[..., 0] * torch.exp(-(d * d).sum(-1) * s)
        return d, s, g

    def __call__(self, y: Tensor, p: Tensor) -> Tensor:
        return -self._parts(y, p)[2].sum(-1)

    def gradient(self, y: Tensor, p: Tensor) -> Tensor:
        d, s, g = self._parts(y, p)
        return (2 * (s * g)[..., None] * d).sum(1)

    def hessian(self, y: Tensor, p: Tensor) -> Tensor:
        d, s, g = self._parts(y, p)
        eye = torch.eye(2, dtype=y.dtype)
        outer = d[..., :, None] * d[..., None, :]
        return (g[..., None, None] * (2 * s[..., None, None] * eye
                                      - 4 * (s * s)[..., None, None] * outer)).sum(1)


wells_energy = WellsEnergy()


def mlesac_energy(t: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """``E(t; x, σ) = -Σ_i exp(-(x_i - t)²/σ²)``: ``t`` (B, 1), ``x`` (B, N), ``σ`` (B, 1)."""
    return -torch.exp(-((x - t) ** 2) / sigma**2).sum(-1)


def sample_wells(n: int, n_wells: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` generated wells instances ``P`` (n, T, 4): ``m ~ logU[0.03, 1]``, centres
    ~ N(0, 0.8²), ``σ ~ logU[0.3, 2]`` (broad, shallow, overlapping wells give flat minima)."""
    g = make_generator(DRIFT_STREAM, seed, 1)
    m = torch.exp(math.log(0.03) - math.log(0.03) * torch.rand(n, n_wells, generator=g,
                                                                dtype=dtype))
    a = 0.8 * torch.randn(n, n_wells, 2, generator=g, dtype=dtype)
    ls = math.log(0.3) + (math.log(2.0) - math.log(0.3)) * torch.rand(n, n_wells, generator=g,
                                                                       dtype=dtype)
    return torch.cat([m[..., None], a, ls[..., None]], -1)


def sample_mlesac(n: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` generated MLESAC problems ``x`` (n, 110): 10 inliers ~ N(c, 4²), 100 outliers
    ~ U[-40, 40], ``c ~ U[-40, 40]``."""
    g = make_generator(DRIFT_STREAM, seed, 2)
    c = (torch.rand(n, 1, generator=g, dtype=dtype) * 2 - 1) * 40
    inl = c + 4 * torch.randn(n, 10, generator=g, dtype=dtype)
    out = (torch.rand(n, 100, generator=g, dtype=dtype) * 2 - 1) * 40
    return torch.cat([inl, out], 1)


Solve = Callable[[Tensor, float], Tensor]


def solve_wells(p: Tensor, damping: float = 0.1, **kw: Any) -> Tensor:
    """Multi-start minimiser of the wells energy (candidates: the well centres)."""
    cands = p[..., 1:3].detach()
    return wibergian.argmin(wells_energy, cands[:, 0], (p,), damping=damping, candidates=cands,
                            warn=False, **kw)


def solve_mlesac(x: Tensor, sigma: Tensor, damping: float = 0.1) -> Tensor:
    """Multi-start minimiser of the MLESAC energy (candidates: the data points)."""
    return wibergian.argmin(mlesac_energy, x[:, :1].detach(), (x, sigma), damping=damping,
                            candidates=x.detach()[..., None], warn=False)


def jacobian(solve: Callable[[Tensor], Tensor], p: Tensor) -> Tensor:
    """``dy/dp`` per problem, ``(B, n, *p.shape[1:])``, from ``n`` backward passes through
    ``solve`` (problems are independent, so ``y[:, i].sum()`` gives row ``i`` of every problem)."""
    p = p.detach().requires_grad_(True)
    y = solve(p)
    rows = []
    for i in range(y.shape[1]):
        (gi,) = torch.autograd.grad(y[:, i].sum(), p, retain_graph=i + 1 < y.shape[1])
        rows.append(gi)
    return torch.stack(rows, 1)


def directional(jac: Tensor, delta: Tensor) -> Tensor:
    """``J δ`` per problem: ``jac`` (B, n, *s), ``delta`` (B, *s) -> (B, n)."""
    return (jac.flatten(2) * delta.flatten(1)[:, None, :]).sum(-1)


def central_fd(solve: Callable[[Tensor], Tensor], p: Tensor, delta: Tensor, eps: float,
               y0: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences along ``delta`` and the largest move ``max ||y(p ± εδ) - y0||``."""
    with torch.no_grad():
        yp, ym = solve(p + eps * delta), solve(p - eps * delta)
    move = torch.maximum((yp - y0).norm(dim=-1), (ym - y0).norm(dim=-1))
    return (yp - ym) / (2 * eps), move


def rel(a: Tensor, b: Tensor) -> Tensor:
    """Per-problem relative difference ``||a - b|| / ||b||`` (flattened after dim 0)."""
    a, b = a.flatten(1), b.flatten(1)
    return (a - b).norm(dim=-1) / b.norm(dim=-1).clamp(min=1e-300)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-300)


def _q(t: Tensor) -> dict[str, float]:
    t = t[torch.isfinite(t)]
    if t.numel() == 0:
        return {"n": 0}
    return {"n": int(t.numel()), "median": float(t.median()), "q90": float(t.quantile(0.9)),
            "max": float(t.max())}


def _unit(shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> Tensor:
    d = torch.randn(*shape, generator=make_generator(DRIFT_STREAM, seed, 3), dtype=dtype)
    return d / d.flatten(1).norm(dim=-1).reshape(-1, *([1] * (d.dim() - 1)))


def gradient_study(solve: Callable[[Tensor, float], Tensor], p: Tensor, hmin: Tensor,
                   y_star: Tensor, lambdas: tuple[float, ...] = LAMBDAS,
                   epsilons: tuple[float, ...] = EPSILONS, seed: int = 0) -> dict[str, Any]:
    """Damped vs exact vs finite differences for one setting (see the module docstring).

    ``solve(p, damping) -> y`` must be a deterministic function of ``p``."""
    j0 = jacobian(lambda q: solve(q, 0.0), p)
    delta = _unit(tuple(p.shape), seed, p.dtype)
    exact_dir = directional(j0, delta)
    out: dict[str, Any] = {"n_problems": int(p.shape[0]),
                           "h_min": _q(hmin), "per_problem_h_min": hmin.tolist(),
                           "frac_hmin_below": {str(lam): float((hmin < lam).double().mean())
                                               for lam in lambdas}}
    damped = {}
    for lam in lambdas:
        jl = jacobian(lambda q, lam=lam: solve(q, lam), p)
        r, cs = rel(jl, j0), cosine(jl, j0)
        by_bin = []
        for lo, hi in zip(H_BINS[:-1], H_BINS[1:], strict=True):
            sel = (hmin >= lo) & (hmin < hi)
            by_bin.append({"h_lo": lo, "h_hi": hi, "count": int(sel.sum()),
                           "rel_err_median": float(r[sel].median()) if sel.any() else None,
                           "cos_median": float(cs[sel].median()) if sel.any() else None,
                           "bound_lam_over_h_plus_lam": lam / (lo + lam)})
        damped[str(lam)] = {"rel_err": _q(r), "cosine": _q(cs), "by_hmin": by_bin,
                            "per_problem_rel_err": r.tolist()}
    out["damped_vs_exact"] = damped
    fd = {}
    for eps in epsilons:
        g_fd, move = central_fd(lambda q: solve(q, 0.1).detach(), p, delta, eps, y_star)
        jump = move > 20 * eps * exact_dir.norm(dim=-1) + 1e-7
        r_exact = rel(g_fd, exact_dir)
        fd[str(eps)] = {"jump_fraction": float(jump.double().mean()),
                        "rel_err_exact_vs_fd_no_jump": _q(r_exact[~jump]),
                        "rel_err_exact_vs_fd_jump": _q(r_exact[jump]),
                        "agree_1e-3_fraction": float((r_exact < 1e-3).double().mean())}
    out["finite_differences"] = fd
    return out


def wells_hmin(y: Tensor, p: Tensor) -> Tensor:
    """Smallest Hessian eigenvalue of the wells energy at ``y`` (B,)."""
    return torch.linalg.eigvalsh(wells_energy.hessian(y.detach(), p.detach()))[:, 0]


def wells_gradient_study(n: int = 300, n_wells: int = 5, seed: int = 0,
                         **kw: Any) -> dict[str, Any]:
    p = sample_wells(n, n_wells, seed)
    with torch.no_grad():
        y = solve_wells(p)
    res = gradient_study(lambda q, lam: solve_wells(q, lam), p, wells_hmin(y, p), y, seed=seed,
                         **kw)
    res["setting"] = f"wells: {n} generated instances, {n_wells} Gaussian wells in 2-D"
    return res


def mlesac_gradient_study(n: int = 300, sigma: float = 4.0, seed: int = 0,
                          **kw: Any) -> dict[str, Any]:
    """Parameter: ``σ`` per problem (shape (B, 1)); ``x`` fixed."""
    x = sample_mlesac(n, seed)
    s = torch.full((n, 1), sigma, dtype=x.dtype)
    with torch.no_grad():
        y = solve_mlesac(x, s)
    t = y.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(mlesac_energy(t, x, s).sum(), t, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), t)
    res = gradient_study(lambda q, lam: solve_mlesac(x, q, lam), s, h[:, 0], y, seed=seed, **kw)
    res["setting"] = f"mlesac: {n} generated problems, sigma = {sigma}"
    return res


def early_stop_study(n: int = 300, n_wells: int = 5, iters: tuple[int, ...] = (0, 1, 2, 3, 5, 10),
                     lam: float = 0.1, start_noise: float = 0.05, eps: float = 1e-6,
                     seed: int = 0) -> dict[str, Any]:
    """The truncated map ``F_k(P)``: fixed start ``y0`` (``y*`` + noise, not a function of
    ``P``), exactly ``k`` trust-region Newton iterations, then the final damped step.

    Errors are over the problems whose final step was kept (where it is rejected, because it
    would raise the energy, the map is locally the pre-step point and neither adjoint describes
    it; the kept fraction is reported)."""
    p = sample_wells(n, n_wells, seed)
    with torch.no_grad():
        y_star = solve_wells(p, lam)
    g = make_generator(DRIFT_STREAM, seed, 4)
    y0 = y_star + start_noise * torch.randn(y_star.shape, generator=g, dtype=p.dtype)
    j_true = jacobian(lambda q: solve_wells(q, 0.0), p)
    delta = _unit(tuple(p.shape), seed, p.dtype)
    true_dir = directional(j_true, delta)
    rows = []
    for k in iters:
        solver = NewtonTrustRegion(max_iter=k, fixed_iterations=True)

        def fk(q: Tensor, adjoint: str, solver=solver) -> Tensor:
            return wibergian.argmin(wells_energy, y0, (q,), damping=lam, solver=solver,
                                    adjoint=adjoint, warn=False)

        with torch.no_grad():
            yk, info = wibergian.argmin(wells_energy, y0, (p,), damping=lam, solver=solver,
                                        warn=False, return_info=True)
        fd, move = central_fd(lambda q, fk=fk: fk(q, "implicit"), p, delta, eps, yk)
        row: dict[str, Any] = {
            "k": k, "dist_to_min": _q((yk - y_star).norm(dim=-1)),
            "final_step_accepted": float(info.final_step_accepted.double().mean()),
            "hmin_positive_at_pre_step": float((wells_hmin(yk, p) > 0).double().mean())}
        # where the final step is rejected the map is locally y_pre: compare on kept steps only
        ok = info.final_step_accepted
        for adj in ("implicit", "newton_step"):
            d = directional(jacobian(lambda q, adj=adj, fk=fk: fk(q, adj), p), delta)
            row[adj] = {"rel_err_vs_fd_of_map": _q(rel(d, fd)[ok]),
                        "rel_err_vs_true_minimiser": _q(rel(d, true_dir)[ok])}
        row["fd_of_map_vs_true_minimiser"] = _q(rel(fd, true_dir)[ok])
        rows.append(row)
    return {"setting": f"early stopping on {n} generated wells instances, start = y* + "
                       f"N(0, {start_noise}²), λ = {lam}, central FD ε = {eps}", "rows": rows}


def bifurcation_sweep(separations: Tensor | None = None, lam: float = 0.1,
                      eps: float = 1e-5) -> dict[str, Any]:
    """Two wells (masses 1 and 0.995, ``σ = 1``) at ``(0, 0)`` and ``(s, 0)``: as ``s`` grows past
    about ``√2`` the single merged minimum flattens (``h_min → 0``) and splits in two. Returns,
    per ``s``: ``h_min`` at the global minimiser, ``dy*_0/ds`` exact (λ = 0), damped (λ) and by
    central finite differences, and whether the finite difference jumped basin."""
    if separations is None:
        separations = torch.linspace(0.6, 2.4, 181, dtype=torch.float64)
    s = separations.to(torch.float64)
    p = torch.zeros(len(s), 2, 4, dtype=torch.float64)
    p[:, 0, 0], p[:, 1, 0] = 1.0, 0.995
    p[:, 1, 1] = s
    delta = torch.zeros_like(p)
    delta[:, 1, 1] = 1.0
    with torch.no_grad():
        y = solve_wells(p, lam)
    hmin = wells_hmin(y, p)
    exact = directional(jacobian(lambda q: solve_wells(q, 0.0), p), delta)[:, 0]
    damped = directional(jacobian(lambda q: solve_wells(q, lam), p), delta)[:, 0]
    fd, move = central_fd(lambda q: solve_wells(q, lam).detach(), p, delta, eps, y)
    jump = move > 20 * eps * exact.abs() + 1e-7
    return {"setting": f"two generated wells (m = 1, 0.995; σ = 1) at separation s; λ = {lam}, "
                       f"FD ε = {eps}", "lambda": lam,
            "s": s.tolist(), "h_min": hmin.tolist(), "exact": exact.tolist(),
            "damped": damped.tolist(), "fd": fd[:, 0].tolist(), "jump": jump.tolist()}


def run_drift(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """All drift measurements (smaller with ``quick``)."""
    n = 100 if quick else 1000
    return {
        "label": "generated problems (Gaussian wells, MLESAC toy)",
        "wells": wells_gradient_study(n, seed=seed),
        "mlesac": {str(sig): mlesac_gradient_study(n, sigma=sig, seed=seed)
                   for sig in ((4.0,) if quick else (2.0, 4.0, 8.0))},
        "early_stop": early_stop_study(n, seed=seed,
                                       start_noise=0.15, iters=(0, 1, 2, 3, 5)),
        "bifurcation": bifurcation_sweep(),
    }
