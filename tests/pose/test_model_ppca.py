"""PPCA mixture: a known model is recovered; alignment invariants hold."""

from __future__ import annotations

import math

import torch

from wibergian.experiments.pose.ppca import PPCAMixture, align_poses, fit_mixture, fit_ppca, kmeans


def _known_ppca(d: int, b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, b, generator=g, dtype=torch.float64))
    std = torch.tensor([5.0, 3.0, 2.0, 1.5][:b], dtype=torch.float64)
    return mean, q.T.contiguous(), std


def test_fit_ppca_recovers_subspace_std_and_noise() -> None:
    d, b, n, noise = 51, 4, 20000, 0.04
    mean, basis, std = _known_ppca(d, b, 0)
    mix = PPCAMixture(mean[None], basis[None], std[None], torch.tensor([noise]),
                      torch.ones(1, dtype=torch.float64))
    x, _ = mix.sample(n, torch.Generator().manual_seed(1))
    m, e, s, nz = fit_ppca(x, b)
    # subspace: singular values of e_fit e_trueᵀ are the cosines of the principal angles
    cos = torch.linalg.svdvals(e @ basis.T)
    assert float(cos.min()) > 0.999
    assert torch.allclose(s, std, rtol=0.03)
    assert math.isclose(float(nz), noise, rel_tol=0.05)
    assert float((m - mean).abs().max()) < 0.1
    # each fitted direction matches the true one of the same rank (distinct stds)
    assert torch.allclose((e * basis).sum(-1).abs(), torch.ones(b, dtype=torch.float64),
                          atol=2e-3)


def test_kmeans_separates_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    truth = torch.arange(300) % 3
    x = centres[truth] + 0.5 * torch.randn(300, 2, generator=g, dtype=torch.float64)
    labels = kmeans(x, 3, seed=0)
    # same partition up to relabelling
    for k in range(3):
        assert labels[truth == k].unique().numel() == 1
    assert labels.unique().numel() == 3


def test_align_poses_invariants() -> None:
    g = torch.Generator().manual_seed(2)
    poses = torch.randn(10, 17, 3, generator=g, dtype=torch.float64) * 300 + 1000
    aligned, scale = align_poses(poses)
    assert torch.allclose(aligned[:, 0], torch.zeros(10, 3, dtype=torch.float64), atol=1e-9)
    hip = aligned[:, 4] - aligned[:, 1]
    assert torch.allclose(hip[:, 1], torch.zeros(10, dtype=torch.float64), atol=1e-9)
    assert bool((hip[:, 0] > 0).all())
    rms = aligned.pow(2).sum(-1).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full((10,), scale, dtype=torch.float64))
    # a rotated, shifted, scaled copy aligns to the same poses
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    moved = 1.7 * poses @ rot.T + torch.tensor([5.0, -3.0, 2.0], dtype=torch.float64)
    again, _ = align_poses(moved, scale)
    assert torch.allclose(again, aligned, atol=1e-8)


def test_fit_mixture_shapes_and_orthonormal_bases() -> None:
    g = torch.Generator().manual_seed(3)
    poses = torch.randn(200, 17, 3, generator=g, dtype=torch.float64) * 200
    mix, _ = fit_mixture(poses, 3, 5)
    assert mix.mean.shape == (3, 51) and mix.basis.shape == (3, 5, 51)
    gram = mix.basis @ mix.basis.transpose(1, 2)
    assert torch.allclose(gram, torch.eye(5, dtype=torch.float64).expand(3, 5, 5), atol=1e-9)
    assert bool((mix.std > 0).all())
    assert math.isclose(float(mix.weight.sum()), 1.0)
