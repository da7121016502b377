"""The batched training loop: independence of runs, blow-up detection, the Trainer path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wibergian.experiments.ransac.data import make_generator, train_batch
from wibergian.experiments.ransac.energy import estimate_mean
from wibergian.experiments.ransac.train import RunSpec, train_runs, train_with_trainer


def test_runs_in_a_batch_are_independent():
    """Seed 1 trained alongside seed 0 follows exactly the trajectory it follows alone."""
    both = train_runs(RunSpec([0, 1], [1e-3, 2e-3], [0.9, 0.5]), 0.1, 15, 3.0, quiet=True)
    alone = train_runs(RunSpec([1], [2e-3], [0.5]), 0.1, 15, 3.0, quiet=True)
    np.testing.assert_allclose(both.sigma[:, 1], alone.sigma[:, 0], rtol=1e-12)
    assert not np.allclose(both.sigma[:, 0], both.sigma[:, 1])


def test_first_update_is_plain_sgd_on_the_core_gradient():
    """σ_1 = σ_0 - lr * d/dσ (t*(σ_0) - mu)² with the sample of (seed, step 1)."""
    lr, s0 = 1e-3, 5.0
    run = train_runs(RunSpec([7], [lr], [0.9]), 0.1, 1, s0, per_seed=3, quiet=True)
    b = train_batch([7], 1, 3)
    s = torch.full((3,), s0, dtype=torch.float64, requires_grad=True)
    loss = ((estimate_mean(b.x, s, 0.1) - b.mu) ** 2).mean()
    (g,) = torch.autograd.grad(loss, s)
    assert run.sigma[1, 0] == pytest.approx(s0 - lr * float(g.sum()), rel=1e-12)
    assert run.max_abs_step[0] == pytest.approx(abs(run.sigma[1, 0] - s0), rel=1e-12)


def test_blow_up_is_detected_recorded_and_frozen():
    """With a tiny threshold the fast run diverges; the slow one is unaffected."""
    run = train_runs(RunSpec([0, 0], [5.0, 1e-6], [0.9, 0.9]), 0.0, 12, 2.0, sigma_max=2.2,
                     quiet=True)
    k = run.diverged_step[0]
    assert k is not None and run.diverged_step[1] is None
    assert abs(run.blowup_value[0]) > 2.2 or not math.isfinite(run.blowup_value[0])
    assert np.isnan(run.sigma[k:, 0]).all() and np.isfinite(run.sigma[:k, 0]).all()
    assert run.final_sigma[0] is None and run.final_sigma[1] is not None
    assert run.n_diverged == 1
    alone = train_runs(RunSpec([0], [1e-6], [0.9]), 0.0, 12, 2.0, sigma_max=2.2, quiet=True)
    np.testing.assert_allclose(run.sigma[:, 1], alone.sigma[:, 0], rtol=1e-12)


def test_trainer_path_gives_the_same_trajectory():
    pytest.importorskip("wibergian.train")
    a = train_runs(RunSpec([4], [1e-3], [0.9]), 0.1, 12, 6.0, per_seed=2, quiet=True)
    b = train_with_trainer(4, 0.1, 12, 6.0, 1e-3, 0.9, per_seed=2, quiet=True)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-12)
    np.testing.assert_allclose(a.max_abs_step, b.max_abs_step, rtol=1e-9)


def test_samples_depend_only_on_seed_and_step():
    a = train_batch([3, 5], 7)
    b = train_batch([5], 7)
    torch.testing.assert_close(a.x[1:], b.x)
    assert not torch.equal(train_batch([5], 8).x, b.x)
    # inliers are the first 10 columns, mu is their mean
    torch.testing.assert_close(b.mu, b.x[:, :10].mean(1))
    g1, g2 = make_generator(1, 2, 3), make_generator(1, 2, 3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
