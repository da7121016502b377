"""The toy's gradient dt*/dσ from the core, against finite differences and a closed form."""

from __future__ import annotations

import math

import pytest
import torch

from wibergian.experiments.ransac.data import make_generator, sample_problems
from wibergian.experiments.ransac.energy import estimate_mean

D = torch.float64


def closed_form(t: torch.Tensor, x: torch.Tensor, sigma: float, lam: float):
    """By hand, with d_i = x_i - t, w_i = exp(-d_i²/σ²):

        E'      = -(2/σ²) Σ w_i d_i
        E''     =  (2/σ²) Σ w_i (1 - 2 d_i²/σ²)
        ∂E'/∂σ  = -(4/σ³) Σ w_i d_i (d_i²/σ² - 1)
        dt*/dσ  = -(E'' + λ)^-1 ∂E'/∂σ
    """
    d = x - t[:, None]
    s2 = sigma**2
    w = torch.exp(-(d**2) / s2)
    e1 = (-2 / s2 * w * d).sum(1)
    e2 = (2 / s2 * w * (1 - 2 * d**2 / s2)).sum(1)
    e1s = (-4 / sigma**3 * w * d * (d**2 / s2 - 1)).sum(1)
    return e1, e2, e1s, -e1s / (e2 + lam)


def grad_t(x: torch.Tensor, sigma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t*, dt*_b/dσ) per problem from the core (σ shared value, one leaf per problem)."""
    s = torch.full((x.shape[0],), sigma, dtype=D, requires_grad=True)
    t = estimate_mean(x, s, lam)
    (g,) = torch.autograd.grad(t.sum(), s)
    return t.detach(), g


@pytest.fixture(scope="module")
def problems():
    return sample_problems(6, make_generator(9, 0, 0)).x


@pytest.mark.parametrize("sigma", [2.0, 5.0, 12.0])
def test_undamped_gradient_matches_finite_differences(problems, sigma):
    t, g = grad_t(problems, sigma, 0.0)
    h = 1e-5
    with torch.no_grad():
        tp = estimate_mean(problems, torch.full((6,), sigma + h, dtype=D), 0.0)
        tm = estimate_mean(problems, torch.full((6,), sigma - h, dtype=D), 0.0)
    fd = (tp - tm) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)
    # the minimiser is a stationary point with positive curvature
    e1, e2, _, _ = closed_form(t, problems, sigma, 0.0)
    assert e1.abs().max() < 1e-8 and (e2 > 0).all()


@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("sigma", [3.0, 8.0])
def test_gradient_matches_closed_form(problems, sigma, lam):
    t, g = grad_t(problems, sigma, lam)
    *_, dt = closed_form(t, problems, sigma, lam)
    torch.testing.assert_close(g, dt, rtol=1e-8, atol=1e-10)


def test_damped_step_is_bounded_where_undamped_explodes():
    """Two points at ±a with a just below σ/√2 make an almost flat minimum (E'' → 0); a far
    third point breaks the symmetry so that ∂E'/∂σ ≠ 0. The undamped dt*/dσ is then huge while
    the damped one obeys |dt*/dσ| ≤ |∂E'/∂σ| / λ."""
    sigma, lam = 4.0, 0.1
    rows = []
    for frac in (0.99, 0.999, 0.9999):
        a = frac * sigma / math.sqrt(2)
        rows.append([-a, a, 3.5 * sigma])
    x = torch.tensor(rows, dtype=D)
    t0, g0 = grad_t(x, sigma, 0.0)
    t1, g1 = grad_t(x, sigma, lam)
    _, e2, e1s, _ = closed_form(t1, x, sigma, lam)
    assert (e2 > 0).all() and (e2 < 0.02).all()  # nearly flat minima
    assert (g1.abs() <= e1s.abs() / lam * (1 + 1e-9)).all()
    assert (g0.abs() > 5 * g1.abs()).all()
    # the undamped gradient grows without bound as the minimum flattens
    assert g0.abs()[2] > 10 * g0.abs()[0]


def test_damped_bound_holds_on_random_problems():
    x = sample_problems(200, make_generator(9, 1, 0)).x
    for sigma in (1.5, 6.0, 20.0):
        t, g = grad_t(x, sigma, 0.1)
        _, e2, e1s, _ = closed_form(t, x, sigma, 0.1)
        assert (e2 > -1e-9).all()
        assert (g.abs() <= e1s.abs() / 0.1 * (1 + 1e-9) + 1e-12).all()
