"""``compile=True`` with Newton-CG: the Hessian-vector products come from one compiled kernel
(``compiled_hvp.py``), with the eager results, and fall back to eager when it cannot be built."""

from __future__ import annotations

import torch

import wibergian
from wibergian import compiled

D = torch.float64


def lorentzian(y, z, log_alpha, log_s):
    """A robust smoother: ``½||y - z||² + α Σ log(1 + (Δy)²/s²)`` (non-convex in general)."""
    d = y[:, 1:] - y[:, :-1]
    return 0.5 * ((y - z) ** 2).sum(-1) + log_alpha.exp() * torch.log1p(
        d * d / log_s.exp() ** 2).sum(-1)


def _solve(energy, z, compile):
    la = torch.tensor(-0.5, dtype=D, requires_grad=True)
    ls = torch.tensor(-1.0, dtype=D, requires_grad=True)
    y, info = wibergian.argmin(energy, z.clone(), (z, la, ls), compile=compile,
                               return_info=True, warn=False)
    (y * torch.linspace(-1, 1, z.shape[1], dtype=D)).sum().backward()
    return y.detach(), la.grad, ls.grad, info


def _data(b=3, n=64):
    g = torch.Generator().manual_seed(7)
    steps = torch.cumsum(torch.randn(b, n, generator=g, dtype=D) * 0.1, -1)
    return steps + (torch.arange(n) > n // 2).to(D) + 0.05 * torch.randn(b, n, generator=g,
                                                                         dtype=D)


def test_newton_cg_with_compile_true_uses_the_compiled_product_and_agrees_with_eager():
    z = _data()

    def energy(y, z, la, ls):  # its own object: its own compiled kernels
        return lorentzian(y, z, la, ls)

    before = dict(compiled.FALLBACKS)
    y, ga, gs, info = _solve(energy, z, True)
    assert info.solver == "newton_cg" and bool(info.converged.all())
    ce = compiled._cache[energy]
    assert any(k[0] == "hvp" for k in ce._kernels) and compiled.FALLBACKS == before
    y0, ga0, gs0, info0 = _solve(lorentzian, z, False)
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-9)
    torch.testing.assert_close(ga, ga0, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(gs, gs0, rtol=1e-7, atol=1e-10)
    # and the kernel's product is H v (the eager double backward, float64)
    v = torch.randn_like(y)
    params = (z, torch.tensor(-0.5, dtype=D), torch.tensor(-1.0, dtype=D))
    got = ce.hvp(y, v, params)
    want = torch.func.jvp(torch.func.grad(
        lambda u: lorentzian(u[None], z[:1], *params[1:])[0]), (y[0],), (v[0],))[1]
    torch.testing.assert_close(got[0], want, rtol=1e-10, atol=1e-10)


def test_a_product_kernel_that_cannot_be_built_leaves_the_products_eager(monkeypatch):
    z = _data(b=2)

    def energy(y, z, la, ls):
        return lorentzian(y, z, la, ls)

    real = compiled.CompiledEnergy._trace

    def refuse(self, fn, yb, pb):
        if getattr(fn, "__name__", "") == "_hvp":
            raise RuntimeError("this kernel cannot be traced")
        return real(self, fn, yb, pb)

    monkeypatch.setattr(compiled.CompiledEnergy, "_trace", refuse)
    before = compiled.FALLBACKS["hvp"]
    y, ga, gs, info = _solve(energy, z, True)
    ce = compiled._cache[energy]
    assert compiled.FALLBACKS["hvp"] == before + 1 and "hvp" in ce.optional_errors
    assert ce.error is None  # the energy's other kernels stay compiled
    y0, ga0, gs0, _ = _solve(lorentzian, z, False)
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-9)
    torch.testing.assert_close(ga, ga0, rtol=1e-7, atol=1e-10)
