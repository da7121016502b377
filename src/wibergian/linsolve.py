"""Solving ``(H + λI) v = g`` for a batch of independent problems.

Two regularisers of the Hessian, both bounded by ``1/λ``:

- ``"ridge"`` (the paper's trust-region damping): ``(H + λI)^-1``. Along an eigenvector of
  curvature ``h`` it scales the exact (undamped) answer by ``h/(h + λ)``: a deliberate bias.
- ``"floor"``: ``Σ_i q_i q_iᵀ / max(h_i, λ)``. The same bound, but exact wherever ``h_i ≥ λ``.

Back ends:

- dense: batched Cholesky of ``H + λI`` (``(B, n, n)``). The ``1/λ`` bound needs ``H`` itself
  positive semi-definite, which a second Cholesky certifies: of ``H - τI`` with
  ``τ = 4·n·eps·max|h_ij|`` (so ``λ_min(H) ≥ τ - O(n·eps·||H||) ≥ 0``: the test resolves the
  smallest eigenvalue to the dtype's precision, however large the largest). A problem without
  the certificate (a saddle, a point the solver did not converge to, a near-singular ``H``) or
  whose ``H + λI`` fails to factor gets an eigendecomposition: ``Σ q_i q_iᵀ / (max(h_i, 0) + λ)``
  (at ``λ = 0``, eigenvalues below ``tiny = sqrt(eps)·max(1, max|h|)`` are raised to it). It is
  counted as a fallback when its smallest eigenvalue is below ``-τ`` (or ``λ = 0``). If
  ``eigh`` fails to converge, the fallback is a Cholesky solve of ``H + (s + λ)I`` with ``s`` the
  Gershgorin bound on ``-λ_min(H)`` (cruder, same bound). A problem whose ``H`` or right-hand side
  is not finite gets ``v = NaN`` and is reported in ``SolveStats.nonfinite_mask``; callers raise
  (the backward) or reject the step (the final Newton step).
- ``cg``: conjugate gradients on Hessian-vector products, per problem, each with its own
  convergence test ``||r_b|| <= tol·||g_b||``. The CG coefficients define the Lanczos
  tridiagonal ``T`` of ``H + λI`` on the Krylov space; an LDLᵀ inertia count of ``T - λI + τI``,
  updated in O(1) per iteration and problem, detects a Ritz value of ``H`` below ``-τ`` (which
  proves ``λ_min(H) < 0``: Ritz values lie inside the spectrum). Such a problem (counted as a
  fallback) is solved again, matrix-free, with ``H + σI``, ``σ = λ - 1.1·θ_min`` from the smallest
  Ritz value ``θ_min`` (a breakdown step's coefficient included), and the inertia count repeated
  on the shifted run (up to six shifts, ``σ - λ`` at least doubling on each).
  Cost: each shift is one more CG run over the flagged problems (each iteration one batched
  Hessian-vector product). The shifted answer keeps the bound but is more biased than the dense
  eigenvalue clamp (every curvature is raised by ``σ - λ``, not only the negative ones).

Whatever the back end, callers that need the bound (the backward) also cap ``||v|| ≤ ||g||/λ``
(:func:`cap_to_bound`), so rounding and an undetected tiny negative eigenvalue cannot exceed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .cholesky import HessianFactor, cholesky, cholesky_apply, shifted_cholesky, work_buffer
from .spectral import cap_to_bound, certify_psd, eig_fallback, psd_margin

__all__ = ["REGULARISERS", "HessianFactor", "SolveStats", "cap_to_bound", "cg_solve", "cholesky",
           "cholesky_apply", "choose_backend", "dense_solve", "psd_margin"]

REGULARISERS = ("ridge", "floor")
_BLOCK_BYTES = 4 << 20  # dense solves run over blocks of problems of about this many bytes


@dataclass
class SolveStats:
    """What a batched linear solve did.

    ``fallbacks``: problems whose ``H`` had a negative eigenvalue beyond rounding (dense: below
    ``-τ``; CG: a Ritz value below ``-τ``), or whose ``H + λI`` did not factor; they got the
    documented fallback. ``min_eigenvalue``: smallest eigenvalue of ``H`` per problem when an
    eigendecomposition was computed (NaN elsewhere), else ``None``. ``iterations``: CG
    iterations per problem (all runs). ``residual``: ``||(H + λI) v - g|| / ||g||`` per problem
    (ridge; CG: of the system actually solved) when measured. ``reused_factor``: the forward's
    factorisation was reused. ``nonfinite_mask``: problems whose ``H`` (or ``H v``) or ``g`` was
    NaN/Inf; their ``v`` is NaN. ``shifted``: CG problems solved with a shift ``σ > λ``.
    ``factor``: with ``dense_solve(keep_factor=True)``, the factor of ``H + λI`` it computed
    (``ok``: the rows it solved, certified in ``psd``), for a later solve with the same matrix.
    ``refined``: problems solved by refinement from a nearby factor (``refine.py``).
    """

    fallbacks: int = 0
    fallback_mask: Tensor | None = None
    min_eigenvalue: Tensor | None = None
    iterations: Tensor | None = None
    residual: Tensor | None = None
    reused_factor: bool = False
    nonfinite_mask: Tensor | None = None
    shifted: int = 0
    factor: HessianFactor | None = None
    refined: int = 0


def dense_solve(
    h: Tensor | None,
    g: Tensor,
    damping: float,
    regulariser: str = "ridge",
    *,
    psd_known: bool | Tensor = False,
    factor: HessianFactor | None = None,
    keep_factor: bool = False,
) -> tuple[Tensor, SolveStats]:
    """Solve the regularised system for each problem.

    Args:
        h: Hessians ``(B, n, n)``, symmetric (only the lower triangle is read by the Cholesky
            path). May be ``None`` when ``factor`` already factors ``H + λI``.
        g: right-hand sides ``(B, n)``.
        damping: ``λ ≥ 0``.
        regulariser: ``"ridge"`` or ``"floor"``.
        psd_known: ``H`` is known to be positive semi-definite (skips the certificate), for
            all problems or, a ``(B,)`` bool, for those set (``SolveResult.psd``).
        factor: a forward factor of ``H + shift·I`` (see :class:`HessianFactor`): reused when
            ``shift = λ`` (ridge), and its ``shift = 0`` (or its ``psd``) proves ``H`` positive
            (semi-)definite.
        keep_factor: return the factor of ``H + λI`` in ``SolveStats.factor`` (ridge).

    Returns:
        ``v`` of shape ``(B, n)`` and the :class:`SolveStats`.

    Large batches run over blocks of about 4 MB: a fresh ``(B, n, n)`` buffer per operation is
    bound by page faults on this kind of machine (cloning 128 MB took 62 ms here).
    """
    if regulariser not in REGULARISERS:
        raise ValueError(f"regulariser must be one of {REGULARISERS}, got {regulariser!r}")
    stats = SolveStats()
    b = g.shape[0]
    if b == 0:
        stats.fallback_mask = torch.zeros(0, dtype=torch.bool, device=g.device)
        stats.nonfinite_mask = stats.fallback_mask
        return torch.zeros_like(g), stats
    if factor is not None:
        if factor.solves(damping, regulariser):
            stats.fallback_mask = torch.zeros(b, dtype=torch.bool, device=g.device)
            stats.nonfinite_mask = stats.fallback_mask
            stats.reused_factor = True
            return cholesky_apply(factor.chol, g), stats
        if factor.proves_positive_definite:
            psd_known = True
        elif factor.psd is not None and not isinstance(psd_known, bool):
            psd_known = psd_known | factor.psd
        elif factor.psd is not None and not psd_known:
            psd_known = factor.psd
    if isinstance(psd_known, Tensor) and bool(psd_known.all()):
        psd_known = True
    if h is None:
        raise ValueError("dense_solve needs the Hessian unless the factor can be reused")
    if regulariser == "floor":
        v, mins, fallback, nonfinite = eig_fallback(h, g, damping, "floor")
        stats.min_eigenvalue = mins
        stats.fallback_mask, stats.nonfinite_mask = fallback, nonfinite
        stats.fallbacks = int(fallback.sum())
        return v, stats
    n = h.shape[-1]
    rows = max(1, _BLOCK_BYTES // (n * n * h.element_size()))
    v = torch.empty_like(g)
    bad = torch.empty(b, dtype=torch.bool, device=g.device)
    ok = torch.empty(b, dtype=torch.bool, device=g.device) if keep_factor else None
    # one work buffer for every block's factorisations; the kept factor gets its own
    work = work_buffer(min(b, rows), n, h) if n > 2 else None
    chol = None if not keep_factor else work_buffer(b, n, h) if n > 2 else torch.empty_like(h)
    for lo in range(0, b, rows):
        hi = min(b, lo + rows)
        check = (damping > 0 and psd_known is not True) and (
            ~psd_known[lo:hi] if isinstance(psd_known, Tensor) else True)
        block_work = None if work is None else work[: hi - lo]
        v[lo:hi], bad[lo:hi], block_chol, block_ok = _ridge_block(
            h[lo:hi], g[lo:hi], damping, check, block_work,
            block_work if chol is None or work is None else chol[lo:hi])
        if ok is not None and chol is not None:
            ok[lo:hi] = block_ok
            if work is None:  # n ≤ 2: closed-form factors, built apart
                chol[lo:hi] = block_chol
    fallback = torch.zeros(b, dtype=torch.bool, device=g.device)
    nonfinite = torch.zeros(b, dtype=torch.bool, device=g.device)
    if bool(bad.any()):
        v[bad], mins_bad, fallback[bad], nonfinite[bad] = eig_fallback(
            h[bad], g[bad], damping, "ridge")
        mins = torch.full((b,), float("nan"), dtype=h.dtype, device=h.device)
        mins[bad] = mins_bad
        stats.min_eigenvalue = mins
    stats.fallback_mask, stats.nonfinite_mask = fallback, nonfinite
    stats.fallbacks = int(fallback.sum())
    if ok is not None and chol is not None:  # the rows solved by the factor are certified
        stats.factor = HessianFactor(chol, ok & ~bad, shift=damping, psd=~bad)
    return v, stats


def _ridge_block(h: Tensor, g: Tensor, damping: float, psd_check: bool | Tensor,
                 work: Tensor | None = None, factor_out: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(H + λI)^-1 g`` by Cholesky for one block; returns ``(v, bad, chol, ok)``: ``bad``
    where the factorisation failed, ``v`` is not finite, or (``psd_check``: all problems, or
    a ``(B,)`` bool of those to test) ``H`` is not certified positive semi-definite; ``chol``,
    ``ok`` the factor of ``H + λI`` (in ``factor_out``; the certificate is factored in
    ``work``, which may be the same buffer: the factor is used before)."""
    chol, ok = shifted_cholesky(h, damping, out=factor_out)
    v = cholesky_apply(chol, g)
    bad = ~ok | ~torch.isfinite(v).all(dim=-1)
    # H itself must be positive semi-definite for the 1/λ bound: H + λI can be positive
    # definite while H has a negative eigenvalue in (-λ, 0), which amplifies by more than
    # 1/λ. A Cholesky of H - τI that succeeds certifies λ_min(H) ≥ 0 up to its own
    # backward error; one that fails sends the problem to the eigendecomposition, which
    # resolves the smallest eigenvalue to about eps·||H|| (not relative to the largest).
    if isinstance(psd_check, Tensor) and not bool(psd_check.all()):
        if bool(psd_check.any()):  # only the problems whose certificate is not known yet
            bad[psd_check] |= ~certify_psd(h[psd_check])
    elif psd_check is not False:  # every problem
        bad = bad | ~certify_psd(h, out=work)
    return v, bad, chol, ok


def _cg_run(
    hvp: Callable[[Tensor], Tensor],
    g: Tensor,
    shift: Tensor,
    target: Tensor,
    active: Tensor,
    tol: float,
    max_iter: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, list[Tensor], list[Tensor]]:
    """CG on ``(H + shift_b I) v = g`` for the ``active`` problems, watching the inertia of the
    Lanczos tridiagonal.

    With CG's ``α_j``, ``β_j`` the tridiagonal of ``A = H + shift·I`` on the Krylov space has
    diagonal ``1/α_j + β_{j-1}/α_{j-1}`` and off-diagonal ``sqrt(β_j)/α_j``. The LDLᵀ pivots of
    ``T - target·I`` are updated once per iteration; a negative pivot means a Ritz value of
    ``A`` below ``target`` (``target = shift - σ_needed + ...``: see ``cg_solve``), and stops that
    problem. Returns ``(x, iterations, flagged, nonfinite, alphas, betas)``.
    """
    b = g.shape[0]
    x = torch.zeros_like(g)
    r = g.clone()
    p = r.clone()
    rs = (r * r).sum(-1)
    gnorm = rs.sqrt()
    active = active & (gnorm > 0)
    iters = torch.zeros(b, dtype=torch.long, device=g.device)
    flagged = torch.zeros(b, dtype=torch.bool, device=g.device)
    broken = torch.zeros(b, dtype=torch.bool, device=g.device)
    nonfinite = ~torch.isfinite(g).all(-1)
    active = active & ~nonfinite
    pivot = torch.ones_like(gnorm)  # d_{j-1} of the LDLᵀ recurrence
    off2 = torch.zeros_like(gnorm)  # η_{j-1}², the previous off-diagonal squared
    prev = torch.zeros_like(gnorm)  # β_{j-1}/α_{j-1}
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    tiny = torch.finfo(g.dtype).tiny
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        ap = hvp(p) + shift.unsqueeze(-1) * p
        pap = (p * ap).sum(-1)
        nonfinite |= active & ~torch.isfinite(pap)
        breaks = active & torch.isfinite(pap) & (pap <= 0)  # H + shift·I is not pos. definite
        broken |= breaks
        active = active & ~nonfinite & ~broken
        alpha = torch.where(active, rs / torch.where(active, pap, 1.0), 0.0)
        # the breakdown step's α = rᵀr/pᵀAp (≤ 0, or -inf at pᵀAp = 0) still closes a valid
        # Lanczos tridiagonal, whose smallest Ritz value is then a Rayleigh quotient of A at or
        # below 0 along the direction found: recorded for the Ritz estimate, never applied to x
        alpha_seen = torch.where(breaks, rs / torch.where(pap < 0, pap, -0.0), alpha)
        x = x + alpha.unsqueeze(-1) * p
        r = r - alpha.unsqueeze(-1) * ap
        rs_new = (r * r).sum(-1)
        beta = torch.where(active, rs_new / torch.where(rs > 0, rs, 1.0), 0.0)
        # Lanczos: T_jj = 1/α_j + β_{j-1}/α_{j-1}; pivot d_j = T_jj - target - η_{j-1}²/d_{j-1}
        # (rows that stopped keep computing garbage pivots that nothing reads)
        inv_a = 1.0 / torch.where(active, alpha, 1.0)
        d = inv_a + prev - target - off2 / pivot
        flagged |= active & (d < 0)
        pivot = torch.where(d == 0, tiny, d)
        prev = beta * inv_a
        off2 = prev * inv_a
        alphas.append(alpha_seen)
        betas.append(beta)
        iters = iters + active.long()
        p = torch.where(active.unsqueeze(-1), r + beta.unsqueeze(-1) * p, p)
        rs = torch.where(active, rs_new, rs)
        active = active & (rs_new.sqrt() > tol * gnorm)
    return x, iters, flagged | broken, broken, nonfinite, alphas, betas


def _ritz_range(alphas: list[Tensor], betas: list[Tensor], rows: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest Ritz value of the tridiagonal from CG coefficients for the problems ``rows``
    (a zero ``α`` marks iterations a problem did not take), and a Gershgorin bound on the
    largest. Dense ``eigvalsh`` of the ``k × k`` tridiagonal: only flagged problems pay it."""
    a = torch.stack(alphas, -1)[rows]
    bt = torch.stack(betas, -1)[rows]
    k = a.shape[-1]
    taken = a != 0
    inv_a = torch.where(taken, 1.0 / torch.where(taken, a, 1.0), 0.0)
    prev = torch.cat([torch.zeros_like(a[:, :1]), (bt * inv_a)[:, :-1]], -1)
    diag = torch.where(taken, inv_a + prev, 0.0)
    off = torch.where(taken[:, 1:], (bt[:, :-1].clamp_min(0).sqrt() * inv_a[:, :-1]), 0.0)
    big = diag.abs().amax(-1, keepdim=True)
    if k > 1:
        big = big + 2 * off.abs().amax(-1, keepdim=True)
    diag = torch.where(taken, diag, big + 1)  # padding sits above the spectrum
    t = torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    try:
        lo = torch.linalg.eigvalsh(t.double())[:, 0].to(a.dtype)
    except torch.linalg.LinAlgError:  # treated as negative curvature of unknown size
        lo = torch.full_like(big[:, 0], float("nan"))
    return lo, big[:, 0]


def cg_solve(
    hvp: Callable[[Tensor], Tensor],
    g: Tensor,
    damping: float,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    max_shifts: int = 6,
) -> tuple[Tensor, SolveStats]:
    """Batched conjugate gradients for ``(H + λI) v = g`` with per-problem convergence.

    Negative curvature of ``H`` is detected from the Lanczos tridiagonal that CG builds: an
    inertia count flags a Ritz value of ``H`` below 0, and the flagged problems' tridiagonals
    confirm one below ``-τ``, ``τ = 8·eps·max(1, ||T||)`` (or ``pᵀ(H + λI)p ≤ 0``). Such a
    problem is solved again with ``H + σI``, ``σ = λ - 1.1·θ`` (``θ``: the smallest Ritz value
    of ``H`` seen, the breakdown step included; at most ``-λ`` after a breakdown), up to
    ``max_shifts`` times while its shifted run still shows a Ritz value of ``H + σI`` below
    ``λ - τ`` (``σ - λ`` then at least doubles: ``θ`` only bounds ``λ_min(H)`` from above). A
    problem still flagged after that keeps the last shifted answer (the caller's
    :func:`cap_to_bound` then enforces the bound).

    Args:
        hvp: ``v ↦ H v`` for ``v`` of shape ``(B, n)``.
        g: right-hand sides ``(B, n)``.
        damping: ``λ ≥ 0`` (ridge only: the floor needs eigenvalues). At ``λ = 0`` the target
            smallest eigenvalue is ``sqrt(eps)`` instead of ``λ``.
        tol: relative residual at which a problem stops.
        max_iter: iteration cap per run (default ``max(10, min(n, 1000))``).
        max_shifts: shifted re-solves allowed per flagged problem.

    Returns:
        ``v`` ``(B, n)`` and :class:`SolveStats` (iterations, residual, fallbacks, shifted,
        nonfinite_mask: problems where ``g`` or ``H p`` was NaN/Inf, with ``v = NaN``).
    """
    b, n = g.shape
    max_iter = max_iter if max_iter is not None else max(10, min(n, 1000))
    eps = torch.finfo(g.dtype).eps
    floor = damping if damping > 0 else eps ** 0.5  # the smallest eigenvalue a shift aims at
    shift = torch.full((b,), float(damping), dtype=g.dtype, device=g.device)
    target = torch.full_like(shift, float(damping))  # Ritz values of H + σI must stay above
    x, iters, flagged, broke, nonfinite, alphas, betas = _cg_run(
        hvp, g, shift, target, torch.ones(b, dtype=torch.bool, device=g.device), tol, max_iter)
    theta = torch.zeros_like(shift)  # estimate of λ_min(H) (≤ 0) for confirmed problems

    def confirm(flagged: Tensor, broke: Tensor) -> Tensor:
        """Flagged problems whose smallest Ritz value of ``H + σI`` is below ``λ`` by more than
        ``τ = 8·eps·max(1, ||T||)`` (or whose CG broke down); updates ``theta``."""
        todo = flagged & ~nonfinite
        if not bool(todo.any()):
            return todo
        rows = todo.nonzero().flatten()
        lo, hi = _ritz_range(alphas, betas, rows)
        lo = torch.nan_to_num(lo, nan=float("-inf"))
        tau = 8 * eps * torch.maximum(hi.abs(), torch.ones_like(hi))
        real = (lo < target[rows] - tau) | broke[rows]
        est = lo - shift[rows]  # smallest Ritz value of H; a breakdown proves ≤ -shift
        est = torch.where(broke[rows], torch.minimum(est, -shift[rows]), est)
        est = torch.nan_to_num(est, nan=-1.0, neginf=-1.0)
        theta[rows] = torch.where(real, torch.minimum(theta[rows], est.clamp_max(0.0)),
                                  theta[rows])
        keep = torch.zeros_like(todo)
        keep[rows] = real
        return keep

    fallback = confirm(flagged, broke)
    todo = fallback
    for round_ in range(max_shifts):
        if not bool(todo.any()):
            break
        old = shift[todo]
        new = floor - 1.1 * theta[todo]
        # θ is a Ritz value, only an upper bound on λ_min(H): a problem flagged again gets at
        # least a doubled excess shift, so the shift outgrows any underestimate geometrically
        grown = damping + 2 * (old - damping) + floor
        shift[todo] = torch.maximum(new, grown) if round_ > 0 else torch.where(new > old, new,
                                                                              grown)
        x_s, it_s, flagged, broke, nf_s, alphas, betas = _cg_run(
            hvp, g, shift, target, todo, tol, max_iter)
        x = torch.where(todo.unsqueeze(-1), x_s, x)
        iters = iters + it_s
        nonfinite |= nf_s & todo
        todo = todo & confirm(flagged & todo, broke & todo)
    x = torch.where(nonfinite.unsqueeze(-1), torch.full_like(x, float("nan")), x)
    gnorm = g.norm(dim=-1)
    resid = (hvp(x) + shift.unsqueeze(-1) * x - g).norm(dim=-1) / gnorm.clamp_min(
        torch.finfo(g.dtype).tiny)
    stats = SolveStats(
        fallbacks=int(fallback.sum()),
        fallback_mask=fallback,
        iterations=iters,
        residual=resid,
        nonfinite_mask=nonfinite,
        shifted=int((shift > damping).sum()),
    )
    return x, stats


def choose_backend(n: int, requested: str) -> str:
    """``"dense"`` for small ``n`` (≤ 64), ``"cg"`` above, unless one is requested."""
    if requested not in ("auto", "dense", "cg"):
        raise ValueError(f"linear_solver must be 'auto', 'dense' or 'cg', got {requested!r}")
    if requested != "auto":
        return requested
    return "dense" if n <= 64 else "cg"
