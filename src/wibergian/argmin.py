"""The entry point: ``argmin(energy, y0, params)``, a differentiable minimiser.

Forward: (optional multi-start) → inner solver → one damped Newton step at the solution, which
makes an inexact minimum the fixed point that the implicit gradient assumes. Backward: see
``adjoint.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import allocator, batch_cholesky
from .adjoint import AdjointSpec
from .auto_compile import check_mode, wants_compile
from .checks import check_candidates, check_damping, check_inputs, start_energy
from .compiled import block_rows, compiled_energy
from .derivatives import (
    energy_value,
    gradient,
    gradient_and_hessian,
    hvp_operator,
    value_gradient_hessian,
)
from .energy import EnergyFn
from .errors import FallbackWarning, NonConvergenceWarning
from .function import attach_derivatives, autodiff_entry
from .info import ArgminInfo, forward_warnings
from .linsolve import REGULARISERS, HessianFactor, cg_solve, choose_backend, dense_solve
from .refine import nearby_factor
from .solvers import LBFGS, BlackBox, NewtonCG, NewtonTrustRegion, QuadraticSolve, best_candidate
from .solvers.auto import choose_solver
from .solvers.base import Solver

__all__ = ["ArgminInfo", "FallbackWarning", "NonConvergenceWarning", "argmin"]

#: relative residual at which the matrix-free final step's CG stops (implicit adjoint). The exact
#: damped step leaves the gradient ``λ(H + λI)⁻¹∇E``, at least ``λ/(||H|| + λ)`` of it; a CG
#: residual of ``1e-6·||∇E||`` is below that while ``||H|| < 1e5·λ``, and it moves ``y*`` by at
#: most ``1e-6·||∇E||/λ`` (about 1e-13 after a solver converged to 1e-8). ``adjoint=
#: "newton_step"``, which differentiates the step as computed, solves it to 1e-10.
FINAL_STEP_CG_TOL = 1e-6


def _solver_from(solver: str | Solver, max_iter: int | None, tol: float | None,
                 n: int = 0) -> Solver:
    if isinstance(solver, str):
        solver = choose_solver(n, solver)
        kw: dict[str, Any] = {}
        if max_iter is not None:
            kw["max_iter"] = max_iter
        if tol is not None:
            kw["tol"] = tol
        if solver == "newton":
            return NewtonTrustRegion(**kw)
        if solver == "newton_cg":
            return NewtonCG(**kw)
        if solver == "lbfgs":
            return LBFGS(**kw)
        if solver == "scipy":
            return BlackBox()
        if solver == "quadratic":
            return QuadraticSolve(**({"tol": tol} if tol is not None else {}))
        raise ValueError(
            "solver must be 'auto', 'newton', 'newton_cg', 'lbfgs', 'scipy', 'quadratic' or a "
            "Solver object; "
            f"got {solver!r}"
        )
    if not hasattr(solver, "minimize"):
        raise TypeError(f"solver object {solver!r} has no minimize(energy, y0, params) method")
    return solver


def _final_step(
    energy: EnergyFn,
    y: Tensor,
    params: Sequence[Tensor],
    damping: float,
    regulariser: str,
    backend: str,
    factor: HessianFactor | None = None,
    result: Any = None,
    want_hessian: bool = False,
    keep_factor: bool = False,
    cg_tol: float = 1e-10,
) -> tuple[Tensor, Tensor, int, Tensor, Tensor, Tensor | None, Tensor | None,
           HessianFactor | None]:
    """One damped Newton step ``y - (H + λI)^-1 ∇E`` where it does not raise the energy.

    Reuses what the solver ``result`` already has at ``y`` (a factor of ``H + λI``, the Hessian,
    its semi-definiteness certificate ``psd``, ``E`` and ``∇E``). With ``want_hessian`` (dense
    back end) the new point is evaluated by one value-gradient-Hessian pass, so that the
    backward needs no Hessian of its own.

    Returns ``(y_out, accepted, fallbacks, E, ∇E, H_out, H_in, factor)``: ``E, ∇E`` at ``y_out``;
    ``H_out`` the Hessian at ``y_out`` (or ``None``), ``H_in`` the one at ``y`` (or ``None``);
    with ``keep_factor`` (dense), the factor of ``H_in + λI`` (for ``adjoint="newton_step"``,
    whose matrix it is), else ``None``.
    """
    ps = [p.detach() for p in params]
    g = getattr(result, "grad", None)
    h = getattr(result, "hessian", None)
    e_old = getattr(result, "energy", None)
    if h is not None and tuple(h.shape) != (*y.shape, y.shape[1]):
        h = None
    psd = getattr(result, "psd", None)  # the solver's certificate of its own H
    if h is None or psd is None or psd.shape != y.shape[:1]:
        psd = False
    kept = None
    with torch.no_grad():
        if g is None or g.shape != y.shape:
            g = gradient(energy, y, ps)
        if backend == "dense" and factor is not None and factor.solves(damping, regulariser):
            d, stats = dense_solve(None, g, damping, regulariser, factor=factor)
            kept = factor if keep_factor else None
        elif backend == "dense":
            if h is None:
                g, h = gradient_and_hessian(energy, y, ps)
            d, stats = dense_solve(h, g, damping, regulariser, factor=factor, psd_known=psd,
                                   keep_factor=keep_factor)
            kept = stats.factor
        else:
            g, hvp = hvp_operator(energy, y, ps)
            d, stats = cg_solve(hvp, g, damping, tol=cg_tol)
        y_new = y - d
        if e_old is None or e_old.shape != y.shape[:1]:
            e_old = energy_value(energy, y, ps)
        h_new = None
        if want_hessian:
            e_new, g_new, h_new = value_gradient_hessian(energy, y_new, ps)
        else:
            e_new = energy_value(energy, y_new, ps)
            g_new = None
        slack = 1e-12 * (1 + e_old.abs())
        ok = torch.isfinite(e_new) & (e_new <= e_old + slack) & torch.isfinite(d).all(-1)
        y_out = torch.where(ok.unsqueeze(-1), y_new, y)
        e_out = torch.where(ok, e_new, e_old)
        g_out = (torch.where(ok.unsqueeze(-1), g_new, g) if g_new is not None
                 else None)
        h_out = None
        if h_new is not None:
            h_out = h_new if h is None else torch.where(ok[:, None, None], h_new, h)
            if h is None and not bool(ok.all()):
                h_out = None  # a rejected step stays where no Hessian was built
        if g_out is None:
            g_out = torch.where(ok.unsqueeze(-1), gradient(energy, y_new, ps), g)
    return y_out, ok, stats.fallbacks, e_out, g_out, h_out, h, kept


@autodiff_entry
def argmin(
    energy: EnergyFn,
    y0: Tensor,
    params: Sequence[Tensor] | Tensor = (),
    *,
    damping: float = 0.1,
    regulariser: str = "ridge",
    solver: str | Solver = "auto",
    linear_solver: str = "auto",
    final_step: bool = True,
    adjoint: str = "implicit",
    candidates: Tensor | None = None,
    candidate_mask: Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    cg_tol: float = 1e-10,
    cg_max_iter: int | None = None,
    return_info: bool = False,
    warn: bool = True,
    compile: bool | str = "auto",
) -> Tensor | tuple[Tensor, ArgminInfo]:
    """Minimise ``energy`` for a batch of independent problems, differentiably.

    Args:
        energy: ``energy(y, *params) -> (B,)`` for ``y`` ``(B, n)``; problem ``b`` may depend
            on ``y[b]`` only. May declare closed-form ``gradient``/``hessian`` (``energy.py``).
        y0: starting points ``(B, n)``, float32 or float64.
        params: tensors the energy depends on; gradients reach every one that requires grad.
        damping: ``λ ≥ 0`` of ``(H + λI)^-1``. ``0`` = plain implicit differentiation.
        regulariser: ``"ridge"`` (``H + λI``, the paper) or ``"floor"`` (eigenvalues floored at
            ``λ``: same bound ``1/λ``, exact where curvature exceeds ``λ``; dense back end).
        solver: ``"auto"`` (default: ``"newton"`` for ``n ≤ 40``, ``"newton_cg"`` above),
            ``"newton"`` (dense trust-region Newton), ``"newton_cg"`` (matrix-free
            trust-region Newton-CG, ``O(B·n)`` memory), ``"lbfgs"``, ``"scipy"`` (black box),
            ``"quadratic"`` (exact for energies quadratic in ``y``; its Cholesky factor is reused
            by the backward), or an object with ``minimize(energy, y0, params) ->
            SolveResult``.
        linear_solver: ``"dense"`` (Cholesky), ``"cg"`` (matrix-free) or ``"auto"`` (dense for
            ``n ≤ 64``).
        final_step: take one damped Newton step after the solver (kept where it does not raise
            the energy; matrix-free, its CG stops at :data:`FINAL_STEP_CG_TOL`).
        adjoint: ``"implicit"`` (the damped implicit gradient at ``y*``) or ``"newton_step"``
            (differentiate the final step exactly, drift term included; needs ``final_step``).
        candidates: ``(B, C, n)`` multi-start candidates: start from the lowest-energy one
            (``y0`` is then only used for its dtype/device checks and ignored otherwise).
        candidate_mask: ``(B, C)`` bool, candidates allowed.
        max_iter, tol: passed to a solver named by string.
        cg_tol, cg_max_iter: conjugate-gradient settings of the matrix-free back end.
        return_info: also return an :class:`ArgminInfo`.
        warn: warn (once per call site; the warning names the caller's line, or for the backward
            the ``loss.backward()`` line) when problems do not converge, need fallbacks (forward
            final step or backward) or had their start moved; ``False`` silences all of them.
            The classes are in ``wibergian.errors`` (all subclasses of ``WibergianWarning``).
        compile: ``"auto"`` (default), ``True`` or ``False``. ``True`` compiles the
            no-gradient functions built from ``energy`` (its value and its
            value-gradient-Hessian; ``compiled.py``), cached per energy object; the seconds
            spent compiling are reported apart in ``info.compile_s``. Python values the energy
            reads that are not ``params`` (closure, globals, attributes) are baked into the
            trace: a change re-traces (``compiled.RETRACES``; guarded by ``trace_guard.py``).
            Falls back to eager with a :class:`~wibergian.CompileFallbackWarning` when
            compilation fails, the state cannot be guarded or keeps changing. ``"auto"`` runs
            the first ``auto_compile.AFTER_CALLS`` (20) calls of an energy object and problem
            shape eagerly and compiles from the next one on when the solver is dense Newton
            (``auto_compile.py``: deterministic, per signature, also needs 200,000 unknowns
            solved; an energy whose state cannot be guarded stays eager); ``False`` never
            compiles.

    Returns:
        ``y*`` ``(B, n)`` (and the info when ``return_info``).
    """
    y0, params = check_inputs(y0, params)
    damping = check_damping(damping)
    if regulariser not in REGULARISERS:
        raise ValueError(f"regulariser must be one of {REGULARISERS}; got {regulariser!r}")
    if adjoint not in ("implicit", "newton_step"):
        raise ValueError(f"adjoint must be 'implicit' or 'newton_step'; got {adjoint!r}")
    if adjoint == "newton_step" and not final_step:
        raise ValueError("adjoint='newton_step' differentiates the final step: set final_step=True")
    if adjoint == "newton_step" and regulariser != "ridge":
        raise ValueError("adjoint='newton_step' supports regulariser='ridge' only")
    b, n = y0.shape
    if y0.device.type == "cpu":
        allocator.warm()  # glibc's adaptive thresholds at their ceiling, once (allocator.py)
    backend = choose_backend(n, linear_solver)
    if regulariser == "floor" and backend != "dense":
        raise ValueError("regulariser='floor' needs eigenvalues: use linear_solver='dense'")
    inner = _solver_from(solver, max_iter, tol, n)
    check_mode(compile)
    compiled = (compiled_energy(energy, "compile=True" if compile is True else "compile='auto'")
                if wants_compile(compile, energy, y0, block_rows(b),
                                 isinstance(inner, (NewtonTrustRegion, NewtonCG))) else None)
    compile_s0 = compiled.compile_seconds if compiled is not None else 0.0
    if compiled is not None:
        energy = compiled

    if b == 0:
        zero = sum((p.sum() * 0 for p in params if p.is_floating_point() and p.requires_grad),
                   y0.new_zeros(()))
        out = y0.detach().clone() + zero
        info = ArgminInfo(*(y0.new_zeros(0) for _ in range(4)), backend=backend)
        info.iterations = info.iterations.long()
        info.converged = info.converged.bool()
        return (out, info) if return_info else out

    start_index = None
    if candidates is not None:
        check_candidates(candidates, candidate_mask, y0)
        y0, start_index = best_candidate(energy, candidates, params, candidate_mask)
    dense_newton = type(inner) is NewtonTrustRegion
    start = start_energy(energy, y0, params, evaluate=(
        (lambda z: value_gradient_hessian(energy, z, params)) if dense_newton else None))

    with batch_cholesky.active(compiled):  # the factorisations' route follows the call
        if dense_newton and len(start) == 3:  # the start check's pass is the solver's first
            result = inner.minimize(energy, y0.detach(), [p.detach() for p in params],
                                    start=start)  # type: ignore[arg-type]
        else:
            result = inner.minimize(energy, y0.detach(), [p.detach() for p in params])
    y_pre = result.y.detach()
    if not bool(torch.isfinite(y_pre).all()):
        raise FloatingPointError("the inner solver returned NaN/Inf; check the energy's scale")
    factor = getattr(result, "factor", None) if backend == "dense" else None
    if factor is not None and tuple(factor.chol.shape) != (b, n, n):
        factor = None
    needs_graph = torch.is_grad_enabled() and any(
        p.is_floating_point() and p.requires_grad for p in params
    )
    # the backward's Hessian, built by the forward where it builds one anyway (never twice)
    h_in = getattr(result, "hessian", None) if backend == "dense" else None
    if h_in is not None and tuple(h_in.shape) != (b, n, n):
        h_in = None
    h_point = h_in
    # the solver's semi-definiteness certificate of that Hessian: neither the final step nor
    # the backward at the same point repeats it
    psd = getattr(result, "psd", None) if h_in is not None else None
    psd = psd if psd is not None and tuple(psd.shape) == (b,) else None
    y_star, accepted, fwd_fb, step_factor, nearby = y_pre, None, 0, None, None
    g, e = getattr(result, "grad", None), getattr(result, "energy", None)
    if final_step:
        want_h = (needs_graph and backend == "dense" and adjoint == "implicit"
                  and not (factor is not None and factor.constant
                           and factor.solves(damping, regulariser)))
        # the final step's factor serves the backward: newton_step's own matrix, or the one
        # the implicit solve at y* refines from (ridge with λ > 0 only: refine.py)
        keep = needs_graph and backend == "dense" and (
            adjoint == "newton_step" or (regulariser == "ridge" and damping > 0))
        with batch_cholesky.active(compiled):
            y_star, accepted, fwd_fb, e, g, h_out, h_in, step_factor = _final_step(
                energy, y_pre, params, damping, regulariser, backend, factor, result, want_h,
                keep, FINAL_STEP_CG_TOL if adjoint == "implicit" else 1e-10)
        h_point = h_in if adjoint == "newton_step" else h_out
        if factor is not None and not factor.constant and bool(accepted.any()):
            factor = None  # the Hessian moved with y
        if (adjoint == "implicit" and step_factor is not None and h_in is not None
                and h_point is not None and step_factor is not factor):
            nearby = nearby_factor(step_factor, h_in, h_point, damping)  # refine.py
    with torch.no_grad():
        ps = [p.detach() for p in params]
        if g is None or e is None:  # else the solver's own (or the final step's), at y*
            g = gradient(energy, y_star, ps)
            e = energy_value(energy, y_star, ps)
        lost = ~torch.isfinite(g).all(-1)
        if final_step and bool((lost & accepted).any()):  # the final step landed on a kink: undo
            accepted = accepted & ~lost
            y_star = torch.where(accepted.unsqueeze(-1), y_star, y_pre)
            g, e = gradient(energy, y_star, ps), energy_value(energy, y_star, ps)
            lost = ~torch.isfinite(g).all(-1)
            if adjoint == "implicit":  # the Hessian at the restored points is the solver's
                h_point = (torch.where(accepted[:, None, None], h_point, h_in)
                           if h_point is not None and h_in is not None else None)
    if final_step and adjoint == "implicit" and psd is not None:  # certified where y stayed
        psd = psd & ~accepted if h_point is not None else None
    perturbed = getattr(result, "perturbed", None)
    info = ArgminInfo(
        iterations=result.iterations,
        converged=result.converged & ~lost,
        grad_norm=g.norm(dim=-1),
        energy=e,
        start_index=start_index,
        final_step_accepted=accepted,
        forward_fallbacks=fwd_fb,
        backend=backend,
        compile_s=compiled.compile_seconds - compile_s0 if compiled is not None else 0.0,
        perturbed_starts=0 if perturbed is None else int(perturbed.sum()),
        saddle=getattr(result, "saddle", None),
        solver=choose_solver(n, solver) if isinstance(solver, str) else type(solver).__name__,
    )
    if warn:
        forward_warnings(info, b)
    spec = AdjointSpec(energy, float(damping), regulariser, backend, adjoint, cg_tol, cg_max_iter,
                       record=info.backward,
                       factor=factor if adjoint == "implicit" else step_factor,
                       hessian=h_point, warn=warn, psd=psd, nearby=nearby,
                       grad=(g.detach() if adjoint == "implicit" and g is not None
                             and tuple(g.shape) == tuple(y_star.shape) else None))
    y_point = y_pre if adjoint == "newton_step" else y_star
    out = attach_derivatives(spec, y_star, y_point, y0, params)
    return (out, info) if return_info else out
