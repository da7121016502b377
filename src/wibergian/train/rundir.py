"""The run folder: configuration, metrics, TensorBoard, results, final model and plot.

Layout (only rank 0 writes)::

    RUN/config.json      resolved TrainConfig (readable JSON; `TrainConfig.from_dict` reads it)
    RUN/env.json         world size, backend, device, versions, command line, start time
    RUN/metrics.jsonl    one JSON object per log / eval record
    RUN/checkpoints/     step_XXXXXXXXX.pt (see checkpoint.py)
    RUN/tensorboard/     event files, when the tensorboard package is installed
    RUN/results.json     final summary (also written when a run stops on a non-finite value)
    RUN/model.pt         final model state_dict
    RUN/loss.png         training loss (and eval values) against step
    RUN/lock             pids of the processes writing the run, while it runs (see lock.py)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .checkpoint import list_checkpoints, write_atomic, write_text_atomic
from .lock import RunLock


def _clean(v: Any) -> Any:
    """JSON-safe value: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


class RunDir:
    """File side of a run; every method is a no-op when ``enabled`` is False (ranks > 0 or no
    run folder)."""

    def __init__(self, path: Path | None, enabled: bool) -> None:
        self.path = None if path is None else Path(path)
        self.enabled = enabled and path is not None
        self._tb: Any = None
        self._tb_tried = False
        self.lock: RunLock | None = None

    @property
    def checkpoints(self) -> Path | None:
        return None if self.path is None else self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path | None:
        return None if self.path is None else self.path / "metrics.jsonl"

    def prepare(self, resume: bool, pids: list[int] | None = None) -> None:
        """Take the folder's lock for ``pids`` (the run's processes; `lock.RunLockedError` if
        live processes hold it), create the folder; refuse to start a fresh run over an
        existing one."""
        if not self.enabled:
            return
        assert self.path is not None
        self.lock = RunLock(self.path, pids).acquire()
        try:
            self._check_fresh(resume)
        except BaseException:
            self.release_lock()
            raise
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _check_fresh(self, resume: bool) -> None:
        assert self.path is not None
        if not resume:
            refuse_existing_run(self.path)

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            assert self.path is not None
            write_text_atomic(self.path / name, dumps(obj))

    def log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl (and TensorBoard)."""
        if not self.enabled:
            return
        assert self.metrics_file is not None
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(_clean(record), allow_nan=False) + "\n")
        tb = self._tb
        if tb is not None:
            split = record.get("split", "train")
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)) and v is not None:
                    tb.add_scalar(f"{split}/{k}", v, record["step"])

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl by ``records`` (on resume: drops lines logged after the
        checkpoint, so the file matches an uninterrupted run)."""
        if not self.enabled:
            return
        assert self.metrics_file is not None
        text = "".join(json.dumps(_clean(r), allow_nan=False) + "\n" for r in records)
        write_text_atomic(self.metrics_file, text)

    def start_tensorboard(self, purge_step: int | None) -> None:
        """Open the TensorBoard writer if tensorboard is installed (dropping events after
        ``purge_step`` on resume)."""
        if not self.enabled or self._tb_tried:
            return
        self._tb_tried = True
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: metrics.jsonl only
            return
        assert self.path is not None
        self._tb = SummaryWriter(str(self.path / "tensorboard"), purge_step=purge_step)

    def save_model(self, state_dict: dict[str, torch.Tensor]) -> None:
        if self.enabled:
            assert self.path is not None
            write_atomic(self.path / "model.pt", {k: v.detach().cpu() for k, v in
                                                  state_dict.items()})

    def plot(self, history: list[dict[str, Any]]) -> Path | None:
        """Training loss (log scale when positive) and eval values against step -> loss.png."""
        if not self.enabled or not history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        assert self.path is not None
        train = [r for r in history if r.get("split") == "train" and r.get("loss") is not None]
        evals = [r for r in history if r.get("split") == "eval"]
        eval_keys = sorted({k for r in evals for k, v in r.items()
                            if k not in ("step", "split", "wall") and isinstance(v, float)})
        ncol = 2 if eval_keys else 1
        fig, axes = plt.subplots(1, ncol, figsize=(5 * ncol, 3.5), squeeze=False)
        ax = axes[0, 0]
        ax.plot([r["step"] for r in train], [r["loss"] for r in train])
        if train and all(r["loss"] > 0 for r in train):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean over log window)")
        if eval_keys:
            ax2 = axes[0, 1]
            for k in eval_keys:
                pts = [(r["step"], r[k]) for r in evals if r.get(k) is not None]
                ax2.plot(*zip(*pts, strict=True), marker="o", label=k)
            ax2.set_xlabel("step")
            ax2.set_ylabel("eval")
            ax2.legend()
        fig.tight_layout()
        out = self.path / "loss.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def refuse_existing_run(path: Path) -> None:
    """Raise ``FileExistsError`` when ``path`` already holds a run (its ``config.json``,
    ``metrics.jsonl`` or checkpoints): a fresh run never writes over another one."""
    if not path.exists():
        return
    held = [n for n in ("config.json", "metrics.jsonl") if (path / n).exists()]
    if held or list_checkpoints(path / "checkpoints"):
        what = ", ".join(held) or "checkpoints"
        raise FileExistsError(
            f"run folder {path} already holds a run ({what}); resume it "
            "(resume=True; --resume for commands that have it) to continue, or "
            "choose another folder"
        )
