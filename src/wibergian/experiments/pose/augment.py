"""Augmentation of training poses and validation splits for the generalisation study.

The learnt lifting has ~4,300 parameters and the built-in clip 386 training frames; these
helpers give training more (plausible) poses and a validation set taken from the training
frames, never the test frames.

- :func:`augment_poses`: copies of 3D poses rotated about the vertical through their own root
  (uniform angle), scaled about the floor (uniform in [1 - s, 1 + s]) and, for every other
  copy, mirrored (x -> -x about the root, left/right labels swapped so the copy is a correctly
  handed person performing the mirror-image motion). Heights stay above the floor.
- :func:`augmented_training_data`: the training frames of a :class:`PoseData` plus augmented
  copies seen by the same cameras through the simulated detector with another seed.
- :func:`validation_split`: the last ``fraction`` of the training frames (in time), after a
  ``gap``, as validation frames; the rest stay for training.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from . import skeleton as sk
from .datasets import PoseData, poses_through_cameras
from .detector import DetectorConfig


def augment_poses(poses: torch.Tensor, copies: int, seed: int = 0, max_angle: float = math.pi,
                  scale: float = 0.1, mirror: bool = True) -> torch.Tensor:
    """``copies`` augmented copies of (T, 17, 3) world poses (mm, z up): (copies * T, 17, 3).

    Copy c of frame t: rotated about the vertical line through the frame's root by an angle
    uniform in [-max_angle, max_angle], scaled by a factor uniform in [1 - scale, 1 + scale]
    about the root's floor point, and mirrored (x -> -x about the root, labels swapped) when
    ``mirror`` and c is odd. Rotations and scales are drawn per frame and copy."""
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    gen = torch.Generator().manual_seed(seed)
    p = poses.double()
    out = []
    for c in range(copies):
        t = p.shape[0]
        ang = (torch.rand(t, generator=gen, dtype=torch.float64) * 2 - 1) * max_angle
        fac = 1 + (torch.rand(t, generator=gen, dtype=torch.float64) * 2 - 1) * scale
        origin = p[:, :1].clone()
        origin[..., 2] = 0.0  # floor point below the root
        q = p - origin
        if mirror and c % 2 == 1:
            q = sk.flip_left_right(q * torch.tensor([-1.0, 1.0, 1.0], dtype=q.dtype))
        cs, sn = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
        x = cs * q[..., 0] - sn * q[..., 1]
        y = sn * q[..., 0] + cs * q[..., 1]
        q = torch.stack([x, y, q[..., 2]], -1) * fac[:, None, None]
        out.append(q + origin)
    return torch.cat(out) if out else p[:0]


def augmented_training_data(train: PoseData, copies: int, seed: int = 0,
                            detector: DetectorConfig | None = None) -> PoseData:
    """``train`` (all frames) plus ``copies`` augmented copies of its poses, seen by its first
    rig through the simulated detector (seed ``detector.seed + 1000 + seed``). All frames of
    the result are training frames (``train_idx``)."""
    if copies == 0:
        return train
    aug = augment_poses(train.poses3d, copies, seed)
    det = replace(detector or DetectorConfig(), seed=(detector or DetectorConfig()).seed
                  + 1000 + seed)
    subject = train.subjects[0]
    extra = poses_through_cameras(aug, source="augmented", fps=train.fps, subject=subject,
                                  detector=det, place=False, train_fraction=None)
    cams = train.rigs[subject]
    extra = replace(extra, rigs={subject: cams})
    n = train.num_frames + extra.num_frames
    clean = None
    if train.poses2d_clean is not None:
        clean = torch.cat([train.poses2d_clean, extra.poses2d_clean])
    return replace(
        train, poses3d=torch.cat([train.poses3d, extra.poses3d]),
        poses2d=torch.cat([train.poses2d, extra.poses2d.to(train.poses2d.dtype)]),
        visible=torch.cat([train.visible, extra.visible]), poses2d_clean=clean,
        subjects=train.subjects + [subject] * extra.num_frames,
        actions=train.actions + ["augmented"] * extra.num_frames,
        train_idx=torch.arange(n), test_idx=torch.zeros(0, dtype=torch.long),
        source=f"{train.source} + {copies} augmented copies")


def validation_split(train: PoseData, fraction: float, gap: int = 0) -> tuple[PoseData, PoseData]:
    """Split the frames of ``train`` by time: ``(fit, validation)``; the last ``fraction``
    validate, ``gap`` frames before them are dropped."""
    n = train.num_frames
    n_val = int(round(fraction * n))
    n_fit = n - n_val - gap
    if not 0.0 < fraction < 1.0 or n_val < 1 or n_fit < 1:
        raise ValueError(f"cannot take a validation fraction {fraction} with gap {gap} from "
                         f"{n} training frames")
    return train.subset(torch.arange(n_fit)), train.subset(torch.arange(n - n_val, n))


def validation_data(data: PoseData, fraction: float = 0.2, gap: int = 12) -> PoseData:
    """``data``'s training frames re-split as in :func:`validation_split`: the fit frames become
    the training frames and the validation frames the test frames. Running a study on this
    chooses settings on training frames only (``wibergian pose study --validate``)."""
    tr = data.train()
    fit, val = validation_split(tr, fraction, gap)
    n = tr.num_frames
    return replace(tr, train_idx=torch.arange(fit.num_frames),
                   test_idx=torch.arange(n - val.num_frames, n),
                   source=f"{data.source} (validation split: last {fraction:g} of the "
                          f"training frames after a {gap}-frame gap)")
