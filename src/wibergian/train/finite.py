"""Detection of non-finite losses, gradients and parameters, and the error that reports them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


class NonFiniteError(FloatingPointError):
    """Training stopped because ``quantity`` was NaN or infinite at update ``step``.

    Attributes: ``step`` (update number, from 1), ``quantity`` (``"loss"``,
    ``"gradient of parameter 'NAME'"`` or ``"parameter 'NAME'"``), ``detail`` and
    ``last_checkpoint`` (the newest good checkpoint, left untouched, or None).
    """

    def __init__(
        self, step: int, quantity: str, detail: str, last_checkpoint: Path | None = None
    ) -> None:
        self.step = step
        self.quantity = quantity
        self.detail = detail
        self.last_checkpoint = last_checkpoint
        where = (
            f"the last good checkpoint {last_checkpoint} is kept unchanged"
            if last_checkpoint is not None
            else "no checkpoint had been written"
        )
        super().__init__(
            f"non-finite {quantity} at step {step} ({detail}); training stopped and no "
            f"checkpoint was written for this step; {where}"
        )

    def __reduce__(self) -> tuple[type, tuple[int, str, str, Path | None]]:
        return (type(self), (self.step, self.quantity, self.detail, self.last_checkpoint))


def describe(t: torch.Tensor) -> str:
    """``"3 of 12 entries non-finite (nan: 2, +inf: 1, -inf: 0)"`` or the value of a scalar."""
    if t.numel() == 1:
        return f"value {t.item()}"
    nan = int(torch.isnan(t).sum())
    pinf = int(torch.isposinf(t).sum())
    ninf = int(torch.isneginf(t).sum())
    return (f"{nan + pinf + ninf} of {t.numel()} entries non-finite "
            f"(nan: {nan}, +inf: {pinf}, -inf: {ninf})")


def first_nonfinite(
    named: Iterable[tuple[str, torch.Tensor | None]],
) -> tuple[str, torch.Tensor] | None:
    """The first ``(name, tensor)`` holding a NaN or inf (None tensors are skipped)."""
    for name, t in named:
        if t is not None and not bool(torch.isfinite(t).all()):
            return name, t
    return None
