"""Atomic checkpoint files: write to a temporary file, fsync, rename.

A checkpoint is ``checkpoints/step_XXXXXXXXX.pt`` (the state after that many updates). It is
written to ``checkpoints/.step_XXXXXXXXX.pt.tmp-PID``, flushed and fsync'ed, then moved into
place with ``os.replace`` (atomic on POSIX) and the folder is fsync'ed. A process killed at any
moment therefore leaves either the complete new file or none; temporary files never match the
checkpoint name pattern and are never loaded (resume deletes them).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from . import faults

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{9})\.pt$")
_TMP = re.compile(r"^\..+\.tmp-\d+$")
REQUIRED_KEYS = ("format", "step", "model", "optimizer", "data", "rng", "config", "history")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or lacks required content."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:09d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every completed checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | Any, *, step: int | None = None) -> Path:
    """Write ``data`` (bytes, or an object for ``torch.save``) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                torch.save(data, f)
            faults.checkpoint_tmp_written(f, step)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, text.encode("utf-8"))


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (must hold the `REQUIRED_KEYS`) as the checkpoint of ``state['step']``."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint state lacks {missing}")
    return write_atomic(checkpoint_path(folder, state["step"]), state, step=state["step"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint (tensors on the CPU), checking it is complete."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") \
            from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a trainer checkpoint (a {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a trainer checkpoint, lacks {missing}")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format']}, this trainer reads {FORMAT_VERSION}"
        )
    return state


def load_latest(folder: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads, or None; unreadable newer files are skipped with a
    warning (they cannot come from this writer, but disks fail)."""
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path), path
        except CheckpointError as exc:
            warnings.warn(f"skipping {exc}", RuntimeWarning, stacklevel=2)
    return None


def prune(folder: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (None keeps all); returns the deleted."""
    if keep is None:
        return []
    doomed = [p for _, p in list_checkpoints(folder)[:-keep]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Delete temporary files left by a writer that was killed; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TMP.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
