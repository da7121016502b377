"""Lifting: exact recovery from noise-free projections, closed-form derivatives, gradients of
the lifting with respect to the model parameters and to the 2D input vs finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from wibergian.experiments.pose import lifting as L
from wibergian.experiments.pose.cameras import Camera
from wibergian.experiments.pose.model import ModelConfig, PoseModel, camera_tensors
from wibergian.experiments.pose.ppca import PPCAMixture

D = torch.float64


def _look_at(pos: tuple[float, float, float]) -> torch.Tensor:
    """World-to-camera rotation of a camera at ``pos`` looking at (0, 0, 1) m, z up."""
    p = torch.tensor(pos, dtype=D)
    zc = torch.tensor([0.0, 0.0, 1.0], dtype=D) - p
    zc = zc / zc.norm()
    xc = torch.linalg.cross(zc, torch.tensor([0.0, 0.0, 1.0], dtype=D))
    xc = xc / xc.norm()
    return torch.stack([xc, torch.linalg.cross(zc, xc), zc])


CAM_POS = ((5.0, 0.0, 1.5), (0.0, 5.0, 1.2), (-4.0, -3.0, 1.8), (3.0, -4.0, 1.0))


def _rig(c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    rot = torch.stack([_look_at(p) for p in CAM_POS[:c]])
    return rot, torch.tensor(CAM_POS[:c], dtype=D)


def _model(k: int, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(k, 17, 3, generator=g, dtype=D) * 0.3
    q, _ = torch.linalg.qr(torch.randn(k, 51, b, generator=g, dtype=D))
    return mean, q.transpose(1, 2).reshape(k, b, 17, 3)


def _poses(mean: torch.Tensor, basis: torch.Tensor, f: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    k, b = basis.shape[:2]
    which = torch.arange(f) % k
    a = torch.randn(f, b, generator=g, dtype=D) * 0.1
    theta = torch.rand(f, generator=g, dtype=D) * 2 * math.pi - math.pi
    shape = mean[which] + torch.einsum("fb,fbjd->fjd", a, basis[which])
    world = L.rotate(theta, shape) + torch.tensor([0.3, -0.2, 1.0], dtype=D)
    return world, which


def _project(world: torch.Tensor, rot: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    xc = torch.einsum("cij,fcnj->fcni", rot, world[:, None] - centre[None, :, None])
    return xc[..., :2] / xc[..., 2:3]


@pytest.mark.parametrize("loss", ["l2", "huber"])
def test_multi_camera_recovers_pose_exactly(loss: str) -> None:
    k, b, f = 3, 4, 6
    mean, basis = _model(k, b)
    world, which = _poses(mean, basis, f)
    rot, centre = _rig()
    pts = _project(world, rot, centre)  # perspective, noise-free
    res = L.lift_multi(pts, torch.ones(f, 4, 17, dtype=D), rot[None], centre[None],
                       torch.ones(4, dtype=D), mean, basis, torch.full((k, b), 1e-8, dtype=D),
                       torch.ones(k, 17, 2, dtype=D), L.rotation_grid(24), torch.tensor(1e-4),
                       torch.zeros(k, dtype=D), loss=loss, delta=0.05)
    gt = L.root_centre(world)
    own = res.poses[torch.arange(f), which]
    assert float((own - gt).abs().max()) < 1e-8
    assert float((res.pose - gt).abs().max()) < 1e-6  # the right model wins the softmin
    assert torch.equal(res.weights.argmax(-1), which)


def test_monocular_recovers_pose_up_to_reflection() -> None:
    k, b, f = 2, 3, 6
    mean, basis = _model(k, b, seed=3)
    world, which = _poses(mean, basis, f, seed=4)
    rot, _ = _rig()
    rcam = rot[torch.arange(f) % 4]
    # weak-perspective (scaled orthographic) projection: the monocular model's camera
    pts = 0.2 * torch.einsum("fij,fnj->fni", rcam, world)[..., :2] + 0.03
    res = L.lift_mono(pts, torch.ones(f, 17, dtype=D), rcam, mean, basis,
                      torch.full((k, b), 1e-8, dtype=D), torch.ones(k, 17, 2, dtype=D), 0.5,
                      L.rotation_grid(24), torch.tensor(1e-4), torch.zeros(k, dtype=D))
    gt = L.root_centre(world)
    own = res.poses[torch.arange(f), which]
    # the known ambiguity: the reflection through the image plane projects identically
    gt_cam = torch.einsum("fij,fnj->fni", rcam, gt)
    mirrored = torch.einsum("fji,fnj->fni", rcam, gt_cam * torch.tensor([1.0, 1.0, -1.0]))
    err = torch.minimum((own - gt).abs().amax((-1, -2)), (own - mirrored).abs().amax((-1, -2)))
    assert float(err.max()) < 1e-7


@pytest.mark.parametrize("loss", ["l2", "huber"])
def test_fit_energy_closed_forms_match_autograd(loss: str) -> None:
    g = torch.Generator().manual_seed(0)
    p, r, n = 3, 12, 5
    params = [torch.randn(p, r, n, generator=g, dtype=D) for _ in range(3)] + [
        torch.randn(p, r, generator=g, dtype=D), torch.rand(p, r, generator=g, dtype=D),
        torch.rand(p, n, generator=g, dtype=D), torch.rand(p, generator=g, dtype=D) + 0.3]
    energy = L.FitEnergy(loss)
    y = torch.randn(p, n + 1, generator=g, dtype=D).requires_grad_()
    (grad,) = torch.autograd.grad(energy(y, *params).sum(), y, create_graph=True)
    hess = torch.stack([torch.autograd.grad(grad[:, i].sum(), y, retain_graph=True)[0]
                        for i in range(n + 1)], 1)
    assert torch.allclose(energy.gradient(y, *params), grad, atol=1e-12)
    assert torch.allclose(energy.hessian(y, *params), hess, atol=1e-12)


def _small_pose_model(mode: str, loss: str) -> tuple[PoseModel, torch.Tensor, torch.Tensor,
                                                      dict[str, torch.Tensor]]:
    k, b, f, c = 2, 3, 3, 3
    mean, basis = _model(k, b, seed=5)
    mix = PPCAMixture(mean.reshape(k, 51) * 1000, basis.reshape(k, b, 51),
                      torch.full((k, b), 100.0, dtype=D), torch.ones(k, dtype=D),
                      torch.full((k,), 0.5, dtype=D))
    cfg = ModelConfig(mode=mode, loss=loss, grid=12, damping=0.0, reg0=0.05, temp0=0.05)
    model = PoseModel(mix, 500.0, c, cfg)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():  # move away from the initial values (multipliers 1, additive 0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=D))
    world, _ = _poses(mean, basis, f, seed=7)
    rot, centre = _rig(c)
    cams = camera_tensors(Camera(R=rot.transpose(1, 2), t=centre * 1000,
                                 f=torch.full((c, 2), 1000.0, dtype=D),
                                 c=torch.full((c, 2), 500.0, dtype=D),
                                 k=torch.zeros(c, 3, dtype=D), p=torch.zeros(c, 2, dtype=D)))
    cams = {n: v.expand(f, *v.shape) for n, v in cams.items()}
    noise = 3.0 * torch.randn(f, c, 17, 2, generator=g, dtype=D)
    pts = 1000.0 * _project(world, rot, centre) + 500.0 + noise
    vis = torch.ones(f, c, 17, dtype=D)
    vis[0, 1, 4] = 0.0  # one missing joint
    return model, pts, vis, cams


def _directional_check(fn, x: torch.Tensor, eps: float = 1e-6) -> tuple[float, float]:
    g = torch.Generator().manual_seed(8)
    v = torch.randn(x.shape, generator=g, dtype=D)
    x1 = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x1), x1)
    analytic = float((grad * v).sum())
    with torch.no_grad():
        numeric = float((fn(x + eps * v) - fn(x - eps * v)) / (2 * eps))
    return analytic, numeric


@pytest.mark.parametrize(("mode", "loss"), [("multi", "l2"), ("multi", "huber"),
                                            ("mono", "l2")])
def test_lifting_gradients_match_finite_differences(mode: str, loss: str) -> None:
    model, pts, vis, cams = _small_pose_model(mode, loss)
    weights = torch.randn(model(pts, vis, cams).pose.shape,
                          generator=torch.Generator().manual_seed(9), dtype=D)

    def of_points(x: torch.Tensor) -> torch.Tensor:
        return (model(x, vis, cams).pose * weights).sum()

    a, n = _directional_check(of_points, pts)
    assert abs(a - n) <= 1e-5 * max(abs(n), 1e-3), (a, n)
    for name, param in model.named_parameters():
        base = param.detach().clone()
        g = torch.Generator().manual_seed(10)
        v = torch.randn(base.shape, generator=g, dtype=D)
        model.zero_grad()
        with torch.no_grad():
            param.copy_(base)
        (model(pts, vis, cams).pose * weights).sum().backward()
        analytic = float((param.grad * v).sum())
        eps = 1e-6
        with torch.no_grad():
            param.copy_(base + eps * v)
            up = float((model(pts, vis, cams).pose * weights).sum())
            param.copy_(base - eps * v)
            down = float((model(pts, vis, cams).pose * weights).sum())
            param.copy_(base)
        numeric = (up - down) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-5 * max(abs(numeric), 1e-3), (name, analytic,
                                                                             numeric)
