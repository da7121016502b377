"""CCDF, Hill tail exponent, paired differences; the toy's closed-form gradient; `imposed`."""

import math

import numpy as np
import pytest
import torch

import wibergian
from wibergian.experiments.damping.regimes import imposed
from wibergian.experiments.damping.stats import ccdf, hill, paired_difference
from wibergian.experiments.damping.toy import implicit_gradients, solutions
from wibergian.experiments.ransac.data import make_generator, sample_problems
from wibergian.experiments.ransac.energy import estimate_mean


@pytest.mark.parametrize("alpha", [1.5, 2.5, 4.0])
def test_hill_recovers_the_exponent_of_a_pareto_sample(alpha):
    rng = np.random.default_rng(3)
    x = (1 - rng.random(40_000)) ** (-1 / alpha)  # P(X > x) = x^-alpha, x >= 1
    fit = hill(x, 0.05)
    assert fit["k"] == 2000 and fit["n"] == 40_000
    assert abs(fit["alpha"] - alpha) < 3 * fit["se"]
    assert fit["se"] == pytest.approx(fit["alpha"] / math.sqrt(2000))


def test_hill_tells_a_heavy_tail_from_a_light_one():
    rng = np.random.default_rng(4)
    heavy = (1 - rng.random(20_000)) ** (-1 / 1.5)
    light = np.abs(rng.normal(size=20_000))
    assert hill(heavy)["alpha"] < 2 < hill(light)["alpha"]


def test_ccdf_of_a_pareto_sample_has_the_right_slope_and_values():
    rng = np.random.default_rng(5)
    x = (1 - rng.random(50_000)) ** (-1 / 3.0)
    xs, p = ccdf(x)
    assert xs.size == 49_999 and np.all(np.diff(xs) >= 0) and np.all(np.diff(p) < 0)
    assert p[0] == pytest.approx(1 - 1 / 50_000)
    for q in (2.0, 4.0):  # empirical P(X > q) against q^-3
        i = np.searchsorted(xs, q)
        assert p[i] == pytest.approx(q ** -3.0, rel=0.08)
    with pytest.raises(ValueError):
        ccdf([1.0])


def test_paired_difference_on_a_known_case():
    b = [10.0, 20.0, 30.0, 40.0, 7.0]
    a = [11.0, 22.0, 33.0, 44.0, math.nan]  # last pair dropped
    out = paired_difference(a, b)
    # differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), t_{0.975, 3} = 3.182446305284263
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert out["n"] == 4 and out["n_dropped"] == 1
    assert out["mean"] == pytest.approx(2.5)
    assert out["sd"] == pytest.approx(math.sqrt(5 / 3))
    assert out["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    assert out["a_greater"] == 4 and out["b_greater"] == 0
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


@pytest.mark.parametrize("lam,reg", [(0.0, "ridge"), (0.1, "ridge"), (0.1, "floor"),
                                     (1.0, "floor")])
def test_toy_closed_form_gradient_equals_the_core_backward(lam, reg):
    batch = sample_problems(300, make_generator(5, 2, 0))
    for sigma in (3.0, 9.0):
        s = torch.full((300,), sigma, dtype=torch.float64, requires_grad=True)
        with imposed(lam, reg):
            t = estimate_mean(batch.x, s, lam)
        ((t - batch.mu) ** 2).sum().backward()
        g, h = implicit_gradients(batch, t.detach().numpy(), sigma, lam, reg)
        np.testing.assert_allclose(g, s.grad.numpy(), rtol=1e-9, atol=1e-11)
        # the study's forward (final step with λ = 0.1) finds the same minimisers
        np.testing.assert_allclose(solutions(batch, sigma), t.detach().numpy(), atol=1e-6)
    if reg == "floor":  # the floor differs from the ridge only where E'' < λ
        g_ridge, _ = implicit_gradients(batch, t.detach().numpy(), sigma, lam, "ridge")
        assert np.any(np.abs(g - g_ridge) > 1e-6) == bool(np.any(h < lam))


def test_imposed_forces_the_method_and_restores_argmin():
    original = wibergian.argmin
    batch = sample_problems(50, make_generator(5, 3, 0))

    def grad(lam_ctx, lam_call):
        s = torch.full((50,), 4.0, dtype=torch.float64, requires_grad=True)
        with imposed(lam_ctx):
            t = estimate_mean(batch.x, s, lam_call)
        ((t - batch.mu) ** 2).sum().backward()
        return s.grad

    # the experiment asks for λ = 0.1; the study imposes λ = 0 -> exactly the λ = 0 gradient
    torch.testing.assert_close(grad(0.0, 0.1), grad(0.0, 0.0))
    assert not torch.allclose(grad(0.0, 0.1), grad(0.1, 0.1))
    assert wibergian.argmin is original
    with pytest.raises(ValueError):
        with imposed(0.1, "lasso"):
            pass
    assert wibergian.argmin is original
