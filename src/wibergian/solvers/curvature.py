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
  lower end; ``k = min(n, 20)`` by default). ``O(k·B·n)`` memory, no ``n×n`` matrix. Whether
  ``θ < -τ`` is read from the LDLᵀ pivots of ``T + τI`` (Sylvester's inertia), vectorised over
  the batch; only problems with a non-positive pivot take ``eigh`` of their ``k×k`` tridiagonal
  (for the Ritz vector). On D at n = 128, B = 1,000 this and the row-product form of the
  reorthogonalisation took the probe's own work (Hessian-vector products aside) from 0.14 to
  0.085 s and the whole call to 0.96 (10-90 % 0.92-0.97, 8 paired rounds, bit-identical;
  ``benchmarks/newton_overheads.py --old d70d481 --n 128 --rounds 8``).
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
        kept = basis[:, : j + 1]
        for _ in range(2):  # row products (wᵀ Vᵀ, cᵀ V): the layout BLAS serves fast
            coef = torch.bmm(w.unsqueeze(1), kept.mT)
            w = w - torch.bmm(coef, kept).squeeze(1)
        nb = w.norm(dim=-1)
        scale = alpha[:, : j + 1].abs().amax(-1).clamp_min(1.0)
        alive = alive & (nb > (torch.finfo(dt).eps ** 0.5) * scale)  # breakdown: space found
        if j + 1 == k or not bool(alive.any()):
            break
        beta[:, j] = torch.where(alive, nb, 0.0)
        q = torch.where(alive[:, None], w / nb.clamp_min(torch.finfo(dt).tiny)[:, None], 0.0)
    m = int(used.max())
    off = beta[:, : m - 1]
    # rows past a problem's breakdown are decoupled; push them above its spectrum (Gershgorin)
    rowsum = alpha[:, :m].abs()
    rowsum[:, 1:] += off.abs()
    rowsum[:, :-1] += off.abs()
    big = 2.0 * rowsum.amax(-1, keepdim=True) + 1.0
    pad = torch.arange(m, device=dev)[None, :] >= used[:, None]
    diag = torch.where(pad, big, alpha[:, :m])
    scale = alpha[:, :m].abs().amax(-1).clamp_min(1.0)
    tau = (torch.finfo(dt).eps ** 0.5) * scale
    # Sylvester: T has an eigenvalue below -τ iff an LDLᵀ pivot of T + τI is negative; only
    # those problems (and any with a zero or non-finite pivot) pay the eigendecomposition
    piv = diag[:, 0] + tau
    suspect = ~(piv > 0)
    for j in range(1, m):
        piv = diag[:, j] + tau - off[:, j - 1] ** 2 / torch.where(piv > 0, piv, 1.0)
        suspect |= ~(piv > 0)
    idx = torch.nonzero(mask & suspect).flatten()
    if idx.numel() == 0:
        return neg, direction, curvature, products
    ts = (torch.diag_embed(diag[idx]) + torch.diag_embed(off[idx], 1)
          + torch.diag_embed(off[idx], -1))
    evals, evecs = torch.linalg.eigh(ts)
    theta = evals[:, 0]
    u = torch.bmm(evecs[:, :, :1].mT, basis[idx, :m]).squeeze(1)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    really = theta < -tau[idx]
    neg[idx] = really
    direction[idx] = torch.where(really[:, None], u, 0.0)
    curvature[idx] = torch.where(really, theta, 0.0)
    return neg, direction, curvature, products
