"""Solving ``(H + λI) v = g`` for a batch of independent problems.

Two regularisers of the Hessian, both bounded by ``1/λ``:

- ``"ridge"`` (the paper's trust-region damping): ``(H + λI)^-1``. Along an eigenvector of
  curvature ``h`` it scales the exact (undamped) answer by ``h/(h + λ)``: a deliberate bias.
- ``"floor"``: ``Σ_i q_i q_iᵀ / max(h_i, λ)``. The same bound, but exact wherever ``h_i ≥ λ``.

Back ends:

- dense: batched Cholesky of ``H + λI`` (``(B, n, n)``). A problem whose ``H`` is not positive
  semi-definite (a saddle, a non-converged point; tested by a Cholesky of ``H + tiny·I``), or
  whose ``H + λI`` fails to factor (``λ = 0`` on a flat minimum), does not crash or return NaN:
  its eigenvalues are clamped at zero before ``λ`` is added, and at
  ``tiny = sqrt(eps)·max(1, max|h|)`` when that sum is still not positive. This keeps the
  ``1/λ`` bound. Such problems are counted as fallbacks.
- ``cg``: conjugate gradients on Hessian-vector products, per problem, each with its own
  convergence test ``||r_b|| <= tol·||g_b||``. A search direction of negative curvature of
  ``H`` (or non-positive curvature of ``H + λI``) stops that problem's iteration (counted as a
  fallback) and returns the iterate reached so far (or
  ``g/max(λ, tiny)`` when none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .cholesky import HessianFactor, cholesky, cholesky_apply

__all__ = ["REGULARISERS", "HessianFactor", "SolveStats", "cg_solve", "cholesky",
           "cholesky_apply", "choose_backend", "dense_solve"]

REGULARISERS = ("ridge", "floor")
_BLOCK_BYTES = 4 << 20  # dense solves run over blocks of problems of about this many bytes


@dataclass
class SolveStats:
    """What a batched linear solve did.

    ``fallbacks``: problems that needed the eigenvalue clamp (dense) or hit negative curvature
    (CG). ``min_eigenvalue``: smallest eigenvalue of ``H`` per problem when an
    eigendecomposition was computed, else ``None``. ``iterations``: CG iterations per problem.
    ``residual``: ``||(H + λI) v - g|| / ||g||`` per problem (ridge) when measured.
    ``reused_factor``: the forward's factorisation was reused (no new factorisation).
    """

    fallbacks: int = 0
    fallback_mask: Tensor | None = None
    min_eigenvalue: Tensor | None = None
    iterations: Tensor | None = None
    residual: Tensor | None = None
    reused_factor: bool = False


def _tiny(h: Tensor) -> Tensor:
    eps = torch.finfo(h.dtype).eps ** 0.5
    scale = h.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    return eps * scale


def _eig_solve(h: Tensor, g: Tensor, damping: float, regulariser: str) -> tuple[Tensor, Tensor]:
    """Solve with an eigendecomposition; returns ``(v, eigenvalues)``."""
    evals, evecs = torch.linalg.eigh(h)
    if regulariser == "floor":
        d = evals.clamp_min(damping) if damping > 0 else evals
    else:
        d = evals.clamp_min(0.0) + damping
    d = torch.maximum(d, _tiny(evals))
    coeff = (evecs.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1) / d
    return (evecs @ coeff.unsqueeze(-1)).squeeze(-1), evals


def dense_solve(
    h: Tensor | None,
    g: Tensor,
    damping: float,
    regulariser: str = "ridge",
    *,
    psd_known: bool = False,
    factor: HessianFactor | None = None,
) -> tuple[Tensor, SolveStats]:
    """Solve the regularised system for each problem.

    Args:
        h: Hessians ``(B, n, n)``, symmetric (only the lower triangle is read by the Cholesky
            path). May be ``None`` when ``factor`` already factors ``H + λI``.
        g: right-hand sides ``(B, n)``.
        damping: ``λ ≥ 0``.
        regulariser: ``"ridge"`` or ``"floor"``.
        psd_known: ``H`` is known to be positive semi-definite (skips the test factorisation).
        factor: a forward factor of ``H + shift·I`` (see :class:`HessianFactor`): reused when
            ``shift = λ`` (ridge), and its ``shift = 0`` proves ``H`` positive definite.

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
        return torch.zeros_like(g), stats
    if factor is not None:
        if factor.solves(damping, regulariser):
            stats.fallback_mask = torch.zeros(b, dtype=torch.bool, device=g.device)
            stats.reused_factor = True
            return cholesky_apply(factor.chol, g), stats
        psd_known = psd_known or factor.proves_positive_definite
    if h is None:
        raise ValueError("dense_solve needs the Hessian unless the factor can be reused")
    if regulariser == "floor":
        v, evals = _eig_solve(h, g, damping, "floor")
        stats.min_eigenvalue = evals[:, 0]
        bad = evals[:, 0] < 0  # an indefinite Hessian: its negative curvature was floored
        stats.fallback_mask = bad
        stats.fallbacks = int(bad.sum())
        return v, stats
    n = h.shape[-1]
    rows = max(1, _BLOCK_BYTES // (n * n * h.element_size()))
    v = torch.empty_like(g)
    bad = torch.empty(b, dtype=torch.bool, device=g.device)
    for lo in range(0, b, rows):
        hi = min(b, lo + rows)
        v[lo:hi], bad[lo:hi] = _ridge_block(h[lo:hi], g[lo:hi], damping,
                                            psd_check=damping > 0 and not psd_known)
    if bool(bad.any()):
        v_fb, evals = _eig_solve(h[bad], g[bad], damping, "ridge")
        v[bad] = v_fb
        mins = torch.full((b,), float("nan"), dtype=h.dtype, device=h.device)
        mins[bad] = evals[:, 0]
        stats.min_eigenvalue = mins
    stats.fallback_mask = bad
    stats.fallbacks = int(bad.sum())
    return v, stats


def _ridge_block(h: Tensor, g: Tensor, damping: float, psd_check: bool) -> tuple[Tensor, Tensor]:
    """``(H + λI)^-1 g`` by Cholesky for one block; returns ``(v, bad)``."""
    m = h.clone()  # one work buffer: H with its diagonal shifted in place (no eye broadcasts)
    m_diag = torch.diagonal(m, dim1=-2, dim2=-1)
    m_diag.add_(damping)
    chol, ok = cholesky(m)
    v = cholesky_apply(chol, g)
    bad = ~ok | ~torch.isfinite(v).all(dim=-1)
    if psd_check:
        # H itself must be positive semi-definite for the 1/λ bound: H + λI can be positive
        # definite while H has a negative eigenvalue in (-λ, 0), which would amplify by more
        # than 1/λ. Test H + tiny·I (tiny relative to the scale of H, max|h| without an abs
        # temporary).
        scale = torch.maximum(h.amax(dim=(-1, -2)), -h.amin(dim=(-1, -2))).clamp_min(1.0)
        tiny = (torch.finfo(h.dtype).eps ** 0.5) * scale
        m_diag.copy_(torch.diagonal(h, dim1=-2, dim2=-1) + tiny[:, None])
        _, ok_psd = cholesky(m)
        bad = bad | ~ok_psd
    return v, bad


def cg_solve(
    hvp: Callable[[Tensor], Tensor],
    g: Tensor,
    damping: float,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    check_every: int | None = None,
) -> tuple[Tensor, SolveStats]:
    """Batched conjugate gradients for ``(H + λI) v = g`` with per-problem convergence.

    Args:
        hvp: ``v ↦ H v`` for ``v`` of shape ``(B, n)``.
        g: right-hand sides ``(B, n)``.
        damping: ``λ ≥ 0`` (ridge only: the floor needs eigenvalues).
        tol: relative residual at which a problem stops.
        max_iter: iteration cap (default ``max(10, min(n, 1000))``).
        check_every: test "every problem stopped" (one host synchronisation) every this many
            iterations (``None``: 1 on the CPU, 4 on an accelerator); stopped problems are
            masked on the device in between.

    Returns:
        ``v`` ``(B, n)`` and :class:`SolveStats` (iterations, residual, fallbacks).
    """
    b, n = g.shape
    max_iter = max_iter if max_iter is not None else max(10, min(n, 1000))
    x = torch.zeros_like(g)
    r = g.clone()
    p = r.clone()
    rs = (r * r).sum(-1)
    gnorm = rs.sqrt()
    active = gnorm > 0
    iters = torch.zeros(b, dtype=torch.long, device=g.device)
    negative = torch.zeros(b, dtype=torch.bool, device=g.device)
    tiny = torch.finfo(g.dtype).eps ** 0.5
    every = check_every or (1 if g.device.type == "cpu" else 4)
    for it in range(max_iter):
        if it % every == 0 and not bool(active.any()):  # the loop's only host sync
            break
        hp = hvp(p)
        ap = hp + damping * p
        pap = (p * ap).sum(-1)
        pp = (p * p).sum(-1)
        # negative curvature of H itself (not only of H + λI) would break the 1/λ bound
        neg = active & ((pap <= tiny * pp) | ((p * hp).sum(-1) < -tiny * pp))
        negative |= neg  # masked on the device: no host sync
        first = neg & (iters == 0)
        x = torch.where(first.unsqueeze(-1), g / max(damping, tiny), x)
        active = active & ~neg
        alpha = torch.where(active, rs / torch.where(active, pap, torch.ones_like(pap)), 0.0)
        x = x + alpha.unsqueeze(-1) * p
        r = r - alpha.unsqueeze(-1) * ap
        rs_new = (r * r).sum(-1)
        iters = iters + active.long()
        done = rs_new.sqrt() <= tol * gnorm
        beta = torch.where(active, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), 0.0)
        p = torch.where(active.unsqueeze(-1), r + beta.unsqueeze(-1) * p, p)
        rs = torch.where(active, rs_new, rs)
        active = active & ~done
    resid = (hvp(x) + damping * x - g).norm(dim=-1) / gnorm.clamp_min(torch.finfo(g.dtype).tiny)
    stats = SolveStats(
        fallbacks=int(negative.sum()),
        fallback_mask=negative,
        iterations=iters,
        residual=resid,
    )
    return x, stats


def choose_backend(n: int, requested: str) -> str:
    """``"dense"`` for small ``n`` (≤ 64), ``"cg"`` above, unless one is requested."""
    if requested not in ("auto", "dense", "cg"):
        raise ValueError(f"linear_solver must be 'auto', 'dense' or 'cg', got {requested!r}")
    if requested != "auto":
        return requested
    return "dense" if n <= 64 else "cg"
