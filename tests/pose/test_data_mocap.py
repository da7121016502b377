"""ASF/AMC parsing, forward kinematics and the 17-joint mapping on the real CMU clip."""


import numpy as np
import pytest
import torch

from wibergian.data import data_path
from wibergian.experiments.pose import mocap, skeleton

CLIP = data_path("cmu-mocap-sample")
pytestmark = pytest.mark.skipif(not (CLIP / "playground.asf").exists(), reason="no CMU clip")


@pytest.fixture(scope="module")
def parsed():
    skel = mocap.parse_asf(CLIP / "playground.asf")
    motion = mocap.parse_amc(CLIP / "playground.amc", skel)
    return skel, motion


def test_real_clip_counts_and_units(parsed):
    skel, motion = parsed
    assert len(skel.bones) == 30
    assert skel.length_unit == pytest.approx(0.45)
    assert skel.mm_per_unit == pytest.approx(25.4 / 0.45)
    assert motion.num_frames == 2751  # 22.9 s at 120 fps
    assert motion.values["ltibia"].shape == (2751, 1)
    h = mocap.rest_height_mm(skel)
    assert 1500.0 < h < 1900.0, h


def test_fk_preserves_bone_lengths_and_z_up(parsed):
    skel, motion = parsed
    pos = mocap.forward_kinematics(skel, motion)
    for name in ("lfemur", "rtibia", "lhumerus", "rradius"):
        b = skel.bones[name]
        seg = np.linalg.norm(pos[name] - pos[b.parent], axis=-1)
        np.testing.assert_allclose(seg, b.length * skel.mm_per_unit, rtol=1e-9)
    # head above the hips above the ankles on (almost) every frame: z is up
    poses = mocap.to_h36m17(pos)
    assert (poses[:, 10, 2] > poses[:, 0, 2]).mean() > 0.99
    assert (poses[:, 0, 2] > poses[:, [3, 6], 2].max(-1)).mean() > 0.95


def test_rest_pose_matches_asf_directions(parsed):
    skel, _ = parsed
    rest = mocap.rest_pose(skel)
    d = rest["lfemur"][0] - rest["lhipjoint"][0]
    expected = skel.bones["lfemur"].direction @ mocap.Y_UP_TO_Z_UP.T
    np.testing.assert_allclose(d / np.linalg.norm(d), expected, atol=1e-12)


def test_clip_subsampling_and_mapping():
    clip = mocap.load_asf_amc(CLIP / "playground.asf", CLIP / "playground.amc", step=5)
    assert clip.poses.shape == (551, 17, 3) and clip.fps == 24.0
    bl = skeleton.bone_lengths(torch.from_numpy(clip.poses))
    femur = bl[:, [c for _, c in skeleton.BONES].index(2)]  # RHip -> RKnee
    assert torch.allclose(femur, femur[0].expand_as(femur))
    assert 350 < float(femur[0]) < 500


def test_euler_order():
    a = {"x": np.array(0.3), "z": np.array(-0.7)}
    m = mocap.euler_matrix(a, "XYZ")
    expect = mocap._axis_rotation("z", np.array(-0.7)) @ mocap._axis_rotation("x", np.array(0.3))
    np.testing.assert_allclose(m, expect, atol=1e-15)


ASF_OK = """:version 1.10
:units
  length 0.45
  angle deg
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name a
     direction 0 1 0
     length 2
     axis 0 0 0 XYZ
    dof rx rz
    limits (-10 10)
           (-10 10)
  end
:hierarchy
  begin
    root a
  end
"""


def test_tiny_asf_amc_fk(tmp_path):
    asf = tmp_path / "t.asf"
    asf.write_text(ASF_OK)
    amc = tmp_path / "t.amc"
    amc.write_text(":FULLY-SPECIFIED\n:DEGREES\n1\nroot 1 2 3 0 0 0\na 0 90\n"
                   "2\nroot 0 0 0 0 0 0\na 90 0\n")
    skel = mocap.parse_asf(asf)
    mot = mocap.parse_amc(amc, skel)
    pos = mocap.forward_kinematics(skel, mot)
    u = 25.4 / 0.45
    # frame 1: root at (1,2,3) units (y up), bone rotated 90 deg about z: +y -> -x
    np.testing.assert_allclose(pos["root"][0], np.array([1, -3, 2]) * u, atol=1e-9)
    np.testing.assert_allclose(pos["a"][0], np.array([1 - 2, -3, 2]) * u, atol=1e-9)
    # frame 2: rotated 90 deg about x: +y -> +z (CMU), i.e. -y in z-up coordinates
    np.testing.assert_allclose(pos["a"][1], np.array([0, -2, 0]) * u, atol=1e-9)


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("     length 2\n", "     length two\n", 15, "not a number"),
        ("     direction 0 1 0\n", "     direction 0 1\n", 14, "expected 3"),
        ("    root a\n", "    root b\n", 23, "unknown bone"),
        ("  end\n:hierarchy", ":hierarchy", 20, "unfinished bone"),
    ],
)
def test_malformed_asf_names_line(tmp_path, old, new, line, words):
    assert old in ASF_OK
    asf = tmp_path / "bad.asf"
    asf.write_text(ASF_OK.replace(old, new, 1))
    with pytest.raises(mocap.MocapFormatError) as info:
        mocap.parse_asf(asf)
    msg = str(info.value)
    assert f"bad.asf:{line}" in msg and words in msg, msg


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1\nroot 0 0 0 0 0 0\na 1\n", 3, "needs 2 values"),
        ("1\nroot 0 0 0 0 0 0\na 1 x\n", 3, "not a number"),
        ("1\nroot 0 0 0 0 0 0\na 1 2\n3\nroot 0 0 0 0 0 0\na 1 2\n", 4, "expected +1"),
        ("1\nroot 0 0 0 0 0 0\n2\nroot 0 0 0 0 0 0\na 1 2\n", 1, "lacks bone"),
        ("1\nroot 0 0 0 0 0 0\nb 1 2\n", 3, "unknown bone"),
    ],
)
def test_malformed_amc_names_line(tmp_path, text, line, words):
    asf = tmp_path / "t.asf"
    asf.write_text(ASF_OK)
    amc = tmp_path / "bad.amc"
    amc.write_text(":FULLY-SPECIFIED\n:DEGREES\n" + text)
    skel = mocap.parse_asf(asf)
    with pytest.raises(mocap.MocapFormatError) as info:
        mocap.parse_amc(amc, skel)
    msg = str(info.value)
    assert f"bad.amc:{line + 2}" in msg and words in msg, msg
