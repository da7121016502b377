"""Graceful stop on SIGTERM / SIGINT: finish the current update, checkpoint, exit cleanly.

Schedulers send SIGTERM before killing a pre-empted job; Ctrl-C sends SIGINT. While `fit` runs,
the first such signal only sets a flag; the loop averages the flag over processes together with
the loss (so every rank stops at the same update), writes a checkpoint after that update and
returns with ``stop_reason="interrupted"``. A second SIGINT raises ``KeyboardInterrupt`` at
once. Handlers are installed only in the main thread and restored afterwards.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class GracefulStop:
    """Context manager; ``requested`` becomes True on the first SIGTERM/SIGINT."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
