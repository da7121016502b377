"""The adjoint against finite differences and against an independent dense formula."""

from __future__ import annotations

import pytest
import torch
from energies import make_cases

import wibergian

CASES = list(make_cases().keys())
TIGHT = {"tol": 1e-13, "max_iter": 200}


def solve(energy, y0, params, **kw):
    return wibergian.argmin(energy, y0, params, **{**TIGHT, **kw})


def upstream(y: torch.Tensor) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, y.numel(), dtype=y.dtype).reshape(y.shape)


def loss_grads(energy, y0, params, **kw):
    for p in params:
        p.grad = None
    y = solve(energy, y0, params, **kw)
    (y * upstream(y)).sum().backward()
    return y.detach(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("name", CASES)
def test_undamped_gradient_matches_finite_differences_of_the_argmin(name):
    energy, y0, params = make_cases()[name]
    y, grads = loss_grads(energy, y0, params, damping=0.0)
    eps = 1e-6
    for k, p in enumerate(params):
        flat = p.detach().reshape(-1)
        for j in range(flat.numel()):
            def shifted(h, k=k, j=j):
                ps = [q.detach().clone() for q in params]
                ps[k].reshape(-1)[j] += h
                return solve(energy, y, tuple(ps), damping=0.0)
            fd = ((shifted(eps) - shifted(-eps)) * upstream(y)).sum() / (2 * eps)
            got = grads[k].reshape(-1)[j]
            assert torch.allclose(got, fd, rtol=1e-5, atol=1e-7), (name, k, j)


def dense_reference(energy, y, params, damping, regulariser="ridge"):
    """dL/dw for L = <upstream, y*> from H and ∂g/∂w built with torch.autograd.functional."""
    b, n = y.shape
    out = []
    for k, p in enumerate(params):
        def grad_y(pk, k=k):
            ps = [q.detach() for q in params]
            ps[k] = pk
            yy = y.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(yy, *ps).sum(), yy, create_graph=True)
            return g
        dg = torch.autograd.functional.jacobian(grad_y, p.detach()).reshape(b, n, -1)
        total = torch.zeros(dg.shape[-1], dtype=y.dtype)
        for bi in range(b):
            def e_b(yb, bi=bi):
                yy = y.detach().clone()
                yy = torch.cat([yy[:bi], yb[None], yy[bi + 1:]])
                return energy(yy, *[q.detach() for q in params])[bi]
            h = torch.autograd.functional.hessian(e_b, y[bi].detach())
            evals, evecs = torch.linalg.eigh(h)
            if regulariser == "ridge":
                d = evals + damping
            else:
                d = evals.clamp_min(damping)
            inv = evecs @ torch.diag(1 / d) @ evecs.T
            jac = -inv @ dg[bi]  # (n, P)
            total += upstream(y)[bi] @ jac
        out.append(total.reshape(p.shape))
    return out


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("regulariser", ["ridge", "floor"])
def test_damped_gradient_matches_independent_dense_formula(name, regulariser):
    energy, y0, params = make_cases()[name]
    y, grads = loss_grads(energy, y0, params, damping=0.1, regulariser=regulariser)
    ref = dense_reference(energy, y, params, 0.1, regulariser)
    for got, want in zip(grads, ref, strict=True):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_dense_and_cg_back_ends_agree(name, damping):
    energy, y0, params = make_cases()[name]
    _, dense = loss_grads(energy, y0, params, damping=damping, linear_solver="dense")
    _, cg = loss_grads(energy, y0, params, damping=damping, linear_solver="cg")
    for a, b in zip(dense, cg, strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", CASES)
def test_black_box_solver_gives_the_same_gradient(name):
    energy, y0, params = make_cases()[name]
    _, ours = loss_grads(energy, y0, params)
    bb = wibergian.BlackBox(wibergian.scipy_minimizer("BFGS", gtol=1e-12), mode="per_problem")
    for p in params:
        p.grad = None
    y = wibergian.argmin(energy, y0, params, solver=bb)
    (y * upstream(y)).sum().backward()
    for a, p in zip(ours, params, strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", CASES)
def test_lbfgs_and_newton_reach_the_same_minimum_and_gradient(name):
    energy, y0, params = make_cases()[name]
    yn, gn = loss_grads(energy, y0, params, solver="newton")
    yl, gl = loss_grads(energy, y0, params, solver="lbfgs", tol=1e-10)
    assert torch.allclose(yn, yl, atol=1e-8)
    for a, b in zip(gn, gl, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_jacobian_helper_matches_the_vjp():
    energy, y0, params = make_cases()["logsumexp"]
    y, grads = loss_grads(energy, y0, params, damping=0.1)
    jacs = wibergian.argmin_jacobian(energy, y, params, damping=0.1)
    for jac, g, p in zip(jacs, grads, params, strict=True):
        assert jac.shape == (*y.shape, *p.shape)
        contracted = torch.einsum("bn,bn...->...", upstream(y), jac)
        assert torch.allclose(contracted, g, rtol=1e-9, atol=1e-12)


def test_gradient_reaches_data_inputs():
    energy, y0, params = make_cases()["welsch"]
    x, t, ls = params
    y, grads = loss_grads(energy, y0, params, damping=0.0)
    eps = 1e-6
    tp = t.detach().clone()
    tp[1, 3] += eps
    tm = t.detach().clone()
    tm[1, 3] -= eps
    fp = solve(energy, y, (x.detach(), tp, ls.detach()), damping=0.0)
    fm = solve(energy, y, (x.detach(), tm, ls.detach()), damping=0.0)
    fd = (((fp - fm) * upstream(y)).sum() / (2 * eps))
    assert torch.allclose(grads[1][1, 3], fd, rtol=1e-5)


def test_damped_gradient_is_biased_by_h_over_h_plus_lambda_in_1d():
    # E = ½ h (y - w)²: y* = w, exact dy*/dw = 1, damped = h/(h + λ).
    for h in (0.05, 0.5, 5.0):
        w = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
        y = wibergian.argmin(lambda y, w, h=h: 0.5 * h * ((y - w) ** 2).sum(-1),
                             torch.zeros(1, 1, dtype=torch.float64), (w,), damping=0.1)
        y.sum().backward()
        assert torch.allclose(w.grad, torch.tensor([h / (h + 0.1)], dtype=torch.float64))
        w.grad = None
        y = wibergian.argmin(lambda y, w, h=h: 0.5 * h * ((y - w) ** 2).sum(-1),
                             torch.zeros(1, 1, dtype=torch.float64), (w,), damping=0.1,
                             regulariser="floor")
        y.sum().backward()
        want = 1.0 if h >= 0.1 else h / 0.1
        assert torch.allclose(w.grad, torch.tensor([want], dtype=torch.float64))
