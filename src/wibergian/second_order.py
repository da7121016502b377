"""Second derivatives through ``argmin``: the VJP as a differentiable expression.

Used when the backward runs with ``create_graph=True`` (a double backward,
``torch.autograd.functional.hessian``). ``u = M^-1 ȳ`` (``M = H + λI``) is made differentiable by
one refinement ``u = u₀ + S(ȳ - M u₀)`` with ``S = M^-1`` held fixed: its value is ``u₀`` (the
correction is subtracted at its value), its derivative ``M^-1 (dȳ - dM u₀)``, exact for the ridge.
Then ``∂L/∂w = -(∂g/∂w)ᵀ u`` is taken with ``create_graph``, ``g = ∇_y E`` evaluated at aliases of
``y*`` and ``w`` so that each derivative is the partial one. ``y*`` is argmin's own output, so in
the second-order terms its derivative is argmin's: exact at ``λ = 0`` (then this is the exact
Hessian of ``L(y*(w))``), the damped one otherwise (the derivative of the damped gradient map along
the damped ``dy*/dw``; not symmetric in general). ``adjoint="newton_step"``: ``∂L/∂w =
-(∂f/∂w)ᵀ u`` with ``f = g - H d``, ``d = M^-1 g`` refined the same way (``y₀`` fixed), which is
the derivative of ``y₁ = y₀ - M^-1 g`` as written. Cost (implicit): two gradient graphs, three
solves (dense: three Hessians), one Hessian-vector product and one VJP, with ``create_graph``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .adjoint import _regularised_solve
from .adjoint_spec import AdjointSpec, report_solve
from .derivatives import gradient, gradient_graph
from .linsolve import SolveStats, cap_to_bound


class _FixedSolve(torch.autograd.Function):
    """``r ↦ M^-1 r`` with ``M`` held fixed: linear, and self-adjoint (``M`` is symmetric)."""

    @staticmethod
    def forward(ctx: Any, solve: Any, r: Tensor) -> Tensor:
        ctx.solve = solve
        return solve(r.detach())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, _FixedSolve.apply(ctx.solve, grad)


def vjp_graph(
    spec: AdjointSpec, y_point: Tensor, params: Sequence[Tensor], grad_out: Tensor
) -> list[Tensor | None]:
    """:func:`vjp` as a differentiable expression of ``(y_point, params, grad_out)`` (for
    ``create_graph=True``). ``y_point`` is argmin's own output ``y*`` (implicit), so second-order
    terms see its derivative, or the fixed pre-step point (newton_step)."""
    if spec.regulariser != "ridge":
        raise NotImplementedError(
            "second derivatives through argmin (create_graph=True) support regulariser='ridge' "
            "only: the floored inverse has no simple derivative; use regulariser='ridge'"
        )
    needs = [p.requires_grad and p.is_floating_point() for p in params]
    b = y_point.shape[0]
    with torch.enable_grad():
        ws = [p.view_as(p) if n else p.detach() for p, n in zip(params, needs, strict=True)]
        newton = spec.mode == "newton_step"
        yv = (y_point.view_as(y_point) if y_point.requires_grad and not newton
              else y_point.detach().requires_grad_(True))  # an alias: ∂/∂yv is the partial
        g = gradient(spec.energy, yv, ws, create_graph=True)
        # M^-1 at this point, on a private gradient graph (so the outer backward may free g's)
        yd, gd = gradient_graph(spec.energy, y_point, [w.detach() for w in ws])
        stats: list[SolveStats] = []

        def solve(r: Tensor) -> Tensor:
            with torch.enable_grad():
                x, st = _regularised_solve(spec, yd, gd, r, [w.detach() for w in ws])
            stats.append(st)
            return x.detach()

        def refined(rhs: Tensor, gh: Tensor) -> Tensor:  # M^-1 rhs, first derivative exact
            x0 = solve(rhs.detach())
            mx = torch.autograd.grad(gh, yv, grad_outputs=x0, create_graph=True)[0]
            c = _FixedSolve.apply(solve, rhs - mx - spec.damping * x0)
            return x0 + (c - c.detach())

        f = g
        if newton:  # f = g - H d, d = M^-1 g on its own aliases of w (fixed in ∂f/∂w)
            ws2 = [p.view_as(p) if n else p.detach() for p, n in zip(params, needs, strict=True)]
            g2 = gradient(spec.energy, yv, ws2, create_graph=True)
            d = refined(g2, g2)
            f = g - torch.autograd.grad(g, yv, grad_outputs=d, create_graph=True)[0]
        u = refined(grad_out, g)
        u0, capped = cap_to_bound(u.detach(), grad_out.detach(), spec.damping)  # as vjp's value
        u = u0 + (u - u.detach())
        targets = [w for w, n in zip(ws, needs, strict=True) if n]
        grads = tuple(None if gw is None else -gw for gw in torch.autograd.grad(
            f, targets, grad_outputs=u, create_graph=True, allow_unused=True))
    report_solve(spec, stats[-1], b, "double backward", capped)
    it = iter(grads)
    out: list[Tensor | None] = []
    for w, n in zip(ws, needs, strict=True):
        gw = next(it) if n else None
        out.append((torch.zeros_like(w) if gw is None else gw) if n else None)
    return out
