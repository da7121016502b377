"""The energy protocol: what ``argmin`` needs to know about ``E(y; w)``.

An energy is any callable ``energy(y, *params) -> (B,)`` for ``y`` of shape ``(B, n)``: one scalar
per independent problem, where problem ``b`` depends on ``y[b]`` only. Autograd supplies its
derivatives. An energy may also be an object that declares closed forms, which the solvers and
the adjoint then use instead of autograd:

- ``gradient(y, *params) -> (B, n)``: ``∇_y E``; must be written in differentiable torch ops
  (the adjoint differentiates it with respect to ``params``).
- ``hessian(y, *params) -> (B, n, n)``: ``∇²_y E`` (used by the Newton solver, the final step and
  the dense backward solve).
- ``value_gradient_hessian(y, *params) -> ((B,), (B, n), (B, n, n))``: all three from one pass
  (for example one exponential per term instead of three); the Newton solver calls it once per
  iteration when declared.
- ``value_and_gradient(y, *params) -> ((B,), (B, n))``: both from one pass; L-BFGS calls it at
  the first trial point of each line search.
- ``hvp_operator(y, *params) -> (v ↦ H v)``: linearise once at ``y`` and return a batched
  Hessian-vector product (``v``, ``H v``: ``(B, n)``) that needs no autograd; the matrix-free
  (CG) backward and final step call it once per iteration. It must equal the autograd product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor

EnergyFn = Callable[..., Tensor]


@runtime_checkable
class HasGradient(Protocol):
    """An energy that declares its gradient in closed form."""

    def __call__(self, y: Tensor, *params: Tensor) -> Tensor: ...

    def gradient(self, y: Tensor, *params: Tensor) -> Tensor: ...


@runtime_checkable
class HasHessian(Protocol):
    """An energy that declares its Hessian in closed form."""

    def __call__(self, y: Tensor, *params: Tensor) -> Tensor: ...

    def hessian(self, y: Tensor, *params: Tensor) -> Tensor: ...


def _shape_checked(fn: Callable[..., Tensor], name: str, hessian: bool) -> Callable[..., Tensor]:
    """``fn`` with its output shape checked: ``(B, n)`` (gradient) or ``(B, n, n)`` (Hessian)."""

    def checked(y: Tensor, *params: Tensor) -> Tensor:
        out = fn(y, *params)
        want = (*y.shape, y.shape[-1]) if hessian else tuple(y.shape)
        if not isinstance(out, Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"energy.{name}(y, *params) must return shape {want} for y of shape "
                f"{tuple(y.shape)} (one {'n × n Hessian' if hessian else 'gradient'} per "
                f"problem); it returned {got}"
            )
        return out

    return checked


def closed_gradient(energy: EnergyFn) -> Callable[..., Tensor] | None:
    """The energy's declared gradient (its output shape checked), or ``None`` when autograd
    must be used."""
    fn = getattr(energy, "gradient", None)
    return _shape_checked(fn, "gradient", False) if callable(fn) else None


def closed_hessian(energy: EnergyFn) -> Callable[..., Tensor] | None:
    """The energy's declared Hessian (its output shape checked), or ``None`` when autograd
    must be used."""
    fn = getattr(energy, "hessian", None)
    return _shape_checked(fn, "hessian", True) if callable(fn) else None
