"""Progress for long work outside the trainer: one bar (or line) per phase.

    from wibergian.progress import phase
    with phase("fusion: seed 1/3 training", total=300, unit="step", quiet=quiet) as p:
        for step in range(300):
            ...
            p.update(1)

On a terminal a tqdm bar shows done/total, the rate and tqdm's estimate of the time left. Without
a terminal (logs, CI, ``reproduce`` piped to a file) a line is printed at the start, about every
10 % of the work with the elapsed time and the estimated time left, and at the end. ``quiet``
prints exactly one line per phase, when it ends (name, elapsed time). Everything goes to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm.auto import tqdm


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else ">1 day"


class Phase:
    """A running phase; call :meth:`update` as work is done, :meth:`note` for a one-off line."""

    def __init__(self, name: str, total: int | None, unit: str, mode: str,
                 stream: TextIO) -> None:
        self.name, self.total, self.unit, self.mode, self.stream = name, total, unit, mode, stream
        self.done = 0
        self._t0 = time.perf_counter()
        self._next_line = 0.1
        self._bar = None
        if mode == "bar":
            self._bar = tqdm(total=total, desc=name, unit=unit, file=stream, dynamic_ncols=True,
                             leave=True)
        elif mode == "lines":
            size = f" ({total} {unit}s)" if total else ""
            print(f"[{name}] started{size}", file=stream, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and self.total:
            frac = self.done / self.total
            if frac >= self._next_line and self.done < self.total:
                left = self.elapsed * (1 - frac) / frac
                print(f"[{self.name}] {self.done}/{self.total} {self.unit}s, "
                      f"{_clock(self.elapsed)} elapsed, ~{_clock(left)} left",
                      file=self.stream, flush=True)
                while self._next_line <= frac:
                    self._next_line += 0.1

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(f"[{self.name}] {text}", file=self.stream)
        elif self.mode == "lines":
            print(f"[{self.name}] {text}", file=self.stream, flush=True)

    def close(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.mode in ("lines", "quiet") or failed:
            state = "failed" if failed else "done"
            print(f"[{self.name}] {state} in {_clock(self.elapsed)}", file=self.stream,
                  flush=True)


@contextmanager
def phase(name: str, total: int | None = None, *, unit: str = "it", quiet: bool = False,
          mode: str = "auto", stream: TextIO | None = None) -> Iterator[Phase]:
    """A progress display for one phase of work (see the module docstring).

    ``mode``: "auto" (bar on a terminal, lines otherwise), "bar", "lines", "quiet" or "off"
    (nothing at all). ``quiet=True`` means "quiet".
    """
    stream = stream or sys.stderr
    if quiet and mode != "off":
        mode = "quiet"
    if mode == "auto":
        mode = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    p = Phase(name, total, unit, mode, stream)
    try:
        yield p
    except BaseException:
        p.close(failed=True)
        raise
    p.close()
