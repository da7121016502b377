"""Human3.6M cameras: a batched pinhole camera with optional distortion, and its loaders.

Convention (that of ``h36m_cameras.json`` and of the 3d-pose-baseline ``cameras.h5``): ``R`` is
the camera's rotation in world coordinates (its columns are the camera axes) and ``t`` its
centre, both in the z-up millimetre world. A world point maps to

    X_cam = R^T (X - t),   u = X_cam[:2] / X_cam[2],   pixel = f * distort(u) + c,

where, when ``distortion=True`` (the Human3.6M formula, also used by 3d-pose-baseline), with
``r2 = |u|^2``, ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3`` and ``tan = p1 u_y + p2 u_x``,

    distort(u) = u * (radial + tan) + (p2, p1) * r2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ...data import data_path

#: default location of the bundled calibration.
DEFAULT_CAMERAS_JSON = data_path("h36m_cameras.json")

#: camera index (1-based, as in cameras.h5) -> camera name.
CAMERA_NAMES: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")

SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (..., 4) as (w, x, y, z) -> rotation matrix (..., 3, 3)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


@dataclass
class Camera:
    """A pinhole camera; every field may carry the same leading batch shape ``S``.

    Fields: ``R`` (S, 3, 3) camera-to-world rotation, ``t`` (S, 3) centre (mm), ``f`` (S, 2)
    focal lengths (px), ``c`` (S, 2) principal point (px), ``k`` (S, 3) radial and ``p`` (S, 2)
    tangential distortion, ``name``, ``size`` = (width, height) px.
    """

    R: torch.Tensor
    t: torch.Tensor
    f: torch.Tensor
    c: torch.Tensor
    k: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    p: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    name: str = ""
    size: tuple[int, int] = (1000, 1000)

    def to_camera(self, X: torch.Tensor) -> torch.Tensor:
        """World points (..., N, 3) -> camera coordinates (..., N, 3): R^T (X - t).

        The camera's batch shape S broadcasts against the points' leading shape.
        """
        return torch.einsum("...ji,...nj->...ni", self.R, X - self.t.unsqueeze(-2))

    def to_world(self, Xc: torch.Tensor) -> torch.Tensor:
        """Camera coordinates (..., N, 3) -> world (..., N, 3): R Xc + t."""
        return torch.einsum("...ij,...nj->...ni", self.R, Xc) + self.t.unsqueeze(-2)

    def distort(self, u: torch.Tensor) -> torch.Tensor:
        """Normalised image coordinates (..., N, 2) -> distorted (..., N, 2) (module formula)."""
        r2 = (u * u).sum(-1, keepdim=True)
        k = self.k.unsqueeze(-2)
        p = self.p.unsqueeze(-2)
        radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
        tan = p[..., 0:1] * u[..., 1:2] + p[..., 1:2] * u[..., 0:1]
        return u * (radial + tan) + torch.cat([p[..., 1:2], p[..., 0:1]], -1) * r2

    def project(self, X: torch.Tensor, distortion: bool = False) -> torch.Tensor:
        """World points (..., N, 3) -> pixels (..., N, 2). Differentiable; batched."""
        Xc = self.to_camera(X)
        u = Xc[..., :2] / Xc[..., 2:3]
        if distortion:
            u = self.distort(u)
        return self.f.unsqueeze(-2) * u + self.c.unsqueeze(-2)

    def depth(self, X: torch.Tensor) -> torch.Tensor:
        """Depth along the optical axis of world points: (..., N, 3) -> (..., N)."""
        return self.to_camera(X)[..., 2]

    def backproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Undistorted pixels (..., N, 2) at known depths (..., N) -> world points (..., N, 3)."""
        u = (pixels - self.c.unsqueeze(-2)) / self.f.unsqueeze(-2)
        Xc = torch.cat([u * depth.unsqueeze(-1), depth.unsqueeze(-1)], dim=-1)
        return self.to_world(Xc)

    def to(self, dtype: torch.dtype) -> Camera:
        return replace(self, **{n: getattr(self, n).to(dtype) for n in "Rtfckp"})


def stack_cameras(cameras: list[Camera], dim: int = 0) -> Camera:
    """Stack cameras of equal batch shape into one batched :class:`Camera` (new axis ``dim``)."""
    if not cameras:
        raise ValueError("stack_cameras needs at least one camera")
    fields = {n: torch.stack([getattr(c, n) for c in cameras], dim=dim) for n in "Rtfckp"}
    return Camera(**fields, name=",".join(c.name for c in cameras), size=cameras[0].size)


def index_camera(cam: Camera, idx: torch.Tensor | int | slice) -> Camera:
    """Index the leading batch axis of a batched camera."""
    return replace(cam, **{n: getattr(cam, n)[idx] for n in "Rtfckp"})


def _vec(data: dict, key: str, n: int, where: str) -> torch.Tensor:
    if key not in data:
        raise ValueError(f"{where}: missing field {key!r}")
    try:
        v = torch.tensor(data[key], dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: field {key!r} is not numeric ({err})") from None
    if v.numel() != n or not torch.isfinite(v).all():
        raise ValueError(f"{where}: field {key!r} must hold {n} finite numbers, got {data[key]!r}")
    return v


def load_cameras_json(
    path: str | Path = DEFAULT_CAMERAS_JSON, subject: str | None = None
) -> dict[str, list[Camera]]:
    """Load ``h36m_cameras.json``: {subject: [4 Cameras in the file's intrinsics order]}.

    ``subject`` restricts to one subject (e.g. "S1"). Errors name the file and the entry.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read camera json ({err})") from None
    if "intrinsics" not in data or "extrinsics" not in data:
        raise ValueError(f"{path}: expected keys 'intrinsics' and 'extrinsics'")
    intr = data["intrinsics"]
    out: dict[str, list[Camera]] = {}
    subjects = data["extrinsics"] if subject is None else {subject: None}
    for subj in subjects:
        if subj not in data["extrinsics"]:
            raise ValueError(f"{path}: no extrinsics for subject {subj!r}")
        ext = data["extrinsics"][subj]
        if len(ext) != len(intr):
            raise ValueError(f"{path}: {subj} has {len(ext)} extrinsics, {len(intr)} intrinsics")
        cams = []
        for i, (ci, ce) in enumerate(zip(intr, ext, strict=True)):
            where = f"{path}: {subj} camera {i} ({ci.get('id', '?')})"
            q = _vec(ce, "orientation", 4, where)
            cams.append(Camera(
                R=quaternion_to_matrix(q), t=_vec(ce, "translation", 3, where),
                f=_vec(ci, "focal_length", 2, where), c=_vec(ci, "center", 2, where),
                k=_vec(ci, "radial_distortion", 3, where),
                p=_vec(ci, "tangential_distortion", 2, where),
                name=str(ci.get("id", i)),
                size=(int(ci.get("res_w", 1000)), int(ci.get("res_h", 1000))),
            ))
        out[subj] = cams
    return out


def load_cameras_h5(
    path: str | Path, subjects: tuple[int, ...] = (1, 5, 6, 7, 8, 9, 11), num_cameras: int = 4
) -> dict[str, list[Camera]]:
    """Load the 3d-pose-baseline ``cameras.h5``: {"S<k>": [Camera, ...]}.

    Layout: group ``subject<k>/camera<c>/`` (c = 1..4) with datasets ``R`` (3, 3), ``T`` (3, 1)
    camera centre in mm, ``f`` (2, 1), ``c`` (2, 1), ``k`` (3, 1), ``p`` (2, 1) and ``Name`` (the
    camera name as an array of character codes). The release's loader transposes the stored
    ``R`` to obtain the world-to-camera rotation, i.e. the stored matrix is our camera-to-world
    ``R``, used as is. Errors name the file and the dataset.
    """
    import h5py

    path = Path(path)
    out: dict[str, list[Camera]] = {}
    try:
        hf = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: cannot open cameras.h5 ({err})") from None
    with hf:
        for s in subjects:
            cams = []
            for ci in range(1, num_cameras + 1):
                grp = f"subject{s}/camera{ci}"

                def get(key: str, n: int, grp: str = grp) -> torch.Tensor:
                    if f"{grp}/{key}" not in hf:
                        raise ValueError(f"{path}: missing dataset {grp}/{key}")
                    try:
                        v = torch.as_tensor(np.asarray(hf[f"{grp}/{key}"][()], dtype=np.float64)
                                            ).reshape(-1)
                    except (TypeError, ValueError):
                        raise ValueError(f"{path}: {grp}/{key} is not numeric (strings?); "
                                         f"expected {n} numbers") from None
                    if v.numel() != n or not torch.isfinite(v).all():
                        raise ValueError(f"{path}: {grp}/{key} must hold {n} finite numbers")
                    return v

                R = get("R", 9).reshape(3, 3)
                if f"{grp}/Name" in hf:
                    raw = hf[f"{grp}/Name"][()]
                    name = raw.decode() if isinstance(raw, bytes) else "".join(
                        chr(int(x)) for x in torch.as_tensor(raw).reshape(-1).tolist())
                else:
                    name = CAMERA_NAMES[ci - 1] if ci <= len(CAMERA_NAMES) else str(ci)
                cams.append(Camera(R=R, t=get("T", 3), f=get("f", 2), c=get("c", 2),
                                   k=get("k", 3), p=get("p", 2), name=name))
            out[f"S{s}"] = cams
    return out


def look_at_point(cameras: list[Camera]) -> torch.Tensor:
    """Least-squares point closest to all optical axes, (3,): the centre of the volume the
    cameras look at. Each axis is the line t + s R[:, 2]."""
    A = torch.zeros(3, 3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for cam in cameras:
        d = cam.R[:, 2].double()
        P = torch.eye(3, dtype=torch.float64) - torch.outer(d, d)
        A += P
        b += P @ cam.t.double()
    return torch.linalg.solve(A, b)


def place_in_volume(
    poses: torch.Tensor, cameras: list[Camera], floor_z: float | None = None
) -> torch.Tensor:
    """Translate a sequence (T, 17, 3) horizontally so that the mean root (joint 0) position
    sits above the cameras' look-at point. Heights are kept unless ``floor_z`` is given, in
    which case the sequence is shifted vertically so that its lowest joint is at ``floor_z``."""
    centre = look_at_point(cameras).to(poses.dtype)
    shift = torch.zeros(3, dtype=poses.dtype)
    shift[:2] = centre[:2] - poses[:, 0, :2].mean(0)
    if floor_z is not None:
        shift[2] = floor_z - poses[..., 2].min()
    return poses + shift


def in_view_fraction(
    poses: torch.Tensor, cameras: list[Camera], margin: float = 0.0
) -> torch.Tensor:
    """Fraction of joints inside each camera's image (and in front of it): -> (C,)."""
    fracs = []
    for cam in cameras:
        px = cam.project(poses.reshape(-1, 3).to(cam.R.dtype))
        z = cam.depth(poses.reshape(-1, 3).to(cam.R.dtype))
        w, h = cam.size
        ok = (z > 0) & (px[:, 0] >= margin) & (px[:, 0] <= w - margin)
        ok &= (px[:, 1] >= margin) & (px[:, 1] <= h - margin)
        fracs.append(ok.double().mean())
    return torch.stack(fracs)
