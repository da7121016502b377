"""The differentiated Newton step, the 1/λ bound, and the non-PD fallback."""

from __future__ import annotations

import warnings

import pytest
import torch
from energies import make_cases
from hypothesis import given, settings
from hypothesis import strategies as st

import wibergian
from wibergian.adjoint import AdjointSpec, vjp


def test_newton_step_adjoint_equals_implicit_at_an_exact_minimum():
    energy, y0, params = make_cases()["welsch"]
    grads = {}
    for mode in ("implicit", "newton_step"):
        for p in params:
            p.grad = None
        y = wibergian.argmin(energy, y0, params, adjoint=mode, tol=1e-13)
        y.sum().backward()
        grads[mode] = [p.grad.clone() for p in params]
    for a, b in zip(grads["implicit"], grads["newton_step"], strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_newton_step_adjoint_differentiates_the_step_exactly_off_the_minimum():
    """At an inexact point y₀, the VJP equals finite differences of y₁(w) = y₀ - M⁻¹g(y₀, w)."""
    energy, _, params = make_cases()["logsumexp"]
    y_pre = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64).expand(3, 3).clone()
    lam = 0.1
    spec = AdjointSpec(energy, lam, "ridge", "dense", "newton_step")
    gbar = torch.ones(3, 3, dtype=torch.float64)
    got = vjp(spec, y_pre, params, gbar)

    def step(ps):
        y = y_pre.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(y, *ps).sum(), y, create_graph=True)
        h = torch.stack([torch.autograd.grad(g[:, i].sum(), y, retain_graph=True)[0]
                         for i in range(3)], 1)
        m = h + lam * torch.eye(3, dtype=torch.float64)
        return (y_pre - torch.linalg.solve(m, g.detach().unsqueeze(-1)).squeeze(-1)).detach()

    eps = 1e-6
    for k, p in enumerate(params):
        for j in range(p.numel()):
            pp = [q.detach().clone() for q in params]
            pm = [q.detach().clone() for q in params]
            pp[k].reshape(-1)[j] += eps
            pm[k].reshape(-1)[j] -= eps
            fd = ((step(pp) - step(pm)) * gbar).sum() / (2 * eps)
            assert torch.allclose(got[k].reshape(-1)[j], fd, rtol=1e-5, atol=1e-8)
    # and the drift term matters here: the implicit formula at y_pre differs
    implicit = vjp(AdjointSpec(energy, lam, "ridge", "dense", "implicit"), y_pre, params, gbar)
    assert not torch.allclose(implicit[0], got[0], rtol=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    curv=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    flat=st.integers(0, 2),
    seed=st.integers(0, 10_000),
    lam=st.sampled_from([0.01, 0.1, 1.0]),
    backend=st.sampled_from(["dense", "cg"]),
)
def test_damped_jacobian_norm_is_bounded_by_cross_derivative_over_lambda(
    curv, flat, seed, lam, backend
):
    """||dy*/dw ȳ|| ≤ ||∂∇E/∂w||·||ȳ||/λ on flat (h≈0) and indefinite (h<0) Hessians."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    h = torch.tensor(curv, dtype=torch.float64)
    h[flat] = 1e-12  # a flat direction
    hmat = q @ torch.diag(h) @ q.T
    c = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def energy(y, w):  # ∇E = H y - C w, ∂∇E/∂w = -C
        return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

    y = torch.randn(1, 3, generator=g, dtype=torch.float64)
    gbar = torch.randn(1, 3, generator=g, dtype=torch.float64)
    if backend == "cg" and float(h.min()) < 0:
        backend = "dense"  # CG stops at negative curvature: the bound is a dense-path property
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (gw,) = vjp(AdjointSpec(energy, lam, "ridge", backend, "implicit"), y, (w,), gbar)
    assert torch.isfinite(gw).all()
    bound = torch.linalg.matrix_norm(c, ord=2) * gbar.norm() / lam
    assert gw.norm() <= bound * (1 + 1e-8)


def test_non_positive_definite_hessian_uses_counted_fallback_not_nan():
    # A saddle: E = ½(y0² - y1²) + w·y. H = diag(1, -1): H + 0.1 I is indefinite.
    w = torch.tensor([0.2, -0.1], dtype=torch.float64, requires_grad=True)

    def energy(y, w):
        return 0.5 * (y[:, 0] ** 2 - y[:, 1] ** 2) + (y * w).sum(-1)

    with pytest.warns(wibergian.NonConvergenceWarning):
        y, info = wibergian.argmin(energy, torch.zeros(2, 2, dtype=torch.float64), (w,),
                                   solver=wibergian.NewtonTrustRegion(max_iter=3),
                                   final_step=False, return_info=True)
    with pytest.warns(wibergian.FallbackWarning, match="fallback"):
        y.sum().backward()
    assert torch.isfinite(w.grad).all()
    assert info.backward["backward_fallbacks"] == 2
    # clamped eigenvalues: direction 0 gets 1/(1+λ), direction 1 gets 1/(0+λ)
    assert torch.allclose(w.grad, -2 * torch.tensor([1 / 1.1, 1 / 0.1], dtype=torch.float64))


def test_undamped_gradient_explodes_on_flat_minimum_while_damped_stays_bounded():
    # E = (y - w)^4: flat minimum (H = 0 at y* = w).
    w = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)

    def energy(y, w):
        return ((y - w) ** 4).sum(-1) + 1e-9 * (y * y).sum(-1)

    grads = {}
    for lam in (0.0, 0.1):
        w.grad = None
        y = wibergian.argmin(energy, torch.zeros(1, 1, dtype=torch.float64), (w,),
                             damping=lam, warn=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y.sum().backward()
        grads[lam] = float(w.grad.abs())
    assert grads[0.1] <= 12 * (0.5 - float(y.detach())) ** 2 / 0.1 + 1e-6
    assert grads[0.0] > 50 * max(grads[0.1], 1e-3)


@pytest.mark.parametrize("compile", [False, True])
def test_default_gradient_is_the_damped_implicit_derivative_in_closed_form(compile):
    """The default call (Newton, final step, the forward's Hessian reused) against the damped
    implicit derivative written out for ridge-logistic regression
    ``E = Σ softplus(x y) - t·x y + ½ e^l ||y - μ||²``: ``∇E = xᵀ(σ(xy) - t) + e^l (y - μ)``,
    ``H = xᵀ diag(σ') x + e^l I``, so with ``u = (H + λI)^-1 ȳ`` at the returned ``y``,
    ``∂L/∂μ = e^l Σ_b u_b`` and ``∂L/∂l = -e^l Σ_b (y_b - μ)ᵀ u_b``; compiled and eager."""
    from wibergian.bench.user import DenseData, logistic_energy

    d = DenseData(40, 8, seed=3)
    lam = 0.1
    log_l = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    mu = (0.1 * torch.arange(8, dtype=torch.float64)).requires_grad_(True)
    with wibergian.auto_compile_after(0):
        y, info = wibergian.argmin(logistic_energy, torch.zeros(40, 8, dtype=torch.float64),
                                   (d.x, d.t, log_l, mu), return_info=True, compile=compile)
    ((y - d.y_true) ** 2).sum().backward()
    assert bool(info.converged.all()) and bool(info.final_step_accepted.any())
    with torch.no_grad():
        yd = y.detach()
        s = torch.sigmoid((d.x @ yd.unsqueeze(-1)).squeeze(-1))
        h = d.x.mT @ (d.x * (s * (1 - s)).unsqueeze(-1))
        el = log_l.exp()
        m = h + (el + lam) * torch.eye(8, dtype=torch.float64)
        u = torch.linalg.solve(m, 2 * (yd - d.y_true))
        want_mu = el * u.sum(0)
        want_l = -el * ((yd - mu) * u).sum()
    torch.testing.assert_close(mu.grad, want_mu, rtol=1e-8, atol=0)
    torch.testing.assert_close(log_l.grad, want_l, rtol=1e-8, atol=0)
