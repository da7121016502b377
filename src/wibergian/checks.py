"""Argument checks of ``argmin``: each error names the argument.

``check_inputs`` checks ``y0`` and ``params`` (types, shapes, dtypes, devices, finiteness); the
others check the options and what the energy does at the start.
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .derivatives import energy_value
from .energy import EnergyFn, closed_gradient
from .solvers.nonfinite import rows_finite


def check_inputs(y0: Any, params: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``y0`` ``(B, n)`` (float32/float64, ``n ≥ 1``, finite) and ``params`` as a tuple of tensors
    on ``y0``'s device, floating ones of ``y0``'s dtype and finite (a lone tensor is wrapped)."""
    if not isinstance(y0, Tensor):
        raise TypeError(f"y0 must be a torch.Tensor of shape (B, n); got {type(y0).__name__}")
    if y0.dim() != 2:
        raise ValueError(
            f"y0 must have shape (B, n) (a batch of independent problems); got {tuple(y0.shape)}."
            " For a single problem use y0[None]."
        )
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be floating point (float32 or float64); got {y0.dtype}")
    if y0.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"y0 is {y0.dtype}: half precision is not supported (the solvers need LAPACK, which "
            "has no half-precision routines); use float32: y0.float() and p.float() for params"
        )
    if y0.shape[1] == 0:
        raise ValueError(f"y0 has n = 0 unknowns per problem (shape {tuple(y0.shape)}); "
                         "there is nothing to minimise")
    if isinstance(params, Tensor):
        params = (params,)
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"params must be a tuple of tensors; got {type(params).__name__}")
    params = tuple(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(
                f"params[{i}] is a {type(p).__name__}, not a torch.Tensor; wrap constants with "
                "torch.tensor(...) or close over them in the energy"
            )
        if p.device != y0.device:
            raise ValueError(f"params[{i}] is on {p.device} but y0 is on {y0.device}")
        if p.is_floating_point() and p.dtype != y0.dtype:
            raise TypeError(
                f"params[{i}] has dtype {p.dtype} but y0 has {y0.dtype}; use one floating dtype"
            )
        if p.is_floating_point() and not _all_finite(p):
            raise ValueError(f"params[{i}] contains NaN or Inf")
    if not _all_finite(y0):
        raise ValueError("y0 contains NaN or Inf")
    return y0, params


def _all_finite(t: Tensor) -> bool:
    """Every entry of floating ``t`` is finite: ``solvers.nonfinite.rows_finite`` on ``t`` as one
    row (one sum first; the exact ``amax`` / ``amin`` test only when the sum is not finite; no
    boolean copy; one host synchronisation in the common case)."""
    if t.numel() == 0:
        return True
    return bool(rows_finite(t.reshape(1, -1), sync=True).all())


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


#: energies already seen to depend on ``y`` (weak references: no energy is kept alive)
_DEPENDS_ON_Y: weakref.WeakSet = weakref.WeakSet()


def _seen_depending(energy: EnergyFn) -> bool:
    try:
        return energy in _DEPENDS_ON_Y
    except TypeError:  # not weak-referenceable: tested every call
        return False


def _remember_depending(energy: EnergyFn) -> None:
    try:
        _DEPENDS_ON_Y.add(energy)
    except TypeError:
        pass


def start_energy(energy: EnergyFn, y0: Tensor, params: Sequence[Tensor],
                 evaluate: Callable[[Tensor], tuple[Tensor, ...]] | None = None
                 ) -> tuple[Tensor, ...]:
    """``(E(y0), ...)``: ``E`` ``(B,)`` checked finite and (for an energy without a closed-form
    gradient, the first time this energy object is seen) checked to depend on ``y``.

    ``evaluate(y) -> (E, ∇E, ...)`` is the solver's first evaluation: once the energy's
    ``y``-dependence is known, ``E(y0)`` is read from ``evaluate(y0)``, whose values are
    returned whole for the solver to start from (one pass instead of two); otherwise the
    result is ``(E,)``."""
    ps = [p.detach() for p in params]
    autograd = closed_gradient(energy) is None
    if autograd and torch.is_inference_mode_enabled():
        raise RuntimeError(
            "argmin needs autograd for the energy's derivatives with respect to y, which "
            "torch.inference_mode() forbids: call it under torch.no_grad() instead (the result "
            "then carries no graph), or declare the energy's gradient and hessian in closed form"
        )
    # the y-dependence is a property of the energy's code: tested with autograd once per energy
    # object (a compiled energy then evaluates its start without a graph, compiled)
    track = autograd and not _seen_depending(energy)
    if not track and evaluate is not None:
        vals = tuple(v.detach() for v in evaluate(y0.detach()))
    else:
        with torch.set_grad_enabled(track):
            y = y0.detach().requires_grad_(track)
            e = energy_value(energy, y, ps)
        if track and e.requires_grad:
            _remember_depending(energy)
        if track and not e.requires_grad:
            raise ValueError(
                "the energy does not depend on y: energy(y, *params) has no gradient with "
                "respect to y (it ignores y, or uses y through non-differentiable operations "
                "such as .item(), argmax or numpy); argmin needs an energy of y"
            )
        vals = (e.detach(),)
    e = vals[0]
    if not bool(torch.isfinite(e).all()):
        bad = torch.nonzero(~torch.isfinite(e)).flatten().tolist()[:10]
        raise ValueError(f"the energy is not finite at the start point of problems {bad}")
    return vals
