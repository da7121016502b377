"""Human3.6M as released with 3d-pose-baseline (Martinez et al. 2017): file readers.

Layout under ``root``::

    cameras.h5                                   (optional; see cameras.load_cameras_h5)
    S<k>/MyPoses/3D_positions/<Action>[ <n>].h5  key "3D_positions": 32 joints x 3, mm, world
    S<k>/StackedHourglass/<Action>[ <n>].<camera>.h5   key "poses": (T, 16, 2) pixels

- ``3D_positions`` is stored as (96, T) in the release (its loader transposes it); we accept
  (96, T), (T, 96) and (T, 32, 3), and read a square (96, 96) array as (96, T).
- Stacked Hourglass files may use "_" for " " in the name (e.g. ``Directions_1``); we read
  both. ``poses`` may be (T, 16, 2) or (T, 32).
- Action names: the trailing " <n>" take number is stripped and aliases are mapped to the 15
  standard names (TakingPhoto -> Photo, WalkingDog -> WalkDog, WalkingTogether ->
  WalkTogether, ...). Unknown names raise an error naming the file.
- The 3D sequence and the four detection files of a take may differ by a few frames; they are
  cut to the shortest, then every ``every``-th frame (default 5) is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import skeleton as sk

TRAIN_SUBJECTS: tuple[int, ...] = (1, 5, 6, 7, 8)
TEST_SUBJECTS: tuple[int, ...] = (9, 11)

STANDARD_ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether",
)

ACTION_ALIASES: dict[str, str] = {
    "takingphoto": "Photo", "photo": "Photo", "walkingdog": "WalkDog", "walkdog": "WalkDog",
    "walkingtogether": "WalkTogether", "walktogether": "WalkTogether",
    "discussion": "Discussion", "discussions": "Discussion", "direction": "Directions",
    "greetings": "Greeting", "phone": "Phoning", "posing": "Posing", "purchase": "Purchases",
    "sittingdown": "SittingDown", "waiting": "Waiting", "walking": "Walking",
}


class H36MFormatError(ValueError):
    """A Human3.6M file that cannot be read as the release layout; names the file."""


def canonical_action(name: str, path: Path | str | None = None) -> str:
    """Map a sequence name ("Directions 1", "TakingPhoto_2", "WalkDog") to a standard action."""
    base = re.sub(r"[ _]+\d+$", "", name.strip().replace("_", " ")).replace(" ", "")
    for a in STANDARD_ACTIONS:
        if base == a:
            return a
    if base.lower() in ACTION_ALIASES:
        return ACTION_ALIASES[base.lower()]
    raise H36MFormatError(f"{path or name}: unknown Human3.6M action {name!r}")


def _read_dataset(path: Path, key: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as hf:
            if key not in hf:
                raise H36MFormatError(f"{path}: no dataset {key!r} (has {sorted(hf.keys())})")
            raw = hf[key][()]
            try:
                arr = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError):
                kind = getattr(getattr(raw, "dtype", None), "kind", type(raw).__name__)
                raise H36MFormatError(
                    f"{path}: dataset {key!r} is not numeric (dtype kind {kind!r}, e.g. "
                    "strings); expected float joint coordinates") from None
    except OSError as err:
        raise H36MFormatError(f"{path}: cannot read HDF5 file ({err})") from None
    if not np.isfinite(arr).all():
        raise H36MFormatError(f"{path}: {key!r} contains NaN or infinite values")
    return arr


def read_positions3d(path: str | Path) -> np.ndarray:
    """Read a ``3D_positions`` file -> (T, 17, 3) mm, world coordinates (z up)."""
    path = Path(path)
    arr = _read_dataset(path, "3D_positions")
    if arr.ndim == 3 and arr.shape[1:] == (32, 3):
        flat = arr.reshape(arr.shape[0], 96)
    elif arr.ndim == 2 and arr.shape[0] == 96:
        flat = arr.T
    elif arr.ndim == 2 and arr.shape[1] == 96:
        flat = arr
    else:
        raise H36MFormatError(f"{path}: '3D_positions' has shape {arr.shape}; expected (96, T), "
                              "(T, 96) or (T, 32, 3)")
    return flat.reshape(-1, 32, 3)[:, list(sk.H36M32_TO_17), :]


def read_stacked_hourglass(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a Stacked Hourglass file -> (poses (T, 17, 2) px, visible (T, 17) bool); the
    missing Neck/Nose joint is at the origin and not visible (skeleton.from_stacked_hourglass)."""
    import torch

    path = Path(path)
    arr = _read_dataset(path, "poses")
    if arr.ndim == 2 and arr.shape[1] == 32:
        arr = arr.reshape(-1, 16, 2)
    if arr.ndim != 3 or arr.shape[1:] != (16, 2):
        raise H36MFormatError(f"{path}: 'poses' has shape {arr.shape}; expected (T, 16, 2)")
    poses, vis = sk.from_stacked_hourglass(torch.from_numpy(arr))
    return poses.numpy(), vis.numpy()


def parse_detection_name(path: str | Path) -> tuple[str, str]:
    """"Directions 1.54138969.h5" -> ("Directions 1", "54138969")."""
    path = Path(path)
    parts = path.name.replace("_", " ").rsplit(".", 2)
    if len(parts) != 3 or parts[2] != "h5" or not parts[1].isdigit():
        raise H36MFormatError(f"{path}: expected '<Action>[ <n>].<camera>.h5'")
    return parts[0], parts[1]


@dataclass
class H36MSequence:
    """One take of one subject: ``poses3d`` (T, 17, 3) mm world; ``poses2d`` (T, C, 17, 2) px
    and ``visible`` (T, C, 17) from the detection files (None if not loaded); ``camera_names``
    in the order of the C axis; ``frames`` (T,) original 50 fps frame indices."""

    subject: str
    action: str
    name: str
    poses3d: np.ndarray
    frames: np.ndarray
    poses2d: np.ndarray | None = None
    visible: np.ndarray | None = None
    camera_names: list[str] = field(default_factory=list)


def subject_dir(root: Path, subject: int) -> Path:
    return root / f"S{subject}"


def load_sequences(
    root: str | Path,
    subjects: tuple[int, ...] = TRAIN_SUBJECTS + TEST_SUBJECTS,
    camera_names: tuple[str, ...] | None = None,
    every: int = 5,
    detections: bool = True,
    skipped: list[str] | None = None,
) -> list[H36MSequence]:
    """Read every take of the given subjects.

    With ``detections=True`` a take is kept only if a Stacked Hourglass file exists for every
    camera in ``camera_names`` (default: the four Human3.6M cameras); the names of skipped
    takes are appended to ``skipped`` (e.g. S11 "Directions", whose video is damaged).
    """
    from .cameras import CAMERA_NAMES

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    root = Path(root)
    cams = tuple(camera_names or CAMERA_NAMES)
    out: list[H36MSequence] = []
    for s in subjects:
        pdir = subject_dir(root, s) / "MyPoses" / "3D_positions"
        files = sorted(pdir.glob("*.h5"))
        if not files:
            raise H36MFormatError(f"{pdir}: no 3D_positions .h5 files for subject S{s}")
        det_files: dict[tuple[str, str], Path] = {}
        if detections:
            ddir = subject_dir(root, s) / "StackedHourglass"
            for f in sorted(ddir.glob("*.h5")):
                seq, cam = parse_detection_name(f)
                det_files[(seq, cam)] = f
        for f in files:
            name = f.stem.replace("_", " ")
            action = canonical_action(name, f)
            p3 = read_positions3d(f)
            p2 = vis = None
            if detections:
                missing = [c for c in cams if (name, c) not in det_files]
                if missing:
                    if skipped is not None:
                        skipped.append(f"S{s}/{name} (no detections for {', '.join(missing)})")
                    continue
                reads = [read_stacked_hourglass(det_files[(name, c)]) for c in cams]
                n = min([p3.shape[0]] + [r[0].shape[0] for r in reads])
                p3 = p3[:n]
                p2 = np.stack([r[0][:n] for r in reads], axis=1)
                vis = np.stack([r[1][:n] for r in reads], axis=1)
            keep = np.arange(0, p3.shape[0], every)
            out.append(H36MSequence(
                subject=f"S{s}", action=action, name=name, poses3d=p3[keep], frames=keep,
                poses2d=None if p2 is None else p2[keep],
                visible=None if vis is None else vis[keep],
                camera_names=list(cams),
            ))
    return out
