"""Quadratic closed forms against torch.linalg.pinv autograd and finite differences."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import wibergian


def full_rank(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, 7, generator=g, dtype=torch.float64)
    return a, b


def rank_deficient(seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(4, 7, 2, generator=g, dtype=torch.float64)
    v = torch.randn(4, 2, 4, generator=g, dtype=torch.float64)
    a = u @ v  # rank 2 < n = 4
    b = torch.randn(4, 7, generator=g, dtype=torch.float64)
    return a, b


def pinv_reference(a, b):
    return (torch.linalg.pinv(a) @ b.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("make,method", [(full_rank, "cholesky"), (full_rank, "auto"),
                                         (full_rank, "pinv"), (rank_deficient, "pinv"),
                                         (rank_deficient, "auto")])
def test_solution_and_gradient_match_pinv_autograd(make, method):
    a, b = make()
    a1, b1 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    a2, b2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    y = wibergian.lstsq(a1, b1, method=method)
    ref = pinv_reference(a2, b2)
    assert torch.allclose(y, ref, atol=1e-9)
    w = torch.linspace(-1, 2, y.numel(), dtype=torch.float64).reshape(y.shape)
    (y * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(a1.grad, a2.grad, atol=1e-8)
    assert torch.allclose(b1.grad, b2.grad, atol=1e-8)


def test_full_rank_gradcheck():
    a, b = full_rank(1)
    assert gradcheck(lambda a, b: wibergian.lstsq(a, b, method="cholesky"),
                     (a.requires_grad_(True), b.requires_grad_(True)))


def test_rank_deficient_finite_differences_along_rank_preserving_directions():
    # perturb the factors so that the rank stays 2 (the pseudo-inverse is smooth there)
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda u, v, b: wibergian.lstsq(u @ v, b, method="pinv"), (u, v, b))


def test_cholesky_method_refuses_rank_deficient_problems():
    a, b = rank_deficient()
    with pytest.raises(ValueError, match="rank-deficient"):
        wibergian.lstsq(a, b, method="cholesky")


def test_bad_shapes_and_nan_are_rejected():
    a, b = full_rank()
    with pytest.raises(ValueError, match="b \\(..., m\\)"):
        wibergian.lstsq(a, b[:, :3])
    a[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        wibergian.lstsq(a, b)


def test_all_cholesky_fast_path_matches_masked_path():
    """A batch where every problem is well-posed takes the unmasked path that reuses the
    forward's Cholesky factor; appending one rank-deficient problem forces the masked path.
    Solutions and gradients of the shared well-posed problems must agree to 1e-10."""
    a, b = full_rank(3)
    ad, bd = rank_deficient(4)
    gy = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    y1 = wibergian.lstsq(a1, b1)
    (y1 * gy).sum().backward()

    # pad the rank-deficient problem to n = 3 columns of rank 2: masked (mixed) path
    a_bad = ad[:1, :, :3].clone()
    a_bad[..., 2] = a_bad[..., 0] + a_bad[..., 1]
    from wibergian.lstsq import _chol_solve

    assert not bool(_chol_solve(a_bad, bd[:1])[1].any())  # really off the Cholesky path
    a2 = torch.cat([a, a_bad]).requires_grad_()
    b2 = torch.cat([b, bd[:1]]).requires_grad_()
    y2 = wibergian.lstsq(a2, b2)
    (y2[:4] * gy).sum().backward()

    torch.testing.assert_close(y1, y2[:4].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(a1.grad, a2.grad[:4], rtol=0, atol=1e-10)
    torch.testing.assert_close(b1.grad, b2.grad[:4], rtol=0, atol=1e-10)
    assert torch.count_nonzero(a2.grad[4]) == 0  # the padded problem got no cotangent
