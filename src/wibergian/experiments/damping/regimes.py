"""The gradient methods compared, and how the study imposes them on an unmodified experiment.

Methods (the backward of every ``wibergian.argmin`` call in the experiment's model):

==============  ===========================================================================
``lambda0``     λ = 0: plain implicit differentiation (Samuel & Tappen 2009)
``ridge``       λ = 0.1, ``(H + λI)^-1`` (the paper's trust-region gradient, the default)
``floor``       λ = 0.1, eigenvalues floored, ``1 / max(h_i, λ)`` (exact where h_i ≥ λ)
``relative``    ridge with a *scale-relative* λ = ``RELATIVE_FACTOR`` × the median over the
                problems of the mean curvature ``tr(H)/n`` at the solutions, measured once at
                the initial parameters on the first training batch(es), then held fixed
``clip0``       λ = 0, global gradient norm clipped at ``c``
``clip_ridge``  λ = 0.1 ridge, clipped at the same ``c``
==============  ===========================================================================

The clipping threshold ``c`` is ``CLIP_FACTOR`` × the median per-batch gradient norm at the
initial parameters with λ = 0 on training batches (a practitioner's choice, made on training
data only). Clipping is the trainer's ``grad_clip`` (``torch.nn.utils.clip_grad_norm_``,
applied after the backward, i.e. to whichever gradient the method computed).

`imposed(damping, regulariser)` replaces ``wibergian.argmin`` for the duration of a ``with``
block by a wrapper that forces ``damping`` and ``regulariser`` (and records, on request, the
smallest Hessian eigenvalue at every solution found while gradients are being taken). Every
experiment calls ``wibergian.argmin`` through the module attribute, so this changes the method
of an unmodified experiment; the forward's final damped Newton step uses the same λ, exactly as
the experiments' own λ = 0 baselines do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

import wibergian
from wibergian.derivatives import value_gradient_hessian

DAMPING = 0.1
RELATIVE_FACTOR = 0.1
CLIP_FACTOR = 2.0

METHODS = ("lambda0", "ridge", "floor", "relative", "clip0", "clip_ridge")


@dataclass(frozen=True)
class Method:
    """One gradient method: ``damping`` (None = the experiment's relative λ), regulariser and
    whether the global gradient norm is clipped."""

    name: str
    damping: float | None
    regulariser: str = "ridge"
    clip: bool = False

    def resolve(self, relative_lambda: float) -> float:
        return relative_lambda if self.damping is None else self.damping


METHOD_SPECS: dict[str, Method] = {
    "lambda0": Method("lambda0", 0.0),
    "ridge": Method("ridge", DAMPING),
    "floor": Method("floor", DAMPING, "floor"),
    "relative": Method("relative", None),
    "clip0": Method("clip0", 0.0, clip=True),
    "clip_ridge": Method("clip_ridge", DAMPING, clip=True),
}


class CurvatureLog:
    """Smallest Hessian eigenvalue and mean curvature ``tr(H)/n`` at every recorded solution."""

    def __init__(self) -> None:
        self.min_eig: list[torch.Tensor] = []
        self.mean_curv: list[torch.Tensor] = []

    def add(self, h: torch.Tensor) -> None:
        ev = torch.linalg.eigvalsh(h.double())
        self.min_eig.append(ev[:, 0].cpu())
        self.mean_curv.append(ev.mean(dim=1).cpu())

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.min_eig:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        return torch.cat(self.min_eig), torch.cat(self.mean_curv)

    def clear(self) -> None:
        self.min_eig.clear()
        self.mean_curv.clear()


_ORIGINAL_ARGMIN = wibergian.argmin


@contextmanager
def imposed(damping: float, regulariser: str = "ridge", log: CurvatureLog | None = None
            ) -> Iterator[None]:
    """Every ``wibergian.argmin`` call inside uses ``damping`` and ``regulariser``."""
    if damping < 0:
        raise ValueError(f"damping must be >= 0; got {damping}")
    if regulariser not in ("ridge", "floor"):
        raise ValueError(f"regulariser must be 'ridge' or 'floor'; got {regulariser!r}")

    def forced(energy: Any, y0: torch.Tensor, params: Any = (), **kw: Any) -> Any:
        kw["damping"] = damping
        kw["regulariser"] = regulariser
        if regulariser == "floor":
            kw["linear_solver"] = "dense"
        out = _ORIGINAL_ARGMIN(energy, y0, params, **kw)
        if log is not None and torch.is_grad_enabled():
            ps = params if isinstance(params, (tuple, list)) else (params,)
            if any(isinstance(p, torch.Tensor) and p.requires_grad for p in ps):
                y = (out[0] if isinstance(out, tuple) else out).detach()
                _, _, h = value_gradient_hessian(energy, y, [p.detach() for p in ps])
                log.add(h)
        return out

    previous = wibergian.argmin
    wibergian.argmin = forced
    try:
        yield
    finally:
        wibergian.argmin = previous


@contextmanager
def method_context(method: Method, relative_lambda: float, log: CurvatureLog | None = None
                   ) -> Iterator[None]:
    """`imposed` for a `Method` (clipping is the trainer's business, not the argmin's)."""
    with imposed(method.resolve(relative_lambda), method.regulariser, log):
        yield


def global_grad_norm(model: torch.nn.Module) -> float:
    """``sqrt(Σ ||g_p||²)`` over the parameters that received a gradient (inf if non-finite)."""
    sq = 0.0
    for p in model.parameters():
        if p.grad is not None:
            sq += float(p.grad.detach().double().pow(2).sum())
    return sq ** 0.5 if sq == sq else float("inf")
