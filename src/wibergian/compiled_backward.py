"""``compile=True``'s first-order backward: when ``adjoint.vjp`` may use the compiled mixed
product :meth:`~wibergian.compiled.CompiledEnergy.mixed_vjp` instead of an eager double backward
(``(∇_y E, ∂<∇_y E, u>/∂w)`` for the solved ``u``), and the eager route when that kernel cannot be
built (counted in ``compiled.FALLBACKS["mixed"]``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from .compiled import CompiledEnergy


def mixed_kernel(spec: Any, y: Tensor, params: Sequence[Tensor], needs: Sequence[bool]
                 ) -> Callable[[Tensor], tuple[Tensor, list[Tensor | None]]] | None:
    """For ``adjoint.vjp``: ``u ↦ (∇_y E, [∂<∇_y E, u>/∂w_i or None per parameter])`` from the
    compiled :meth:`CompiledEnergy.mixed_vjp`, where it applies: a compiled energy, the implicit
    adjoint with the dense back end and the forward's Hessian or factor (so the solve needs no
    gradient graph) and the forward's ``∇_y E`` at ``y`` (``spec.grad``, checked for finiteness
    in its place), no ``torch.func`` transform active. Else ``None`` (the eager route); a
    kernel that then fails to build returns ``None`` from the call and the eager route runs."""
    from .function import _transforms_active

    energy = spec.energy
    if (not isinstance(energy, CompiledEnergy) or energy.error is not None
            or "mixed" in energy.optional_errors or spec.mode != "implicit"
            or spec.backend != "dense" or _transforms_active()):
        return None
    factor = spec.factor
    grad = spec.grad  # the forward's ∇_y E at y*: the kernel does not recompute it
    if grad is None or tuple(grad.shape) != tuple(y.shape):
        return None
    if spec.hessian is None and not (factor is not None
                                     and factor.solves(spec.damping, spec.regulariser)):
        return None
    wrt = tuple(i for i, (p, n) in enumerate(zip(params, needs, strict=True))
                if n and p.is_floating_point())
    if not wrt:
        return None
    return lambda u: _mixed_or_eager(energy, y, u, params, wrt, grad)


def _mixed_or_eager(energy: CompiledEnergy, y: Tensor, u: Tensor, params: Sequence[Tensor],
                    wrt: tuple[int, ...], grad: Tensor) -> tuple[Tensor, list[Tensor | None]]:
    """``(∇_y E, mixed products)``: :meth:`CompiledEnergy.mixed_vjp` with the forward's
    ``grad``, or both eagerly if that kernel cannot be built."""
    ps = [p.detach() for p in params]
    out = energy.mixed_vjp(y.detach(), u.detach(), ps, wrt)
    if out is not None:
        return grad, list(out)
    g, *grads = energy._mixed(wrt, y.detach(), u.detach(), *ps)
    return g, list(grads)
