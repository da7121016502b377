"""Issue 17 / 13 guards: the bounded monocular scale, plausibility checks of user poses
(units, up axis, handedness, skeleton convention), out-of-image joints, and a corpus of
malformed files whose errors must name the file and what is wrong."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from wibergian.data import data_path
from wibergian.experiments.pose import datasets, lifting, mocap, plausibility
from wibergian.experiments.pose import detector as D
from wibergian.experiments.pose.model import ModelConfig, camera_tensors
from wibergian.experiments.pose.train import arrays, build_model

CLIP = data_path("cmu-mocap-sample")


@pytest.fixture(scope="module")
def default():
    return datasets.load_default()


@pytest.fixture(scope="module")
def poses(default):
    return default.poses3d[::5].clone()  # 111 frames, mm, z up


# ------------------------------------------------------------------ bounded monocular scale
def test_bounded_scale_stays_in_range_and_is_identity_inside():
    s = torch.tensor([-1e30, -1e6, -1.0, 0.0, 1e-4, 0.3, 0.6, 1.0, 2.0, 2.3, 3.0, 1e6, 1e30],
                     dtype=torch.float64, requires_grad=True)
    b = lifting.bounded_scale(s)
    lo, hi = lifting.SCALE_MIN, lifting.SCALE_MAX
    assert bool(((b >= lo - 1e-12) & (b <= hi)).all()), b
    inside = (s.detach() >= 0.6) & (s.detach() <= 2.3)
    assert float((b - s).detach()[inside].abs().max()) < 1e-3
    (g,) = torch.autograd.grad(b.sum(), s)
    assert bool(torch.isfinite(g).all()) and bool((g >= 0).all())


def test_monocular_reconstruction_bounded_on_hostile_inputs(default):
    """Garbage 2D input and a nearly flat prior drive the raw scale out of range (even
    negative); the reconstruction must still use a scale in range and stay within metres."""
    torch.manual_seed(0)
    model = build_model(default, ModelConfig(mode="mono", loss="l2", grid=8), 2, 4)
    with torch.no_grad():
        model.log_sigma.fill_(-12.0)  # nearly no prior: b unconstrained
        model.log_joint_w.normal_(0.0, 2.0)
    a = arrays(default.test().subset(torch.arange(24)))
    g = torch.Generator().manual_seed(1)
    pts = a.points + torch.randn(a.points.shape, generator=g, dtype=a.points.dtype) * 300.0
    pts[:6] = pts[:6, :, :1] + torch.randn((6, 4, 17, 2), generator=g, dtype=pts.dtype)  # ~a dot
    res = model(pts, a.visible, a.cams)
    raw = res.z[..., 2]
    assert bool(((raw < lifting.SCALE_MIN) | (raw > lifting.SCALE_MAX)).any()), \
        "hostile input did not push the raw scale out of range: the test is not hostile"
    assert res.scale is not None
    assert bool((res.scale >= lifting.SCALE_MIN - 1e-9).all())
    assert bool((res.scale <= lifting.SCALE_MAX).all())
    assert bool(torch.isfinite(res.pose).all())
    worst = float(res.pose.detach().norm(dim=-1).max())  # metres from the root
    # what the unbounded scale (coef = b / s) would have given: kilometres
    raw_s = res.z[..., 2].detach()
    coef = res.z[..., 3:].detach() / raw_s[..., None]
    p = model.mean.detach() + torch.einsum("fkb,kbjd->fkjd", coef, model.basis.detach())
    unbounded = float((p - p[..., :1, :]).norm(dim=-1).max())
    assert unbounded > 1000.0 and worst < 50.0, (unbounded, worst)


# ------------------------------------------------------------------ plausibility of user poses
def _save(tmp_path, arr, name="user.npy"):
    path = tmp_path / name
    np.save(path, np.asarray(arr, dtype=np.float32))
    return path


def test_original_poses_pass_and_report_bones(tmp_path, poses):
    d = datasets.load_npy(_save(tmp_path, poses.numpy()))
    assert d.skeleton is not None
    ref = torch.tensor(plausibility.REFERENCE_BONES_MM)
    got = torch.tensor(d.skeleton["bone_median_mm"])
    assert float((got / ref - 1).abs().max()) < 0.05
    assert d.skeleton["handedness_vote"] > 0.9 and d.skeleton["up_angle_deg"] < 30


def test_reference_bones_are_the_built_in_skeleton(default):
    got = plausibility.bone_medians(default.poses3d)
    ref = torch.tensor(plausibility.REFERENCE_BONES_MM, dtype=torch.float64)
    assert float((got - ref).abs().max()) < 0.2


@pytest.mark.parametrize(("scale", "unit"), [(0.1, "cm"), (0.001, "m")])
def test_centimetres_and_metres_are_refused_with_the_unit_to_pass(tmp_path, poses, scale, unit):
    path = _save(tmp_path, poses.numpy() * scale)
    with pytest.raises(plausibility.ImplausiblePosesError) as info:
        datasets.load_npy(path)
    msg = str(info.value)
    assert "user.npy" in msg and "median bone length" in msg and f"--units {unit}" in msg
    d = datasets.load_npy(path, units=unit, place=False)
    torch.testing.assert_close(d.poses3d, poses.double(), atol=0.05, rtol=0)


def test_y_up_is_detected_and_converted(tmp_path, poses):
    p = poses.numpy()
    yup = np.stack([p[..., 0], p[..., 2], -p[..., 1]], -1)  # z-up -> y-up
    path = _save(tmp_path, yup)
    with pytest.raises(plausibility.ImplausiblePosesError, match=r"user\.npy.*--up y"):
        datasets.load_npy(path)
    d = datasets.load_npy(path, up="y", place=False)
    torch.testing.assert_close(d.poses3d, poses.double(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("how", ["mirrored", "labels"])
def test_mirrored_or_swapped_inputs_are_detected(tmp_path, poses, how):
    p = poses.numpy().copy()
    if how == "mirrored":
        p[..., 0] *= -1.0  # reflected capture, labels kept
    else:
        p = p[:, list(plausibility.sk.FLIP_PERM)]  # left/right labels swapped
    path = _save(tmp_path, p)
    with pytest.raises(plausibility.ImplausiblePosesError, match=r"user\.npy.*swapped or mirrored"):
        datasets.load_npy(path)
    d = datasets.load_npy(path, mirror=True)
    assert d.skeleton["handedness_vote"] > 0.9


def test_skeleton_mismatch_refused_or_warned(tmp_path, poses):
    p = poses.numpy().copy()
    # the convention: Spine 78 mm above Hip instead of ~230
    p[:, 7] = p[:, 0] + (p[:, 7] - p[:, 0]) * (78.0 / 231.0)
    path = _save(tmp_path, p)
    with pytest.raises(plausibility.ImplausiblePosesError) as info:
        datasets.load_npy(path)
    msg = str(info.value)
    assert "user.npy" in msg and "Hip->Spine" in msg and "--allow-skeleton-mismatch" in msg
    assert "Spine = mid-back" in msg  # says how to map joints
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datasets.load_npy(path, allow_skeleton_mismatch=True)
    assert any("Hip->Spine" in str(w.message) for w in caught)


# ------------------------------------------------------------------ simulated detector
def test_out_of_image_joints_are_missing(poses):
    cams = datasets.load_cameras_json(datasets.DEFAULT_CAMERAS_JSON, "S1")["S1"]
    placed = datasets.place_in_volume(poses.double(), cams)
    far = placed + torch.tensor([2500.0, 0.0, 0.0], dtype=torch.float64)  # partly out of view
    clean, det, vis = datasets._detect(far, cams, D.DetectorConfig(missing_rate=0.0), False)
    out = ((clean < 0) | (clean > 1000)).any(-1)
    assert 0 < int(out.sum()) < out.numel()
    assert not bool(vis[out].any())
    assert bool((det[out] == 0).all())
    # inside joints stay visible (no random misses with missing_rate 0)
    assert bool(vis[~out].all())
    # same seed, same noise with and without the image bound
    plain = D.simulate_detections(clean, D.DetectorConfig(missing_rate=0.0))
    torch.testing.assert_close(plain.points[~out], det[~out])


def test_detector_seed_changes_the_detections(tmp_path, poses):
    path = _save(tmp_path, poses.numpy())
    a = datasets.load_npy(path, detector=D.DetectorConfig(seed=0))
    b = datasets.load_npy(path, detector=D.DetectorConfig(seed=1))
    assert not torch.equal(a.poses2d, b.poses2d)
    torch.testing.assert_close(a.poses2d_clean, b.poses2d_clean)


# ------------------------------------------------------------------ malformed-file corpus
def test_npz_archive_is_named(tmp_path, poses):
    path = tmp_path / "poses.npz"
    np.savez(path, a=poses.numpy())
    with pytest.raises(ValueError, match=r"poses\.npz: an \.npz archive.*numpy\.save"):
        datasets.load_npy(path)


def test_empty_npy_is_named(tmp_path):
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npy: empty file"):
        datasets.load_npy(path)


def test_truncated_npy_is_named(tmp_path, poses):
    path = tmp_path / "cut.npy"
    np.save(path, poses.numpy())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.npy: cannot read as \.npy"):
        datasets.load_npy(path)


def test_h5_string_dataset_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    from wibergian.experiments.pose import h36m

    path = tmp_path / "Walking.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("3D_positions", data=np.array([b"a", b"b"]))
    with pytest.raises(h36m.H36MFormatError, match=r"Walking\.h5: dataset '3D_positions' is "
                       r"not numeric"):
        h36m.read_positions3d(path)


def _asf(tmp_path, old: str, new: str, name: str = "bad.asf"):
    text = (CLIP / "playground.asf").read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(("old", "new", "words"), [
    ("order TX TY TZ RX RY RZ", "order TX TY TZ RX RY RQ",
     r"bad\.asf:13: unknown root channel 'rq'"),
    ("axis 0 0 20  XYZ", "axis 0 0 20  XYQ", r"bad\.asf:30: axis order 'XYQ' is not a permutation"),
    ("axis XYZ", "axis XYQ", r"bad\.asf:14: axis order 'XYQ'"),
])
def test_asf_malformed_fields_are_named(tmp_path, old, new, words):
    with pytest.raises(mocap.MocapFormatError, match=words):
        mocap.parse_asf(_asf(tmp_path, old, new))


def test_asf_negative_bone_length_is_named(tmp_path):
    text = (CLIP / "playground.asf").read_text()
    m = re.search(r"\n(\s*length\s+)([0-9.]+)", text.split(":bonedata", 1)[1])
    assert m is not None
    path = tmp_path / "bad.asf"
    head, bones = text.split(":bonedata", 1)
    path.write_text(head + ":bonedata" + bones.replace(m.group(0),
                                                       f"\n{m.group(1)}-{m.group(2)}", 1))
    with pytest.raises(mocap.MocapFormatError, match=r"bad\.asf:\d+: negative bone length"):
        mocap.parse_asf(path)


def test_asf_unit_error_100x_is_named(tmp_path):
    path = _asf(tmp_path, "length 0.45", "length 0.0045", "giant.asf")
    with pytest.raises(mocap.MocapFormatError, match=r"giant\.asf: rest-pose height 1\d\d m.*"
                       r"length unit looks wrong by a factor of about 9\d"):
        mocap.load_asf_amc(path, CLIP / "playground.amc", step=50)


def test_camera_h5_string_dataset_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "cameras.h5"
    with h5py.File(path, "w") as hf:
        g = hf.create_group("subject1/camera1")
        g.create_dataset("R", data=np.array([b"x"] * 9))
    with pytest.raises(ValueError, match=r"cameras\.h5: subject1/camera1/R is not numeric"):
        datasets.load_cameras_h5(path, subjects=(1,), num_cameras=1)


def test_camera_tensors_unchanged(default):
    # out-of-image marking does not change the cameras the model sees
    cams = camera_tensors(default.camera_batch(torch.arange(2)))
    assert cams["rot"].shape == (2, 4, 3, 3)
