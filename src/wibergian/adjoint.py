"""How gradients flow through ``y* = argmin_y E(y; w)``.

Damped implicit adjoint (the paper, eq. 7, in vector-Jacobian form). With ``ȳ = ∂L/∂y*``:

    solve  (H + λI) v = ȳ          H = ∇²_y E(y*; w), once per problem
    ∂L/∂w = -∂/∂w <∇_y E(y*; w), v>     (y* and v held fixed)

so ``dy*/dw = -(H + λI)^-1 ∂(∇_y E)/∂w`` is never formed. ``λ = 0`` is plain implicit
differentiation (Samuel & Tappen 2009). With the ``"floor"`` regulariser ``(H + λI)^-1`` is
replaced by ``Σ q_i q_iᵀ / max(h_i, λ)``.

Differentiated Newton step (``adjoint="newton_step"``, the full paper's eq. 8-9 before the limit).
The returned point is ``y₁ = y₀ - M^-1 g`` with ``M = H(y₀; w) + λI`` and ``g = ∇E(y₀; w)``, where
``y₀`` is the inner solver's point (held fixed). Exactly,

    dy₁/dw = -M^-1 (∂g/∂w - ∂H/∂w · d),    d = M^-1 g

and the second term, the drift, vanishes when ``y₀`` is an exact minimum (``g = 0``). In VJP
form: ``u = M^-1 ȳ``, ``∂L/∂w = -∂/∂w [<g, u> - <H d, u>]``.

Forward mode (``jvp``): the same linearisation pushed forward. With a parameter tangent ``ẇ``,

    ẏ* = -(H + λI)^-1 (∂(∇_y E)/∂w · ẇ)                              (implicit)
    ẏ₁ = -M^-1 (∂g/∂w · ẇ - (∂H/∂w · ẇ) d)                           (newton_step)

one solve per problem with the same regulariser and fallbacks as the VJP; the directional
derivative ``∂(∇_y E)/∂w · ẇ`` is two reverse passes (a VJP against a dummy, then its VJP).

Double backward (``create_graph=True``): ``second_order.py``. Bookkeeping (``AdjointSpec``, the
non-finite checks, the diagnostics record and warnings): ``adjoint_spec.py``.

Matrix-free back end: conjugate gradients on Hessian-vector products ``v ↦ H v``. By default each
product is a reverse pass through the gradient's graph. An energy may instead declare
``hvp_operator(y, *params) -> (v ↦ H(y; w) v)`` (``v``, ``H v``: ``(B, n)``): it linearises once
at ``y`` (for example caches the penalty's second derivatives) and is then called once per CG
iteration without autograd. It must equal the autograd product; the mixed term ``∂/∂w <g, u>``
still differentiates the (closed-form or autograd) gradient.

Reusing the forward's factorisation: a solver may return a Cholesky factor of ``H + shift·I`` at
``y*`` (``QuadraticSolve`` does, with ``shift = 0``); ``newton_step`` gets the final step's factor
of its own ``M``. When ``shift = λ`` the solves above are two triangular solves with that factor;
otherwise ``shift = 0`` still proves ``H`` positive definite, and the semi-definiteness test (a
second factorisation) is skipped, as it is where the solver certified ``H`` at this very point
(``spec.psd``). The implicit adjoint at ``y*``, a rounding-sized step from the solver's point
``y₀``, refines from the final step's factor of ``H(y₀) + λI`` instead of factoring
``H(y*) + λI`` (``refine.py``). Which factorisations remain, and why: ``docs/factorisations.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .adjoint_spec import (
    AdjointSpec,
    hessian_name,
    live_params,
    raise_if_nonfinite,
    record_solve,
    report_solve,
)
from .compiled_backward import mixed_kernel
from .compiled_hvp import compiled_product
from .derivatives import gradient_graph, hessian_from_graph
from .energy import closed_hessian
from .errors import NonFiniteDerivativeError
from .linsolve import SolveStats, cap_to_bound, cg_solve, dense_solve
from .refine import refined_solve
from .row_matvec import autograd_grad

__all__ = ["AdjointSpec", "jvp", "vjp"]


def _regularised_solve(
    spec: AdjointSpec, yv: Tensor, g: Tensor, rhs: Tensor, params: Sequence[Tensor] = ()
) -> tuple[Tensor, SolveStats]:
    """Solve ``M u = rhs`` at the point whose differentiable gradient graph is ``(yv, g)``."""
    if spec.backend == "dense":
        factor = spec.factor
        reuse = factor is not None and factor.solves(spec.damping, spec.regulariser)
        if reuse and spec.hessian is None:
            # the forward factored exactly H + λI at this point: two triangular solves
            return dense_solve(None, rhs, spec.damping, spec.regulariser, factor=factor)
        closed_h = closed_hessian(spec.energy)
        if spec.hessian is not None:  # the forward already built it at this point
            h = spec.hessian
        elif closed_h is not None:  # declared in closed form (symmetric by contract)
            with torch.no_grad():
                h = closed_h(yv.detach(), *[p.detach() for p in params])
        else:
            h = hessian_from_graph(yv, g).detach()
            h = h + h.transpose(1, 2)
            h.mul_(0.5)  # symmetrised in one owned buffer
        known = False if spec.psd is None else spec.psd
        if spec.nearby is not None and spec.regulariser == "ridge":  # y moved a rounding step
            refined = refined_solve(spec.nearby, h, rhs, spec.damping, psd_known=known)
            if refined is not None:
                return refined
        u, stats = dense_solve(h, rhs, spec.damping, spec.regulariser, factor=factor,
                               psd_known=known)
        if spec.regulariser == "ridge":  # (H + λI) u - ȳ without forming H + λI
            r = torch.baddbmm(
                (spec.damping * u - rhs).unsqueeze(-1), h, u.unsqueeze(-1)
            ).squeeze(-1)
            stats.residual = r.norm(dim=-1) / rhs.norm(dim=-1).clamp_min(
                torch.finfo(rhs.dtype).tiny
            )
        return u, stats

    operator = getattr(spec.energy, "hvp_operator", None)
    if callable(operator):  # declared: linearise once, no reverse pass per CG iteration
        with torch.no_grad():
            apply = operator(yv.detach(), *[p.detach() for p in params])

        def closed_hvp(v: Tensor) -> Tensor:
            with torch.no_grad():
                return apply(v)

        return cg_solve(closed_hvp, rhs, spec.damping, tol=spec.cg_tol,
                        max_iter=spec.cg_max_iter)

    product = compiled_product(spec.energy, yv, params)  # compile=True: one fused kernel

    def hvp(v: Tensor) -> Tensor:
        if product is not None:
            return product(v)
        if not g.requires_grad:
            return torch.zeros_like(v)
        (hv,) = autograd_grad(g, yv, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv

    return cg_solve(hvp, rhs, spec.damping, tol=spec.cg_tol, max_iter=spec.cg_max_iter)


def vjp(
    spec: AdjointSpec, y_point: Tensor, params: Sequence[Tensor], grad_out: Tensor
) -> list[Tensor | None]:
    """``∂L/∂w`` for every parameter, given ``ȳ = grad_out`` ``(B, n)``.

    ``y_point`` is ``y*`` (implicit) or the pre-step point ``y₀`` (newton_step).
    Returns one gradient (or ``None``) per entry of ``params``.
    """
    needs = [isinstance(p, Tensor) and p.requires_grad for p in params]
    with torch.enable_grad():
        live = live_params(params, needs)
        targets = [q for q, n in zip(live, needs, strict=True) if n and q.is_floating_point()]
        # compile=True: <∇E, u> and its w-gradient from one compiled kernel, once u is known
        kernel = mixed_kernel(spec, y_point, live, needs)
        yv, g = (y_point, None) if kernel else gradient_graph(spec.energy, y_point, live)
        ours = torch.isfinite(grad_out).all(-1)  # a NaN ȳ from upstream passes through as NaN
        if g is not None:
            raise_if_nonfinite(ours & ~torch.isfinite(g.detach()).all(-1), "gradient ∇_y E")
        u, stats = _regularised_solve(spec, yv, g, grad_out.detach(), live)
        if stats.nonfinite_mask is not None:
            raise_if_nonfinite(ours & stats.nonfinite_mask, hessian_name(spec))
        u, capped = cap_to_bound(u, grad_out.detach(), spec.damping)
        if kernel:
            g, grads = kernel(u)
            raise_if_nonfinite(ours & ~torch.isfinite(g).all(-1), "gradient ∇_y E")
        elif spec.mode == "implicit":
            s = (g * u).sum()
        else:
            d, _ = _regularised_solve(spec, yv, g, g.detach(), live)
            hd = torch.autograd.grad(g, yv, grad_outputs=d.detach(), create_graph=True)[0]
            s = (g * u).sum() - (hd * u).sum()
        if not kernel:
            grads = (autograd_grad(s, targets, allow_unused=True)
                     if targets and s.requires_grad else [None] * len(targets))
    for q, gq in zip(targets, grads, strict=True):
        if gq is not None and bool(ours.all()) and not bool(torch.isfinite(gq).all()):
            raise NonFiniteDerivativeError(
                f"argmin backward: the parameter gradient (shape {tuple(q.shape)}) is not "
                "finite although ∇_y E and the linear solve are: the mixed derivative "
                "∂(∇_y E)/∂w is NaN/Inf at the solution (a non-differentiable point of the "
                "energy in w, or an overflow)")
    record_solve(spec, stats, grad_out.shape[0], "backward", capped)
    out: list[Tensor | None] = []
    it = iter(grads)
    for q, n in zip(live, needs, strict=True):
        if n and q.is_floating_point():
            gq = next(it)
            out.append(torch.zeros_like(q) if gq is None else -gq)
        else:
            out.append(None)
    return out


def _directional(f: Tensor, targets: Sequence[Tensor], tangents: Sequence[Tensor]) -> Tensor:
    """``Σ_k ∂f/∂w_k · ẇ_k`` for ``f`` ``(B, n)`` built with ``create_graph``: two reverse passes
    (``v ↦ (∂f/∂w)ᵀ v`` is linear in the dummy ``v``; its VJP against ``ẇ`` is the JVP)."""
    dummy = torch.zeros_like(f, requires_grad=True)
    vj = torch.autograd.grad(f, targets, grad_outputs=dummy, create_graph=True, allow_unused=True)
    pairs = [(v, t) for v, t in zip(vj, tangents, strict=True) if v is not None and v.requires_grad]
    if not pairs:
        return torch.zeros_like(f)
    (out,) = torch.autograd.grad([v for v, _ in pairs], dummy, grad_outputs=[t for _, t in pairs],
                                 retain_graph=True, allow_unused=True)
    return torch.zeros_like(f) if out is None else out


def jvp(
    spec: AdjointSpec, y_point: Tensor, params: Sequence[Tensor], tangents: Sequence[Tensor | None]
) -> Tensor:
    """``ẏ`` ``(B, n)``: the tangent of the returned point for parameter tangents ``ẇ`` (one per
    entry of ``params``, ``None`` for none); ``y_point`` as in :func:`vjp`."""
    needs = [t is not None and p.is_floating_point() for p, t in zip(params, tangents, strict=True)]
    with torch.enable_grad():
        live = live_params(params, needs)
        yv, g = gradient_graph(spec.energy, y_point, live)
        f = g
        if spec.mode == "newton_step":  # the drift: ∂(H d)/∂w · ẇ with d = M^-1 g held fixed
            d, _ = _regularised_solve(spec, yv, g, g.detach(), live)
            f = g - torch.autograd.grad(g, yv, grad_outputs=d, create_graph=True)[0]
        pairs = [(q, t.to(q.dtype)) for q, t, n in zip(live, tangents, needs, strict=True) if n]
        r = (_directional(f, [q for q, _ in pairs], [t for _, t in pairs]) if pairs
             and f.requires_grad else torch.zeros_like(g))
        raise_if_nonfinite(~torch.isfinite(g.detach()).all(-1), "gradient ∇_y E")
        x, stats = _regularised_solve(spec, yv, g, r.detach(), live)
        x, capped = cap_to_bound(x.detach(), r.detach(), spec.damping)
    report_solve(spec, stats, y_point.shape[0], "forward-mode derivative", capped)
    return -x
