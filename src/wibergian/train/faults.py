"""Crash injection for tests: the environment variable WIBERGIAN_TRAIN_FAULT.

Values (``STEP`` an update number):

- ``kill_after_step:STEP``     SIGKILL this process right after update STEP (before its
  checkpoint, if one is due);
- ``kill_in_checkpoint:STEP``  while writing the checkpoint of step STEP: write the temporary
  file, cut it to half its size and SIGKILL (a torn write);
- ``kill_before_rename:STEP``  write and fsync the complete temporary file of step STEP, then
  SIGKILL before the rename.

Unset (the normal case) these hooks do nothing.
"""

from __future__ import annotations

import os
import signal
from typing import BinaryIO

ENV = "WIBERGIAN_TRAIN_FAULT"


def _fault() -> tuple[str, int] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    kind, _, step = raw.partition(":")
    try:
        return kind, int(step)
    except ValueError as exc:
        raise ValueError(f"{ENV}={raw!r}: expected KIND:STEP") from exc


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int) -> None:
    """Hook called after each update."""
    if _fault() == ("kill_after_step", step):
        _die()


def checkpoint_tmp_written(f: BinaryIO, step: int | None) -> None:
    """Hook called once the temporary checkpoint file is written, before fsync and rename."""
    fault = _fault()
    if fault is None or step is None or fault[1] != step:
        return
    if fault[0] == "kill_in_checkpoint":
        f.flush()
        f.truncate(f.tell() // 2)
        f.flush()
        os.fsync(f.fileno())
        _die()
    if fault[0] == "kill_before_rename":
        f.flush()
        os.fsync(f.fileno())
        _die()
