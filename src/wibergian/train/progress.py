"""Progress display on rank 0: a tqdm bar on a terminal, one line per log record otherwise.

The bar shows steps done, rate (it/s) and time left (tqdm's own estimate) and, as postfix, the
running loss and the first metric of the latest log record. Without a terminal (logs, CI) a
line ``step 40/200 loss 0.1234 mae 0.05 | 12.3 it/s, 0:00:13 left`` is printed to stderr at
each log record instead. ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

_SKIP = {"step", "split", "lr", "wall", "epoch", "grad_norm"}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _summary(record: dict[str, Any], limit: int = 2) -> dict[str, str]:
    out = {}
    for k, v in record.items():
        if k in _SKIP or v is None:
            continue
        out[k] = _fmt(v)
        if len(out) == limit:
            break
    return out


class Progress:
    """``mode``: "bar", "lines" or "off" ("auto" picks bar on a TTY, lines otherwise)."""

    def __init__(
        self, total: int, initial: int, mode: str = "auto", stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self.total = total
        self.done = initial
        self._t0 = time.perf_counter()
        self._n0 = initial
        self._bar = None
        if mode == "bar":
            self._bar = tqdm(total=total, initial=initial, file=self.stream, unit="step",
                             dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def record(self, record: dict[str, Any]) -> None:
        """Show a new log record (train or eval)."""
        summary = _summary(record)
        if record.get("split") == "eval":
            summary = {f"eval_{k}": v for k, v in summary.items()}
        if self._bar is not None:
            self._bar.set_postfix(summary, refresh=False)
        elif self.mode == "lines":
            elapsed = time.perf_counter() - self._t0
            rate = (self.done - self._n0) / elapsed if elapsed > 0 else float("nan")
            left = (self.total - self.done) / rate if rate and rate > 0 else float("nan")
            eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left == left else "?"
            text = " ".join(f"{k} {v}" for k, v in summary.items())
            tag = "eval " if record.get("split") == "eval" else ""
            print(f"{tag}step {record['step']}/{self.total} {text} | {rate:.3g} it/s, "
                  f"{eta} left", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A one-off line (resume notices, stop reasons)."""
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
