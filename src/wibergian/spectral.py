"""Spectral pieces of the dense solve: the semi-definiteness margin, the eigendecomposition
fallback (and its own fallback when ``eigh`` does not converge), and the cap that holds the
``1/λ`` bound. See ``linsolve.py`` for how they are used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cholesky import cholesky, cholesky_apply, shifted_cholesky

__all__ = ["cap_to_bound", "certify_psd", "eig_fallback", "psd_margin"]


def _tiny(h: Tensor) -> Tensor:
    eps = torch.finfo(h.dtype).eps ** 0.5
    scale = h.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    return eps * scale


def psd_margin(h: Tensor) -> Tensor:
    """``τ = 4·n·eps·max|h_ij|`` per problem ``(B,)``: the rounding level of ``λ_min(H)``."""
    n = h.shape[-1]
    scale = torch.maximum(h.amax(dim=(-1, -2)), -h.amin(dim=(-1, -2)))
    return (4 * n * torch.finfo(h.dtype).eps) * scale


def certify_psd(h: Tensor, out: Tensor | None = None) -> Tensor:
    """``(B,)`` bool: the semi-definiteness certificate of ``H`` ``(B, n, n)``, a Cholesky of
    ``H - τI`` (``τ = psd_margin(H)``) that succeeds, so ``λ_min(H) ≥ τ - O(n·eps·||H||) ≥ 0``.
    The one test behind the dense solve's ``1/λ`` bound (``linsolve``) and the Newton solver's
    second-order check (``solvers/curvature.py``), which hands its verdict on to the former.
    ``out``: a ``cholesky.work_buffer`` to factor in (overwritten)."""
    return shifted_cholesky(h, -psd_margin(h), out)[1]


def cap_to_bound(v: Tensor, g: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """Scale each row of ``v`` down to ``||v_b|| ≤ ||g_b|| / λ`` (no-op at ``λ = 0``).

    Returns ``(v, capped)``, ``capped`` ``(B,)`` where a row was shrunk by more than rounding
    (relative ``1e-6``; below that the cap only removes rounding).
    """
    if damping <= 0:
        return v, torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    limit = g.norm(dim=-1) / damping
    norm = v.norm(dim=-1)
    over = norm > limit
    scale = torch.where(over, limit / torch.where(over, norm, torch.ones_like(norm)), 1.0)
    return v * scale.unsqueeze(-1), over & (norm > limit * (1 + 1e-6))


def _eigh(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``eigh`` that does not raise: ``(evals, evecs, ok)``. When LAPACK fails to converge for a
    batch, the batch is halved until the failing problems are alone (O(log B) extra calls for
    one bad problem); a lone failure is retried in float64, and ``ok`` is False if that fails."""
    b = h.shape[0]
    try:
        evals, evecs = torch.linalg.eigh(h)
        return evals, evecs, torch.ones(b, dtype=torch.bool, device=h.device)
    except torch.linalg.LinAlgError:
        pass
    if b > 1:
        parts = [_eigh(h[: b // 2]), _eigh(h[b // 2:])]
        return tuple(torch.cat(t) for t in zip(*parts, strict=True))  # type: ignore[return-value]
    try:
        evals, evecs = torch.linalg.eigh(h.double())
        return evals.to(h.dtype), evecs.to(h.dtype), torch.ones(1, dtype=torch.bool,
                                                                device=h.device)
    except torch.linalg.LinAlgError:
        nan = torch.full_like(h, float("nan"))
        return nan[..., 0], nan, torch.zeros(1, dtype=torch.bool, device=h.device)


def _gershgorin_solve(h: Tensor, g: Tensor, damping: float) -> Tensor:
    """``(H + (s + λ)I)^-1 g`` with ``s = max(0, -min_i(h_ii - Σ_{j≠i} |h_ij|)) ≥ -λ_min(H)``
    (Gershgorin), so every eigenvalue of the matrix solved is ``≥ λ``: the bound without ``eigh``.
    """
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    radius = h.abs().sum(-1) - diag.abs()
    s = (radius - diag).amax(-1).clamp_min(0.0)
    shift = s + max(damping, 0.0) + _tiny(diag)[:, 0] * (damping <= 0)
    m = h + shift[:, None, None] * torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    chol, ok = cholesky(m)
    v = cholesky_apply(chol, g)
    bad = ~ok | ~torch.isfinite(v).all(-1)
    if bool(bad.any()):  # Cholesky fails only at absurd scales; a least-squares solve then
        v[bad] = torch.linalg.lstsq(m[bad].double(), g[bad].double().unsqueeze(-1)).solution[
            ..., 0].to(v.dtype)
    return v


def _eig_solve(h: Tensor, g: Tensor, damping: float, regulariser: str) -> tuple[Tensor, Tensor]:
    """Solve with an eigendecomposition; returns ``(v, eigenvalues)``. Problems whose ``eigh``
    does not converge get the Gershgorin-shifted solve (their eigenvalues are NaN)."""
    evals, evecs, ok = _eigh(h)
    if regulariser == "floor":
        d = evals.clamp_min(damping) if damping > 0 else evals
    else:
        d = evals.clamp_min(0.0) + damping
    if damping <= 0:
        d = torch.maximum(d, _tiny(evals))
    coeff = (evecs.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1) / d
    v = (evecs @ coeff.unsqueeze(-1)).squeeze(-1)
    if not bool(ok.all()):
        v[~ok] = _gershgorin_solve(h[~ok], g[~ok], damping)
    return v, evals


def eig_fallback(
    h: Tensor, g: Tensor, damping: float, regulariser: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The eigen path for a subset of problems: ``(v, min_eigenvalue, fallback, nonfinite)``.

    A problem with a non-finite ``H`` or ``g`` gets ``v = NaN`` and no decomposition; one whose
    smallest eigenvalue is below ``-τ`` (or any problem at ``λ = 0``) is a fallback.
    """
    finite = torch.isfinite(h).all(dim=(-1, -2)) & torch.isfinite(g).all(-1)
    v = torch.full_like(g, float("nan"))
    mins = torch.full(g.shape[:1], float("nan"), dtype=g.dtype, device=g.device)
    fallback = torch.zeros(g.shape[0], dtype=torch.bool, device=g.device)
    if bool(finite.any()):
        hf = h[finite]
        v_f, evals = _eig_solve(hf, g[finite], damping, regulariser)
        v[finite] = v_f
        mins[finite] = evals[:, 0]
        neg = ~(evals[:, 0] >= -psd_margin(hf))  # NaN (eigh failed) counts as a fallback
        fallback[finite] = neg | (damping <= 0 and regulariser == "ridge")
    return v, mins, fallback, ~finite
