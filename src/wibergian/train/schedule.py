"""Learning-rate schedules as pure functions of the step (nothing to checkpoint)."""

from __future__ import annotations

import math

from .config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of each parameter group's base learning rate for update ``step`` (from 1).

    cosine: m + (1 - m) (1 + cos(pi (s - 1) / steps)) / 2 with m = lr_min / lr;
    step:   gamma ** floor((s - 1) / lr_step_size); constant: 1;
    all times min(1, s / lr_warmup_steps) when warm-up is on.
    """
    if step < 1:
        raise ValueError(f"steps are counted from 1, got {step}")
    if cfg.lr_schedule == "cosine":
        m = cfg.lr_min / cfg.lr
        f = m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / cfg.steps))
    elif cfg.lr_schedule == "step":
        f = cfg.lr_gamma ** ((step - 1) // cfg.lr_step_size)
    else:
        f = 1.0
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        f *= step / cfg.lr_warmup_steps
    return f
