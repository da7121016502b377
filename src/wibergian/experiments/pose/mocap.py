"""CMU motion capture: forward kinematics of parsed ASF/AMC (see .asf), 17-joint mapping.

Units. The ASF ``:units`` section gives ``length L``: lengths and root translations are in
units of 1/L inch (CMU files use L = 0.45, so 1 unit = 2.222 in = 56.44 mm). We convert with
``mm = value * 25.4 / L``; the resulting body height of the bundled clip is about 1.6 m (see
docs/pose-data.md), which confirms the reading. Angles are degrees unless ``angle rad``.

Forward kinematics (Acclaim convention). Every bone has a direction ``d`` and ``axis`` angles
defining its local frame ``C`` in world coordinates, both at the rest pose. With ``M`` the
rotation built from the bone's AMC values (rx, ry, rz; missing dofs are zero) composed in the
axis order (for "XYZ": ``M = Rz @ Ry @ Rx``, each about a fixed axis),

    G_bone = G_parent @ C @ M @ C^-1,     G_root = C_root @ M_root @ C_root^-1,
    end_bone = start_bone + length * G_bone @ d,   start_bone = end_parent (root: root position).

The CMU world is y up (x = subject's left at rest, z = forward); we rotate it to z up with
``(x, y, z) -> (x, -z, y)`` (a proper rotation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import skeleton as sk
from .asf import (  # noqa: F401  (re-exported)
    MM_PER_INCH,
    AmcMotion,
    AsfBone,
    AsfSkeleton,
    MocapFormatError,
    parse_amc,
    parse_asf,
)

#: rotation taking the y-up CMU world to the z-up Human3.6M world.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about a coordinate axis: angle (...,) radians -> (..., 3, 3)."""
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    if axis == "x":
        m = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == "y":
        m = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        m = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return np.moveaxis(np.array(m, dtype=float), (0, 1), (-2, -1))


def euler_matrix(angles: dict[str, np.ndarray], order: str) -> np.ndarray:
    """Compose fixed-axis rotations: order "XYZ" applies X first, giving Rz @ Ry @ Rx.

    Args:
        angles: {"x"|"y"|"z": (...,) radians}; absent axes are zero.
    """
    shape = np.shape(next(iter(angles.values()))) if angles else ()
    out = np.broadcast_to(np.eye(3), (*shape, 3, 3)).copy()
    for ax in order.lower():
        if ax in angles:
            out = _axis_rotation(ax, np.asarray(angles[ax], dtype=float)) @ out
    return out


def forward_kinematics(skel: AsfSkeleton, motion: AmcMotion) -> dict[str, np.ndarray]:
    """World positions of the root and of every bone's end point, (T, 3) each, in mm, z up."""
    conv = math.pi / 180.0 if skel.angle_in_degrees else 1.0
    scale = skel.mm_per_unit
    T = motion.num_frames
    root_vals = motion.values["root"]
    trans = {"x": np.zeros(T), "y": np.zeros(T), "z": np.zeros(T)}
    rot: dict[str, np.ndarray] = {}
    for i, ch in enumerate(skel.root_order):
        if ch.startswith("t"):
            trans[ch[1]] = root_vals[:, i]
        else:
            rot[ch[1]] = root_vals[:, i] * conv
    c_root = euler_matrix({a: np.array(v * conv) for a, v in
                           zip("xyz", skel.root_orientation, strict=True)}, skel.root_axis_order)
    m_root = euler_matrix(rot, skel.root_axis_order) if rot else np.eye(3)
    glob = {"root": c_root @ m_root @ c_root.T}
    pos = {"root": skel.root_position + np.stack([trans["x"], trans["y"], trans["z"]], axis=-1)}
    for name in skel.order():
        b = skel.bones[name]
        c = euler_matrix({a: np.array(v * conv) for a, v in zip("xyz", b.axis, strict=True)},
                         b.axis_order)
        angles: dict[str, np.ndarray] = {}
        vals = motion.values.get(name)
        for i, dof in enumerate(b.dofs):
            if dof.startswith("r") and vals is not None:
                angles[dof[1]] = vals[:, i] * conv
        m = euler_matrix(angles, b.axis_order) if angles else np.eye(3)
        glob[name] = glob[b.parent] @ (c @ m @ c.T)
        pos[name] = pos[b.parent] + b.length * np.einsum("...ij,j->...i", glob[name], b.direction)
    return {n: scale * p @ Y_UP_TO_Z_UP.T for n, p in pos.items()}


#: ASF bone whose END point gives each of the 17 joints ("root" = the root position).
#: Hip = CMU root (pelvis centre, 135 mm from each hip joint, close to Human3.6M's 133 mm);
#: Spine = end of upperback; Thorax = end of lowerneck (base of the neck, just above the
#: shoulders); Neck/Nose = end of upperneck; Head = end of head (top of the head);
#: shoulders = clavicle ends; elbows = humerus ends; wrists = radius ends.
CMU_TO_H36M17: tuple[str, ...] = (
    "root", "rhipjoint", "rfemur", "rtibia", "lhipjoint", "lfemur", "ltibia", "upperback",
    "lowerneck", "upperneck", "head", "lclavicle", "lhumerus", "lradius", "rclavicle",
    "rhumerus", "rradius",
)


def to_h36m17(positions: dict[str, np.ndarray], path: str = "<skeleton>") -> np.ndarray:
    """Stack FK positions into the 17-joint layout: -> (T, 17, 3) mm, z up."""
    missing = [b for b in CMU_TO_H36M17 if b not in positions]
    if missing:
        raise MocapFormatError(path, None, f"skeleton lacks bone(s) {', '.join(missing)} "
                               "needed for the 17-joint mapping")
    return np.stack([positions[b] for b in CMU_TO_H36M17], axis=-2)


@dataclass
class MocapClip:
    """A clip in the 17-joint layout: ``poses`` (T, 17, 3) mm z up, frame rate ``fps``."""

    poses: np.ndarray
    fps: float
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])


#: plausible standing height of a mocap subject, mm (rest pose, head top to the feet).
HEIGHT_RANGE_MM = (500.0, 2500.0)


def load_asf_amc(
    asf: str | Path, amc: str | Path, capture_fps: float = 120.0, step: int = 5
) -> MocapClip:
    """Parse ASF + AMC, run FK, map to the 17 joints and keep every ``step``-th frame.

    CMU clips are captured at 120 fps; ``step=5`` gives 24 fps (Human3.6M protocols use 50 fps
    every 5th frame = 10 fps; 24 fps keeps more of a short clip).
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    skel = parse_asf(asf)
    has_feet = any("foot" in n or "toes" in n for n in skel.bones)
    height = rest_height_mm(skel) if "head" in skel.bones and has_feet else None
    if height is not None and not HEIGHT_RANGE_MM[0] <= height <= HEIGHT_RANGE_MM[1]:
        per_unit = skel.mm_per_unit
        raise MocapFormatError(
            asf, None, f"rest-pose height {height / 1000:.3g} m with ':units length "
            f"{skel.length_unit:g}' ({per_unit:.3g} mm per unit); a person is 0.5-2.5 m tall: "
            f"the length unit looks wrong by a factor of about {height / 1650:.2g}")
    motion = parse_amc(amc, skel)
    poses = to_h36m17(forward_kinematics(skel, motion), str(asf))[::step]
    return MocapClip(poses=poses, fps=capture_fps / step, source=f"{Path(amc).name} (CMU mocap)")


def body_height_mm(poses: np.ndarray) -> float:
    """Standing-height proxy of a 17-joint pose sequence (T, 17, 3): median over frames of
    head-top height above the lower ankle, plus a 60 mm ankle-to-sole allowance. Reported in
    docs; meant only as a sanity check of the unit conversion."""
    ankles = np.minimum(poses[:, sk.JOINT_NAMES.index("RFoot"), 2],
                        poses[:, sk.JOINT_NAMES.index("LFoot"), 2])
    head = poses[:, sk.JOINT_NAMES.index("Head"), 2]
    return float(np.median(head - ankles) + 60.0)


def rest_pose(skel: AsfSkeleton) -> dict[str, np.ndarray]:
    """FK positions (1, 3) per bone at the rest pose (all AMC values zero), mm, z up."""
    zero = {"root": np.zeros((1, len(skel.root_order)))}
    zero.update({n: np.zeros((1, len(b.dofs))) for n, b in skel.bones.items() if b.dofs})
    return forward_kinematics(skel, AmcMotion(path="<rest>", frames=np.array([1]), values=zero))


def rest_height_mm(skel: AsfSkeleton) -> float:
    """Height of the rest pose in mm: top of the head minus the lowest point of the feet
    (ends of foot and toe bones). A sanity check of the unit conversion."""
    pos = rest_pose(skel)
    z = {n: float(p[0, 2]) for n, p in pos.items()}
    return z["head"] - min(v for n, v in z.items() if "foot" in n or "toes" in n)
