"""Default data (CMU clip through the real cameras) and user .npy poses."""


import numpy as np
import pytest
import torch

from wibergian.data import data_path
from wibergian.experiments.pose import cameras as C
from wibergian.experiments.pose import datasets
from wibergian.experiments.pose import detector as D

pytestmark = pytest.mark.skipif(
    not data_path("cmu-mocap-sample", "playground.asf").exists()
    or not data_path("h36m_cameras.json").exists(), reason="no bundled data")


@pytest.fixture(scope="module")
def default():
    return datasets.load_default()


def test_default_shapes_and_split(default):
    d = default
    assert d.poses3d.shape == (551, 17, 3) and d.poses2d.shape == (551, 4, 17, 2)
    assert d.visible.shape == (551, 4, 17) and d.generated and d.fps == 24.0
    assert d.train_idx.tolist() == list(range(386))
    assert d.test_idx[0].item() == 386 + 24 and d.test_idx[-1].item() == 550
    assert set(d.train_idx.tolist()).isdisjoint(d.test_idx.tolist())
    test = d.test()
    assert test.num_frames == 141 and torch.equal(test.poses3d, d.poses3d[d.test_idx])


def test_default_in_view_of_all_cameras(default):
    d = default
    assert torch.equal(C.in_view_fraction(d.poses3d, d.cameras, margin=10.0),
                       torch.ones(4, dtype=torch.float64))
    # the clean 2D is the projection through the stored cameras
    proj = d.camera_batch().project(d.poses3d.unsqueeze(1))
    assert torch.allclose(proj, d.poses2d_clean)
    # placed on the cameras' look-at point horizontally
    centre = C.look_at_point(d.cameras)
    assert torch.allclose(d.poses3d[:, 0, :2].mean(0), centre[:2])


def test_default_detection_error_like_stacked_hourglass(default):
    d = default
    err = (d.poses2d - d.poses2d_clean).norm(dim=-1)[d.visible]
    assert 10.0 < float(err.mean()) < 20.0
    assert float(d.visible.double().mean()) == pytest.approx(0.98, abs=0.005)


def test_load_npy_round_trip(tmp_path, default):
    poses = default.poses3d[:40].numpy().astype(np.float32)
    path = tmp_path / "poses.npy"
    np.save(path, poses)
    d = datasets.load_npy(path, detector=D.DetectorConfig(seed=4))
    assert d.num_frames == 40 and d.train_idx.numel() == 0 and d.test_idx.numel() == 40
    shift = d.poses3d - torch.from_numpy(poses).double()
    assert torch.allclose(shift, shift[0, 0].expand_as(shift), atol=1e-3)
    assert shift[0, 0, 2].abs() < 1e-6  # heights kept
    nomove = datasets.load_npy(path, place=False)
    assert torch.allclose(nomove.poses3d, torch.from_numpy(poses).double())


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((5, 16, 3)), "expected (T, 17, 3)"),
        (np.zeros((5, 17)), "expected (T, 17, 3)"),
        (np.array([["a"] * 3] * 17)[None].repeat(2, 0), "not numeric"),
        (np.zeros((0, 17, 3)), "no frames"),
        (np.full((2, 17, 3), np.nan), "NaN"),
        (np.random.default_rng(0).normal(size=(3, 17, 3)), "millimetres"),
    ],
)
def test_load_npy_validation(tmp_path, array, words):
    path = tmp_path / "user.npy"
    np.save(path, array)
    with pytest.raises(ValueError) as info:
        datasets.load_npy(path)
    assert "user.npy" in str(info.value) and words in str(info.value), str(info.value)


def test_load_npy_not_npy(tmp_path):
    path = tmp_path / "user.npy"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"user\.npy: cannot read"):
        datasets.load_npy(path)
