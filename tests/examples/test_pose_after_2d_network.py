"""The lifting-after-a-2D-network example: its exact input gradient is the true derivative and
the damped one differs from it by an amount that shrinks with λ (generated detections)."""

from __future__ import annotations

import torch

from wibergian.experiments.pose import datasets
from wibergian.experiments.pose.model import ModelConfig
from wibergian.experiments.pose.train import arrays, build_model


def test_damped_input_gradient_converges_to_exact_one(example):
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


def test_help_and_quick_flag(example, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        example("pose_after_2d_network").main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--mode" in out


def test_error_floors_order(example):
    """Exact 2D input gives a lower error than noisy detections (generated data)."""
    res = example("pose_error_floors").floors("multi", 2, 4, 8, frames=8)
    for row in res.values():
        assert row["exact 2D"] < row["detections"]
