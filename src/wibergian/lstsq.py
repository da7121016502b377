"""Quadratic energies in closed form: ``y* = argmin_y ||A y - b||²`` (supplementary, section 2).

Batched over leading dimensions: ``A`` ``(..., m, n)``, ``b`` ``(..., m)``, ``y*`` ``(..., n)``.

- Well-posed (``A`` of full column rank): ``y* = (AᵀA)^-1 Aᵀ b`` by Cholesky of ``AᵀA``. With
  ``u = (AᵀA)^-1 ȳ`` and ``r = b - A y*`` the vector-Jacobian product is
  ``b̄ = A u``, ``Ā = r uᵀ - A u y*ᵀ``.
- Rank-deficient: ``y* = A⁺ b``, the minimum-norm minimiser. From the Golub-Pereyra derivative
  of the pseudo-inverse, ``dA⁺ = -A⁺ dA A⁺ + A⁺A⁺ᵀ dAᵀ (I - AA⁺) + (I - A⁺A) dAᵀ A⁺ᵀA⁺``,
  the vector-Jacobian product is

      b̄ = A⁺ᵀ ȳ,   Ā = -A⁺ᵀ ȳ y*ᵀ + r (A⁺A⁺ᵀ ȳ)ᵀ + A⁺ᵀ y* ((I - A⁺A) ȳ)ᵀ,   r = b - A y*,

  which reduces to the Cholesky form when ``A`` has full column rank. It is the derivative for
  perturbations that keep the rank (the pseudo-inverse is discontinuous where the rank drops).

``method="auto"`` uses Cholesky per problem where it succeeds and is well-conditioned, and the
pseudo-inverse for the others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .cholesky import cholesky, cholesky_apply


def _pinv_rcond(a: Tensor, rcond: float | None) -> float:
    if rcond is not None:
        return rcond
    return torch.finfo(a.dtype).eps * max(a.shape[-2:])


def _chol_solve(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, ok, L)``: Cholesky solution of the normal equations, where it is trustworthy, and
    the factor ``L Lᵀ = AᵀA`` ``(B, n, n)`` (kept for the backward)."""
    at = a.transpose(-1, -2)
    chol, pd = cholesky(at @ a)
    y = cholesky_apply(chol, (at @ b.unsqueeze(-1)).squeeze(-1))
    diag = torch.diagonal(chol, dim1=-2, dim2=-1).abs()
    cond_ok = diag.amin(-1) > diag.amax(-1) * torch.finfo(a.dtype).eps ** 0.25
    ok = pd & cond_ok & torch.isfinite(y).all(-1)
    return y, ok, chol


def _chol_vjp(a: Tensor, b: Tensor, y: Tensor, chol: Tensor, gy: Tensor) -> tuple[Tensor, Tensor]:
    """Well-posed VJP with the forward's factor: ``u = (LLᵀ)^-1 ȳ``, ``b̄ = A u`` and
    ``Ā = r uᵀ - (A u) y*ᵀ`` (``r = b - A y*``); ``A y*`` and ``A u`` come from one batched
    product, and ``Ā`` is written in one buffer (outer product, then a fused ``addcmul_``)."""
    u = cholesky_apply(chol, gy)  # (B, n)
    ay = torch.bmm(a, torch.stack([y, u], -1))  # (B, m, 2): [A y*, A u]
    au = ay[..., 1]
    r = b - ay[..., 0]
    ga = r.unsqueeze(-1) * u.unsqueeze(-2)
    ga.addcmul_(au.unsqueeze(-1), y.unsqueeze(-2), value=-1.0)
    return ga, au.contiguous()


class _LstsqFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, method: str, rcond: float | None) -> Tensor:
        batch = a.shape[:-2]
        m, n = a.shape[-2:]
        af = a.reshape(-1, m, n)
        bf = b.reshape(-1, m)
        use_pinv = torch.ones(af.shape[0], dtype=torch.bool, device=a.device)
        y = torch.zeros(af.shape[0], n, dtype=a.dtype, device=a.device)
        if method in ("auto", "cholesky") and af.shape[0] > 0:
            yc, ok, chol = _chol_solve(af, bf)  # chol: (B, n, n), reused by the backward
            if bool(ok.all()):  # fast path: every problem well-posed, no masking
                ctx.save_for_backward(af, bf, yc, chol)
                ctx.shapes = (batch, m, n)
                ctx.all_chol = True
                return yc.reshape(*batch, n)
            if method == "cholesky" and not bool(ok.all()):
                bad = torch.nonzero(~ok).flatten().tolist()[:10]
                raise ValueError(
                    f"lstsq(method='cholesky'): A is rank-deficient or ill-conditioned for "
                    f"problems {bad}; use method='pinv' or 'auto'"
                )
            y = torch.where(ok.unsqueeze(-1), yc, y)
            use_pinv = ~ok
        pinv = None
        if bool(use_pinv.any()):
            pinv = torch.zeros(af.shape[0], n, m, dtype=a.dtype, device=a.device)
            pinv[use_pinv] = torch.linalg.pinv(af[use_pinv], rtol=_pinv_rcond(af, rcond))
            y_p = (pinv[use_pinv] @ bf[use_pinv].unsqueeze(-1)).squeeze(-1)
            y[use_pinv] = y_p
        ctx.save_for_backward(af, bf, y, use_pinv, *(() if pinv is None else (pinv,)))
        ctx.shapes = (batch, m, n)
        ctx.all_chol = False
        return y.reshape(*batch, n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: Tensor):
        batch, m, n = ctx.shapes
        gy = grad_y.reshape(-1, n)
        if ctx.all_chol:
            af, bf, y, chol = ctx.saved_tensors
            ga, gb = _chol_vjp(af, bf, y, chol, gy)
            return ga.reshape(*batch, m, n), gb.reshape(*batch, m), None, None
        af, bf, y, use_pinv, *rest = ctx.saved_tensors
        r = bf - (af @ y.unsqueeze(-1)).squeeze(-1)
        ga = torch.zeros_like(af)
        gb = torch.zeros_like(bf)
        chol = ~use_pinv
        if bool(chol.any()):
            a_c = af[chol]
            ata = a_c.transpose(-1, -2) @ a_c
            u = torch.linalg.solve(ata, gy[chol].unsqueeze(-1)).squeeze(-1)
            au = (a_c @ u.unsqueeze(-1)).squeeze(-1)
            gb[chol] = au
            ga[chol] = r[chol].unsqueeze(-1) * u.unsqueeze(-2) - au.unsqueeze(-1) * y[
                chol].unsqueeze(-2)
        if bool(use_pinv.any()):
            (pinv,) = rest
            p_ = pinv[use_pinv]  # (k, n, m)
            a_p, y_p, g_p, r_p = af[use_pinv], y[use_pinv], gy[use_pinv], r[use_pinv]
            pt_g = (p_.transpose(-1, -2) @ g_p.unsqueeze(-1)).squeeze(-1)  # A⁺ᵀ ȳ  (m)
            ppt_g = (p_ @ pt_g.unsqueeze(-1)).squeeze(-1)  # A⁺A⁺ᵀ ȳ  (n)
            proj = g_p - (p_ @ (a_p @ g_p.unsqueeze(-1))).squeeze(-1)  # (I - A⁺A) ȳ
            pt_y = (p_.transpose(-1, -2) @ y_p.unsqueeze(-1)).squeeze(-1)  # A⁺ᵀ y (m)
            gb[use_pinv] = pt_g
            ga[use_pinv] = (
                -pt_g.unsqueeze(-1) * y_p.unsqueeze(-2)
                + r_p.unsqueeze(-1) * ppt_g.unsqueeze(-2)
                + pt_y.unsqueeze(-1) * proj.unsqueeze(-2)
            )
        return ga.reshape(*batch, m, n), gb.reshape(*batch, m), None, None


def lstsq(a: Tensor, b: Tensor, *, method: str = "auto", rcond: float | None = None) -> Tensor:
    """Differentiable batched least squares ``argmin_y ||A y - b||²``.

    Args:
        a: ``(..., m, n)``.
        b: ``(..., m)``.
        method: ``"auto"`` (Cholesky where well-posed, else pseudo-inverse), ``"cholesky"``
            (error if any problem is rank-deficient) or ``"pinv"`` (minimum-norm solution).
        rcond: relative singular-value cut-off of the pseudo-inverse (default ``eps·max(m, n)``).

    Returns:
        ``y*`` of shape ``(..., n)``; gradients flow to ``a`` and ``b``.
    """
    if method not in ("auto", "cholesky", "pinv"):
        raise ValueError(f"method must be 'auto', 'cholesky' or 'pinv'; got {method!r}")
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("lstsq expects tensors A (..., m, n) and b (..., m)")
    if a.dim() < 2 or b.shape != a.shape[:-1]:
        raise ValueError(
            "lstsq: A must be (..., m, n) and b (..., m); "
            f"got A {tuple(a.shape)}, b {tuple(b.shape)}"
        )
    if a.dtype != b.dtype or not a.is_floating_point():
        raise TypeError(f"lstsq: A and b must share a floating dtype; got {a.dtype}, {b.dtype}")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise ValueError("lstsq: A or b contains NaN or Inf")
    return _LstsqFunction.apply(a, b, method, rcond)
