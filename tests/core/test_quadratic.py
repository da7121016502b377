"""QuadraticSolve, the reused forward factor, and the small-n / blocked Cholesky paths."""

from __future__ import annotations

import pytest
import torch
from energies import quadratic

import wibergian
from wibergian.cholesky import cholesky, cholesky_apply
from wibergian.linsolve import dense_solve
from wibergian.solvers import QuadraticSolve

DT = torch.float64


def _spd(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, 2 * n, generator=g, dtype=DT)
    return a @ a.mT / n + 0.1 * torch.eye(n, dtype=DT)


@pytest.mark.parametrize("n", [1, 2, 3, 30, 40])
def test_cholesky_and_apply_match_torch(n):
    m = _spd(50, n)
    g = torch.randn(50, n, dtype=DT)
    chol, ok = cholesky(m)
    assert bool(ok.all())
    assert torch.allclose(chol, torch.linalg.cholesky(m), atol=1e-12)
    assert torch.allclose(cholesky_apply(chol, g), torch.linalg.solve(m, g), atol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cholesky_flags_matrices_that_are_not_positive_definite(n):
    m = _spd(6, n)
    m[1] = -m[1]  # negative definite
    m[4] = torch.zeros(n, n, dtype=DT)  # singular
    _, ok = cholesky(m)
    assert ok.tolist() == [True, False, True, True, False, True]


def test_blocked_dense_solve_counts_and_fixes_fallbacks_in_later_blocks():
    # n = 40: blocks of 327 problems; put indefinite Hessians in the second and third blocks
    b, n, lam = 700, 40, 0.1
    h = _spd(b, n)
    h[400] -= 0.05 * torch.eye(n, dtype=DT) + h[400].diagonal().min() * torch.eye(n, dtype=DT)
    h[690] = -h[690]
    g = torch.randn(b, n, dtype=DT)
    v, stats = dense_solve(h, g, lam)
    assert stats.fallbacks == 2
    assert stats.fallback_mask.nonzero().flatten().tolist() == [400, 690]
    ev, q = torch.linalg.eigh(h)
    expect = q @ ((q.mT @ g[..., None])[..., 0] / (ev.clamp_min(0) + lam))[..., None]
    assert torch.allclose(v, expect[..., 0], atol=1e-9)
    good = torch.ones(b, dtype=torch.bool)
    good[[400, 690]] = False
    direct = torch.linalg.solve(h[good] + lam * torch.eye(n, dtype=DT), g[good])
    assert torch.allclose(v[good], direct, atol=1e-10)


def _case(b: int = 5, n: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    l_mat = (0.5 * torch.randn(n, n, generator=g, dtype=DT)).requires_grad_(True)
    rhs = torch.randn(b, n, generator=g, dtype=DT).requires_grad_(True)
    return l_mat, rhs


def _dense_reference(l_mat, rhs, lam, weight):
    """Independent dense formula: y* = Q^-1 b with Q = L Lᵀ + I; for the loss <weight, y*>,
    u = (Q + λI)^-1 weight, ∂/∂b = u, ∂/∂L = -(u y*ᵀ + y* uᵀ) L summed over problems."""
    with torch.no_grad():
        n = l_mat.shape[0]
        q = l_mat @ l_mat.T + torch.eye(n, dtype=DT)
        y = torch.linalg.solve(q, rhs.T).T
        u = torch.linalg.solve(q + lam * torch.eye(n, dtype=DT), weight.T).T
        g_b = u
        g_l = -(u.T @ y + y.T @ u) @ l_mat
    return y, g_l, g_b


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_quadratic_solve_gradient_matches_the_dense_formula(lam):
    l_mat, rhs = _case()
    weight = torch.randn(rhs.shape, generator=torch.Generator().manual_seed(3), dtype=DT)
    y, info = wibergian.argmin(quadratic, torch.zeros_like(rhs), (l_mat, rhs), damping=lam,
                               solver="quadratic", final_step=False, return_info=True)
    (y * weight).sum().backward()
    y_ref, g_l, g_b = _dense_reference(l_mat, rhs, lam, weight)
    assert torch.allclose(y, y_ref, atol=1e-12)
    assert bool(info.converged.all())
    assert torch.allclose(rhs.grad, g_b, atol=1e-10)
    assert torch.allclose(l_mat.grad, g_l, atol=1e-10)
    # λ = 0: the forward's factor is reused; λ > 0 refactors H + λI
    assert info.backward["reused_factor"] is (lam == 0.0)
    assert info.backward["backward_fallbacks"] == 0


def test_quadratic_gradient_matches_finite_differences_and_newton():
    l_mat, rhs = _case(b=3, n=3, seed=5)
    weight = torch.tensor([[1.0, -2.0, 0.5]], dtype=DT).expand(3, 3)

    def loss(lm: torch.Tensor, solver: str) -> torch.Tensor:
        y = wibergian.argmin(quadratic, torch.zeros_like(rhs), (lm, rhs.detach()), damping=0.0,
                             solver=solver, final_step=False)
        return (y * weight).sum()

    loss(l_mat, "quadratic").backward()
    g_quad = l_mat.grad.clone()
    l_mat.grad = None
    loss(l_mat, "newton").backward()
    assert torch.allclose(g_quad, l_mat.grad, atol=1e-9)
    eps = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 1)]:
        e = torch.zeros_like(l_mat)
        e[i, j] = eps
        with torch.no_grad():
            fd = (loss(l_mat + e, "quadratic") - loss(l_mat - e, "quadratic")) / (2 * eps)
        assert float(g_quad[i, j]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_final_step_reuses_the_constant_factor():
    l_mat, rhs = _case()
    y, info = wibergian.argmin(quadratic, torch.zeros_like(rhs), (l_mat, rhs), damping=0.0,
                               solver="quadratic", return_info=True)
    y.sum().backward()
    assert info.backward["reused_factor"] is True
    assert info.forward_fallbacks == 0


def _psd_quadratic(y, h, b):
    return 0.5 * ((y @ h) * y).sum(-1) - (b * y).sum(-1)


def test_rank_deficient_quadratic_takes_the_minimum_norm_step():
    n = 4
    v = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    h = v @ v.T  # rank 2
    b = (h @ torch.randn(n, 3, dtype=DT)).T  # in the range of H: bounded below
    solver = QuadraticSolve()
    y = wibergian.argmin(_psd_quadratic, torch.zeros(3, n, dtype=DT), (h, b), solver=solver,
                         final_step=False)
    assert torch.allclose(y, (torch.linalg.pinv(h) @ b.T).T, atol=1e-9)
    assert solver.record["pinv_problems"] == 3


def test_unbounded_or_non_quadratic_energies_are_reported_not_converged():
    n = 3
    h = torch.diag(torch.tensor([1.0, 2.0, -1.0], dtype=DT))  # indefinite: unbounded below
    b = torch.ones(2, n, dtype=DT)
    with pytest.warns(wibergian.NonConvergenceWarning):
        _, info = wibergian.argmin(_psd_quadratic, torch.zeros(2, n, dtype=DT), (h, b),
                                   solver="quadratic", final_step=False, return_info=True)
    assert not bool(info.converged.any())

    def quartic(y, c):
        return (y**4).sum(-1) + (c * y * y).sum(-1)

    with pytest.warns(wibergian.NonConvergenceWarning):
        _, info = wibergian.argmin(quartic, torch.ones(2, 2, dtype=DT),
                                   (torch.tensor(1.0, dtype=DT),), solver="quadratic",
                                   final_step=False, return_info=True)
    assert not bool(info.converged.any())


def test_quadratic_solve_in_float32():
    l_mat, rhs = _case()
    y = wibergian.argmin(quadratic, torch.zeros_like(rhs).float(),
                         (l_mat.detach().float(), rhs.detach().float()), solver="quadratic",
                         final_step=False)
    y_ref, _, _ = _dense_reference(l_mat, rhs, 0.0, torch.zeros_like(rhs))
    assert y.dtype == torch.float32
    assert torch.allclose(y.double(), y_ref, atol=1e-4)


class _NewtonKeepingFactor:
    """A custom solver that returns the Cholesky factor of H at its (non-quadratic) minimum."""

    def minimize(self, energy, y0, params):
        from wibergian.cholesky import HessianFactor
        from wibergian.derivatives import gradient_and_hessian
        from wibergian.solvers import NewtonTrustRegion

        res = NewtonTrustRegion(tol=1e-6).minimize(energy, y0, params)  # loose: final step moves
        _, h = gradient_and_hessian(energy, res.y, [p.detach() for p in params])
        chol, ok = cholesky(h)
        res.factor = HessianFactor(chol, ok, shift=0.0, constant=False)
        return res


@pytest.mark.parametrize("final_step", [False, True])
def test_a_non_constant_factor_is_reused_only_where_y_did_not_move(final_step):
    from energies import logsumexp

    g = torch.Generator().manual_seed(2)
    w = torch.randn(5, 3, generator=g, dtype=DT).requires_grad_(True)
    c = torch.randn(4, 5, generator=g, dtype=DT)
    alpha = torch.tensor(0.7, dtype=DT)
    y0 = torch.zeros(4, 3, dtype=DT)
    grads = {}
    for solver in ("newton", _NewtonKeepingFactor()):
        y, info = wibergian.argmin(logsumexp, y0, (w, c, alpha), damping=0.0, solver=solver,
                                   final_step=final_step, tol=1e-12 if solver == "newton"
                                   else None, return_info=True)
        y.sum().backward()
        grads[isinstance(solver, str)] = w.grad.clone()
        w.grad = None
        if not isinstance(solver, str):
            assert info.backward["reused_factor"] is (not final_step)
    # same derivative either way (the minimum is the same to the solvers' tolerance)
    assert torch.allclose(grads[True], grads[False], atol=1e-5)


class _WelschWithValueAndGradient:
    """The robust line-fit energy, with a declared ``value_and_gradient`` that counts calls."""

    def __init__(self):
        from energies import welsch

        self.fn = welsch
        self.calls = 0

    def __call__(self, y, *params):
        return self.fn(y, *params)

    def value_and_gradient(self, y, *params):
        self.calls += 1
        with torch.enable_grad():
            yv = y.detach().requires_grad_(True)
            e = self.fn(yv, *params)
            (g,) = torch.autograd.grad(e.sum(), yv)
        return e.detach(), g


def test_lbfgs_with_value_and_gradient_takes_the_same_iterates():
    from energies import make_cases

    from wibergian.solvers import LBFGS

    _, y0, params = make_cases(seed=4)["welsch"]
    ps = [p.detach() for p in params]
    plain = LBFGS(max_iter=15).minimize(lambda y, *p: _WelschWithValueAndGradient()(y, *p),
                                        y0, ps)
    en = _WelschWithValueAndGradient()
    fused = LBFGS(max_iter=15).minimize(en, y0, ps)
    assert en.calls >= 2  # used: once at the start, then at the first trial of each search
    torch.testing.assert_close(fused.y, plain.y, rtol=0, atol=1e-12)
    torch.testing.assert_close(fused.grad, plain.grad, rtol=0, atol=1e-12)
    assert torch.equal(fused.iterations, plain.iterations)


def test_a_duck_typed_solver_result_without_the_optional_fields_still_works():
    from types import SimpleNamespace

    class Plain:
        def minimize(self, energy, y0, params):
            r = QuadraticSolve().minimize(energy, y0, params)
            return SimpleNamespace(y=r.y, converged=r.converged, iterations=r.iterations)

    l_mat, rhs = _case()
    y, info = wibergian.argmin(quadratic, torch.zeros_like(rhs), (l_mat, rhs), damping=0.0,
                               solver=Plain(), final_step=False, return_info=True)
    y.sum().backward()
    y_ref, g_l, _ = _dense_reference(l_mat, rhs, 0.0, torch.ones_like(rhs))
    assert torch.allclose(y, y_ref, atol=1e-12)
    assert torch.allclose(l_mat.grad, g_l, atol=1e-10)
    assert info.backward["reused_factor"] is False  # nothing to reuse: H was factored again
    assert float(info.grad_norm.max()) < 1e-9


def test_a_declared_value_and_gradient_of_the_wrong_shape_is_refused():
    from energies import make_cases

    from wibergian.solvers import LBFGS

    class Bad(_WelschWithValueAndGradient):
        def value_and_gradient(self, y, *params):
            e, g = super().value_and_gradient(y, *params)
            return e[:, None], g

    _, y0, params = make_cases(seed=4)["welsch"]
    with pytest.raises(ValueError, match="value_and_gradient must return shapes"):
        LBFGS(max_iter=3).minimize(Bad(), y0, [p.detach() for p in params])
