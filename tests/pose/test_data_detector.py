"""Simulated detector: its statistics match its configuration."""

import math

import pytest
import torch

from wibergian.experiments.pose import detector as D
from wibergian.experiments.pose import skeleton as sk


def _clean(n=4000, c=4):
    gen = torch.Generator().manual_seed(123)
    return 500 + 100 * torch.randn(n, c, 17, 2, generator=gen, dtype=torch.float64)


def test_gaussian_part_matches_configured_scale():
    cfg = D.DetectorConfig(noise_px=6.0, gross_rate=0, swap_rate=0, missing_rate=0, seed=3)
    clean = _clean()
    det = D.simulate_detections(clean, cfg)
    err = (det.points - clean).norm(dim=-1)  # (n, c, 17)
    measured = err.mean((0, 1))
    expected = D.expected_inlier_error(cfg)
    assert torch.allclose(measured, expected, rtol=0.03)
    # wrists are noisier than the hip, as configured
    assert measured[13] > 1.5 * measured[0]
    assert expected[0] == pytest.approx(6.0 * math.sqrt(math.pi / 2))


def test_swap_rate_and_swap_is_left_right_exchange():
    cfg = D.DetectorConfig(noise_px=0.0, gross_rate=0, swap_rate=0.1, missing_rate=0, seed=5)
    clean = _clean()
    det = D.simulate_detections(clean, cfg)
    assert det.swapped.double().mean().item() == pytest.approx(0.1, abs=0.01)
    arms = det.swapped[..., 0]
    left, right = [11, 12, 13], [14, 15, 16]
    assert torch.equal(det.points[arms][:, left], clean[arms][:, right])
    assert torch.equal(det.points[arms][:, right], clean[arms][:, left])
    assert torch.equal(det.points[~arms][:, left], clean[~arms][:, left])
    unaffected = [0, 7, 8, 9, 10]
    assert torch.equal(det.points[..., unaffected, :], clean[..., unaffected, :])


def test_gross_errors_land_on_other_joints():
    cfg = D.DetectorConfig(noise_px=0.0, gross_rate=0.05, swap_rate=0, missing_rate=0, seed=7)
    clean = _clean(2000)
    det = D.simulate_detections(clean, cfg)
    assert det.gross.double().mean().item() == pytest.approx(0.05, abs=0.005)
    moved = (det.points != clean).any(-1)
    assert torch.equal(moved, det.gross)  # clean points are distinct a.s.
    # every gross detection coincides with some other joint's true position
    n, c, j = torch.nonzero(det.gross)[:200].T
    d = (det.points[n, c, j][:, None] - clean[n, c]).norm(dim=-1)  # (m, 17)
    assert (d.min(-1).values == 0).all()
    assert (d[torch.arange(len(j)), j] > 0).all()


def test_missing_joints_masked_and_zero():
    cfg = D.DetectorConfig(missing_rate=0.2, seed=1)
    clean = _clean(1000)
    det = D.simulate_detections(clean, cfg)
    assert det.missing.double().mean().item() == pytest.approx(0.2, abs=0.01)
    assert torch.equal(det.visible, ~det.missing)
    assert (det.points[det.missing] == 0).all()


def test_seeded_and_validated():
    clean = _clean(50)
    a = D.simulate_detections(clean, D.DetectorConfig(seed=11))
    b = D.simulate_detections(clean, D.DetectorConfig(seed=11))
    c = D.simulate_detections(clean, D.DetectorConfig(seed=12))
    assert torch.equal(a.points, b.points) and not torch.equal(a.points, c.points)
    with pytest.raises(ValueError, match="swap_rate"):
        D.DetectorConfig(swap_rate=1.5)
    with pytest.raises(ValueError, match="joint_scale"):
        D.DetectorConfig(joint_scale=(1.0,) * 16)
    with pytest.raises(ValueError, match="17"):
        D.simulate_detections(torch.zeros(3, 16, 2))
    assert len(D.DEFAULT_JOINT_SCALE) == sk.NUM_JOINTS
