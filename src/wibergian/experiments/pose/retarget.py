"""A second motion source generated from the shipped clip: the same joint angles, another body.

The project ships one real recording (CMU ``playground``). :func:`load_other_body` makes a
second, honestly different source from it: the clip's REAL joint angles (the AMC file) are
played through a GENERATED skeleton whose bone lengths are the ASF lengths multiplied by
:data:`OTHER_BODY` (long legs and forearms, wide hips, short trunk, narrow shoulders), with the
root translation scaled like the legs (so the feet stay on the floor and strides lengthen
with the legs), and the motion is mirrored (x -> -x, left/right labels swapped: the
mirror-image motion performed by a correctly handed person). It is the same activity, not an
independent recording: new body proportions, new 3D joint trajectories, a new stride, and the
subject moves the other way relative to the cameras.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from . import skeleton as sk
from .mocap import MocapClip, forward_kinematics, parse_amc, parse_asf, to_h36m17

#: bone-length factors of the generated body, by ASF bone-name stem (both sides); bones not
#: listed keep their length. Root translation is scaled by :data:`LEG_FACTOR`.
OTHER_BODY: dict[str, float] = {
    "hipjoint": 1.25, "femur": 1.15, "tibia": 1.15, "lowerback": 0.85, "upperback": 0.85,
    "thorax": 0.85, "lowerneck": 1.1, "upperneck": 1.1, "head": 0.95, "clavicle": 0.8,
    "humerus": 1.1, "radius": 1.15,
}
LEG_FACTOR = 1.15


def _factor(bone: str, factors: dict[str, float]) -> float:
    stem = bone[1:] if bone[:1] in ("l", "r") and bone[1:] in factors else bone
    return factors.get(stem, 1.0)


def load_other_body(asf: str | Path, amc: str | Path, capture_fps: float = 120.0,
                    step: int = 5, factors: dict[str, float] | None = None,
                    leg_factor: float = LEG_FACTOR, mirror: bool = True) -> MocapClip:
    """The clip's AMC angles through the ASF skeleton with bone lengths × ``factors`` (default
    :data:`OTHER_BODY`) and root translations × ``leg_factor``; mirrored when ``mirror``.
    Returns the 17-joint clip (mm, z up), every ``step``-th frame."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    factors = OTHER_BODY if factors is None else factors
    bad = {k: v for k, v in factors.items() if not 0.0 < v < 10.0}
    if bad or not 0.0 < leg_factor < 10.0:
        raise ValueError(f"bone-length factors must be in (0, 10), got {bad or leg_factor}")
    skel = parse_asf(asf)
    skel = replace(skel, bones={n: replace(b, length=b.length * _factor(n, factors))
                                for n, b in skel.bones.items()},
                   root_position=skel.root_position * leg_factor)
    motion = parse_amc(amc, skel)
    root = motion.values["root"].copy()
    for i, ch in enumerate(skel.root_order):
        if ch.startswith("t"):
            root[:, i] *= leg_factor
    motion = replace(motion, values={**motion.values, "root": root})
    poses = to_h36m17(forward_kinematics(skel, motion), str(asf))[::step]
    if mirror:
        poses = sk.flip_left_right(poses * np.array([-1.0, 1.0, 1.0]))
    what = "mirrored, " if mirror else ""
    return MocapClip(poses=np.ascontiguousarray(poses), fps=capture_fps / step,
                     source=f"{Path(amc).name} (REAL CMU joint angles, {what}GENERATED body: "
                            "bone lengths rescaled)")
