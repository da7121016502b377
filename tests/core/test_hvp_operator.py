"""A declared ``hvp_operator`` in the matrix-free (CG) adjoint agrees with autograd products."""

from __future__ import annotations

import torch
from energies import logsumexp

import wibergian


class _LogSumExp:
    """The logsumexp energy with ``H v = Wᵀ(diag p - p pᵀ) W v + α v``, ``p = softmax(W y + c)``."""

    def __init__(self) -> None:
        self.operator_calls = 0
        self.products = 0

    def __call__(self, y, w, c, alpha):
        return logsumexp(y, w, c, alpha)

    def hvp_operator(self, y, w, c, alpha):
        self.operator_calls += 1
        p = torch.softmax(y @ w.T + c, dim=-1)  # (B, K), fixed at the linearisation point

        def apply(v):
            self.products += 1
            wv = v @ w.T
            return (p * wv - p * (p * wv).sum(-1, keepdim=True)) @ w + alpha * v

        return apply


def test_declared_hvp_operator_matches_autograd_cg_adjoint():
    g = torch.Generator().manual_seed(7)
    b, k, n = 5, 9, 6
    w0 = torch.randn(k, n, generator=g, dtype=torch.float64)
    c0 = torch.randn(b, k, generator=g, dtype=torch.float64)
    a0 = torch.tensor(0.3, dtype=torch.float64)
    y0 = torch.zeros(b, n, dtype=torch.float64)
    gy = torch.randn(b, n, generator=g, dtype=torch.float64)
    grads = []
    declared = _LogSumExp()
    for energy in (logsumexp, declared):
        w, c, a = (t.clone().requires_grad_(True) for t in (w0, c0, a0))
        y = wibergian.argmin(energy, y0, (w, c, a), damping=0.05, linear_solver="cg",
                             cg_tol=1e-13, tol=1e-12, warn=False)
        (y * gy).sum().backward()
        grads.append((w.grad, c.grad, a.grad))
    # linearised once for the final CG Newton step and once for the backward
    assert declared.operator_calls == 2 and declared.products > 2
    for ref, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_declared_hvp_operator_matches_autograd_in_the_cg_final_step():
    """The final damped Newton step (CG back end) uses the declared product too; the returned
    points and their gradients agree with the autograd products."""
    g = torch.Generator().manual_seed(8)
    b, k, n = 4, 7, 5
    w0 = torch.randn(k, n, generator=g, dtype=torch.float64)
    c0 = torch.randn(b, k, generator=g, dtype=torch.float64)
    a0 = torch.tensor(0.2, dtype=torch.float64)
    y0 = torch.randn(b, n, generator=g, dtype=torch.float64)
    gy = torch.randn(b, n, generator=g, dtype=torch.float64)
    outs = []
    declared = _LogSumExp()
    for energy in (logsumexp, declared):
        w, c, a = (t.clone().requires_grad_(True) for t in (w0, c0, a0))
        y = wibergian.argmin(energy, y0, (w, c, a), damping=0.05, linear_solver="cg",
                             cg_tol=1e-13, max_iter=3, final_step=True, warn=False)
        (y * gy).sum().backward()
        outs.append((y.detach(), w.grad, c.grad, a.grad))
    assert declared.operator_calls >= 2  # final step and backward
    for ref, got in zip(*outs, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
