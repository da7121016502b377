"""The 17-joint Human3.6M skeleton and conversions from the layouts found in the wild.

Joint order (the order used by 3d-pose-baseline and Tome et al.)::

    0 Hip        1 RHip       2 RKnee      3 RFoot      4 LHip       5 LKnee
    6 LFoot      7 Spine      8 Thorax     9 Neck/Nose 10 Head      11 LShoulder
   12 LElbow    13 LWrist    14 RShoulder 15 RElbow    16 RWrist

"Foot" is the ankle and "Head" the top of the head, as in Human3.6M.

Conversions

- :data:`H36M32_TO_17`: the raw 32-joint ``3D_positions`` layout keeps 17 joints that move
  (indices 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27).
- :data:`SH16_TO_17`: the 16-joint Stacked Hourglass detections released with
  3d-pose-baseline have no Neck/Nose; :func:`from_stacked_hourglass` fills it (at the origin,
  as the paper's supplementary sec. 4 does for its "fake" joint) and marks it not visible.
- :data:`P3_JOINTS`: Protocol 3 uses 14 joints, dropping Hip (0), Spine (7) and Neck/Nose (9),
  the same three that 3d-pose-baseline's 14-joint mode removes: Hip is the root (always zero
  after centring), Spine and Neck/Nose are interpolated, not anatomical, landmarks.
"""

from __future__ import annotations

from typing import Literal

import torch

NUM_JOINTS = 17

JOINT_NAMES: tuple[str, ...] = (
    "Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax",
    "Neck/Nose", "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist",
)

ROOT = 0

#: parent of each joint (-1 for the root); a tree rooted at Hip.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

#: (parent, child) pairs, 16 bones.
BONES: tuple[tuple[int, int], ...] = tuple(
    (p, j) for j, p in enumerate(PARENTS) if p >= 0
)

LEFT_JOINTS: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT_JOINTS: tuple[int, ...] = (1, 2, 3, 14, 15, 16)


def _flip_perm() -> tuple[int, ...]:
    perm = list(range(NUM_JOINTS))
    for left, right in zip(LEFT_JOINTS, RIGHT_JOINTS, strict=True):
        perm[left], perm[right] = right, left
    return tuple(perm)


#: ``poses[..., FLIP_PERM, :]`` swaps every left joint with its right counterpart.
FLIP_PERM: tuple[int, ...] = _flip_perm()

#: Protocol-3 subset (14 joints) and the 3 joints it drops.
P3_DROPPED: tuple[int, ...] = (0, 7, 9)
P3_JOINTS: tuple[int, ...] = tuple(j for j in range(NUM_JOINTS) if j not in P3_DROPPED)

#: index into the raw 32-joint Human3.6M layout for each of the 17 joints.
H36M32_TO_17: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

#: joint names of the 16-joint Stacked Hourglass layout of the 3d-pose-baseline release.
SH16_NAMES: tuple[str, ...] = (
    "RFoot", "RKnee", "RHip", "LHip", "LKnee", "LFoot", "Hip", "Spine", "Thorax", "Head",
    "RWrist", "RElbow", "RShoulder", "LShoulder", "LElbow", "LWrist",
)

#: index into the 16-joint layout for each of the 17 joints; -1 where it has no such joint.
SH16_TO_17: tuple[int, ...] = tuple(
    SH16_NAMES.index(n) if n in SH16_NAMES else -1 for n in JOINT_NAMES
)

#: the joint the Stacked Hourglass layout lacks (Neck/Nose).
SH16_MISSING: tuple[int, ...] = tuple(j for j, s in enumerate(SH16_TO_17) if s < 0)


def _as_tensor(x: torch.Tensor | object) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def from_h36m32(poses: torch.Tensor) -> torch.Tensor:
    """Select the 17 moving joints from the raw 32-joint layout.

    Args:
        poses: (..., 32, D) or (..., 32*D) with D = 2 or 3 (flattened as x0, y0, z0, x1, ...).

    Returns:
        (..., 17, D).
    """
    poses = _as_tensor(poses)
    if poses.shape[-1] in (64, 96) and (poses.dim() == 1 or poses.shape[-2] != 32):
        poses = poses.reshape(*poses.shape[:-1], 32, poses.shape[-1] // 32)
    if poses.dim() < 2 or poses.shape[-2] != 32:
        raise ValueError(f"expected (..., 32, D) or (..., 32*D) poses, got {tuple(poses.shape)}")
    return poses[..., list(H36M32_TO_17), :]


def from_stacked_hourglass(
    poses: torch.Tensor, fill: Literal["origin", "midpoint"] = "origin"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder 16-joint Stacked Hourglass detections to the 17-joint layout.

    The missing Neck/Nose joint is set to the origin (``fill="origin"``, the paper's choice) or
    to the midpoint of Thorax and Head (``fill="midpoint"``), and is marked not visible.

    Args:
        poses: (..., 16, D) or (..., 16*D).

    Returns:
        ``(poses17 (..., 17, D), visible (..., 17) bool)``.
    """
    poses = _as_tensor(poses)
    if poses.shape[-1] in (32, 48) and (poses.dim() == 1 or poses.shape[-2] != 16):
        poses = poses.reshape(*poses.shape[:-1], 16, poses.shape[-1] // 16)
    if poses.dim() < 2 or poses.shape[-2] != 16:
        raise ValueError(f"expected (..., 16, D) or (..., 16*D) poses, got {tuple(poses.shape)}")
    idx = torch.tensor([max(s, 0) for s in SH16_TO_17])
    out = poses[..., idx, :].clone()
    visible = torch.ones(out.shape[:-1], dtype=torch.bool)
    for j in SH16_MISSING:
        if fill == "origin":
            out[..., j, :] = 0.0
        elif fill == "midpoint":
            out[..., j, :] = 0.5 * (out[..., 8, :] + out[..., 10, :])
        else:
            raise ValueError(f"fill must be 'origin' or 'midpoint', got {fill!r}")
        visible[..., j] = False
    return out, visible


def flip_left_right(poses: torch.Tensor) -> torch.Tensor:
    """Swap left and right joint labels: (..., 17, D) -> (..., 17, D) (no mirroring)."""
    return poses[..., list(FLIP_PERM), :]


def bone_lengths(poses: torch.Tensor) -> torch.Tensor:
    """Euclidean length of each bone in :data:`BONES`: (..., 17, D) -> (..., 16)."""
    parents = torch.tensor([p for p, _ in BONES])
    children = torch.tensor([c for _, c in BONES])
    return (poses[..., children, :] - poses[..., parents, :]).norm(dim=-1)
