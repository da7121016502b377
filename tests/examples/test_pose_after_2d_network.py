"""The lifting-after-a-2D-network example: its exact input gradient is the true derivative and
the damped one differs from it by an amount that shrinks with λ (generated detections)."""

from __future__ import annotations

import torch

from wibergian.experiments.pose import datasets
from wibergian.experiments.pose.model import ModelConfig
from wibergian.experiments.pose.train import arrays, build_model


def test_damped_input_gradient_converges_to_exact_one(example):
    torch.set_default_dtype(torch.float32)
    mod = example("pose_after_2d_network")
    data = datasets.load_default()
    model = build_model(data, ModelConfig(mode="multi", loss="huber", grid=8), 2, 4)
    a = arrays(data.test().subset(torch.arange(4)))
    dd, fd = mod.finite_difference_check(model, a, eps=1e-3)
    assert abs(dd - fd) <= 1e-4 * abs(fd) + 1e-9, (dd, fd)
    table = mod.gradient_table(model, a, dampings=(0.1, 0.01, 0.001))
    rels = [table[lam][0] for lam in (0.1, 0.01, 0.001)]
    assert rels[0] > 1e-3  # λ = 0.1 is a different (damped) gradient
    assert rels[0] > rels[1] > rels[2]  # and approaches the exact one as λ -> 0
    assert rels[2] < 0.01
