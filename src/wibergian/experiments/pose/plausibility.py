"""Plausibility checks of user 3D poses: units, up axis, left/right handedness, skeleton.

User poses must be (T, 17, 3) millimetres, Human3.6M joint order, z up. Files in cm or metres,
y-up exports, left/right-mirrored captures and a different joint convention are all finite
arrays of the right shape; these checks catch them from the anatomy and say what to fix.

- **Units**: the median over bones of the median bone length, compared with the reference
  skeleton's (the model's training skeleton, by default the built-in CMU mapping,
  :data:`REFERENCE_BONES_MM`, median 197 mm). A ratio outside [0.4, 2.5] is an error naming the
  unit that would explain it ("median bone length 20.0 mm; ... pass --units cm?").
- **Up axis**: the median direction of the trunk (Hip -> Thorax) must point along +z (an
  angle under 60°); otherwise the axis it does point along is named (``--up y``).
- **Handedness**: with z up and the hip line ``l = LHip - RHip``, the forward direction is
  ``f = l × z``. Knees flex forward, elbows backward: the knee's offset from the hip-ankle
  line has ``f``-component > 0 and the elbow's offset from the shoulder-wrist line < 0 (on the
  built-in clip in 100 % of frames). If the median vote is backwards, the labels are
  left/right swapped or the geometry is mirrored (an error; ``--mirror`` fixes both).
- **Skeleton convention**: each bone's median length relative to the reference, after
  dividing out the overall size (the median ratio), must lie within
  ``1 ± SKELETON_TOLERANCE`` (35 %); otherwise the bones are listed with both lengths and how
  to map the joints. An error unless ``allow_mismatch`` (then a warning).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from . import skeleton as sk

#: median bone lengths (mm, order of :data:`skeleton.BONES`) of the built-in CMU clip mapped to
#: the 17 joints (docs/pose-data.md; a test recomputes them from the bundled data).
REFERENCE_BONES_MM: tuple[float, ...] = (
    133.9, 419.6, 423.8, 135.7, 404.0, 422.8, 230.8, 215.3, 99.8, 100.0, 185.9, 281.3, 196.6,
    185.7, 295.9, 194.4,
)
#: allowed relative deviation of a bone from the reference after dividing out overall size.
SKELETON_TOLERANCE = 0.35
#: allowed range of (median bone length) / (reference median bone length).
SIZE_RANGE = (0.4, 2.5)
#: unit name -> millimetres per unit.
UNITS_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}

#: what each joint is in our mapping, for the mismatch message.
JOINT_HINTS = ("Hip = pelvis centre; Spine = mid-back (about 230 mm above the pelvis centre); "
               "Thorax = base of the neck (between the shoulders); Neck/Nose = upper neck "
               "(about 100 mm above Thorax); Head = top of the head; Shoulder = the shoulder "
               "joint (end of the clavicle); Foot = ankle. See docs/pose-data.md, 'Mapping "
               "your joints'.")


class ImplausiblePosesError(ValueError):
    """User poses that are finite and well-shaped but not mm / z-up / H36M-convention."""


@dataclass
class SkeletonReport:
    """Bone statistics of a pose set: median length per bone (mm), overall size ratio to the
    reference, per-bone relative deviation after size normalisation, up-axis angle and
    handedness vote (fraction of frames whose knee/elbow vote is forward-correct)."""

    bone_mm: list[float]
    size_ratio: float
    deviation: list[float]
    up_angle_deg: float
    handedness: float

    def to_dict(self) -> dict:
        return {"bone_median_mm": self.bone_mm, "size_ratio": self.size_ratio,
                "bone_deviation": self.deviation, "up_angle_deg": self.up_angle_deg,
                "handedness_vote": self.handedness}


def bone_medians(poses: torch.Tensor) -> torch.Tensor:
    """Median over frames of each bone's length: (T, 17, 3) -> (16,)."""
    return sk.bone_lengths(poses.double()).median(0).values


def _offset(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Offset of b from the line a-c: (..., 3)."""
    ac = c - a
    t = ((b - a) * ac).sum(-1, keepdim=True) / ac.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
    return b - (a + t * ac)


def handedness_votes(poses: torch.Tensor) -> torch.Tensor:
    """Per-frame vote (T,) in {-1, 0, 1}: +1 when knees bend forward and elbows backward with
    respect to ``f = (LHip - RHip) × z`` (a correctly labelled, unmirrored, z-up pose)."""
    p = poses.double()
    up = torch.tensor([0.0, 0.0, 1.0], dtype=p.dtype).expand(p.shape[0], 3)
    fwd = torch.linalg.cross(p[:, 4] - p[:, 1], up)
    fwd = fwd / fwd.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    knee = (_offset(p[:, 1], p[:, 2], p[:, 3]) + _offset(p[:, 4], p[:, 5], p[:, 6]))
    elbow = (_offset(p[:, 14], p[:, 15], p[:, 16]) + _offset(p[:, 11], p[:, 12], p[:, 13]))
    score = (knee * fwd).sum(-1) - (elbow * fwd).sum(-1)
    return torch.sign(score)


def inspect_poses(poses: torch.Tensor,
                  reference: tuple[float, ...] | list[float] = REFERENCE_BONES_MM
                  ) -> SkeletonReport:
    """Bone, up-axis and handedness statistics of (T, 17, 3) poses."""
    bones = bone_medians(poses)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    ratio = bones / ref
    size = float(bones.median() / ref.median())
    dev = (ratio / ratio.median() - 1.0).tolist()
    trunk = (poses[:, 8] - poses[:, 0]).double()
    trunk = trunk / trunk.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    d = trunk.median(0).values
    up_angle = math.degrees(math.acos(max(-1.0, min(1.0, float(d[2] / d.norm().clamp_min(1e-12))))))
    votes = handedness_votes(poses)
    return SkeletonReport(bone_mm=bones.tolist(), size_ratio=size, deviation=dev,
                          up_angle_deg=up_angle, handedness=float((votes > 0).double().mean()))


def _unit_hint(size_ratio: float) -> str:
    """The unit (cm, m, in) that would bring the size ratio nearest 1, if within 2x."""
    best = min(UNITS_MM, key=lambda u: abs(math.log(size_ratio * UNITS_MM[u])))
    if best != "mm" and abs(math.log(size_ratio * UNITS_MM[best])) < math.log(2.0):
        return f"pass --units {best}?"
    return "rescale the poses to millimetres"


def check_poses(poses: torch.Tensor, where: str,
                reference: tuple[float, ...] | list[float] = REFERENCE_BONES_MM,
                allow_mismatch: bool = False) -> SkeletonReport:
    """Raise :class:`ImplausiblePosesError` (message starts with ``where``) when the poses do
    not look like mm, z-up, correctly handed Human3.6M-convention poses; warn instead of
    raising for a skeleton mismatch when ``allow_mismatch``. Returns the report."""
    rep = inspect_poses(poses, reference)
    ref_med = float(torch.as_tensor(reference).double().median())
    med = rep.size_ratio * ref_med
    if min(rep.bone_mm) <= 0.0:
        j = rep.bone_mm.index(min(rep.bone_mm))
        p, c = sk.BONES[j]
        raise ImplausiblePosesError(
            f"{where}: bone {sk.JOINT_NAMES[p]}->{sk.JOINT_NAMES[c]} has zero length in most "
            "frames (two joints at the same place); check the joint order (Human3.6M 17)")
    lo, hi = SIZE_RANGE
    if not lo <= rep.size_ratio <= hi:
        raise ImplausiblePosesError(
            f"{where}: median bone length {med:.3g} (the model's skeleton: {ref_med:.0f} mm); "
            f"poses must be in millimetres (mm) — {_unit_hint(rep.size_ratio)}")
    if rep.up_angle_deg > 60.0:
        trunk = (poses[:, 8] - poses[:, 0]).double().median(0).values
        ax = int(trunk.abs().argmax())
        sign = "-" if float(trunk[ax]) < 0 else ""
        name = f"{sign}{'xyz'[ax]}"
        fix = "pass --up y" if name == "y" else (
            "flip the vertical axis" if name == "-z" else f"rotate the poses so that {name} "
            "becomes +z")
        raise ImplausiblePosesError(
            f"{where}: the trunk (Hip->Thorax) points along {name}, {rep.up_angle_deg:.0f}° "
            f"from +z; poses must be z up — {fix}")
    if rep.handedness < 0.5:
        raise ImplausiblePosesError(
            f"{where}: left and right look swapped or mirrored: knees bend backward and elbows "
            f"forward in {100 * (1 - rep.handedness):.0f} % of frames (forward = (LHip - RHip) "
            "× z); check the left/right joint order or pass --mirror")
    bad = [i for i, d in enumerate(rep.deviation) if abs(d) > SKELETON_TOLERANCE]
    if bad:
        ratio_ref = [r * rep.size_ratio for r in torch.as_tensor(reference).tolist()]
        rows = "; ".join(f"{sk.JOINT_NAMES[sk.BONES[i][0]]}->{sk.JOINT_NAMES[sk.BONES[i][1]]} "
                         f"{rep.bone_mm[i]:.0f} mm vs {ratio_ref[i]:.0f} mm" for i in bad)
        msg = (f"{where}: skeleton convention differs from the model's by more than "
               f"{SKELETON_TOLERANCE:.0%} (after scaling to the same size): {rows}. Map your "
               f"joints as the model's: {JOINT_HINTS}")
        if not allow_mismatch:
            raise ImplausiblePosesError(msg + " (or pass --allow-skeleton-mismatch)")
        warnings.warn(msg, stacklevel=2)
    return rep


def convert(poses: torch.Tensor, units: str = "mm", up: str = "z", mirror: bool = False
            ) -> torch.Tensor:
    """Bring poses to mm, z up, correct handedness: scale by :data:`UNITS_MM`, turn y up into
    z up by ``(x, y, z) -> (x, -z, y)`` (a proper rotation), and with ``mirror`` swap the
    left/right joint labels (a swapped labelling is undone; a mirrored capture becomes a
    correctly handed skeleton performing the mirror image of the motion)."""
    if units not in UNITS_MM:
        raise ValueError(f"units must be one of {sorted(UNITS_MM)}, got {units!r}")
    if up not in ("z", "y"):
        raise ValueError(f"up must be 'z' or 'y', got {up!r}")
    p = poses.double() * UNITS_MM[units]
    if up == "y":
        p = torch.stack([p[..., 0], -p[..., 2], p[..., 1]], dim=-1)
    if mirror:
        p = sk.flip_left_right(p)
    return p
