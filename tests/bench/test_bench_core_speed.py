"""The performance changes made for the benchmark: one fused evaluation per Newton iteration."""

from __future__ import annotations

import pytest
import torch

from wibergian.bench.workloads import W1Energy, make_w1, w1_best_candidate, w1_energy
from wibergian.derivatives import gradient_and_hessian, value_gradient_hessian
from wibergian.solvers import NewtonTrustRegion


class CountingEnergy:
    """W1's fused energy that counts how often each entry point is called."""

    def __init__(self):
        self.inner = W1Energy()
        self.calls = {"value": 0, "vgh": 0}

    def __call__(self, y, *p):
        self.calls["value"] += 1
        return self.inner(y, *p)

    def value_gradient_hessian(self, y, *p):
        self.calls["vgh"] += 1
        return self.inner.value_gradient_hessian(y, *p)


@pytest.fixture(scope="module")
def w1():
    d = make_w1(30, seed=7)
    ps = (d.a, d.c, d.m * (1 + 0.3 * torch.rand(72, dtype=torch.float64)), d.s0, d.s1)
    return ps, w1_best_candidate(*ps)


def test_value_gradient_hessian_agrees_across_paths(w1):
    ps, y0 = w1
    y = y0 + 0.7
    e_f, g_f, h_f = value_gradient_hessian(W1Energy(), y, ps)
    e_a, g_a, h_a = value_gradient_hessian(w1_energy, y, ps)  # pure autograd path
    g_c, h_c = gradient_and_hessian(W1Energy(), y, ps)  # closed gradient + Hessian
    assert torch.allclose(e_f, w1_energy(y, *ps), atol=1e-12)
    assert torch.allclose(e_a, e_f, atol=1e-12)
    assert torch.allclose(g_f, g_a, atol=1e-12) and torch.allclose(g_f, g_c, atol=1e-12)
    assert torch.allclose(h_f, h_a, atol=1e-12) and torch.allclose(h_f, h_c, atol=1e-12)


def test_value_gradient_hessian_rejects_wrong_shapes(w1):
    ps, y0 = w1

    class Bad:
        def __call__(self, y, *p):
            return w1_energy(y, *p)

        def value_gradient_hessian(self, y, *p):
            e, g, h = W1Energy().value_gradient_hessian(y, *p)
            return e, g, h[:, 0]

    with pytest.raises(ValueError, match="value_gradient_hessian must return shapes"):
        value_gradient_hessian(Bad(), y0, ps)


def test_newton_uses_one_fused_evaluation_per_iteration(w1):
    ps, y0 = w1
    en = CountingEnergy()
    res = NewtonTrustRegion(max_iter=20, fixed_iterations=True).minimize(en, y0, ps)
    assert en.calls == {"value": 0, "vgh": 21}  # start point + one trial per iteration
    ref = NewtonTrustRegion(max_iter=20, fixed_iterations=True).minimize(w1_energy, y0, ps)
    # same iterates as with autograd derivatives (values agree to rounding)
    assert torch.allclose(res.y, ref.y, atol=1e-6)
    g = W1Energy().gradient(res.y, *ps)
    assert bool((g.abs().amax(-1)[res.converged] <= 1e-8).all())
    assert int(res.converged.sum()) >= 25
