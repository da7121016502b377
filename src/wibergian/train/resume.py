"""The loop's checkpoint and resume bookkeeping (the files themselves: ``checkpoint.py``).

A checkpoint after update ``s`` holds everything the next update depends on: the model and
optimiser state, the data position (``sampling.BatchSource``), every process's RNG states, the
config, the history of log/eval records, the open log window (so a resumed run logs the same
means), the elapsed seconds and the last loss and metrics. :func:`restore` puts a run back in
that state (after checking that no setting that changes the trajectory differs); a resumed run
then follows the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import platform
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from . import checkpoint as ckpt
from . import distributed as D
from .config import describe_differences, trajectory_differences
from .rundir import RunDir
from .sampling import BatchSource
from .seeding import capture_rng, restore_rng


class LogWindow:
    """Sums over the current log window (checkpointed, so resumed logs match exactly)."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, float] = {}

    def add(self, values: dict[str, float]) -> None:
        self.n += 1
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def flush(self) -> dict[str, float]:
        out = {k: v / self.n for k, v in self.sums.items()}
        self.n, self.sums = 0, {}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sums": dict(self.sums)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.n, self.sums = int(s["n"]), dict(s["sums"])


class Resumed(NamedTuple):
    """Where the loop starts: after ``start`` updates (0 for a fresh run)."""

    start: int
    history: list[dict[str, Any]]
    window: LogWindow
    elapsed: float
    last_loss: float | None
    last_metrics: dict[str, float]
    last_path: Path | None


def load_latest(run: RunDir) -> dict[str, Any] | None:
    """The newest complete checkpoint's state in ``run``'s folder (``None`` if there is none),
    after removing (with a warning) files left by an interrupted write."""
    assert run.checkpoints is not None
    for p in ckpt.remove_stale_tmp(run.checkpoints):
        warnings.warn(f"removed unfinished checkpoint file {p}", RuntimeWarning, stacklevel=2)
    found = ckpt.load_latest(run.checkpoints)
    return None if found is None else found[0]


def restore(state: dict[str, Any] | None, cfg_dict: dict[str, Any], model: nn.Module,
            opt: torch.optim.Optimizer, source: BatchSource, info: D.DistInfo, run: RunDir,
            run_dir: Path | None) -> Resumed:
    """Load ``state`` (a checkpoint, or ``None`` for a fresh start) into the model, optimiser,
    data source and RNGs; rewrite metrics.jsonl to the checkpoint's history."""
    if state is None:
        if run.enabled:
            run.rewrite_metrics([])
        return Resumed(0, [], LogWindow(), 0.0, None, {}, None)
    bad = trajectory_differences(state["config"], cfg_dict)
    if bad:
        raise ValueError(
            f"cannot resume {run_dir}: these settings differ from the run's "
            f"(checkpoint -> now): {describe_differences(bad)}; resume with the "
            "run's settings (see its config.json), or start a new run in another "
            "folder")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise ValueError(
            f"cannot resume {run_dir}: the checkpoint's model or optimiser does "
            f"not match this one ({first}); were the model's settings changed?"
        ) from None
    source.load_state_dict(state["data"])
    rngs = state["rng"]
    if len(rngs) == info.world_size:
        restore_rng(rngs[info.rank])
    else:
        warnings.warn(
            f"checkpoint holds RNG states of {len(rngs)} processes, this run has "
            f"{info.world_size}: global RNGs re-seeded (data order is still exact)",
            RuntimeWarning, stacklevel=3,  # attributed to Trainer.fit (restore <- _fit <- fit)
        )
    start = int(state["step"])
    history = list(state["history"])
    window = LogWindow()
    window.load_state_dict(state["window"])
    resumed = Resumed(start, history, window, float(state["elapsed"]), state["last_loss"],
                      dict(state["last_metrics"]), ckpt.checkpoint_path(run.checkpoints, start))
    run.rewrite_metrics(history)
    return resumed


def snapshot(step: int, model: nn.Module, opt: torch.optim.Optimizer, source: BatchSource,
             cfg_dict: dict[str, Any], history: list[dict[str, Any]], window: LogWindow,
             t0: float, last_loss: float | None, last_metrics: dict[str, float],
             info: D.DistInfo) -> dict[str, Any]:
    """The checkpoint's content after ``step`` updates (gathers every process's RNG states, a
    collective: call on every rank); ``t0``: the run's start on ``time.perf_counter``."""
    return {
        "format": ckpt.FORMAT_VERSION,
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "data": source.state_dict(),
        "rng": D.all_gather_object(capture_rng(), info),
        "config": cfg_dict,
        "history": history,
        "window": window.state_dict(),
        "elapsed": time.perf_counter() - t0,
        "last_loss": last_loss,
        "last_metrics": last_metrics,
        "world_size": info.world_size,
    }


def write_checkpoint(run: RunDir, state: dict[str, Any], keep: int | None) -> Path | None:
    """Write ``state`` atomically (main process) and prune to the newest ``keep``; returns the
    checkpoint's path (also on the other ranks), ``None`` when the run writes no files."""
    if run.enabled:
        path = ckpt.save_checkpoint(run.checkpoints, state)
        ckpt.prune(run.checkpoints, keep)
        return path
    if run.checkpoints is not None:
        return ckpt.checkpoint_path(run.checkpoints, state["step"])
    return None


def run_environment(info: D.DistInfo, device: torch.device, start: int) -> dict[str, Any]:
    """The record written to env.json: when, where and with what the run (re)started."""
    return {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "resumed_from_step": start,
        "world_size": info.world_size,
        "backend": info.backend,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "argv": sys.argv,
    }
