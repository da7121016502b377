"""Skeleton tables and layout conversions."""

import torch

from wibergian.experiments.pose import skeleton as sk


def test_tables_consistent():
    assert len(sk.JOINT_NAMES) == len(sk.PARENTS) == sk.NUM_JOINTS == 17
    assert len(sk.BONES) == 16
    # a tree: every parent precedes its child
    assert all(p < j for j, p in enumerate(sk.PARENTS) if p >= 0)
    # the flip is an involution swapping names L<->R
    for j, f in enumerate(sk.FLIP_PERM):
        assert sk.FLIP_PERM[f] == j
        name, other = sk.JOINT_NAMES[j], sk.JOINT_NAMES[f]
        if name[0] in "LR" and name[1].isupper():
            assert other == ("R" if name[0] == "L" else "L") + name[1:]
        else:
            assert other == name
    assert len(sk.P3_JOINTS) == 14
    assert [sk.JOINT_NAMES[j] for j in sk.P3_DROPPED] == ["Hip", "Spine", "Neck/Nose"]


def test_from_h36m32_selects_named_joints():
    raw = torch.arange(32 * 3, dtype=torch.float64).reshape(32, 3)
    out = sk.from_h36m32(raw.reshape(1, 96))
    assert out.shape == (1, 17, 3)
    # raw joint 25 is RShoulder (index 14), 19 is LWrist (13)
    assert torch.equal(out[0, 14], raw[25])
    assert torch.equal(out[0, 13], raw[19])


def test_from_stacked_hourglass_fills_missing_neck():
    sh = torch.randn(5, 16, 2, dtype=torch.float64)
    out, vis = sk.from_stacked_hourglass(sh)
    assert out.shape == (5, 17, 2) and vis.shape == (5, 17)
    assert vis[:, 9].logical_not().all() and vis[:, [0, 1, 8, 10, 16]].all()
    assert torch.equal(out[:, 9], torch.zeros(5, 2, dtype=torch.float64))
    for j, name in enumerate(sk.JOINT_NAMES):
        if name in sk.SH16_NAMES:
            assert torch.equal(out[:, j], sh[:, sk.SH16_NAMES.index(name)])
    mid, _ = sk.from_stacked_hourglass(sh, fill="midpoint")
    assert torch.allclose(mid[:, 9], 0.5 * (out[:, 8] + out[:, 10]))
