"""Averaged SGD (trainer and the toy's vectorised optimiser) and gradient-norm clipping."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from wibergian.experiments.damping.optim import RunOptimizer
from wibergian.train import TrainConfig, Trainer
from wibergian.train.averaging import averaged_weights, load_average, make_asgd


class Quadratic(nn.Module):
    """loss(w) = |w - a|², gradient 2 (w - a): iterates computable by hand."""

    def __init__(self, w0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))


A = torch.tensor([1.0, -2.0], dtype=torch.float64)


def quad_loss(model, batch):
    return ((model.w - A) ** 2).sum(), {}


def data(step, generator):
    return torch.zeros(1)


def hand_iterates(w0, lr, steps):
    w = np.array(w0, dtype=float)
    out = []
    for _ in range(steps):
        w = w - lr * 2 * (w - A.numpy())
        out.append(w.copy())
    return out


def test_trainer_asgd_returns_the_hand_computed_average_and_evaluates_with_it():
    steps, lr, w0 = 7, 0.3, [5.0, 3.0]
    its = hand_iterates(w0, lr, steps)
    expected = np.mean(its, axis=0)  # mean of w_1..w_K
    seen = []

    def eval_fn(model):
        seen.append(model.w.detach().clone())
        return {"w0": float(model.w.detach()[0])}

    model = Quadratic(w0)
    cfg = TrainConfig(steps=steps, batch_size=1, lr=lr, optimizer="asgd", checkpoint_every=0,
                      quiet=True, plot=False, eval_every=3)
    Trainer(model, quad_loss, data, cfg, eval_fn=eval_fn).fit()
    np.testing.assert_allclose(model.w.detach().numpy(), expected, rtol=0, atol=1e-12)
    # the eval at step 3 saw mean(w_1, w_2, w_3), not the iterate w_3
    np.testing.assert_allclose(seen[0].numpy(), np.mean(its[:3], axis=0), atol=1e-12)
    assert not np.allclose(seen[0].numpy(), its[2])
    np.testing.assert_allclose(seen[-1].numpy(), expected, atol=1e-12)


def test_averaged_weights_swaps_and_restores_only_for_asgd():
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = make_asgd([p], lr=0.5)
    for g in (2.0, -1.0, 4.0):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
    raw = p.detach().clone()
    ax = opt.state[p]["ax"].clone()
    assert not torch.equal(raw, ax)
    with averaged_weights(opt):
        assert torch.equal(p.detach(), ax)
    assert torch.equal(p.detach(), raw)
    sgd = torch.optim.SGD([p], lr=0.1)
    with averaged_weights(sgd):
        assert torch.equal(p.detach(), raw)
    assert load_average(sgd) is False and load_average(opt) is True
    assert torch.equal(p.detach(), ax)


@pytest.mark.parametrize("kind", ["sgd", "momentum", "asgd", "adam"])
def test_run_optimizer_matches_torch_step_by_step(kind):
    grads = [3.0, -1.5, 0.7, 10.0, -4.0, 0.2]
    lr = 0.05
    p = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = {"sgd": lambda: torch.optim.SGD([p], lr=lr),
           "momentum": lambda: torch.optim.SGD([p], lr=lr, momentum=0.9),
           "asgd": lambda: make_asgd([p], lr=lr),
           "adam": lambda: torch.optim.Adam([p], lr=lr)}[kind]()
    ours = RunOptimizer([kind], [lr], [0.0], torch.tensor([2.0], dtype=torch.float64))
    alive = torch.ones(1, dtype=torch.bool)
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        ours.step(torch.tensor([g], dtype=torch.float64), alive)
        assert float(ours.w[0]) == pytest.approx(float(p.detach()[0]), abs=1e-13)
    if kind == "asgd":
        assert float(ours.evaluation_weights()[0]) == pytest.approx(
            float(opt.state[p]["ax"][0]), abs=1e-13)


def test_run_optimizer_clips_each_run_to_its_threshold():
    ours = RunOptimizer(["sgd", "sgd", "sgd"], [1.0, 1.0, 1.0], [2.0, 2.0, 0.0],
                        torch.zeros(3, dtype=torch.float64))
    ours.step(torch.tensor([-7.0, 0.5, -7.0], dtype=torch.float64),
              torch.ones(3, dtype=torch.bool))
    # clipped to |g| = 2 (sign kept); below the threshold untouched; clip 0 = off
    assert ours.w.tolist() == [2.0, -0.5, 7.0]


def test_trainer_clipping_limits_the_undamped_step_but_not_the_damped_one():
    """On a near-flat toy minimum the λ = 0 gradient is far above the clip, the λ = 0.1 one
    below it: one SGD step (lr 1) moves σ by exactly the clip for λ = 0 and by the unclipped
    damped gradient for λ = 0.1."""
    from wibergian.experiments.ransac.energy import estimate_mean
    from wibergian.experiments.ransac.train import SigmaModel

    # two points at ±a, a just below σ/√2: an almost flat minimum; a far third point breaks
    # the symmetry (the construction of tests/ransac/test_gradient.py)
    sigma0 = 4.0
    a = 0.999 * sigma0 / math.sqrt(2)
    x = torch.tensor([[-a, a, 3.5 * sigma0]], dtype=torch.float64)
    mu = torch.tensor([1.0], dtype=torch.float64)

    def grad(lam):
        s = torch.tensor([sigma0], dtype=torch.float64, requires_grad=True)
        ((estimate_mean(x, s, lam) - mu) ** 2).sum().backward()
        return float(s.grad[0])

    g0, g1 = grad(0.0), grad(0.1)
    assert abs(g0) > 5 * abs(g1)
    clip = (abs(g0) + abs(g1)) / 2   # between the two
    steps = {}
    for lam in (0.0, 0.1):
        model = SigmaModel(sigma0)

        def loss_fn(m, batch, lam=lam):
            return ((estimate_mean(x, m.sigma, lam) - mu) ** 2).mean(), {}

        cfg = TrainConfig(steps=1, batch_size=1, lr=1.0, optimizer="sgd", grad_clip=clip,
                          checkpoint_every=0, quiet=True, plot=False)
        Trainer(model, loss_fn, data, cfg).fit()
        steps[lam] = float(model.sigma.detach()[0]) - sigma0
    # after clipping the gradient norm is the clip (torch divides by norm + 1e-6)
    assert steps[0.0] == pytest.approx(-math.copysign(clip, g0), rel=1e-6)
    assert steps[0.1] == pytest.approx(-g1, rel=1e-9)


def test_asgd_average_survives_checkpoint_and_resume(tmp_path):
    def fit(steps, run_dir=None, resume=False):
        model = Quadratic([5.0, 3.0])
        cfg = TrainConfig(steps=steps, batch_size=1, lr=0.3, optimizer="asgd",
                          checkpoint_every=3, quiet=True, plot=False)
        Trainer(model, quad_loss, data, cfg, run_dir=run_dir, resume=resume).fit()
        return model.w.detach().numpy()

    straight = fit(6)
    fit(3, tmp_path / "run")
    resumed = fit(6, tmp_path / "run", resume=True)
    np.testing.assert_allclose(resumed, straight, rtol=0, atol=1e-14)
    np.testing.assert_allclose(straight, np.mean(hand_iterates([5.0, 3.0], 0.3, 6), axis=0),
                               atol=1e-12)


def test_pose_optimizer_builds_averaged_sgd_for_asgd():
    from wibergian.experiments.pose.train import make_optimizer
    from wibergian.train.averaging import AveragedSGD

    cfg = TrainConfig(steps=1, lr=0.1, optimizer="asgd")
    opt = make_optimizer(Quadratic([1.0, 2.0]), cfg, factors={"w": 0.5})
    assert isinstance(opt, AveragedSGD) and opt.param_groups[0]["lr"] == pytest.approx(0.05)
