"""The second motion source (real CMU angles through a generated body), the mirrored PPCA prior,
the validation re-split used to choose settings, and the study's per-variant prior."""

from __future__ import annotations

import pytest
import torch

from wibergian.experiments.pose import datasets, plausibility
from wibergian.experiments.pose import skeleton as sk
from wibergian.experiments.pose.augment import validation_data
from wibergian.experiments.pose.datasets import DEFAULT_CLIP_DIR
from wibergian.experiments.pose.mocap import load_asf_amc
from wibergian.experiments.pose.retarget import OTHER_BODY, load_other_body
from wibergian.experiments.pose.study import StudySettings, run_variant
from wibergian.experiments.pose.train import mirrored, source_poses

ASF, AMC = DEFAULT_CLIP_DIR / "playground.asf", DEFAULT_CLIP_DIR / "playground.amc"


@pytest.fixture(scope="module")
def clips():
    return load_asf_amc(ASF, AMC, step=25), load_other_body(ASF, AMC, step=25)


def test_unit_factors_without_mirror_reproduce_the_recorded_clip(clips):
    same = load_other_body(ASF, AMC, step=25, factors={}, leg_factor=1.0, mirror=False)
    torch.testing.assert_close(torch.from_numpy(same.poses), torch.from_numpy(clips[0].poses))


def test_other_body_has_the_stated_bone_lengths_and_handedness(clips):
    cmu, other = (torch.from_numpy(c.poses) for c in clips)
    # the motion is mirrored, so the generated body's right side is the recorded left side
    ratio = sk.bone_lengths(sk.flip_left_right(other)) / sk.bone_lengths(cmu)
    # H36M bones made of exactly one ASF bone (Hip -> Spine: two bones scaled alike) have
    # the stated factor in every frame
    expected = {(1, 2): "femur", (2, 3): "tibia", (4, 5): "femur", (5, 6): "tibia",
                (0, 1): "hipjoint", (0, 4): "hipjoint", (11, 12): "humerus",
                (12, 13): "radius", (14, 15): "humerus", (15, 16): "radius",
                (0, 7): "lowerback"}
    bones = list(sk.BONES)
    for (a, b), stem in expected.items():
        col = ratio[:, bones.index((a, b))]
        torch.testing.assert_close(col, torch.full_like(col, OTHER_BODY[stem]))
    # a correctly handed, z-up person with its feet on the floor, a different one
    assert float((plausibility.handedness_votes(other) > 0).double().mean()) > 0.95
    assert abs(float(other[..., 2].min() - cmu[..., 2].min())) < 30.0
    assert not torch.allclose(other, sk.flip_left_right(cmu * torch.tensor([-1.0, 1, 1])))


def test_other_body_rejects_implausible_factors():
    with pytest.raises(ValueError, match="factors"):
        load_other_body(ASF, AMC, step=25, factors={"femur": -1.0})


def test_mirrored_prior_adds_mirror_images():
    data = datasets.load_default(step=25)
    train = data.poses3d[data.train_idx]
    both = source_poses(data, "train_mirror")
    assert both.shape[0] == 2 * train.shape[0]
    torch.testing.assert_close(both[: train.shape[0]], train)
    torch.testing.assert_close(mirrored(mirrored(train)), train)
    # a mirror image keeps every bone length with sides swapped, and its handedness
    torch.testing.assert_close(sk.bone_lengths(mirrored(train)),
                               sk.bone_lengths(sk.flip_left_right(train)))
    assert float((plausibility.handedness_votes(mirrored(train)) > 0).double().mean()) > 0.95
    with pytest.raises(ValueError, match="source"):
        source_poses(data, "everything")


def test_validation_data_uses_training_frames_only():
    data = datasets.load_default(step=25)
    val = validation_data(data, 0.2, gap=2)
    tr = data.poses3d[data.train_idx]
    n = tr.shape[0]
    assert val.num_frames == n and set(val.train_idx.tolist()).isdisjoint(val.test_idx.tolist())
    torch.testing.assert_close(val.poses3d, tr)  # no held-out frame enters
    assert int(val.test_idx[0]) == n - round(0.2 * n)
    assert int(val.train_idx[-1]) == n - round(0.2 * n) - 3


def test_wide_variant_builds_its_own_prior():
    data = datasets.load_default(step=25)
    s = StudySettings(num_models=2, num_basis=4, rotation_grid=8, grid_frames=8)
    wide = run_variant("untrained_huber_wide", data, "multi", s, 0, None)
    base = run_variant("untrained_huber", data, "multi", s, 0, None)
    assert (wide["models"], wide["basis"], wide["prior"]) == (1, 16, "train")
    assert (base["models"], base["basis"], base["prior"]) == (2, 4, "half")
    assert wide["P1"] != base["P1"]


def test_hybrid_model_is_the_k_models_plus_the_wide_one():
    from wibergian.experiments.pose.model import ModelConfig, PoseModel
    from wibergian.experiments.pose.ppca import fit_mixture
    from wibergian.experiments.pose.train import arrays, build_hybrid_model, build_model

    data = datasets.load_default(step=25)
    cfg = ModelConfig(mode="multi", loss="huber", grid=8)
    hyb = build_hybrid_model(data, cfg, 2, 4, wide_basis=6)
    assert (hyb.num_models, hyb.num_basis) == (3, 6)
    assert float(hyb.basis.detach()[:2, 4:].abs().max()) == 0.0  # padded with zero vectors
    plain = build_model(data, cfg, 2, 4)
    _, scale = fit_mixture(source_poses(data, "half"), 2, 4)
    wide_mix, _ = fit_mixture(source_poses(data, "train"), 1, 6, scale=scale)
    wide = PoseModel(wide_mix, scale, data.num_cameras, cfg)
    a = arrays(data.test().subset(torch.arange(6)))
    with torch.no_grad():
        hyb.fusion_bias[2] = -300.0  # the wide model out of the fusion: the K models alone
        torch.testing.assert_close(hyb(a.points, a.visible, a.cams).pose,
                                   plain(a.points, a.visible, a.cams).pose)
        hyb.fusion_bias[:] = torch.tensor([-300.0, -300.0, 0.0])  # only the wide model
        torch.testing.assert_close(hyb(a.points, a.visible, a.cams).pose,
                                   wide(a.points, a.visible, a.cams).pose)
