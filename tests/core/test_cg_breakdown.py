"""Regression: CG breaking down on a saddle far below -λ (the hypothesis example of issue 13).

``H`` has eigenvalues ``(-0.0109375, 1 ×8, sqrt(10))`` (n = 10, float64, λ = 1e-3), with ȳ and
``∂∇E/∂w = -C`` aligned with the negative direction. CG on ``H + λI`` meets ``pᵀ(H + λI)p < 0``
at its second step. The breakdown step used to be dropped from the Lanczos tridiagonal, so the
Ritz estimate said only ``λ_min(H) ≤ -λ`` and three shifts (2.1λ, 3.3λ, 4.6λ) never reached
``-λ_min = 10.9λ``: the last-resort cap had to hold the bound.
"""

from __future__ import annotations

import torch

from wibergian.adjoint import AdjointSpec, vjp
from wibergian.linsolve import _cg_run, _ritz_range

LAM = 1e-3
NEG = -0.1 * 0.109375


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = 10
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.tensor([NEG] + [1.0] * 8 + [10**0.5], dtype=torch.float64)
    hmat = q @ torch.diag(ev) @ q.T
    hmat = 0.5 * (hmat + hmat.T)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64)
    torch.randn(1, n, generator=g, dtype=torch.float64)  # the example's y (H is constant)
    gbar = torch.randn(1, n, generator=g, dtype=torch.float64)
    c[:, 0] += 10 * q[:, 0]
    gbar += 10 * q[:, 0]
    return hmat, c, gbar


def test_breakdown_step_enters_the_ritz_estimate():
    hmat, _, gbar = _case()
    shift = torch.full((1,), LAM, dtype=torch.float64)
    _, iters, flagged, broke, _, alphas, betas = _cg_run(
        lambda v: v @ hmat, gbar, shift, shift.clone(), torch.ones(1, dtype=torch.bool), 1e-10, 10)
    assert bool(broke[0]) and bool(flagged[0]) and int(iters[0]) == 1  # broke at step 2
    lo, _ = _ritz_range(alphas, betas, torch.tensor([0]))
    # a Ritz value of H + λI lies in its spectrum: negative, and not below λ_min(H) + λ
    assert NEG + LAM - 1e-12 <= float(lo[0]) < 0


def test_cg_saddle_far_below_minus_lambda_needs_no_cap():
    hmat, c, gbar = _case()

    def energy(y, w):
        return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(1, 10, dtype=torch.float64)
    spec = AdjointSpec(energy, LAM, "ridge", "cg", "implicit", warn=False)
    (gw,) = vjp(spec, y, (w,), gbar)
    bound = float(torch.linalg.matrix_norm(c, ord=2) * gbar.norm() / LAM)
    assert torch.isfinite(gw).all()
    assert float(gw.norm()) <= bound * (1 + 1e-9)
    assert spec.record["backward_fallbacks"] == 1 and spec.record["cg_shifted"] == 1
    assert spec.record["bound_capped"] == 0  # the shifted re-solve did the work, not the cap
    assert float(spec.record["backward_residual"][0]) < 1e-8


def test_cg_saddle_behind_a_wide_spectrum_needs_more_than_three_shifts():
    """A random-search case (generated; float64, λ = 1e-3, n = 18): eigenvalue -48λ next to 0,
    1e-3 and curvatures up to 9e7. CG breaks down early on each run, so the Ritz estimates of
    λ_min stay poor (-0.004, -0.0006, ...): the shift must grow geometrically and needed four
    runs; capped at three shifts, the cap did the work."""
    ev = torch.tensor([-0.04841331212825947, 0.00489627135081524, 666.608769159631,
                       50303637.91156389, 104906.35018382207, 1902488.151735452,
                       222.03784085165157, 6.344834822540369, 9288385.38545448,
                       8461.437906606707, 0.0, 186.7515755861597, 0.001, 0.001, 1.0,
                       17665205.107644167, 0.001, 93614704.0122356], dtype=torch.float64)
    n = ev.numel()
    g = torch.Generator().manual_seed(1185843578)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    hmat = q @ torch.diag(ev) @ q.T
    hmat = 0.5 * (hmat + hmat.T)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64)
    gbar = torch.randn(1, n, generator=g, dtype=torch.float64)
    c[:, 0] += 10 * q[:, 0]
    gbar += 10 * q[:, 0]

    def energy(y, w):
        return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    spec = AdjointSpec(energy, LAM, "ridge", "cg", "implicit", warn=False)
    (gw,) = vjp(spec, torch.zeros(1, n, dtype=torch.float64), (w,), gbar)
    bound = float(torch.linalg.matrix_norm(c, ord=2) * gbar.norm() / LAM)
    assert float(gw.norm()) <= bound * (1 + 1e-9)
    assert spec.record["backward_fallbacks"] == 1 and spec.record["cg_shifted"] == 1
    assert spec.record["bound_capped"] == 0
