"""Mixture of probabilistic-PCA pose models (Tome et al., "Lifting from the Deep", CVPR 2017).

Training poses are first *aligned* (:func:`align_poses`): root-centred, rotated about the
vertical (z) axis so that the hip line (RHip -> LHip) points along +x, and scaled to unit RMS
joint distance from the root, then multiplied by the mean RMS of the set (so the model keeps
physical units). The aligned poses are clustered by k-means into K groups, and each group gets
a PPCA model (Tipping & Bishop 1999) with B components:

    p = μ_k + Σ_b a_b e_kb + ε,    a_b ~ N(0, std_kb²),    ε ~ N(0, noise_k I)

with ``e_k`` the top-B eigenvectors of the group covariance (orthonormal rows), ``noise_k`` the
mean of the discarded eigenvalues (maximum likelihood) and ``std_kb² = λ_kb - noise_k``.

Shapes: a pose is (17, 3), flattened to D = 51 as x0, y0, z0, x1, ...
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .skeleton import NUM_JOINTS, ROOT

R_HIP, L_HIP = 1, 4


@dataclass
class PPCAMixture:
    """K PPCA pose models in the aligned frame.

    Attributes:
        mean: (K, D) mean poses μ_k.
        basis: (K, B, D) orthonormal basis rows e_kb.
        std: (K, B) prior standard deviation of each coefficient a_kb.
        noise: (K,) isotropic residual variance of each model.
        weight: (K,) fraction of training poses in each cluster.
    """

    mean: Tensor
    basis: Tensor
    std: Tensor
    noise: Tensor
    weight: Tensor

    @property
    def num_models(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_basis(self) -> int:
        return int(self.basis.shape[1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` poses: returns ``(poses (n, D), model index (n,))``."""
        k = torch.multinomial(self.weight, n, replacement=True, generator=generator)
        a = torch.randn(n, self.num_basis, generator=generator, dtype=self.mean.dtype)
        eps = torch.randn(n, self.mean.shape[1], generator=generator, dtype=self.mean.dtype)
        p = self.mean[k] + torch.einsum("nb,nbd->nd", a * self.std[k], self.basis[k])
        return p + eps * self.noise[k].sqrt()[:, None], k


def yaw_of(poses: Tensor) -> Tensor:
    """Heading angle of each pose: the angle of the RHip -> LHip line in the xy plane, (..., )."""
    h = poses[..., L_HIP, :] - poses[..., R_HIP, :]
    return torch.atan2(h[..., 1], h[..., 0])


def rot_z(theta: Tensor) -> Tensor:
    """Rotation matrices about the vertical axis: (...,) -> (..., 3, 3)."""
    c, s = torch.cos(theta), torch.sin(theta)
    z, o = torch.zeros_like(theta), torch.ones_like(theta)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(*theta.shape, 3, 3)


def align_poses(poses: Tensor, scale: float | None = None) -> tuple[Tensor, float]:
    """Root-centre, yaw-normalise and scale-normalise poses.

    Args:
        poses: (T, 17, 3) in any unit, z up.
        scale: the RMS size to rescale to; ``None`` uses the set's mean RMS.

    Returns:
        ``(aligned (T, 17, 3), scale)``: every aligned pose has RMS distance ``scale`` from the
        root, which sits at the origin, and its hip line along +x.
    """
    if poses.dim() != 3 or poses.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"poses must have shape (T, {NUM_JOINTS}, 3), got {tuple(poses.shape)}")
    p = poses - poses[:, ROOT : ROOT + 1]
    r = rot_z(-yaw_of(p))
    p = torch.einsum("tij,tkj->tki", r, p)
    rms = p.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-12)
    if scale is None:
        scale = float(rms.mean())
    return p / rms[:, None, None] * scale, scale


def kmeans(x: Tensor, k: int, iters: int = 50, seed: int = 0) -> Tensor:
    """k-means++ then Lloyd iterations: x (N, D) -> labels (N,), every cluster non-empty."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"cannot form {k} clusters from {n} poses")
    g = torch.Generator().manual_seed(seed)
    centres = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        idx = torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones(n), 1, generator=g)
        centres.append(x[idx].squeeze(0))
    c = torch.stack(centres)
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        labels = torch.cdist(x, c).argmin(1)
        counts = torch.bincount(labels, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():  # re-seed empty clusters
            far = torch.cdist(x, c).min(1).values.argmax()
            labels[far] = j
        new = torch.zeros_like(c).index_add_(0, labels, x) / torch.bincount(
            labels, minlength=k
        ).clamp_min(1)[:, None].to(x.dtype)
        if torch.allclose(new, c):
            break
        c = new
    return labels


def fit_ppca(x: Tensor, num_basis: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Maximum-likelihood PPCA of x (N, D): returns ``(mean (D,), basis (B, D), std (B,), noise)``.

    The basis rows are the top-B eigenvectors of the sample covariance; ``noise`` is the mean
    of the remaining eigenvalues, ``std² = λ_b - noise`` (floored at a small positive value).
    """
    n, d = x.shape
    if num_basis >= d:
        raise ValueError(f"num_basis ({num_basis}) must be below the dimension ({d})")
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(n, 1)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    noise = evals[num_basis:].mean()
    var = (evals[:num_basis] - noise).clamp_min(1e-6 * float(evals[0].clamp_min(1e-12)))
    basis = evecs[:, :num_basis].T.contiguous()
    # fix the sign of each eigenvector for reproducibility: largest-magnitude entry positive
    sign = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    return mean, basis * sign, var.sqrt(), noise


def fit_mixture(
    poses: Tensor, num_models: int, num_basis: int, seed: int = 0, scale: float | None = None
) -> tuple[PPCAMixture, float]:
    """Align ``poses`` (T, 17, 3), cluster them, and fit one PPCA model per cluster.

    Returns ``(mixture, scale)`` where ``scale`` is the alignment RMS (same unit as ``poses``).
    Clusters too small for ``num_basis`` components borrow the global covariance's basis.
    """
    aligned, scale = align_poses(poses, scale)
    x = aligned.reshape(aligned.shape[0], -1)
    labels = kmeans(x, num_models, seed=seed) if num_models > 1 else torch.zeros(
        x.shape[0], dtype=torch.long
    )
    g_mean, g_basis, g_std, g_noise = fit_ppca(x, num_basis)
    means, bases, stds, noises, weights = [], [], [], [], []
    for k in range(num_models):
        xk = x[labels == k]
        if xk.shape[0] > 2 * num_basis:
            m, b, s, nz = fit_ppca(xk, num_basis)
        else:
            m = xk.mean(0)
            b, s, nz = g_basis, g_std, g_noise
        means.append(m)
        bases.append(b)
        stds.append(s)
        noises.append(nz)
        weights.append(xk.shape[0] / x.shape[0])
    mix = PPCAMixture(
        mean=torch.stack(means),
        basis=torch.stack(bases),
        std=torch.stack(stds),
        noise=torch.stack(noises),
        weight=torch.tensor(weights, dtype=x.dtype),
    )
    return mix, scale
