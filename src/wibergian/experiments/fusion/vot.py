"""Reading and writing the VOT data format (sequences and tracker results).

Folder layout (the VOT toolkit's workspace layout)::

    <root>/sequences/list.txt                      optional: sequence names, one a line
    <root>/sequences/<seq>/groundtruth.txt         one region a line
    <root>/results/<tracker>/<experiment>/<seq>/<seq>_001.txt

``<root>/<seq>/groundtruth.txt`` (no ``sequences/`` level) is accepted too. ``<experiment>`` is
``baseline`` by default (``unsupervised`` for the VOT runs without re-initialisation).

One region a line, values separated by commas:

- 4 values: rectangle ``x, y, w, h`` (top-left corner, width, height, pixels);
- an even number >= 8 of values: polygon ``x1, y1, x2, y2, ...``; reduced to an axis-aligned
  box by :func:`wibergian.experiments.fusion.geometry.polygon_to_box` (min/max bounding box);
- a single integer: special code ``0`` unknown, ``1`` initialisation, ``2`` failure.

Anything else (other value counts, non-numbers, non-finite numbers, coordinates beyond
±:data:`MAX_COORD` pixels, negative sizes, blank lines in the middle of a file, text that is
not UTF-8) raises :class:`VOTFormatError` naming the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry import polygon_to_box

SPECIAL_CODES = {0: "unknown", 1: "initialisation", 2: "failure"}
#: Largest plausible coordinate or size, in pixels (a 1e6-pixel-wide frame is far beyond any
#: video; larger values are unit or parsing errors, e.g. 1e300, and would overflow training).
MAX_COORD = 1e6
UNKNOWN, INIT, FAILURE = 0, 1, 2


class VOTFormatError(ValueError):
    """Malformed or inconsistent VOT data; the message names the file (and line)."""


@dataclass(frozen=True)
class Region:
    """One line of a VOT region file.

    ``kind`` is ``"rectangle"`` (values ``x, y, w, h``), ``"polygon"`` (``x1, y1, ...``) or
    ``"special"`` (a single code in ``SPECIAL_CODES``).
    """

    kind: str
    values: tuple[float, ...]

    @staticmethod
    def rectangle(x: float, y: float, w: float, h: float) -> Region:
        return Region("rectangle", (float(x), float(y), float(w), float(h)))

    @staticmethod
    def polygon(points: Sequence[float]) -> Region:
        return Region("polygon", tuple(float(v) for v in points))

    @staticmethod
    def special(code: int) -> Region:
        if code not in SPECIAL_CODES:
            raise ValueError(f"special code must be one of {sorted(SPECIAL_CODES)}, got {code}")
        return Region("special", (float(code),))

    @property
    def code(self) -> int | None:
        """The special code, or ``None`` for a rectangle or polygon."""
        return int(self.values[0]) if self.kind == "special" else None

    def to_box(self) -> tuple[float, float, float, float] | None:
        """Axis-aligned box ``(x, y, w, h)``; ``None`` for special codes."""
        if self.kind == "rectangle":
            x, y, w, h = self.values
            return (x, y, w, h)
        if self.kind == "polygon":
            return polygon_to_box(self.values)
        return None


def _fmt(v: float) -> str:
    """Shortest text that reads back to exactly ``v``."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def format_region(region: Region) -> str:
    """Text of one line (no newline)."""
    if region.kind == "special":
        return str(region.code)
    return ",".join(_fmt(v) for v in region.values)


def parse_region(text: str, path: Path | str = "<string>", line_no: int = 0) -> Region:
    """Parse one line; errors name ``path:line_no``."""
    where = f"{path}:{line_no}"
    s = text.strip()
    if not s:
        raise VOTFormatError(f"{where}: empty line (expected a region)")
    parts = [p.strip() for p in s.replace("\t", ",").split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise VOTFormatError(f"{where}: not a list of numbers: {s!r}") from None
    if any(not math.isfinite(v) for v in vals):
        raise VOTFormatError(f"{where}: non-finite value in {s!r}")
    big = [v for v in vals if abs(v) > MAX_COORD]
    if big:
        raise VOTFormatError(
            f"{where}: implausible value {big[0]:g} in {s!r}: coordinates and sizes must be "
            f"pixels within ±{MAX_COORD:g} (wrong units or a corrupted file?)")
    if len(vals) == 1:
        v = vals[0]
        if not v.is_integer() or int(v) not in SPECIAL_CODES:
            raise VOTFormatError(
                f"{where}: a single value must be a special code 0 (unknown), "
                f"1 (initialisation) or 2 (failure), got {s!r}")
        return Region.special(int(v))
    if len(vals) == 4:
        if vals[2] < 0 or vals[3] < 0:
            raise VOTFormatError(f"{where}: rectangle with negative width/height: {s!r}")
        return Region("rectangle", tuple(vals))
    if len(vals) >= 8 and len(vals) % 2 == 0:
        return Region("polygon", tuple(vals))
    raise VOTFormatError(
        f"{where}: {len(vals)} values; expected 1 (special code), 4 (rectangle) "
        f"or an even number >= 8 (polygon): {s!r}")


def _read_text(path: Path) -> str:
    """The file's text as UTF-8; an error names the file, line and byte that are not."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise VOTFormatError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}); VOT region files are plain ASCII numbers") from None


def read_regions(path: Path | str) -> list[Region]:
    """All regions of a file. Trailing blank lines are ignored; other blank lines are errors."""
    path = Path(path)
    if not path.is_file():
        raise VOTFormatError(f"{path}: file not found")
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise VOTFormatError(f"{path}: file is empty")
    return [parse_region(text, path, i + 1) for i, text in enumerate(lines)]


def write_regions(path: Path | str, regions: Iterable[Region]) -> None:
    """Write one region a line (creates parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_region(r) + "\n" for r in regions))


# ----------------------------------------------------------------------------- folder level


def sequences_dir(root: Path | str) -> Path:
    root = Path(root)
    return root / "sequences" if (root / "sequences").is_dir() else root


def groundtruth_path(root: Path | str, seq: str) -> Path:
    return sequences_dir(root) / seq / "groundtruth.txt"


def result_path(root: Path | str, tracker: str, seq: str, experiment: str = "baseline") -> Path:
    return Path(root) / "results" / tracker / experiment / seq / f"{seq}_001.txt"


def list_sequences(root: Path | str) -> list[str]:
    """Names from ``sequences/list.txt`` if present, else every folder with a groundtruth."""
    sdir = sequences_dir(root)
    listing = sdir / "list.txt"
    if listing.is_file():
        names = [ln.strip() for ln in _read_text(listing).splitlines() if ln.strip()]
        for i, n in enumerate(names):
            if not (sdir / n / "groundtruth.txt").is_file():
                raise VOTFormatError(
                    f"{listing}:{i + 1}: sequence {n!r} has no {sdir / n / 'groundtruth.txt'}")
        return names
    names = sorted(p.parent.name for p in sdir.glob("*/groundtruth.txt"))
    if not names:
        raise VOTFormatError(f"{sdir}: no <seq>/groundtruth.txt found")
    return names


def list_trackers(root: Path | str, experiment: str = "baseline") -> list[str]:
    rdir = Path(root) / "results"
    names = sorted(p.parent.name for p in rdir.glob(f"*/{experiment}") if p.is_dir())
    if not names:
        found = sorted({p.name for p in rdir.glob("*/*") if p.is_dir()})
        raise VOTFormatError(
            f"{rdir}: no <tracker>/{experiment}/ folders found; experiments present: "
            + (", ".join(found) if found else "none (is this a VOT results folder?)"))
    return names


def _boxes(regions: list[Region]) -> tuple[np.ndarray, np.ndarray]:
    """(L, 4) boxes (NaN where special) and (L,) codes (-1 where a region is given)."""
    out = np.full((len(regions), 4), np.nan)
    codes = np.full(len(regions), -1, dtype=np.int64)
    for i, r in enumerate(regions):
        b = r.to_box()
        if b is None:
            codes[i] = r.code
        else:
            out[i] = b
    return out, codes


@dataclass
class VOTSequence:
    """One sequence with every tracker's output, as arrays.

    ``gt`` (L, 4) boxes ``x, y, w, h`` (NaN where the ground truth is a special code);
    ``boxes`` (T, L, 4) tracker boxes; ``valid`` (T, L) True where a tracker gave a region.
    A tracker's code 1 (initialisation) means it was handed the ground truth on that frame:
    it is marked not valid there (fusing it would leak the ground truth), and its box is
    recorded as the ground truth so that the first-frame size ``first_size`` (T, 2) is known.
    """

    name: str
    gt: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    first_size: np.ndarray = field(repr=False)

    @property
    def length(self) -> int:
        return self.gt.shape[0]


@dataclass
class VOTDataset:
    root: Path
    trackers: list[str]
    sequences: list[VOTSequence]

    @property
    def n_frames(self) -> int:
        return sum(s.length for s in self.sequences)


def load_sequence(root: Path | str, seq: str, trackers: list[str],
                  experiment: str = "baseline") -> VOTSequence:
    gpath = groundtruth_path(root, seq)
    gt, gcodes = _boxes(read_regions(gpath))
    L = gt.shape[0]
    T = len(trackers)
    boxes = np.full((T, L, 4), np.nan)
    valid = np.zeros((T, L), dtype=bool)
    first = np.full((T, 2), np.nan)
    for t, name in enumerate(trackers):
        rpath = result_path(root, name, seq, experiment)
        regions = read_regions(rpath)
        if len(regions) != L:
            raise VOTFormatError(
                f"{rpath}: {len(regions)} lines but {gpath} has {L} "
                f"(first line without a match: {min(len(regions), L) + 1})")
        b, codes = _boxes(regions)
        boxes[t] = b
        valid[t] = codes < 0
        init = codes == INIT
        boxes[t][init] = gt[init]
        f0 = boxes[t, 0]
        if not np.all(np.isfinite(f0)):
            raise VOTFormatError(
                f"{rpath}:1: first frame has no region (code {codes[0]}) and the ground truth "
                "is unknown there, so the tracker's first-frame size is undefined")
        first[t] = f0[2:]
    return VOTSequence(seq, gt, boxes, valid, first)


def load_dataset(root: Path | str, trackers: list[str] | None = None,
                 sequences: list[str] | None = None, experiment: str = "baseline") -> VOTDataset:
    """Read a whole VOT folder (the only way data enters fusion training)."""
    root = Path(root)
    if not root.is_dir():
        raise VOTFormatError(f"{root}: folder not found")
    trackers = list_trackers(root, experiment) if trackers is None else list(trackers)
    seqs = list_sequences(root) if sequences is None else list(sequences)
    return VOTDataset(root, trackers,
                      [load_sequence(root, s, trackers, experiment) for s in seqs])


def write_sequence_list(root: Path | str, names: list[str]) -> None:
    p = Path(root) / "sequences" / "list.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(n + "\n" for n in names))
