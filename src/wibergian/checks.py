"""Argument checks of ``argmin`` that go beyond shapes: each error names the argument.

(``argmin._check_inputs`` checks ``y0`` and ``params``; these check the options and what the
energy does at the start.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .derivatives import energy_value
from .energy import EnergyFn, closed_gradient


def check_damping(damping: Any) -> float:
    """``damping`` as a finite float ``≥ 0`` (a number or a one-element tensor)."""
    if isinstance(damping, Tensor) and damping.numel() == 1 and damping.is_floating_point():
        damping = float(damping)
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real):
        raise TypeError(
            f"damping must be a real number λ ≥ 0 (0.1 by default); got {type(damping).__name__} "
            f"{damping!r}"
        )
    value = float(damping)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"damping must be finite (λ ≥ 0, 0.1 by default); got {value}")
    if value < 0:
        raise ValueError(f"damping must be >= 0; got {value}")
    return value


def check_candidates(candidates: Any, mask: Any, y0: Tensor) -> None:
    """``candidates`` ``(B, C, n)`` of ``y0``'s dtype and device; ``candidate_mask`` ``(B, C)``
    bool (or integer 0/1) allowing at least one candidate per problem."""
    b, n = y0.shape
    if not isinstance(candidates, Tensor):
        raise TypeError(f"candidates must be a tensor (B, C, n); got {type(candidates).__name__}")
    if candidates.dim() != 3 or candidates.shape[0] != b or candidates.shape[2] != n:
        raise ValueError(f"candidates must have shape ({b}, C, {n}); got {tuple(candidates.shape)}")
    if candidates.dtype != y0.dtype:
        raise TypeError(
            f"candidates has dtype {candidates.dtype} but y0 has {y0.dtype}; the result would take "
            f"the candidates' dtype: cast them with candidates.to({y0.dtype})"
        )
    if candidates.device != y0.device:
        raise ValueError(f"candidates is on {candidates.device} but y0 is on {y0.device}")
    if mask is None:
        return
    if not isinstance(mask, Tensor):
        raise TypeError(f"candidate_mask must be a bool tensor (B, C); got {type(mask).__name__}")
    if mask.shape != candidates.shape[:2]:
        raise ValueError(
            f"candidate_mask must have shape {tuple(candidates.shape[:2])}; got {tuple(mask.shape)}"
        )
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"candidate_mask must be a bool tensor; got {mask.dtype}")
    none = ~mask.bool().any(dim=1)
    if bool(none.any()):
        idx = none.nonzero().flatten().tolist()
        raise ValueError(
            f"candidate_mask allows no candidate for problem(s) {idx[:10]}"
            f"{' …' if len(idx) > 10 else ''}: every problem needs at least one allowed start"
        )


def start_energy(energy: EnergyFn, y0: Tensor, params: Sequence[Tensor]) -> Tensor:
    """``E(y0)`` ``(B,)``, checked finite and (for an energy without a closed-form gradient)
    checked to depend on ``y``."""
    ps = [p.detach() for p in params]
    autograd = closed_gradient(energy) is None
    if autograd and torch.is_inference_mode_enabled():
        raise RuntimeError(
            "argmin needs autograd for the energy's derivatives with respect to y, which "
            "torch.inference_mode() forbids: call it under torch.no_grad() instead (the result "
            "then carries no graph), or declare the energy's gradient and hessian in closed form"
        )
    with torch.set_grad_enabled(autograd):
        y = y0.detach().requires_grad_(autograd)
        e = energy_value(energy, y, ps)
    if autograd and not e.requires_grad:
        raise ValueError(
            "the energy does not depend on y: energy(y, *params) has no gradient with respect to "
            "y (it ignores y, or uses y through non-differentiable operations such as .item(), "
            "argmax or numpy); argmin needs an energy of y"
        )
    e = e.detach()
    if not bool(torch.isfinite(e).all()):
        bad = torch.nonzero(~torch.isfinite(e)).flatten().tolist()[:10]
        raise ValueError(f"the energy is not finite at the start point of problems {bad}")
    return e
