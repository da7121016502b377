"""The real-tracker data set: real OpenCV trackers run on video built from real photographs.

``build(out, ...)`` (``wibergian fuse make-real``) renders each sequence (:mod:`.video`), runs
every configuration of :mod:`.trackers` on it (initialised once, never re-initialised) and
writes the VOT layout :mod:`.vot` reads::

    <out>/sequences/list.txt, <out>/sequences/<seq>/groundtruth.txt
    <out>/results/<tracker>/baseline/<seq>/<seq>_001.txt      (frame 0: code 1; no box: 0)
    <out>/real_trackers.npz                                     (the same, packed; see below)

Values are written rounded to 0.01 px. Sequence ``i`` is drawn from seed ``1000 * seed + i``
(deterministic); a finished sequence is cached (``<out>/.done/<seq>``) and not rebuilt.

The package ships the packed outputs of the default build (``data/real_trackers.npz``, no
video), so training on real trackers' outputs needs neither OpenCV nor the build:
:func:`load_real` returns the :class:`~.data.Frames` the trainer takes, as the zoo path does.
Packed form: ``trackers``, ``sequences`` (names), ``lengths``; ``gt`` (ΣL, 4) and ``boxes``
(T, ΣL, 4) as int32 hundredths of a pixel; ``codes`` (T, ΣL) int8: -1 a box, else the VOT code.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import Frames, frames_from_dataset
from .vot import (
    INIT,
    UNKNOWN,
    Region,
    VOTDataset,
    VOTFormatError,
    VOTSequence,
    load_dataset,
    result_path,
    write_regions,
    write_sequence_list,
)

PACKED_NAME = "real_trackers.npz"
#: Default build: sequences, length range (frames), base seed.
FULL = {"n_sequences": 46, "length_min": 140, "length_max": 220, "seed": 0}
#: ``load_real(quick=True)``: the first sequences of the shipped set.
QUICK_SEQUENCES = 16
LABEL = ("real OpenCV trackers' output on video generated from real photographs "
         "(synthetic motion, exact ground truth)")


def sequence_plan(n_sequences: int, length_min: int, length_max: int, seed: int
                  ) -> list[tuple[str, int, int]]:
    """``(name, seed, length)`` of every sequence (lengths drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length_min, length_max + 1, n_sequences)
    return [(f"real{i:03d}", 1000 * seed + i, int(lengths[i])) for i in range(n_sequences)]


def _r(v: float) -> float:
    return round(float(v), 2)


def build_sequence(out: Path, name: str, seed: int, length: int,
                   trackers: list[str] | None = None) -> str:
    """Render one sequence, run every tracker, write its VOT files; returns ``name``."""
    import cv2

    from .trackers import CONFIGS, run_tracker
    from .video import render_sequence

    cv2.setNumThreads(1)
    done = out / ".done" / name
    if done.is_file():
        return name
    frames, gt = render_sequence(seed, length)
    write_regions(out / "sequences" / name / "groundtruth.txt",
                  [Region.rectangle(*(_r(v) for v in b)) for b in gt])
    for cfg in CONFIGS:
        if trackers is not None and cfg.name not in trackers:
            continue
        boxes = run_tracker(cfg, frames, gt[0])
        regions = [Region.special(INIT)]
        regions += [Region.special(UNKNOWN) if not np.all(np.isfinite(b))
                    else Region.rectangle(*(_r(v) for v in b)) for b in boxes[1:]]
        write_regions(result_path(out, cfg.name, name), regions)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"seed": seed, "length": length}))
    return name


def build(out: Path | str, n_sequences: int = FULL["n_sequences"],
          length_min: int = FULL["length_min"], length_max: int = FULL["length_max"],
          seed: int = FULL["seed"], workers: int = 2, quiet: bool = False,
          trackers: list[str] | None = None) -> Path:
    """Build (or complete, from the cache) the data set; writes the VOT folder and the npz.

    ``workers`` = 2 runs one extra process beside this one (never more).
    """
    from wibergian.progress import phase

    from .trackers import CONFIGS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = sequence_plan(n_sequences, length_min, length_max, seed)
    settings = {"n_sequences": n_sequences, "length_min": length_min,
                "length_max": length_max, "seed": seed,
                "trackers": trackers or [c.name for c in CONFIGS]}
    manifest = out / "build.json"
    if manifest.is_file() and json.loads(manifest.read_text()) != settings:
        raise SystemExit(f"{out} holds a build with other settings ({manifest}); "
                         "use another --out or delete the folder")
    manifest.write_text(json.dumps(settings, indent=2))
    (out / "README.txt").write_text(
        f"{LABEL}.\nBuilt by `wibergian fuse make-real`; settings in build.json.\n")
    frames_total = sum(p[2] for p in plan)
    with phase("fusion: make-real", total=frames_total, unit="frame", quiet=quiet) as prog:
        if workers > 1 and len(plan) > 1:
            with ProcessPoolExecutor(max_workers=1) as pool:
                futures = [(pool.submit(build_sequence, out, *p, trackers), p[2])
                           for p in plan[1::2]]
                for p in plan[0::2]:
                    build_sequence(out, *p, trackers)
                    prog.update(p[2])
                for fut, n in futures:
                    fut.result()
                    prog.update(n)
        else:
            for p in plan:
                build_sequence(out, *p, trackers)
                prog.update(p[2])
    write_sequence_list(out, [p[0] for p in plan])
    pack(load_dataset(out), out / PACKED_NAME)
    return out


# ----------------------------------------------------------------------------- packed form


def pack(ds: VOTDataset, path: Path | str) -> Path:
    """Write a loaded data set as the compact npz (hundredths of a pixel; see module doc)."""
    gt = np.concatenate([s.gt for s in ds.sequences])
    boxes = np.concatenate([s.boxes for s in ds.sequences], axis=1)
    valid = np.concatenate([s.valid for s in ds.sequences], axis=1)
    codes = np.where(valid, -1, UNKNOWN).astype(np.int8)
    starts = np.cumsum([0] + [s.length for s in ds.sequences])[:-1]
    codes[:, starts] = INIT
    cpx = np.round(np.nan_to_num(boxes) * 100).astype(np.int32)
    np.savez_compressed(path, trackers=np.array(ds.trackers), lengths=np.array(
        [s.length for s in ds.sequences]), sequences=np.array([s.name for s in ds.sequences]),
        gt=np.round(gt * 100).astype(np.int32), boxes=cpx, codes=codes)
    return Path(path)


def unpack(path: Path | str, n_sequences: int | None = None) -> VOTDataset:
    """Read the npz back as a :class:`VOTDataset` (the first ``n_sequences`` if given)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        trackers = [str(t) for t in z["trackers"]]
        names = [str(n) for n in z["sequences"]]
        lengths = z["lengths"].astype(int)
        gt_all, boxes_all, codes_all = z["gt"] / 100.0, z["boxes"] / 100.0, z["codes"]
    except (OSError, KeyError, ValueError) as err:
        raise VOTFormatError(f"{path}: not a packed real-tracker file ({err})") from None
    seqs = []
    start = 0
    for k, (name, L) in enumerate(zip(names, lengths, strict=True)):
        if n_sequences is not None and k >= n_sequences:
            break
        sl = slice(start, start + L)
        start += L
        gt = gt_all[sl]
        codes = codes_all[:, sl]
        valid = codes < 0
        boxes = np.where(valid[:, :, None], boxes_all[:, sl], np.nan)
        boxes[codes == INIT] = np.broadcast_to(gt, boxes.shape)[codes == INIT]
        first = boxes[:, 0, 2:].copy()
        seqs.append(VOTSequence(name, gt, boxes, valid, first))
    return VOTDataset(path, trackers, seqs)


def shipped_path() -> Path:
    from wibergian.data import data_path

    return data_path(PACKED_NAME)


def load_real(quick: bool = False, dtype: torch.dtype = torch.float32) -> Frames:
    """The shipped real-tracker data as training frames (no OpenCV needed).

    ``quick``: the first :data:`QUICK_SEQUENCES` sequences only. Returns the same
    :class:`Frames` that ``frames_from_dataset(load_dataset(folder))`` gives for the zoo.
    """
    return frames_from_dataset(real_dataset(quick), dtype=dtype)


def real_dataset(quick: bool = False) -> VOTDataset:
    return unpack(shipped_path(), QUICK_SEQUENCES if quick else None)


def is_real_source(data: str | os.PathLike) -> bool:
    """``--data real`` / ``real-quick`` name the shipped set."""
    return str(data) in ("real", "real-quick")
