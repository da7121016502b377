"""One set of writers per folder: ``FOLDER/lock`` names the processes writing into it.

A run (and ``wibergian reproduce``) takes the lock before it writes anything and removes it when
it ends. The file is JSON: host, the writers' pids with their start times (so a pid that was
reused by an unrelated process is recognised), the command line and the start time. Taking a
lock that exists:

- every named process is gone (killed, crashed, machine rebooted): the stale lock is taken over;
- one of them still runs on this host, or the lock was written on another host (its processes
  cannot be checked from here): `RunLockedError`, naming the pids, the command and what to do.

The file is created with an exclusive link, so two processes starting at the same moment cannot
both take a free lock. This guards against a second writer on the same machine; it is not a
lock for network filesystems shared by several machines (there it refuses conservatively).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCK_NAME = "lock"


class RunLockedError(FileExistsError):
    """The folder is in use by live writers (see the message for what to do)."""


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[19]) if len(fields) > 19 else None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` runs (not a zombie) and, if ``start`` is given and this system
    has /proc, started at ``start`` (so it is the same process, not a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        if stat[stat.rindex(")") + 2:].startswith("Z"):
            return False
    except OSError:
        return True  # no /proc: trust kill(0)
    return start is None or process_start(pid) in (None, start)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as held by unknown processes


class RunLock:
    """``FOLDER/lock`` for the processes ``pids`` (default: this process)."""

    def __init__(self, folder: str | Path, pids: list[int] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.pids = list(pids) if pids else [os.getpid()]
        self.held = False
        self.took_over: list[int] = []

    def _content(self) -> dict[str, Any]:
        return {
            "host": platform.node(),
            "pids": self.pids,
            "starts": [process_start(p) for p in self.pids],
            "argv": sys.argv,
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def live_writers(self, info: dict[str, Any]) -> list[int]:
        """The pids of ``info`` (a lock file's content) that may still be writing."""
        pids = [int(p) for p in info.get("pids", [])]
        if not pids or info.get("host") != platform.node():
            return pids or [-1]  # unknown writers, or another machine's: cannot check
        starts = list(info.get("starts") or [None] * len(pids))
        starts += [None] * (len(pids) - len(starts))
        return [p for p, s in zip(pids, starts, strict=True)
                if p not in self.pids and pid_alive(p, s)]

    def acquire(self) -> RunLock:
        """Take the lock (taking over a stale one) or raise `RunLockedError`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{LOCK_NAME}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self._content(), indent=1) + "\n")
        try:
            for _ in range(5):
                try:
                    self._create(tmp)
                    self.held = True
                    return self
                except FileExistsError:
                    pass
                info = _read(self.path)
                if info is None:
                    continue  # removed meanwhile: try again
                live = self.live_writers(info)
                if live:
                    who = ("unknown processes" if live == [-1] else
                           f"process(es) {', '.join(map(str, live))}")
                    cmd = " ".join(info.get("argv") or []) or "?"
                    raise RunLockedError(
                        f"{self.folder} is in use by {who} on {info.get('host', '?')} (since "
                        f"{info.get('started_utc', '?')}, command: {cmd}); wait for it to "
                        f"finish or stop it (kill -TERM PID: a training run checkpoints and "
                        f"stops), or choose another folder. If no such process is running, "
                        f"delete {self.path}")
                if _read(self.path) == info:  # stale and unchanged: remove, then retry
                    self.took_over = [int(p) for p in info.get("pids", [])]
                    self.path.unlink(missing_ok=True)
            raise RunLockedError(f"could not take {self.path}: other processes keep changing "
                                 "it; is another run starting in the same folder?")
        finally:
            tmp.unlink(missing_ok=True)

    def _create(self, tmp: Path) -> None:
        """Create the lock from the complete file ``tmp``; `FileExistsError` if one exists."""
        try:
            os.link(tmp, self.path)  # atomic, and readers never see a half-written lock
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: exclusive create, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(tmp.read_text())

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if not self.held:
            return
        self.held = False
        info = _read(self.path)
        if info and [int(p) for p in info.get("pids", [])] == self.pids \
                and info.get("host") == platform.node():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
