"""Workers stop when their launcher dies.

``torchrun`` starts one worker process per rank as its children. If ``torchrun`` itself is
killed without a chance to stop them (``kill -9``, its terminal closed), the workers would keep
training and writing into the run folder. `watch_parent` starts a daemon thread that polls the
parent pid once a second; when the process has been re-parented (its launcher is gone) it sends
itself SIGTERM — inside `Trainer.fit` that means: finish the current update, checkpoint it, stop
(`signals.GracefulStop`; all workers get the signal, so they agree on the step) — and, should
the process still be alive ``grace`` seconds later (e.g. blocked in a collective with a dead
peer), exits at once with status 143. Checkpoints are written atomically, so a hard exit never
leaves a half-written one.

The trainer calls `watch_parent` when it runs under torchrun (``TORCHELASTIC_RUN_ID`` or
``WORLD_SIZE`` > 1 in the environment). A polling thread is used rather than Linux's
``PR_SET_PDEATHSIG``, which fires when the *thread* that started the child exits, not the
process, and exists on Linux only.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_started: threading.Thread | None = None


def _watch(parent: int, poll: float, grace: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os._exit(128 + signal.SIGTERM)


def watch_parent(poll: float = 1.0, grace: float = 120.0) -> threading.Thread | None:
    """Stop this process (SIGTERM, then a hard exit after ``grace`` s) once its parent dies.

    Idempotent: one watcher per process. Returns the thread (None if the parent is already
    gone, in which case SIGTERM is sent at once).
    """
    global _started
    if _started is not None and _started.is_alive():
        return _started
    parent = os.getppid()
    if parent == 1:  # already orphaned (the launcher died before we got here)
        os.kill(os.getpid(), signal.SIGTERM)
        return None
    _started = threading.Thread(target=_watch, args=(parent, poll, grace),
                                name="wibergian-parent-watch", daemon=True)
    _started.start()
    return _started


def launched_by_torchrun() -> bool:
    """Whether this process is a torchrun (torch.distributed.elastic) worker."""
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) or \
        int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
