"""The loop's per-update checks: what ``loss_fn`` and ``eval_fn`` return, and the gradient.

Each failure is an error that says what to fix; a NaN/Inf gradient is a `NonFiniteError` naming
the update, the parameter and the last checkpoint to resume from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .finite import NonFiniteError, describe, first_nonfinite


def as_float(v: Any, what: str) -> float:
    """``v`` (a number or a one-element tensor) as a float; ``what`` names it in errors."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"{what} must be a number or a one-element tensor, got shape "
                             f"{tuple(v.shape)}")
        return float(v.detach().item())
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"{what} must be a number, got {type(v).__name__}")


def check_loss_output(out: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """``loss_fn``'s ``(loss, metrics)``: a one-element loss that depends on a trainable
    parameter, and a dict."""
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise TypeError("loss_fn must return (loss tensor, metrics dict)")
    loss, metrics = out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("loss_fn's loss must be a one-element tensor (mean over the batch)")
    if not loss.requires_grad:
        raise ValueError("loss_fn's loss does not depend on any trainable parameter")
    return loss, metrics


def global_grad_norm(named: list[tuple[str, nn.Parameter]], step: int,
                     last_path: Path | None) -> float:
    """``||(∇_θ1, ..., ∇_θk)||₂`` over every parameter's gradient (in float64); a NaN/Inf norm
    raises `NonFiniteError` naming the first parameter with a non-finite gradient."""
    grads = [p.grad for _, p in named if p.grad is not None]
    if not grads:
        raise ValueError("no parameter received a gradient from the loss")
    norm = float(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach().double()) for g in grads])))
    if math.isfinite(norm):
        return norm
    bad = first_nonfinite((n, p.grad) for n, p in named)
    if bad is None:
        raise NonFiniteError(step, "gradient norm", f"overflow: {norm}", last_path)
    raise NonFiniteError(step, f"gradient of parameter {bad[0]!r}", describe(bad[1]),
                         last_path)
