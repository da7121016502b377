"""Training configuration and the command-line flags every experiment shares.

`TrainConfig` is a plain dataclass; `to_dict()` is what the run folder's ``config.json`` holds and
what a checkpoint carries, so a resumed run can check it continues the same training.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import refuse_existing_run

OPTIMIZERS = ("adam", "adamw", "sgd", "asgd")
LR_SCHEDULES = ("constant", "cosine", "step")

#: Fields that change the optimisation trajectory: a resumed run must keep them unchanged.
TRAJECTORY_FIELDS = (
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "seed",
    "log_every",
    "grad_clip",
    "lr_schedule",
    "lr_warmup_steps",
    "lr_min",
    "lr_step_size",
    "lr_gamma",
)
#: Optimisers that use ``momentum`` (any other refuses a non-zero value).
MOMENTUM_OPTIMIZERS = ("sgd",)


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model, the loss and the data.

    Step numbers count optimiser updates from 1; "the state at step s" is the state after s
    updates. ``batch_size`` is the *global* batch: under ``torchrun`` with K processes each one
    handles ``batch_size / K`` examples (it must divide).

    Learning rate of update s (1-based), with base rate ``lr`` and floor ``lr_min``::

        constant: lr
        cosine:   lr_min + (lr - lr_min) * (1 + cos(pi * (s - 1) / steps)) / 2
        step:     lr * lr_gamma ** floor((s - 1) / lr_step_size)

    times ``s / lr_warmup_steps`` during the first ``lr_warmup_steps`` updates.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int | None = 3
    log_every: int = 10
    eval_every: int | None = None
    quiet: bool = False
    grad_clip: float | None = None
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_min: float = 0.0
    lr_step_size: int = 0
    lr_gamma: float = 0.1
    device: str = "auto"
    backend: str | None = None
    find_unused_parameters: bool = False
    deterministic: bool = True
    plot: bool = True
    #: The experiment's own settings (model, loss, data source, ...): every one that shapes the
    #: trajectory. Stored in config.json and compared key by key on resume.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with an impossible value."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(
                    f"TrainConfig.{name} = {getattr(self, name)!r}: {what}"
                )

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.steps) and self.steps >= 1, "steps", "must be an integer >= 1")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be >= 1")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "must be a finite number > 0")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        need(self.momentum >= 0, "momentum", "must be >= 0")
        need(self.momentum == 0 or self.optimizer in MOMENTUM_OPTIMIZERS, "momentum",
             f"is used only by optimizer {' or '.join(map(repr, MOMENTUM_OPTIMIZERS))}; "
             f"optimizer {self.optimizer!r} would ignore it (leave momentum at 0, or choose "
             "optimizer 'sgd')")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(is_int(self.seed) and self.seed >= 0, "seed", "must be an integer >= 0")
        need(
            is_int(self.checkpoint_every) and self.checkpoint_every >= 0,
            "checkpoint_every",
            "must be >= 0 (0 = only at the end)",
        )
        need(
            self.keep_checkpoints is None
            or (is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1),
            "keep_checkpoints",
            "must be None (keep all) or >= 1",
        )
        need(is_int(self.log_every) and self.log_every >= 1, "log_every", "must be >= 1")
        need(
            self.eval_every is None or (is_int(self.eval_every) and self.eval_every >= 0),
            "eval_every",
            "must be None or >= 0 (None/0 = only at the end)",
        )
        need(
            self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
            "grad_clip",
            "must be None or a number > 0",
        )
        need(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}")
        need(self.lr_warmup_steps >= 0, "lr_warmup_steps", "must be >= 0")
        need(0 <= self.lr_min <= self.lr, "lr_min", "must be in [0, lr]")
        need(
            self.lr_schedule != "step" or self.lr_step_size >= 1,
            "lr_step_size",
            "must be >= 1 when lr_schedule='step'",
        )
        need(self.lr_gamma > 0, "lr_gamma", "must be > 0")
        need(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
            "device",
            "must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
        )
        need(
            self.backend in (None, "gloo", "nccl"),
            "backend",
            "must be None (gloo on CPU, nccl on CUDA), 'gloo' or 'nccl'",
        )
        need(isinstance(self.extra, dict), "extra", "must be a dict")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (the content of ``config.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)


def trajectory_differences(old: dict[str, Any], new: dict[str, Any]
                           ) -> list[tuple[str, Any, Any]]:
    """Settings that shape the trajectory and differ between two config dicts (``config.json``
    of a run and of a resume), as ``(name, old value, new value)``.

    Compared: `TRAJECTORY_FIELDS`; ``steps`` when either uses the cosine schedule (whose rates
    depend on it; otherwise a larger ``steps`` just extends a run); every key of ``extra`` (the
    experiment's own settings), named ``extra.KEY``. A config written before ``extra`` was
    compared (no ``extra`` key at all) is compared on the trainer's fields only.
    """
    keys = list(TRAJECTORY_FIELDS)
    if "cosine" in (old.get("lr_schedule"), new.get("lr_schedule")):
        keys.append("steps")
    out = [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]
    if "extra" in old:
        a, b = old.get("extra") or {}, new.get("extra") or {}
        out += [(f"extra.{k}", a.get(k), b.get(k)) for k in sorted(set(a) | set(b), key=str)
                if a.get(k) != b.get(k)]
    return out


def describe_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    """``name (old -> new)`` for each entry of `trajectory_differences`, comma-separated."""
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diffs)


def add_train_args(
    parser: argparse.ArgumentParser, defaults: TrainConfig | None = None
) -> argparse._ArgumentGroup:
    """Add the shared training flags to ``parser`` (an argument group named "training").

    Flags: --steps --batch-size --lr --optimizer --seed --checkpoint-every --log-every
    --eval-every --grad-clip --lr-schedule --quiet --resume [DIR] --out DIR. ``defaults`` sets
    the experiment's own default values. ``--resume`` alone continues the run in ``--out``;
    ``--resume DIR`` continues the run in DIR.
    """
    d = defaults or TrainConfig()
    g = parser.add_argument_group("training")
    g.add_argument("--steps", type=int, default=d.steps, help="optimiser updates in total")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global batch size (split across torchrun processes)")
    g.add_argument("--lr", type=float, default=d.lr, help="base learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help=f"one of {', '.join(OPTIMIZERS)} (default {d.optimizer})")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (0 = only at the end)")
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="steps between evaluations (default: only at the end)")
    g.add_argument("--grad-clip", type=float, default=d.grad_clip,
                   help="clip the global gradient norm to this value")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule)
    g.add_argument("--quiet", action="store_true", default=d.quiet,
                   help="no progress bar or log lines")
    g.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue the run in --out (or in DIR) from its last checkpoint")
    g.add_argument("--out", type=Path, default=None, help="run folder")
    return g


def config_from_args(
    args: argparse.Namespace, base: TrainConfig | None = None, **overrides: Any
) -> TrainConfig:
    """Build a `TrainConfig` from flags added by `add_train_args`.

    Fields not covered by flags come from ``base``; ``overrides`` win over both.
    """
    values = dict(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        eval_every=args.eval_every,
        grad_clip=args.grad_clip,
        lr_schedule=args.lr_schedule,
        quiet=args.quiet,
    )
    values.update(overrides)
    return dataclasses.replace(base or TrainConfig(), **values)


def run_dir_from_args(
    args: argparse.Namespace, default: Path | None = None
) -> tuple[Path | None, bool]:
    """``(run_dir, resume)`` from ``--out`` / ``--resume [DIR]``."""
    resume = args.resume
    if isinstance(resume, str):
        if args.out is not None and Path(args.out) != Path(resume):
            raise ValueError(
                f"--resume {resume} and --out {args.out} name different run folders"
            )
        return Path(resume), True
    out = args.out if args.out is not None else default
    if resume and out is None:
        raise ValueError("--resume needs a run folder: pass --out DIR or --resume DIR")
    if out is not None and not resume:  # refuse before any data is loaded
        refuse_existing_run(Path(out))
    return (Path(out) if out is not None else None), bool(resume)
