"""The drift study's measurements are right where the answer is known (generated data)."""

from __future__ import annotations

import torch

from wibergian.experiments.endtoend import drift


def _convex_wells(n: int = 20) -> torch.Tensor:
    """Three broad overlapping wells: the energy is strongly convex around the minimiser."""
    p = drift.sample_wells(n, 3, seed=5)
    p[..., 1:3] *= 0.1  # centres close together
    p[..., 3] = 0.0  # σ = 1
    p[..., 0] = 0.5 + 0.5 * p[..., 0].abs()
    return p


def test_wells_closed_forms_match_autograd():
    p = drift.sample_wells(6, 4, seed=3)
    y = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    yr = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(drift.wells_energy(yr, p).sum(), yr, create_graph=True)
    h = torch.stack([torch.autograd.grad(g[:, i].sum(), yr, retain_graph=True)[0]
                     for i in range(2)], 1)
    torch.testing.assert_close(drift.wells_energy.gradient(y, p), g)
    torch.testing.assert_close(drift.wells_energy.hessian(y, p), h)


def test_exact_implicit_gradient_equals_finite_differences_on_strongly_convex_instances():
    p = _convex_wells()
    with torch.no_grad():
        y = drift.solve_wells(p)
    hmin = drift.wells_hmin(y, p)
    assert float(hmin.min()) > 0.3
    res = drift.gradient_study(lambda q, lam: drift.solve_wells(q, lam), p, hmin, y,
                               lambdas=(0.1,), epsilons=(1e-4,))
    fd = res["finite_differences"]["0.0001"]
    assert fd["jump_fraction"] == 0.0
    assert fd["rel_err_exact_vs_fd_no_jump"]["max"] < 1e-6
    # the damped gradient is not exact: its error is within the ridge bound λ / (h_min + λ)
    err = res["damped_vs_exact"]["0.1"]["rel_err"]
    assert 1e-4 < err["median"] <= 0.1 / (float(hmin.min()) + 0.1)


def test_mlesac_damped_over_exact_is_h_over_h_plus_lambda():
    x = drift.sample_mlesac(10, seed=0)
    s = torch.full((10, 1), 4.0, dtype=torch.float64)
    with torch.no_grad():
        t = drift.solve_mlesac(x, s)
    tr = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(drift.mlesac_energy(tr, x, s).sum(), tr, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), tr)
    j0 = drift.jacobian(lambda q: drift.solve_mlesac(x, q, 0.0), s)[:, 0, 0]
    j1 = drift.jacobian(lambda q: drift.solve_mlesac(x, q, 0.1), s)[:, 0, 0]
    torch.testing.assert_close(j1 / j0, h[:, 0] / (h[:, 0] + 0.1), rtol=1e-6, atol=1e-9)


def test_newton_step_adjoint_is_the_exact_derivative_of_the_one_step_map():
    res = drift.early_stop_study(n=30, iters=(0,), start_noise=0.05)
    row = res["rows"][0]
    assert row["final_step_accepted"] > 0.5
    assert row["newton_step"]["rel_err_vs_fd_of_map"]["max"] < 1e-5
    assert row["implicit"]["rel_err_vs_fd_of_map"]["median"] > 1e-3  # ignores the drift term
