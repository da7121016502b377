"""Newton-CG (matrix-free trust region), ``solver="auto"``, and minima rather than saddles."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

import wibergian
from wibergian.solvers import NewtonCG, NewtonTrustRegion
from wibergian.solvers.auto import AUTO_DENSE_MAX
from wibergian.solvers.curvature import negative_curvature_lanczos
from wibergian.solvers.newton_cg import steihaug_cg

DT = torch.float64


def logsumexp(y, w, c):
    return torch.logsumexp(y @ w.T + c, -1) + 0.05 * (y * y).sum(-1)


def wells(y, a, c):
    """Non-convex: a double well per coordinate plus a PSD coupling ``½ yᵀ C y``."""
    return (((y * y - a) ** 2) / 4).sum(-1) + 0.5 * ((y @ c) * y).sum(-1)


def lorentzian(y, z, log_alpha, log_s):
    d = y[:, 1:] - y[:, :-1]
    return 0.5 * ((y - z) ** 2).sum(-1) + log_alpha.exp() * torch.log1p(
        d * d / log_s.exp() ** 2).sum(-1)


def saddle_2d(y):
    """``x⁴/4 - x²/2 + y²``: a saddle at the origin, minima at ``(±1, 0)``."""
    return y[:, 0] ** 4 / 4 - y[:, 0] ** 2 / 2 + y[:, 1] ** 2


def all_wells(y, a):
    """``Σ y_i⁴/4 - a_i y_i²/2``: every direction at the origin has negative curvature; minima
    at ``y_i = ±sqrt(a_i)``."""
    return (y**4 / 4 - a * y * y / 2).sum(-1)


def _hessian(energy, y, params):
    return torch.stack([torch.autograd.functional.hessian(lambda v: energy(v[None], *params)[0],
                                                          y[b]) for b in range(y.shape[0])])


def test_newton_cg_finds_the_dense_newton_minimiser_on_convex_problems():
    g = torch.Generator().manual_seed(0)
    n, b = 12, 5
    w = torch.randn(2 * n, n, generator=g, dtype=DT)
    c = torch.randn(b, 2 * n, generator=g, dtype=DT)
    y0 = torch.randn(b, n, generator=g, dtype=DT)
    dense = NewtonTrustRegion(tol=1e-11).minimize(logsumexp, y0, (w, c))
    cg = NewtonCG(tol=1e-11).minimize(logsumexp, y0, (w, c))
    assert bool(dense.converged.all()) and bool(cg.converged.all())
    torch.testing.assert_close(cg.y, dense.y, rtol=0, atol=1e-8)


def test_newton_cg_finds_the_dense_newton_minimiser_on_non_convex_problems():
    g = torch.Generator().manual_seed(1)
    n, b = 10, 6
    m = torch.randn(n, n, generator=g, dtype=DT) / n
    a = 0.5 + torch.rand(n, generator=g, dtype=DT)
    params = (a, m @ m.T)
    dense = NewtonTrustRegion(tol=1e-11).minimize(wells, torch.randn(b, n, generator=g,
                                                                      dtype=DT), params)
    assert bool(dense.converged.all())
    # a start near each dense minimum (inside its basin) must lead back to it
    start = dense.y + 0.05 * torch.randn(b, n, generator=g, dtype=DT)
    cg = NewtonCG(tol=1e-11).minimize(wells, start, params)
    assert bool(cg.converged.all()) and not bool(cg.saddle.any())
    torch.testing.assert_close(cg.y, dense.y, rtol=0, atol=1e-8)
    # and both are minima: the Hessian is positive definite there
    assert float(torch.linalg.eigvalsh(_hessian(wells, cg.y, params))[:, 0].min()) > 0


def test_steihaug_cg_stops_on_the_boundary_and_follows_negative_curvature():
    h = torch.diag(torch.tensor([2.0, 1.0, -1.0], dtype=DT))[None]

    def hvp(v):
        return (h @ v.unsqueeze(-1)).squeeze(-1)

    g = torch.tensor([[1.0, 1.0, 0.0]], dtype=DT)
    # the Newton step -H⁻¹g = (-0.5, -1, 0) has length 1.118: inside a big ball it is found...
    d, hd, edge, neg, _ = steihaug_cg(hvp, g, torch.tensor([10.0], dtype=DT),
                                      torch.tensor([True]), 20)
    assert not bool(edge[0]) and not bool(neg[0])
    torch.testing.assert_close(hd, hvp(d))
    # ... within the forcing tolerance (0.5·||g|| without a g0norm)
    assert float((hvp(d) + g).norm()) <= 0.5 * float(g.norm())
    # a small ball cuts the step at its boundary
    d, _, edge, _, _ = steihaug_cg(hvp, g, torch.tensor([0.3], dtype=DT), torch.tensor([True]),
                                   20)
    assert bool(edge[0]) and abs(float(d.norm()) - 0.3) < 1e-12
    # a gradient along the negative-curvature axis: the first direction has pᵀHp < 0
    g2 = torch.tensor([[0.0, 0.0, 1.0]], dtype=DT)
    d, _, edge, neg, _ = steihaug_cg(hvp, g2, torch.tensor([2.0], dtype=DT),
                                     torch.tensor([True]), 20)
    assert bool(neg[0]) and bool(edge[0])
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0, -2.0]], dtype=DT))


def test_lanczos_probe_finds_the_negative_eigenvalue_and_its_vector():
    n = 60
    evals = torch.linspace(0.5, 4.0, n, dtype=DT)
    evals[17] = -0.3
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(2),
                                       dtype=DT))
    h = q @ torch.diag(evals) @ q.T
    hb = torch.stack([h, q @ torch.diag(evals.abs()) @ q.T])  # problem 1: positive definite

    def hvp(v):
        return (hb @ v.unsqueeze(-1)).squeeze(-1)

    like = torch.zeros(2, n, dtype=DT)
    neg, u, curv, k = negative_curvature_lanczos(hvp, like, torch.tensor([True, True]))
    assert neg.tolist() == [True, False] and k == 20
    assert abs(float(curv[0]) + 0.3) < 1e-6
    assert abs(float(u[0] @ q[:, 17])) > 1 - 1e-6


def test_lanczos_probe_decomposes_only_the_tridiagonals_its_pivots_flag(monkeypatch):
    """The probe's inertia test (LDLᵀ pivots of ``T + τI``) sends only problems with a Ritz value
    below ``-τ`` to ``eigh``; its verdicts equal the smallest eigenvalue of each Lanczos
    tridiagonal, computed here for every problem, including a breakdown (a 3-dimensional
    Krylov space) and a problem outside the mask."""
    n, b = 30, 8
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=DT))
    spectra = torch.linspace(0.5, 3.0, n, dtype=DT).repeat(b, 1)
    spectra[1, 4], spectra[4, 0], spectra[6, 9] = -0.2, -1e-3, -5.0
    spectra[5] = torch.tensor([1.0, 2.0, 3.0], dtype=DT).repeat(10)  # 3 distinct: breakdown
    hb = q @ torch.diag_embed(spectra) @ q.T

    def hvp(v):
        return (hb @ v.unsqueeze(-1)).squeeze(-1)

    seen = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda t: seen.append(t.shape[0]) or eigh(t))
    mask = torch.ones(b, dtype=torch.bool)
    mask[6] = False
    neg, u, curv, _ = negative_curvature_lanczos(hvp, torch.zeros(b, n, dtype=DT), mask)
    assert neg.tolist() == [False, True, False, False, True, False, False, False]
    assert seen == [2]  # the two flagged problems only
    for i in (1, 4):
        assert abs(float(curv[i]) - float(spectra[i].min())) < 1e-6
        assert float(u[i] @ hb[i] @ u[i]) < 0
    assert bool((curv[~neg] == 0).all()) and bool((u[~neg] == 0).all())


@pytest.mark.parametrize("solver", ["newton", "newton_cg"])
def test_started_exactly_at_a_saddle_the_solver_reaches_a_minimum(solver):
    y0 = torch.zeros(3, 2, dtype=DT)
    y, info = wibergian.argmin(saddle_2d, y0, solver=solver, return_info=True)
    assert bool(info.converged.all()) and info.num_saddle == 0
    assert info.saddle is not None and not bool(info.saddle.any())
    torch.testing.assert_close(y.abs(), torch.tensor([[1.0, 0.0]] * 3, dtype=DT), rtol=0,
                               atol=1e-8)


@pytest.mark.parametrize(("solver", "n"), [("newton", 20), ("newton_cg", 50)])
def test_saddle_escape_in_many_dimensions(solver, n):
    """Every direction at the origin has negative curvature: the dense solver escapes along the
    whole negative eigenspace, Newton-CG along Ritz vectors, until no negative curvature is
    left."""
    a = torch.linspace(0.5, 2.0, n, dtype=DT)
    y, info = wibergian.argmin(all_wells, torch.zeros(2, n, dtype=DT), (a,), solver=solver,
                               return_info=True)
    assert bool(info.converged.all()) and info.num_saddle == 0
    torch.testing.assert_close(y.abs(), a.sqrt().expand(2, n), rtol=0, atol=1e-7)


@pytest.mark.parametrize("solver", ["newton", "newton_cg"])
def test_a_problem_left_at_a_saddle_is_counted_not_converged(solver):
    y0 = torch.tensor([[0.0, 0.0], [0.5, 0.3]], dtype=DT)
    with pytest.warns(wibergian.NonConvergenceWarning, match="1 at a saddle"):
        _, info = wibergian.argmin(saddle_2d, y0, solver=solver, max_iter=0, final_step=False,
                                   return_info=True)
    assert info.saddle.tolist() == [True, False] and info.num_saddle == 1
    assert info.converged.tolist() == [False, False]


def test_auto_chooses_by_size_and_the_layer_follows():
    a = torch.ones(AUTO_DENSE_MAX + 1, dtype=DT)
    y0 = torch.full((1, AUTO_DENSE_MAX + 1), 0.5, dtype=DT)
    _, small = wibergian.argmin(all_wells, y0[:, :AUTO_DENSE_MAX], (a[:AUTO_DENSE_MAX],),
                                return_info=True)
    _, large = wibergian.argmin(all_wells, y0, (a,), return_info=True)
    assert small.solver == "newton" and large.solver == "newton_cg"

    class Wells(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(a.clone())

        def forward(self, y):
            return all_wells(y, self.a)

    layer = wibergian.ArgminLayer(Wells())
    y = layer(y0)
    assert layer.last_info.solver == "newton_cg"
    torch.testing.assert_close(y, torch.ones_like(y0), rtol=0, atol=1e-8)


class _CountingLorentzian:
    """The smoother with a declared ``hvp_operator`` (and a Hessian that must not be used)."""

    def __init__(self) -> None:
        self.operator_calls = 0

    def __call__(self, y, z, log_alpha, log_s):
        return lorentzian(y, z, log_alpha, log_s)

    def hvp_operator(self, y, z, log_alpha, log_s):
        self.operator_calls += 1
        d = y[:, 1:] - y[:, :-1]
        s2 = log_s.exp() ** 2
        curv = 2 * log_alpha.exp() * (s2 - d * d) / (s2 + d * d) ** 2  # ρ''(d) per edge

        def apply(v):
            t = curv * (v[:, 1:] - v[:, :-1])
            out = v.clone()
            out[:, 1:] += t
            out[:, :-1] -= t
            return out

        return apply

    def hessian(self, y, *params):
        raise AssertionError("the forward must not build a dense Hessian")


def _smoother_problem(n, b=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    jumps = (torch.rand(b, n, generator=g) < 5 / n).to(DT) * torch.randn(b, n, generator=g,
                                                                          dtype=DT)
    z = jumps.cumsum(-1) + 0.1 * torch.randn(b, n, generator=g, dtype=DT)
    return z, (z.clone(), torch.tensor(-1.0, dtype=DT), torch.tensor(-2.0, dtype=DT))


def test_declared_hvp_operator_drives_the_forward_and_matches_autograd():
    z, params = _smoother_problem(120)
    declared = _CountingLorentzian()
    y_decl, info = wibergian.argmin(declared, z, params, tol=1e-10, return_info=True)
    y_auto = wibergian.argmin(lorentzian, z, params, tol=1e-10)
    assert info.solver == "newton_cg" and bool(info.converged.all())
    assert declared.operator_calls >= 2  # every outer iteration linearises once
    torch.testing.assert_close(y_decl, y_auto, rtol=0, atol=1e-8)


def test_default_path_gradient_matches_finite_differences():
    n = 80  # > AUTO_DENSE_MAX: Newton-CG forward, CG backward
    z, (zp, la, ls) = _smoother_problem(n, seed=4)
    params = (zp.requires_grad_(True), la.requires_grad_(True), ls.requires_grad_(True))
    kw = {"damping": 0.0, "tol": 1e-12}
    up = torch.linspace(0.5, 1.5, 2 * n, dtype=DT).reshape(2, n)
    y, info = wibergian.argmin(lorentzian, z, params, return_info=True, **kw)
    assert info.solver == "newton_cg" and info.backend == "cg"
    (y * up).sum().backward()

    def loss(*ps):
        with torch.no_grad():
            return float((wibergian.argmin(lorentzian, y.detach(), ps, **kw) * up).sum())

    eps = 1e-6
    for k, j in ((1, None), (2, None), (0, (1, 37))):
        plus = [p.detach().clone() for p in params]
        minus = [p.detach().clone() for p in params]
        if j is None:
            plus[k] += eps
            minus[k] -= eps
            got = params[k].grad
        else:
            plus[k][j] += eps
            minus[k][j] -= eps
            got = params[k].grad[j]
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        assert abs(float(got) - fd) <= 1e-5 * abs(fd) + 1e-7, (k, float(got), fd)


def test_large_n_defaults_never_form_a_dense_hessian(monkeypatch):
    """n = 200,000: a dense Hessian would take 640 GB for two problems. Every dense-Hessian
    builder raises; the default path (multi-start, Newton-CG, final step, backward) must still
    converge and give a gradient, and the process's peak memory must not grow by a gigabyte."""
    import wibergian.adjoint as adjoint_mod
    import wibergian.derivatives as der
    import wibergian.solvers.newton as newton_mod

    argmin_mod = sys.modules["wibergian.argmin"]  # the package re-exports the function
    def refuse(*args, **kwargs):
        raise AssertionError("dense Hessian requested")

    for mod, name in ((der, "hessian_from_graph"), (der, "gradient_and_hessian"),
                      (der, "value_gradient_hessian"), (argmin_mod, "gradient_and_hessian"),
                      (adjoint_mod, "hessian_from_graph"),
                      (newton_mod, "value_gradient_hessian")):
        monkeypatch.setattr(mod, name, refuse)
    n = 200_000
    g = torch.Generator().manual_seed(5)
    z = torch.sin(torch.linspace(0, 20, n, dtype=DT)).expand(2, n) + 0.1 * torch.randn(
        2, n, generator=g, dtype=DT)

    def charbonnier(y, z, log_alpha):
        d = y[:, 1:] - y[:, :-1]
        return 0.5 * ((y - z) ** 2).sum(-1) + log_alpha.exp() * (
            torch.sqrt(d * d + 0.25) - 0.5).sum(-1)

    la = torch.tensor(-1.0, dtype=DT, requires_grad=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cands = torch.stack([z, torch.zeros_like(z)], 1)  # multi-start path too
    y, info = wibergian.argmin(charbonnier, z, (z, la), candidates=cands, return_info=True)
    y.sum().backward()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert info.solver == "newton_cg" and info.backend == "cg"
    assert info.start_index.tolist() == [0, 0]
    assert bool(info.converged.all()) and info.num_saddle == 0
    assert la.grad is not None and bool(torch.isfinite(la.grad))
    assert grown_mb < 1024  # O(B·n): a few hundred (B, n) float64 vectors at most


def test_newton_cg_moves_a_start_where_the_gradient_is_not_finite():
    """Geometric median started at a data point: sqrt(||y - x||²) has a NaN autograd gradient
    there. Newton-CG (the default at n = 60) moves the start, counts it and converges."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 60, generator=g, dtype=DT)

    def median(y, x):
        return torch.sqrt(((y[:, None, :] - x) ** 2).sum(-1)).sum(-1)

    with pytest.warns(wibergian.NonSmoothWarning):
        y, info = wibergian.argmin(median, x[:, 0].clone(), (x,), return_info=True)
    assert info.solver == "newton_cg" and info.perturbed_starts == 2
    assert bool(info.converged.all()) and bool(torch.isfinite(y).all())
    assert float(info.grad_norm.max()) < 1e-6


@pytest.mark.parametrize("adjoint", ["implicit", "newton_step"])
def test_the_matrix_free_final_step_is_solved_to_its_stated_tolerance(adjoint):
    """n = 80 takes the CG back end. L-BFGS stopped after 4 iterations leaves a sizable
    gradient, so the final step ``y₁ = y₀ - (H + λI)⁻¹∇E(y₀)`` matters: with the implicit
    adjoint its CG stops at a relative residual of ``FINAL_STEP_CG_TOL`` (1e-6), so ``y₁`` is
    within ``1e-6·||∇E||/λ_min(H + λI)`` of the exact step and not equal to it to 1e-10;
    ``adjoint="newton_step"`` solves it to 1e-10."""
    from wibergian import argmin as argmin_module  # noqa: F401 - the module, for its constant

    am = sys.modules["wibergian.argmin"]
    g = torch.Generator().manual_seed(3)
    b, n = 3, 80
    z = torch.randn(b, n, generator=g, dtype=DT)
    params = (z, torch.tensor(-2.0, dtype=DT), torch.tensor(0.0, dtype=DT))  # H ≻ 0
    y_pre, _ = wibergian.argmin(lorentzian, z.clone(), params, solver=NewtonCG(max_iter=1),
                                final_step=False, return_info=True, warn=False)
    y1 = wibergian.argmin(lorentzian, z.clone(), params, solver=NewtonCG(max_iter=1),
                          adjoint=adjoint, warn=False)
    h = _hessian(lorentzian, y_pre, params)
    m = h + 0.1 * torch.eye(n, dtype=DT)
    grad = torch.func.vmap(torch.func.grad(lambda v, *p: lorentzian(v[None], *p)[0]),
                           (0, 0, None, None))(y_pre, *params)
    exact = y_pre - torch.linalg.solve(m, grad.unsqueeze(-1)).squeeze(-1)
    err = (y1 - exact).norm(dim=-1)
    scale = grad.norm(dim=-1) / torch.linalg.eigvalsh(m)[:, 0]
    assert float(grad.norm(dim=-1).min()) > 1e-3  # the step is not negligible
    if adjoint == "implicit":
        assert am.FINAL_STEP_CG_TOL == 1e-6
        assert bool((err <= 1e-6 * scale).all()) and float(err.max()) > 1e-10 * float(
            scale.max())
    else:
        assert bool((err <= 1e-9 * scale).all())
