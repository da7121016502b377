"""Averaged SGD (Polyak-Ruppert averaging) for the shared trainer: ``optimizer="asgd"``.

`AveragedSGD` is ``torch.optim.SGD`` (the trainer passes ``lr``, ``momentum`` — 0 for plain
averaged SGD — and ``weight_decay``) that also keeps, per parameter, the running mean of the
iterates in float64-exact arithmetic:

    w_k = SGD update of w_{k-1},        ax_k = (w_1 + w_2 + ... + w_k) / k

(``ax_k = ax_{k-1} + (w_k - ax_{k-1}) / k``; tested against this hand-computed mean). The
average lives in the optimiser's state (``ax``, ``n``), so checkpoints and resume carry it.
``torch.optim.ASGD`` was not used because it keeps its step size and averaging weight as
float32 tensors (the average is then off by ~1e-9 relative) and starts averaging at update 2.

Evaluation uses the average: `averaged_weights` swaps it into the model for the duration of a
``with`` block (the trainer's ``eval_fn``), and `load_average` copies it into the model for good
at the end of ``fit``. For other optimisers both do nothing (``torch.optim.ASGD`` passed by a
caller is recognised too: its ``ax`` is used).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class AveragedSGD(torch.optim.SGD):
    """SGD plus the running mean of the iterates (module docstring)."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "ax" not in st:
                    st["ax"] = p.detach().clone()
                    st["n"] = 1
                else:
                    st["n"] += 1
                    st["ax"].add_(p.detach() - st["ax"], alpha=1.0 / st["n"])
        return loss


def make_asgd(params: list[nn.Parameter] | list[dict], lr: float, weight_decay: float = 0.0,
              momentum: float = 0.0) -> AveragedSGD:
    """Averaged SGD over ``params`` (parameters or param groups)."""
    return AveragedSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _pairs(opt: torch.optim.Optimizer | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if not isinstance(opt, (AveragedSGD, torch.optim.ASGD)):
        return []
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            ax = opt.state.get(p, {}).get("ax")
            if ax is not None:
                out.append((p, ax))
    return out


@contextmanager
def averaged_weights(opt: torch.optim.Optimizer | None) -> Iterator[None]:
    """Inside the block the parameters of an averaging optimiser hold their running average."""
    pairs = _pairs(opt)
    saved = [p.detach().clone() for p, _ in pairs]
    try:
        with torch.no_grad():
            for p, ax in pairs:
                p.copy_(ax)
        yield
    finally:
        with torch.no_grad():
            for (p, _), old in zip(pairs, saved, strict=True):
                p.copy_(old)


def load_average(opt: torch.optim.Optimizer | None) -> bool:
    """Copy the running average into the parameters (averaging optimisers only); True if it
    did."""
    pairs = _pairs(opt)
    with torch.no_grad():
        for p, ax in pairs:
            p.copy_(ax)
    return bool(pairs)
