"""Pose data sources, all returning :class:`PoseData`.

- :func:`load_default`: the bundled CMU clip, mapped to the 17 Human3.6M joints, placed in the
  Human3.6M capture volume, seen by the four real cameras through the simulated detector;
  split by time (first 70% train, a gap of 1 s, the rest test).
- :func:`load_npy`: user poses, a ``.npy`` of shape (T, 17, 3), mm, Human3.6M joint order,
  z up, through the same cameras and detector (all frames are test frames by default).
- :func:`load_h36m`: Human3.6M in the 3d-pose-baseline layout (train S1, 5, 6, 7, 8; test S9,
  11; every 5th frame), with its Stacked Hourglass detections or simulated ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ...data import data_path
from . import plausibility
from . import skeleton as sk
from .cameras import (
    DEFAULT_CAMERAS_JSON,
    Camera,
    load_cameras_h5,
    load_cameras_json,
    place_in_volume,
    stack_cameras,
)
from .detector import DetectorConfig, simulate_detections
from .h36m import TEST_SUBJECTS, TRAIN_SUBJECTS, load_sequences
from .mocap import load_asf_amc

#: the bundled CMU clip (package data).
DEFAULT_CLIP_DIR = data_path("cmu-mocap-sample")


@dataclass
class PoseData:
    """Poses and what the cameras saw. T frames, C cameras, 17 joints.

    Attributes:
        poses3d: (T, 17, 3) ground truth, mm, world coordinates, z up.
        poses2d: (T, C, 17, 2) detections, pixels (0 where not visible).
        visible: (T, C, 17) bool, False for missing detections.
        rigs: {subject: [C cameras]}; the cameras of frame t are ``rigs[subjects[t]]``.
        subjects: per-frame subject / rig name (T,).
        actions: per-frame action label (T,).
        train_idx, test_idx: frame indices of the split (LongTensor).
        poses2d_clean: (T, C, 17, 2) exact projections (None for real detections).
        generated: True when the 2D detections are simulated.
        source: human-readable description; fps: frame rate after subsampling.
    """

    poses3d: torch.Tensor
    poses2d: torch.Tensor
    visible: torch.Tensor
    rigs: dict[str, list[Camera]]
    subjects: list[str]
    actions: list[str]
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    poses2d_clean: torch.Tensor | None = None
    generated: bool = True
    source: str = ""
    fps: float = 0.0
    notes: list[str] = field(default_factory=list)
    skeleton: dict | None = None

    @property
    def num_frames(self) -> int:
        return int(self.poses3d.shape[0])

    @property
    def num_cameras(self) -> int:
        return int(self.poses2d.shape[1])

    @property
    def cameras(self) -> list[Camera]:
        """The rig of the first frame (the only rig for the default and .npy data)."""
        return self.rigs[self.subjects[0]]

    def camera_batch(self, idx: torch.Tensor | None = None) -> Camera:
        """Batched cameras of the given frames: fields of shape (len(idx), C, ...)."""
        idx = torch.arange(self.num_frames) if idx is None else torch.as_tensor(idx)
        names = sorted(self.rigs)
        stacked = stack_cameras([stack_cameras(self.rigs[n]) for n in names])
        which = torch.tensor([names.index(self.subjects[i]) for i in idx.tolist()],
                             dtype=torch.long)
        return replace(stacked, **{n: getattr(stacked, n)[which] for n in "Rtfckp"})

    def subset(self, idx: torch.Tensor) -> PoseData:
        """Frames ``idx`` as a new PoseData; all its frames become test frames."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        il = idx.tolist()
        return replace(
            self, poses3d=self.poses3d[idx], poses2d=self.poses2d[idx],
            visible=self.visible[idx],
            poses2d_clean=None if self.poses2d_clean is None else self.poses2d_clean[idx],
            subjects=[self.subjects[i] for i in il], actions=[self.actions[i] for i in il],
            train_idx=torch.zeros(0, dtype=torch.long), test_idx=torch.arange(len(il)),
        )

    def train(self) -> PoseData:
        return self.subset(self.train_idx)

    def test(self) -> PoseData:
        return self.subset(self.test_idx)


def _detect(
    poses3d: torch.Tensor, cameras: list[Camera], detector: DetectorConfig | None,
    distortion: bool, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rig = stack_cameras(cameras)  # batch (C,)
    clean = rig.project(poses3d.unsqueeze(1), distortion=distortion)  # (T, C, 17, 2)
    size = torch.tensor([list(c.size) for c in cameras], dtype=clean.dtype)[:, None, :]
    in_front = rig.depth(poses3d.unsqueeze(1)) > 0  # (T, C, 17)
    det = simulate_detections(clean, detector, generator, image_size=size, in_front=in_front)
    return clean, det.points, det.visible


def time_split(num_frames: int, train_fraction: float, gap: int,
               held_out: str = "end") -> tuple[torch.Tensor, ...]:
    """First ``train_fraction`` of the frames for training, skip ``gap`` frames, rest test
    (``held_out="end"``); ``"start"`` mirrors it in time: the last ``train_fraction`` train,
    the first frames (up to ``gap`` before them) test."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if held_out not in ("end", "start"):
        raise ValueError(f"held_out must be 'end' or 'start', got {held_out!r}")
    n_train = int(round(train_fraction * num_frames))
    start = n_train + gap
    if n_train < 1 or start >= num_frames:
        raise ValueError(f"cannot split {num_frames} frames with train_fraction="
                         f"{train_fraction} and gap={gap}")
    if held_out == "start":
        return (torch.arange(num_frames - n_train, num_frames),
                torch.arange(0, num_frames - start))
    return torch.arange(n_train), torch.arange(start, num_frames)


def poses_through_cameras(
    poses3d: torch.Tensor, *, source: str, fps: float, actions: list[str] | None = None,
    subject: str = "S1", cameras_json: str | Path = DEFAULT_CAMERAS_JSON,
    detector: DetectorConfig | None = None, distortion: bool = False, place: bool = True,
    train_fraction: float | None = 0.7, gap: int = 24, held_out: str = "end",
) -> PoseData:
    """Put (T, 17, 3) world poses in front of the four Human3.6M cameras of ``subject``
    and run the simulated detector. ``place`` recentres the trajectory horizontally on the
    cameras' look-at point (heights kept). ``train_fraction=None`` makes every frame a test
    frame."""
    cams = load_cameras_json(cameras_json, subject)[subject]
    poses3d = poses3d.to(torch.float64)
    if place:
        poses3d = place_in_volume(poses3d, cams)
    clean, det, vis = _detect(poses3d, cams, detector, distortion)
    T = poses3d.shape[0]
    if train_fraction is None:
        train_idx, test_idx = torch.zeros(0, dtype=torch.long), torch.arange(T)
    else:
        train_idx, test_idx = time_split(T, train_fraction, gap, held_out)
    return PoseData(
        poses3d=poses3d, poses2d=det, visible=vis, rigs={subject: cams},
        subjects=[subject] * T, actions=list(actions) if actions else ["all"] * T,
        train_idx=train_idx, test_idx=test_idx, poses2d_clean=clean, generated=True,
        source=source, fps=fps,
    )


def load_default(
    step: int = 5, detector: DetectorConfig | None = None, subject: str = "S1",
    train_fraction: float = 0.7, gap_seconds: float = 1.0, distortion: bool = False,
    clip_dir: str | Path = DEFAULT_CLIP_DIR, cameras_json: str | Path = DEFAULT_CAMERAS_JSON,
    held_out: str = "end", body: str = "cmu",
) -> PoseData:
    """The built-in data: CMU clip ``playground`` (120 fps, every ``step``-th frame; default
    24 fps, 551 frames), 4 real cameras (extrinsics of ``subject``), simulated detections.
    Split by time: first 70% train, a gap of ``gap_seconds``, the rest test
    (``held_out="start"``: the last 70 % train and the first frames are held out).
    ``body="other"``: the clip's real joint angles through a generated body with other bone
    proportions, mirrored (:func:`.retarget.load_other_body`)."""
    clip_dir = Path(clip_dir)
    asf, amc = clip_dir / "playground.asf", clip_dir / "playground.amc"
    if body == "cmu":
        clip = load_asf_amc(asf, amc, step=step)
    elif body == "other":
        from .retarget import load_other_body

        clip = load_other_body(asf, amc, step=step)
    else:
        raise ValueError(f"body must be 'cmu' or 'other', got {body!r}")
    return poses_through_cameras(
        torch.from_numpy(clip.poses), source=f"{clip.source}, simulated 2D detections",
        fps=clip.fps, actions=["playground"] * clip.num_frames, subject=subject,
        cameras_json=cameras_json, detector=detector, distortion=distortion,
        train_fraction=train_fraction, gap=int(round(gap_seconds * clip.fps)),
        held_out=held_out,
    )


def load_npy(
    path: str | Path, detector: DetectorConfig | None = None, subject: str = "S1",
    fps: float = 10.0, place: bool = True, train_fraction: float | None = None,
    distortion: bool = False, cameras_json: str | Path = DEFAULT_CAMERAS_JSON, *,
    units: str = "mm", up: str = "z", mirror: bool = False, subsample: int = 1, gap: int = 24,
    reference_bones: tuple[float, ...] | list[float] | None = None,
    allow_skeleton_mismatch: bool = False,
) -> PoseData:
    """User poses: ``.npy`` (T, 17, 3) float, Human3.6M joint order; mm and z up after
    ``units`` / ``up`` / ``mirror`` (see :func:`plausibility.convert`).

    Goes through the same cameras and simulated detector as :func:`load_default`. By
    default all frames are test frames (``train_fraction=None``); otherwise the first
    ``train_fraction`` train, ``gap`` frames are skipped (so that test frames are not
    near-copies of the last training frames) and the rest test. ``subsample`` keeps every
    n-th frame first. The poses must pass :func:`plausibility.check_poses` against
    ``reference_bones`` (default: the built-in skeleton); the bone statistics are kept in
    ``PoseData.skeleton``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); expected a .npy array (T, 17, 3)")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # np.load raises OSError, ValueError, EOFError, ...
        raise ValueError(f"{path}: cannot read as .npy ({type(err).__name__}: {err}); save "
                         "one array with numpy.save") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        names = list(arr.files)
        arr.close()
        raise ValueError(f"{path}: an .npz archive (arrays {names}); pass one (T, 17, 3) "
                         "array saved with numpy.save to a .npy file")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: dtype {arr.dtype} is not numeric; expected float (mm)")
    if arr.ndim != 3 or arr.shape[1:] != (sk.NUM_JOINTS, 3):
        raise ValueError(f"{path}: shape {arr.shape}; expected (T, 17, 3) = frames x "
                         "Human3.6M joints x (x, y, z) in mm")
    if arr.shape[0] < 1:
        raise ValueError(f"{path}: no frames (T = 0)")
    bad = ~np.isfinite(arr)
    if bad.any():
        t, j, _ = np.argwhere(bad)[0]
        raise ValueError(f"{path}: {int(bad.sum())} NaN/inf values (first at frame {t}, joint "
                         f"{j} {sk.JOINT_NAMES[j]})")
    if subsample < 1:
        raise ValueError(f"subsample must be >= 1, got {subsample}")
    poses = plausibility.convert(torch.from_numpy(arr.astype(np.float64))[::subsample],
                                 units, up, mirror)
    report = plausibility.check_poses(
        poses, str(path), reference_bones or plausibility.REFERENCE_BONES_MM,
        allow_skeleton_mismatch)
    data = poses_through_cameras(
        poses, source=f"{path.name}, simulated 2D detections", fps=fps / subsample,
        subject=subject, cameras_json=cameras_json, detector=detector, distortion=distortion,
        place=place, train_fraction=train_fraction, gap=gap,
    )
    data.skeleton = report.to_dict()
    return data


def load_h36m(
    root: str | Path,
    train_subjects: tuple[int, ...] = TRAIN_SUBJECTS,
    test_subjects: tuple[int, ...] = TEST_SUBJECTS,
    every: int = 5,
    detections: Literal["stacked_hourglass", "simulated"] = "stacked_hourglass",
    detector: DetectorConfig | None = None,
    cameras_file: str | Path | None = None,
    distortion: bool = False,
) -> PoseData:
    """Human3.6M in the 3d-pose-baseline layout as one :class:`PoseData`.

    ``detections="stacked_hourglass"`` uses the released detections (takes lacking a camera
    are skipped and listed in ``notes``); ``"simulated"`` projects the ground truth through
    the cameras (with lens distortion if ``distortion``) and the simulated detector (one
    generator seeded by ``detector.seed`` for the whole set). Cameras come from ``cameras_file`` (a
    ``cameras.h5`` or the json), else ``root/cameras.h5`` if present, else the bundled json.
    """
    root = Path(root)
    subjects = tuple(train_subjects) + tuple(test_subjects)
    cam_path = Path(cameras_file) if cameras_file else root / "cameras.h5"
    if cam_path.suffix == ".h5" and cam_path.exists():
        rigs_all = load_cameras_h5(cam_path, subjects=subjects)
    else:
        rigs_all = load_cameras_json(cam_path if cam_path.suffix == ".json" else
                                     DEFAULT_CAMERAS_JSON)
    names = tuple(c.name for c in next(iter(rigs_all.values())))
    skipped: list[str] = []
    seqs = load_sequences(root, subjects, camera_names=names, every=every,
                          detections=detections == "stacked_hourglass", skipped=skipped)
    if not seqs:
        raise ValueError(f"{root}: no usable Human3.6M takes for subjects {subjects}")
    gen = torch.Generator().manual_seed((detector or DetectorConfig()).seed)
    p3, p2, vis, clean, subj, acts, is_train = [], [], [], [], [], [], []
    for seq in seqs:
        rig = rigs_all[seq.subject]
        pose = torch.from_numpy(seq.poses3d)
        if detections == "stacked_hourglass":
            assert seq.poses2d is not None and seq.visible is not None
            p2.append(torch.from_numpy(seq.poses2d))
            vis.append(torch.from_numpy(seq.visible))
        else:
            c, d, v = _detect(pose, rig, detector, distortion, gen)
            p2.append(d)
            vis.append(v)
            clean.append(c)
        p3.append(pose)
        T = pose.shape[0]
        subj += [seq.subject] * T
        acts += [seq.action] * T
        is_train += [int(seq.subject[1:]) in train_subjects] * T
    mask = torch.tensor(is_train)
    return PoseData(
        poses3d=torch.cat(p3), poses2d=torch.cat(p2).to(torch.float64), visible=torch.cat(vis),
        rigs={s: rigs_all[s] for s in sorted(set(subj))}, subjects=subj, actions=acts,
        train_idx=torch.nonzero(mask).flatten(), test_idx=torch.nonzero(~mask).flatten(),
        poses2d_clean=torch.cat(clean) if clean else None,
        generated=detections == "simulated",
        source=f"Human3.6M ({root}), {detections} detections, every {every}th frame",
        fps=50.0 / every, notes=skipped,
    )
