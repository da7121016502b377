"""The backward's solve refined from the final step's factor (``refine.py``) equals the direct
solve, keeps its certificate and fallbacks, and is what ``argmin``'s backward uses."""

from __future__ import annotations

import torch

from wibergian.linsolve import dense_solve
from wibergian.refine import NearbyFactor, nearby_factor, refined_solve

D = torch.float64
LAM = 0.1


def _pair(b=12, n=5, seed=0, move=1e-12):
    """``H₀`` positive definite, ``H = H₀ + move·S`` (``S`` symmetric, unit scale)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, n, generator=g, dtype=D)
    h0 = a @ a.mT / n + 0.05 * torch.eye(n, dtype=D)
    s = torch.randn(b, n, n, generator=g, dtype=D)
    h = h0 + move * (s + s.mT)
    rhs = torch.randn(b, n, generator=g, dtype=D)
    _, st = dense_solve(h0, rhs, LAM, keep_factor=True)
    return h0, h, rhs, nearby_factor(st.factor, h0, h, LAM)


def test_refined_solve_equals_the_direct_solve_and_factors_nothing_new():
    h0, h, rhs, near = _pair()
    u, st = refined_solve(near, h, rhs, LAM)
    want = torch.linalg.solve(h + LAM * torch.eye(5, dtype=D), rhs.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(u, want, rtol=1e-13, atol=1e-14)
    assert st.refined == 12 and st.fallbacks == 0 and float(st.residual.max()) < 1e-13
    # against the nearby matrix's own solve: refinement did move it to H's
    u0 = torch.linalg.solve(h0 + LAM * torch.eye(5, dtype=D), rhs.unsqueeze(-1)).squeeze(-1)
    assert float((u0 - want).abs().max()) > 1e-13


def test_a_hessian_that_moved_beyond_the_margin_is_certified_again_then_refined():
    h0, h, rhs, near = _pair(move=1e-6)  # ||ΔH|| ≫ sqrt(eps)·λ, H still positive definite
    u, st = refined_solve(near, h, rhs, LAM)
    want = torch.linalg.solve(h + LAM * torch.eye(5, dtype=D), rhs.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(u, want, rtol=1e-12, atol=1e-13)
    assert st.refined == 12


def test_an_indefinite_hessian_takes_the_direct_solve_and_its_counted_fallback():
    h0, h, rhs, near = _pair()
    h = h.clone()
    h[3] = h[3] - 0.06 * torch.eye(5, dtype=D) - 2.0 * torch.outer(torch.ones(5, dtype=D),
                                                                      torch.ones(5, dtype=D))
    u, st = refined_solve(near, h, rhs, LAM)
    ref, st_ref = dense_solve(h, rhs, LAM)
    torch.testing.assert_close(u, ref, rtol=1e-12, atol=1e-13)
    assert st.refined == 11 and st.fallbacks == st_ref.fallbacks == 1
    assert bool(st.fallback_mask[3]) and int(st.fallback_mask.sum()) == 1
    assert torch.isfinite(st.min_eigenvalue[3]) and float(st.min_eigenvalue[3]) < 0


def test_a_nonfinite_hessian_is_reported_as_by_the_direct_solve():
    h0, h, rhs, near = _pair()
    h = h.clone()
    h[5, 1, 2] = float("nan")
    u, st = refined_solve(near, h, rhs, LAM)
    ref, st_ref = dense_solve(h, rhs, LAM)
    assert bool(st.nonfinite_mask[5]) and torch.equal(st.nonfinite_mask, st_ref.nonfinite_mask)
    keep = torch.arange(12) != 5
    torch.testing.assert_close(u[keep], ref[keep], rtol=1e-12, atol=1e-13)


def test_no_refinement_without_damping_or_certificate():
    h0, h, rhs, near = _pair()
    assert refined_solve(near, h, rhs, 0.0) is None
    f = near.factor
    blind = NearbyFactor(type(f)(f.chol, f.ok, shift=f.shift, psd=None), near.close)
    assert refined_solve(blind, h, rhs, LAM) is None
    assert nearby_factor(f, h0, h, 0.0) is None and nearby_factor(blind.factor, h0, h, LAM) is None
