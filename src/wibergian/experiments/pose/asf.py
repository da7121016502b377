"""Acclaim ASF (skeleton) and AMC (motion) file parsers, as used by the CMU mocap database.

Malformed files raise :class:`MocapFormatError`, whose message starts with ``file:line``.
Units are not converted here (see :mod:`.mocap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MM_PER_INCH = 25.4


class MocapFormatError(ValueError):
    """A malformed ASF/AMC file; the message names the file and the line."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line


@dataclass
class AsfBone:
    """One ASF bone: unit ``direction`` (3,), ``length`` (ASF units), ``axis`` angles (deg,
    applied in ``axis_order``), its ``dofs`` (e.g. ``["rx", "rz"]``) and ``parent``."""

    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray
    axis_order: str
    dofs: list[str] = field(default_factory=list)
    parent: str = ""


@dataclass
class AsfSkeleton:
    """A parsed ASF file. ``length_unit`` is the ``:units length`` value; ``mm_per_unit`` the
    conversion applied by :func:`forward_kinematics`. ``bones`` excludes the root."""

    path: str
    length_unit: float
    angle_in_degrees: bool
    root_order: list[str]
    root_axis_order: str
    root_position: np.ndarray
    root_orientation: np.ndarray
    bones: dict[str, AsfBone]
    children: dict[str, list[str]]

    @property
    def mm_per_unit(self) -> float:
        return MM_PER_INCH / self.length_unit

    def order(self) -> list[str]:
        """Bone names in depth-first order from the root (parents before children)."""
        out: list[str] = []
        stack = list(reversed(self.children.get("root", [])))
        while stack:
            name = stack.pop()
            out.append(name)
            stack.extend(reversed(self.children.get(name, [])))
        return out


@dataclass
class AmcMotion:
    """A parsed AMC file: ``values[bone]`` is (T, n_values) in file order (angles in degrees or
    radians as the file says, translations in ASF units); ``frames`` (T,) the frame numbers."""

    path: str
    frames: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _floats(path: Path, lineno: int, tokens: list[str], n: int | None, what: str) -> list[float]:
    if n is not None and len(tokens) < n:
        raise MocapFormatError(path, lineno, f"{what}: expected {n} numbers, got {len(tokens)}")
    try:
        vals = [float(t) for t in (tokens if n is None else tokens[:n])]
    except ValueError as err:
        raise MocapFormatError(path, lineno, f"{what}: not a number ({err})") from None
    if not all(math.isfinite(v) for v in vals):
        raise MocapFormatError(path, lineno, f"{what}: non-finite value")
    return vals


_ROOT_CHANNELS = ("tx", "ty", "tz", "rx", "ry", "rz")


def _axis_order(path: Path, lineno: int, text: str) -> str:
    """An axis order must be a permutation of XYZ (e.g. "XYZ", "ZYX")."""
    order = text.upper()
    if sorted(order) != ["X", "Y", "Z"]:
        raise MocapFormatError(path, lineno, f"axis order {text!r} is not a permutation of "
                               "XYZ (e.g. XYZ, ZXY)")
    return order


def parse_asf(path: str | Path) -> AsfSkeleton:
    """Parse an Acclaim skeleton file. Raises :class:`MocapFormatError` (file:line) if malformed."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as err:
        raise MocapFormatError(path, None, f"cannot read file ({err})") from None
    section = ""
    length_unit, degrees = 1.0, True
    root_order: list[str] = []
    root_axis = "XYZ"
    root_pos = np.zeros(3)
    root_ori = np.zeros(3)
    bones: dict[str, AsfBone] = {}
    children: dict[str, list[str]] = {}
    bone: dict[str, object] | None = None
    bone_line = 0
    in_limits = False
    hierarchy_open = False
    for lineno, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tok = line.split()
        if tok[0].startswith(":"):
            if bone is not None:
                raise MocapFormatError(path, lineno, f"section {tok[0]} inside an unfinished bone")
            section = tok[0][1:].lower()
            continue
        key = tok[0].lower()
        if section == "units":
            if key == "length":
                (length_unit,) = _floats(path, lineno, tok[1:], 1, "units length")
                if length_unit <= 0:
                    raise MocapFormatError(path, lineno, "units length must be positive")
            elif key == "angle":
                if len(tok) < 2 or tok[1].lower() not in ("deg", "rad"):
                    raise MocapFormatError(path, lineno, "angle unit must be 'deg' or 'rad'")
                degrees = tok[1].lower() == "deg"
        elif section == "root":
            if key == "order":
                root_order = [t.lower() for t in tok[1:]]
                bad = [t for t in root_order if t not in _ROOT_CHANNELS]
                if bad:
                    raise MocapFormatError(path, lineno, f"unknown root channel {bad[0]!r}; "
                                           f"expected some of {' '.join(_ROOT_CHANNELS)}")
                if len(set(root_order)) != len(root_order):
                    raise MocapFormatError(path, lineno, "root channel listed twice")
            elif key == "axis":
                root_axis = _axis_order(path, lineno, tok[1]) if len(tok) > 1 else "XYZ"
            elif key == "position":
                root_pos = np.array(_floats(path, lineno, tok[1:], 3, "root position"))
            elif key == "orientation":
                root_ori = np.array(_floats(path, lineno, tok[1:], 3, "root orientation"))
        elif section == "bonedata":
            if key == "begin":
                if bone is not None:
                    raise MocapFormatError(path, lineno, "'begin' inside an unfinished bone")
                bone, bone_line, in_limits = {}, lineno, False
            elif key == "end":
                if bone is None:
                    raise MocapFormatError(path, lineno, "'end' without 'begin'")
                for needed in ("name", "direction", "length", "axis"):
                    if needed not in bone:
                        raise MocapFormatError(
                            path, bone_line, f"bone starting here has no '{needed}'"
                        )
                b = AsfBone(
                    name=str(bone["name"]),
                    direction=np.asarray(bone["direction"], dtype=float),
                    length=float(bone["length"]),  # type: ignore[arg-type]
                    axis=np.asarray(bone["axis"], dtype=float),
                    axis_order=str(bone["axis_order"]),
                    dofs=list(bone.get("dofs", [])),  # type: ignore[call-overload]
                )
                if b.name in bones or b.name == "root":
                    raise MocapFormatError(path, bone_line, f"duplicate bone name {b.name!r}")
                bones[b.name] = b
                bone = None
            elif bone is None:
                raise MocapFormatError(path, lineno, f"'{tok[0]}' outside a begin/end block")
            elif key == "name":
                if len(tok) < 2:
                    raise MocapFormatError(path, lineno, "bone name missing")
                bone["name"] = tok[1]
                in_limits = False
            elif key == "direction":
                d = np.array(_floats(path, lineno, tok[1:], 3, "direction"))
                norm = float(np.linalg.norm(d))
                if norm == 0.0:
                    raise MocapFormatError(path, lineno, "zero direction vector")
                bone["direction"] = d / norm
            elif key == "length":
                (bone["length"],) = _floats(path, lineno, tok[1:], 1, "length")
                if bone["length"] < 0:  # type: ignore[operator]
                    raise MocapFormatError(path, lineno, f"negative bone length "
                                           f"{bone['length']}; lengths must be >= 0")
            elif key == "axis":
                bone["axis"] = _floats(path, lineno, tok[1:], 3, "axis")
                bone["axis_order"] = (_axis_order(path, lineno, tok[4]) if len(tok) > 4
                                      else "XYZ")
            elif key == "dof":
                dofs = [t.lower() for t in tok[1:]]
                bad = [d for d in dofs if d not in ("rx", "ry", "rz", "tx", "ty", "tz", "l")]
                if bad:
                    raise MocapFormatError(path, lineno, f"unknown dof {bad[0]!r}")
                bone["dofs"] = dofs
            elif key == "limits":
                in_limits = True
            elif in_limits and tok[0].startswith("("):
                pass
            elif key in ("id", "bodymass", "cofmass"):
                pass
            else:
                raise MocapFormatError(path, lineno, f"unexpected bone field {tok[0]!r}")
        elif section == "hierarchy":
            if key == "begin":
                hierarchy_open = True
            elif key == "end":
                hierarchy_open = False
            elif hierarchy_open:
                parent = tok[0]
                if parent != "root" and parent not in bones:
                    raise MocapFormatError(path, lineno, f"unknown bone {parent!r} in hierarchy")
                for child in tok[1:]:
                    if child not in bones:
                        raise MocapFormatError(path, lineno, f"unknown bone {child!r}")
                    if bones[child].parent:
                        raise MocapFormatError(path, lineno, f"bone {child!r} has two parents")
                    bones[child].parent = parent
                    children.setdefault(parent, []).append(child)
            else:
                raise MocapFormatError(path, lineno, "hierarchy line outside begin/end")
    if bone is not None:
        raise MocapFormatError(path, bone_line, "bone block not closed by 'end'")
    if not bones:
        raise MocapFormatError(path, None, "no :bonedata bones found")
    orphans = [n for n, b in bones.items() if not b.parent]
    if orphans:
        raise MocapFormatError(path, None, f"bones not in :hierarchy: {', '.join(orphans)}")
    if not root_order:
        raise MocapFormatError(path, None, "no :root 'order' line")
    return AsfSkeleton(
        path=str(path), length_unit=length_unit, angle_in_degrees=degrees,
        root_order=root_order, root_axis_order=root_axis, root_position=root_pos,
        root_orientation=root_ori, bones=bones, children=children,
    )


def parse_amc(path: str | Path, skel: AsfSkeleton) -> AmcMotion:
    """Parse an AMC motion file against its skeleton; every frame must give every bone that has
    dofs, with the right number of values. Raises :class:`MocapFormatError` (file:line)."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as err:
        raise MocapFormatError(path, None, f"cannot read file ({err})") from None
    expected = {"root": len(skel.root_order)}
    expected.update({n: len(b.dofs) for n, b in skel.bones.items() if b.dofs})
    frames: list[int] = []
    rows: dict[str, list[list[float]]] = {n: [] for n in expected}
    current: dict[str, list[float]] = {}
    frame_line = 0

    def close_frame(lineno: int) -> None:
        missing = [n for n in expected if n not in current]
        if missing:
            raise MocapFormatError(
                path, frame_line, f"frame {frames[-1]} lacks bone(s) {', '.join(missing[:5])}"
                f" (frame ends before line {lineno})",
            )
        for n in expected:
            rows[n].append(current[n])

    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(":"):
            continue
        tok = line.split()
        if len(tok) == 1 and tok[0].isdigit():
            if frames:
                close_frame(lineno)
            number = int(tok[0])
            if frames and number != frames[-1] + 1:
                raise MocapFormatError(
                    path, lineno, f"frame {number} follows frame {frames[-1]} (expected +1)"
                )
            frames.append(number)
            current, frame_line = {}, lineno
            continue
        if not frames:
            raise MocapFormatError(path, lineno, f"data before the first frame number: {tok[0]!r}")
        name = tok[0]
        if name not in expected:
            raise MocapFormatError(path, lineno, f"unknown bone {name!r} (or bone without dofs)")
        if name in current:
            raise MocapFormatError(path, lineno, f"bone {name!r} twice in frame {frames[-1]}")
        n = expected[name]
        if len(tok) - 1 != n:
            raise MocapFormatError(
                path, lineno, f"bone {name!r} needs {n} values, got {len(tok) - 1}"
            )
        current[name] = _floats(path, lineno, tok[1:], n, f"bone {name!r}")
    if not frames:
        raise MocapFormatError(path, None, "no frames found")
    close_frame(len(lines) + 1)
    return AmcMotion(
        path=str(path),
        frames=np.asarray(frames),
        values={n: np.asarray(v, dtype=float).reshape(len(frames), -1) for n, v in rows.items()},
    )
