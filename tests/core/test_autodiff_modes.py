"""Every PyTorch autodiff mode through ``argmin``: checked against finite differences (float64)
and ``argmin_jacobian``, or raising the documented error (docs/method.md, "Autodiff modes")."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from energies import make_cases

import wibergian
from wibergian.adjoint import AdjointSpec, jvp, vjp
from wibergian.solvers import SolveResult

dt = torch.float64
TOL = 1e-12


def _case(name: str = "logsumexp"):
    energy, y0, params = make_cases()[name]
    return energy, y0, tuple(p.detach() for p in params)


def _solve(energy, y0, params, **kw):
    kw.setdefault("tol", TOL)
    return wibergian.argmin(energy, y0, params, **kw)


def _fd_solution_jvp(energy, y0, params, tangents, eps=1e-5, **kw):
    """Central differences of the re-solved minimiser along the parameter tangents."""
    plus = [p + eps * t for p, t in zip(params, tangents, strict=True)]
    minus = [p - eps * t for p, t in zip(params, tangents, strict=True)]
    return (_solve(energy, y0, plus, **kw) - _solve(energy, y0, minus, **kw)) / (2 * eps)


def _jacobian_jvp(energy, y_star, params, tangents, damping, regulariser="ridge"):
    """``Σ_k (dy*/dw_k) ẇ_k`` from the explicit Jacobian (wibergian.argmin_jacobian)."""
    jacs = wibergian.argmin_jacobian(energy, y_star, params, damping=damping,
                                     regulariser=regulariser)
    return sum((j.reshape(*y_star.shape, -1) * t.reshape(-1)).sum(-1)
               for j, t in zip(jacs, tangents, strict=True))


def _tangents(params, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(p.shape, generator=g, dtype=dt) for p in params)


# ---------------------------------------------------------------- forward mode
@pytest.mark.parametrize("name", ["logsumexp", "welsch"])
def test_forward_ad_dual_numbers_give_the_exact_tangent_at_damping_zero(name):
    energy, y0, params = _case(name)
    tans = _tangents(params)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(params, tans, strict=True)]
        y = _solve(energy, y0, duals, damping=0.0)
        tangent = fwAD.unpack_dual(y).tangent
    assert tangent is not None
    fd = _fd_solution_jvp(energy, y0, params, tans)
    assert torch.allclose(tangent, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "kw",
    [{}, {"linear_solver": "cg"}, {"regulariser": "floor"}, {"damping": 0.5}],
    ids=["dense", "cg", "floor", "lambda0.5"],
)
def test_torch_func_jvp_equals_the_damped_jacobian(kw):
    energy, y0, params = _case("logsumexp")
    tans = _tangents(params)
    y_star, tangent = torch.func.jvp(lambda *ps: _solve(energy, y0, ps, **kw), params, tans)
    ref = _jacobian_jvp(energy, y_star, params, tans, kw.get("damping", 0.1),
                        kw.get("regulariser", "ridge"))
    assert torch.allclose(tangent, ref, rtol=1e-7, atol=1e-9)
    if kw.get("regulariser") != "floor":  # (the floor is exact here: every curvature > λ)
        undamped = _jacobian_jvp(energy, y_star, params, tans, 0.0)
        assert not torch.allclose(tangent, undamped, rtol=1e-3)  # the damping is visible


def test_forward_ad_works_under_no_grad():
    energy, y0, params = _case("logsumexp")
    tans = _tangents(params)
    _, ref = torch.func.jvp(lambda *ps: _solve(energy, y0, ps), params, tans)
    with torch.no_grad(), fwAD.dual_level():
        y = _solve(energy, y0, [fwAD.make_dual(p, t) for p, t in zip(params, tans, strict=True)])
        assert torch.allclose(fwAD.unpack_dual(y).tangent, ref, rtol=1e-10)


@pytest.mark.parametrize("mode", ["implicit", "newton_step"])
def test_jvp_and_vjp_are_adjoint_off_the_minimum(mode):
    """<ẏ, ȳ> = Σ_k <ẇ_k, (∂L/∂w_k)> for the same linearisation, both back ends."""
    energy, _, params = _case("logsumexp")
    y_pre = torch.tensor([[0.3, -0.2, 0.1]], dtype=dt).expand(3, 3).clone()
    tans = _tangents(params)
    ybar = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=dt)
    for backend in ("dense", "cg"):
        spec = AdjointSpec(energy, 0.1, "ridge", backend, mode)
        ydot = jvp(spec, y_pre, params, tans)
        grads = vjp(spec, y_pre, [p.clone().requires_grad_(True) for p in params], ybar)
        lhs = (ydot * ybar).sum()
        rhs = sum((gk * t).sum() for gk, t in zip(grads, tans, strict=True))
        assert torch.allclose(lhs, rhs, rtol=1e-9), (backend, lhs, rhs)


def test_jacfwd_and_jacrev_equal_argmin_jacobian():
    energy, y0, params = _case("welsch")
    x, t, log_sigma = params

    def solution(ts):
        return _solve(energy, y0, (x, ts, log_sigma))

    jf = torch.func.jacfwd(solution)(t)
    jr = torch.func.jacrev(solution)(t)
    ja = torch.autograd.functional.jacobian(solution, t)
    y_star = solution(t)
    ref = wibergian.argmin_jacobian(energy, y_star, params)[1]
    assert jf.shape == ref.shape == jr.shape == ja.shape
    for jac in (jf, jr, ja):
        assert torch.allclose(jac, ref, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- torch.func reverse and vmap
def test_func_grad_equals_autograd_backward_and_returns_info():
    energy, y0, params = _case("logsumexp")

    def loss(w):
        y, info = _solve(energy, y0, (w, *params[1:]), return_info=True)
        assert bool(info.converged.all())
        return (y * y).sum()

    got = torch.func.grad(loss)(params[0])
    w = params[0].clone().requires_grad_(True)
    y = _solve(energy, y0, (w, *params[1:]))
    (y ** 2).sum().backward()
    assert torch.allclose(got, w.grad, rtol=1e-10)
    y_f, vjp_fn = torch.func.vjp(lambda a: _solve(energy, y0, (w.detach(), *params[1:2], a)),
                                 params[2])
    (g_alpha,) = vjp_fn(2 * y_f)
    alpha = params[2].clone().requires_grad_(True)
    (_solve(energy, y0, (w.detach(), params[1], alpha)) ** 2).sum().backward()
    assert torch.allclose(g_alpha, alpha.grad, rtol=1e-10)


def test_vmap_over_parameters_equals_a_loop_and_composes_with_grad():
    energy, y0, params = _case("logsumexp")
    c = params[1] + 0.3 * torch.randn(4, *params[1].shape, generator=torch.Generator()
                                      .manual_seed(2), dtype=dt)

    infos = []

    def solve_c(ci):
        y, info = _solve(energy, y0, (params[0], ci, params[2]), return_info=True)
        infos.append(info)
        return y

    got = torch.func.vmap(solve_c)(c)
    assert infos[0].converged.shape == (4, 3)  # under vmap: one row per mapped slice
    ref = torch.stack([solve_c(ci) for ci in c])
    assert torch.allclose(got, ref, rtol=1e-12)
    grads = torch.func.vmap(torch.func.grad(lambda ci: solve_c(ci).square().sum()))(c)
    for ci, gi in zip(c, grads, strict=True):
        ci = ci.clone().requires_grad_(True)
        solve_c(ci).square().sum().backward()
        assert torch.allclose(gi, ci.grad, rtol=1e-10)


# ---------------------------------------------------------------- no graph
def test_inference_mode_and_no_grad_return_the_solution_without_a_graph():
    energy, y0, params = _case("logsumexp")
    leafs = tuple(p.clone().requires_grad_(True) for p in params)
    ref = _solve(energy, y0, leafs)
    assert ref.requires_grad
    with torch.inference_mode():
        y_inf, info = _solve(energy, y0.clone(), tuple(p.clone() for p in params),
                             return_info=True)
        y_inf_leafs = _solve(energy, y0, leafs)
    with torch.no_grad():
        y_ng = _solve(energy, y0, leafs)
    for y in (y_inf, y_inf_leafs, y_ng):
        assert not y.requires_grad and y.grad_fn is None
        assert torch.allclose(y, ref.detach(), rtol=1e-12)
    assert bool(info.converged.all())


# ---------------------------------------------------------------- second order
def _loss(y):
    return (y ** 3).sum() / 3 + (y[:, 0] * y[:, -1]).sum()


def _autograd_gradient(energy, y0, params, k, wk, **kw):
    ps = list(params)
    ps[k] = wk.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss(_solve(energy, y0, ps, **kw)), ps[k])
    return g


@pytest.mark.parametrize("backend", ["dense", "cg"])
@pytest.mark.parametrize("name,k", [("logsumexp", 2), ("logsumexp", 1), ("welsch", 2)])
def test_hessian_at_damping_zero_matches_finite_differences_of_the_gradient(backend, name, k):
    energy, y0, params = _case(name)
    kw = {"damping": 0.0, "linear_solver": backend}

    def loss_of(wk):
        ps = list(params)
        ps[k] = wk
        return _loss(_solve(energy, y0, ps, **kw))

    hess = torch.autograd.functional.hessian(loss_of, params[k].clone())
    p = params[k].reshape(-1)
    eps = 1e-5
    fd_rows = []
    for j in range(p.numel()):
        e = torch.zeros_like(p)
        e[j] = eps
        gp = _autograd_gradient(energy, y0, params, k, (p + e).reshape(params[k].shape), **kw)
        gm = _autograd_gradient(energy, y0, params, k, (p - e).reshape(params[k].shape), **kw)
        fd_rows.append(((gp - gm) / (2 * eps)).reshape(-1))
    fd = torch.stack(fd_rows, 1)
    assert hess.abs().max() > 1e-3  # not the zeros of a graph that ends at argmin
    assert torch.allclose(hess.reshape(fd.shape), fd, rtol=1e-5, atol=1e-7)


def test_damped_double_backward_is_the_derivative_of_the_damped_gradient_map():
    """At λ > 0: d/dw [G(y*(w), w)] with G the damped VJP at y and dy*/dw the damped Jacobian,
    from finite differences of G in w at fixed y, in y at fixed w, and argmin_jacobian."""
    energy, y0, params = _case("logsumexp")
    lam, k = 0.1, 2
    w = params[k].clone().requires_grad_(True)
    ps = [*params[:k], w, *params[k + 1:]]
    y = _solve(energy, y0, ps, damping=lam)
    (g,) = torch.autograd.grad(_loss(y), w, create_graph=True)
    (h,) = torch.autograd.grad(g, w, retain_graph=True)
    y.add_(1.0)  # the output is not saved for backward: editing it in place stays allowed
    y.sub_(1.0)
    (g_again,) = torch.autograd.grad(_loss(y), w)
    assert torch.allclose(g_again, g.detach(), rtol=1e-12)

    spec = AdjointSpec(energy, lam, "ridge", "dense", "implicit")

    def gmap(yy, wk):  # the damped gradient map G(y, w)
        yl = yy.detach().requires_grad_(True)
        (ybar,) = torch.autograd.grad(_loss(yl), yl)
        qs = [*params[:k], wk.detach().clone().requires_grad_(True), *params[k + 1:]]
        return vjp(spec, yy, qs, ybar)[k]

    y_star, eps = y.detach(), 1e-6
    dg_dw = (gmap(y_star, w.detach() + eps) - gmap(y_star, w.detach() - eps)) / (2 * eps)
    dg_dy = torch.zeros(y_star.shape, dtype=dt)
    for b in range(y_star.shape[0]):
        for i in range(y_star.shape[1]):
            e = torch.zeros_like(y_star)
            e[b, i] = eps
            dg_dy[b, i] = (gmap(y_star + e, w.detach()) - gmap(y_star - e, w.detach())) / (2 * eps)
    jac = wibergian.argmin_jacobian(energy, y_star, ps, damping=lam)[k]  # (B, n)
    ref = dg_dw + (dg_dy * jac).sum()
    assert torch.allclose(h, ref, rtol=1e-6, atol=1e-8)


def test_newton_step_double_backward_differentiates_the_step_exactly():
    """Off the minimum, adjoint='newton_step' returns y₁ = y₀ - (H + λI)⁻¹∇E(y₀): its Hessian
    through argmin equals autograd's through the explicitly written step."""
    energy, _, params = _case("logsumexp")
    y_fixed = torch.tensor([[0.3, -0.2, 0.1]], dtype=dt).expand(3, 3).clone()

    class Fixed:
        def minimize(self, energy, y0, params):
            b = y0.shape[0]
            return SolveResult(y_fixed.clone(), torch.ones(b, dtype=torch.bool),
                               torch.zeros(b, dtype=torch.long))

    def step(alpha):
        ps = (params[0], params[1], alpha)
        y = y_fixed.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(y, *ps).sum(), y, create_graph=True)
        h = torch.stack([torch.autograd.grad(g[:, i].sum(), y, create_graph=True)[0]
                         for i in range(3)], 1)
        m = h + 0.1 * torch.eye(3, dtype=dt)
        return y_fixed - torch.linalg.solve(m, g.unsqueeze(-1)).squeeze(-1)

    def through_argmin(alpha):
        return wibergian.argmin(energy, y_fixed, (params[0], params[1], alpha), solver=Fixed(),
                                adjoint="newton_step")

    alpha = params[2].clone()
    assert torch.allclose(through_argmin(alpha), step(alpha).detach(), rtol=1e-12)
    h_ref = torch.autograd.functional.hessian(lambda a: _loss(step(a)), alpha)
    h_got = torch.autograd.functional.hessian(lambda a: _loss(through_argmin(a)), alpha)
    assert torch.allclose(h_got, h_ref, rtol=1e-8)
    assert h_ref.abs() > 1e-3


class _DeclaredLogSumExp:
    """logsumexp with closed-form gradient, Hessian and Hessian-vector operator."""

    def __call__(self, y, w, c, alpha):
        return torch.logsumexp(y @ w.T + c, dim=-1) + 0.5 * alpha * (y * y).sum(-1)

    def gradient(self, y, w, c, alpha):
        return torch.softmax(y @ w.T + c, dim=-1) @ w + alpha * y

    def hessian(self, y, w, c, alpha):
        p = torch.softmax(y @ w.T + c, dim=-1)
        cov = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
        return w.T @ cov @ w + alpha * torch.eye(y.shape[1], dtype=y.dtype)

    def hvp_operator(self, y, w, c, alpha):
        p = torch.softmax(y @ w.T + c, dim=-1)

        def apply(v):
            wv = v @ w.T
            return (p * wv - p * (p * wv).sum(-1, keepdim=True)) @ w + alpha * v

        return apply


@pytest.mark.parametrize("backend", ["dense", "cg"])
def test_declared_closed_forms_give_the_same_jvp_and_hessian(backend):
    energy, y0, params = _case("logsumexp")
    tans = _tangents(params)
    out = []
    for e in (energy, _DeclaredLogSumExp()):
        kw = {"damping": 0.0, "linear_solver": backend}
        _, t = torch.func.jvp(lambda *ps, e=e, kw=kw: _solve(e, y0, ps, **kw), params, tans)
        h = torch.autograd.functional.hessian(
            lambda a, e=e, kw=kw: _loss(_solve(e, y0, (*params[:2], a), **kw)), params[2])
        out.append((t, h))
    for ref, got in zip(*out, strict=True):
        assert torch.allclose(got, ref, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- refused, clearly
def test_refusals_name_the_alternative():
    energy, y0, params = _case("logsumexp")
    w = params[2].clone().requires_grad_(True)
    y = _solve(energy, y0, (*params[:2], w), regulariser="floor")
    (g,) = torch.autograd.grad(_loss(y), w, create_graph=True)  # first order: fine
    with pytest.raises(NotImplementedError, match="regulariser='ridge'"):
        torch.autograd.grad(g, w)
    with pytest.raises(RuntimeError, match="torch.autograd.functional.hessian"):
        torch.func.hessian(lambda a: _loss(_solve(energy, y0, (*params[:2], a))))(params[2])
    with pytest.raises(RuntimeError, match="create_graph=True"):
        torch.func.grad(torch.func.grad(lambda a: _loss(_solve(energy, y0, (*params[:2], a)))))(
            params[2])
    with pytest.raises(RuntimeError, match="torch.func.jacrev"):
        torch.autograd.functional.jacobian(
            lambda a: _solve(energy, y0, (*params[:2], a)), params[2], vectorize=True)
    with pytest.raises(TypeError, match="Pass the plain"):
        wibergian.argmin(torch.compile(energy), y0, params)
    hidden = torch.compile(energy, backend="aot_eager")  # compiled inside a plain function
    with pytest.raises(RuntimeError, match="Pass the plain"):
        wibergian.argmin(lambda y, *ps: hidden(y, *ps), y0, params)


def test_torch_compile_of_a_model_containing_argmin_matches_eager():
    energy, y0, params = _case("logsumexp")

    def model(c):
        return _loss(_solve(energy, y0, (params[0], torch.tanh(c), params[2])))

    grads = []
    for fn in (torch.compile(model, backend="aot_eager"), model):  # compiled first
        c = params[1].clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(c).backward()
        grads.append(c.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-12)
