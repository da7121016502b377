"""Second-order checks: is a stationary point a minimum, and if not, which way is down?

A point with ``∇E = 0`` is a local minimum only if ``H = ∇²E`` is positive semi-definite. The
solvers call these checks on the problems about to be declared converged; a problem whose ``H``
has an eigenvalue below ``-τ`` is not converged: the solver steps along the eigenvector, to the
trust-region radius, and carries on. ``τ = sqrt(eps)·max(1, max|h|)`` (the same tolerance as the
backward's semi-definiteness test in ``linsolve.py``).

- dense (``H`` at hand, ``(B, n, n)``): first the dense solve's semi-definiteness certificate
  (``spectral.certify_psd``: a Cholesky of ``H - τ_psd·I``, ``τ_psd = 4·n·eps·max|h|``), which
  also settles the check (``H`` certified is no saddle) and is handed on, so the final step and
  the backward at the same point do not factor ``H`` again; where it fails, a Cholesky of
  ``H + τI`` (the inertia test), and ``eigh`` only where that fails too. The escape direction is
  ``Σ_{λ_i < -τ} |λ_i| q_i`` (normalised): the whole negative eigenspace at once, each
  eigenvector weighted by its curvature. One factorisation per checked convex problem.
- matrix-free (Hessian-vector products): ``k``-step Lanczos from a seeded random start with full
  reorthogonalisation; the smallest Ritz value ``θ ≥ λ_min`` and its Ritz vector. ``θ`` is an
  upper bound on ``λ_min``, so this is a probe: negative curvature that the Krylov space of ``k``
  products does not reach goes unnoticed (it needs ``|λ_min|`` to stand out of the spectrum's
  lower end; ``k = min(n, 20)`` by default). ``O(k·B·n)`` memory, no ``n×n`` matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..cholesky import shifted_cholesky
from ..spectral import certify_psd


def negative_curvature_dense(h: Tensor, mask: Tensor
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For the problems in ``mask`` ``(B,)``: ``(negative (B,) bool, direction (B, n) unit,
    curvature (B,), psd (B,) bool)``: ``negative`` where ``H_b`` has an eigenvalue below
    ``-τ_b`` (``direction`` its eigenvector, ``curvature`` the eigenvalue; zeros elsewhere);
    ``psd`` where ``H_b`` passed ``spectral.certify_psd`` (False outside ``mask``)."""
    b, n = h.shape[0], h.shape[-1]
    neg = torch.zeros(b, dtype=torch.bool, device=h.device)
    psd = torch.zeros(b, dtype=torch.bool, device=h.device)
    direction = torch.zeros(b, n, dtype=h.dtype, device=h.device)
    curvature = torch.zeros(b, dtype=h.dtype, device=h.device)
    idx = torch.nonzero(mask).flatten()
    if idx.numel() == 0:
        return neg, direction, curvature, psd
    hs = h[idx]
    certified = certify_psd(hs)
    psd[idx] = certified
    if bool(certified.all()):  # λ_min ≥ 0 up to rounding: no eigenvalue below -τ
        return neg, direction, curvature, psd
    idx, hs = idx[~certified], hs[~certified]
    scale = hs.abs().amax(dim=(-1, -2)).clamp_min(1.0)
    tau = (torch.finfo(h.dtype).eps ** 0.5) * scale
    _, ok = shifted_cholesky(hs, tau)
    bad = idx[~ok]
    if bad.numel() == 0:
        return neg, direction, curvature, psd
    evals, evecs = torch.linalg.eigh(h[bad])
    below = evals < -tau[~ok, None]  # (k, n): the negative eigenspace
    really = below[:, 0]
    # every negative direction at once, weighted by its curvature (one escape, not one per
    # eigenvector); its Rayleigh quotient is negative
    weights = torch.where(below, -evals, 0.0)
    u = (evecs @ weights.unsqueeze(-1)).squeeze(-1)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)
    neg[bad] = really
    direction[bad] = torch.where(really[:, None], u, 0.0)
    curvature[bad] = torch.where(really, (weights**2 * evals).sum(-1) / (weights**2).sum(
        -1).clamp_min(torch.finfo(h.dtype).tiny), 0.0)
    return neg, direction, curvature, psd


def negative_curvature_lanczos(
    hvp: Callable[[Tensor], Tensor],
    like: Tensor,
    mask: Tensor,
    steps: int = 20,
    seed: int = 0,
    rows: Tensor | None = None,
    total: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Lanczos probe of ``λ_min(H)`` for the problems in ``mask`` ``(B,)``.

    Args:
        hvp: ``v ↦ H v`` for ``v`` ``(B, n)`` (rows outside ``mask`` are zero and ignored).
        like: a ``(B, n)`` tensor giving shape, dtype and device.
        mask: problems to probe.
        steps: Lanczos steps ``k`` (capped at ``n``).
        seed: seed of the random start vectors.
        rows, total: when the ``B`` problems are rows ``rows`` ``(B,)`` of a batch of ``total``
            (a solver's sub-batch), each takes the start vector it has in that batch, so a
            problem's probe does not depend on which others are solved with it.

    Returns:
        ``(negative, direction, curvature, products)``: as :func:`negative_curvature_dense`,
        with ``curvature`` the smallest Ritz value and ``direction`` its unit Ritz vector; and the
        number of Hessian-vector products spent.
    """
    b, n = like.shape
    dt, dev = like.dtype, like.device
    neg = torch.zeros(b, dtype=torch.bool, device=dev)
    direction = torch.zeros(b, n, dtype=dt, device=dev)
    curvature = torch.zeros(b, dtype=dt, device=dev)
    if not bool(mask.any()):
        return neg, direction, curvature, 0
    k = max(1, min(steps, n))
    gen = torch.Generator(device=dev).manual_seed(seed)
    if rows is None:
        q = torch.randn(b, n, generator=gen, dtype=dt, device=dev)
    else:
        q = torch.randn(int(total or b), n, generator=gen, dtype=dt, device=dev)[rows]
    q = q * mask[:, None]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    basis = torch.zeros(b, k, n, dtype=dt, device=dev)
    alpha = torch.zeros(b, k, dtype=dt, device=dev)
    beta = torch.zeros(b, k, dtype=dt, device=dev)  # beta[:, j] couples j and j + 1
    alive = mask.clone()
    used = torch.zeros(b, dtype=torch.long, device=dev)
    products = 0
    for j in range(k):
        basis[:, j] = q
        w = hvp(q)
        products += 1
        a = torch.linalg.vecdot(q, w)
        alpha[:, j] = torch.where(alive, a, 0.0)
        used = used + alive.long()
        # full reorthogonalisation against every kept vector (twice is enough)
        for _ in range(2):
            w = w - torch.einsum("bk,bkn->bn", torch.einsum("bkn,bn->bk", basis[:, : j + 1], w),
                                 basis[:, : j + 1])
        nb = w.norm(dim=-1)
        scale = alpha[:, : j + 1].abs().amax(-1).clamp_min(1.0)
        alive = alive & (nb > (torch.finfo(dt).eps ** 0.5) * scale)  # breakdown: space found
        if j + 1 == k or not bool(alive.any()):
            break
        beta[:, j] = torch.where(alive, nb, 0.0)
        q = torch.where(alive[:, None], w / nb.clamp_min(torch.finfo(dt).tiny)[:, None], 0.0)
    m = int(used.max())
    t = torch.diag_embed(alpha[:, :m]) + torch.diag_embed(beta[:, : m - 1], 1) + torch.diag_embed(
        beta[:, : m - 1], -1)
    # rows past a problem's breakdown are decoupled; push them above its spectrum
    pad = torch.arange(m, device=dev)[None, :] >= used[:, None]
    big = 2.0 * t.abs().sum(-1).amax(-1, keepdim=True) + 1.0
    torch.diagonal(t, dim1=-2, dim2=-1).copy_(torch.where(pad, big, alpha[:, :m]))
    evals, evecs = torch.linalg.eigh(t)
    theta = evals[:, 0]
    u = torch.einsum("bk,bkn->bn", evecs[:, :, 0], basis[:, :m])
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    scale = alpha[:, :m].abs().amax(-1).clamp_min(1.0)
    tau = (torch.finfo(dt).eps ** 0.5) * scale
    really = mask & (theta < -tau)
    neg = really
    direction = torch.where(really[:, None], u, 0.0)
    curvature = torch.where(really, theta, 0.0)
    return neg, direction, curvature, products
