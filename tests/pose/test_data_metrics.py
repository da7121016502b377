"""P1, P2, P3 against hand-computed cases."""

import math

import pytest
import torch

from wibergian.experiments.pose import metrics as M
from wibergian.experiments.pose import skeleton as sk


def _poses(n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 300 * torch.randn(n, 17, 3, generator=gen, dtype=torch.float64)


def _rotation(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
                     dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def test_p1_known_offset_on_one_joint():
    gt = _poses()
    pred = gt.clone()
    pred[:, 5] += torch.tensor([30.0, 40.0, 0.0], dtype=torch.float64)  # 50 mm on one joint
    assert torch.allclose(M.p1(pred, gt), torch.full((5,), 50.0 / 17, dtype=torch.float64))
    # a global translation is removed by root centring
    assert torch.allclose(M.p1(gt + 123.0, gt), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # moving the root by d moves every other joint by d relative to it: P1 = 16 d / 17
    pred = gt.clone()
    pred[:, 0, 2] += 17.0
    assert torch.allclose(M.p1(pred, gt), torch.full((5,), 16.0, dtype=torch.float64))


def test_p2_p3_invariant_to_similarity():
    gt = _poses()
    R = _rotation([1.0, 2.0, -0.5], 1.1)
    pred = 1.7 * gt @ R.T + torch.tensor([100.0, -50.0, 900.0], dtype=torch.float64)
    assert torch.allclose(M.p2(pred, gt), torch.zeros(5, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(M.p3(pred, gt), torch.zeros(5, dtype=torch.float64), atol=1e-9)
    assert (M.p1(pred, gt) > 10).all()


def test_p2_does_not_allow_reflection():
    gt = _poses(3)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert (M.p2(mirrored, gt) > 1.0).all()


def test_p2_hand_case_two_points():
    # points +-a on x for gt; pred = +-b on y: similarity aligns exactly (rotate + scale)
    gt = torch.zeros(1, 17, 3, dtype=torch.float64)
    pred = torch.zeros(1, 17, 3, dtype=torch.float64)
    gt[0, 1, 0], gt[0, 2, 0] = 100.0, -100.0
    pred[0, 1, 1], pred[0, 2, 1] = 30.0, -30.0
    assert M.p2(pred, gt).item() == pytest.approx(0.0, abs=1e-9)
    # without the scale, the rotated points stay 30 mm from the centre: 70 mm from gt
    aligned = M.procrustes_align(pred, gt, scale=False)
    assert (aligned[0, 1] - gt[0, 1]).norm().item() == pytest.approx(70.0, abs=1e-9)


def test_p3_ignores_dropped_joints_and_p2_does_not():
    gt = _poses(4, seed=1)
    pred = gt.clone()
    pred[:, list(sk.P3_DROPPED)] += 500.0
    assert torch.allclose(M.p3(pred, gt), torch.zeros(4, dtype=torch.float64), atol=1e-9)
    assert (M.p2(pred, gt) > 1.0).all()


def test_evaluate_per_action():
    gt = _poses(4)
    pred = gt.clone()
    pred[0, 3] += torch.tensor([0.0, 0.0, 34.0], dtype=torch.float64)  # frame 0: P1 = 2
    res = M.evaluate(pred, gt, actions=["Walk", "Sit", "Sit", "Sit"])
    assert res["P1"] == pytest.approx(0.5)
    assert res["per_action"]["Walk"]["P1"] == pytest.approx(2.0)
    assert res["per_action"]["Sit"]["frames"] == 3
    assert res["action_mean"]["P1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="action labels"):
        M.evaluate(pred, gt, actions=["a"])
