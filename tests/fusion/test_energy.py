"""Fusion energy: gradients w.r.t. y and parameters, and the argmin's gradient, vs finite
differences (float64)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from wibergian.experiments.fusion.energy import FusionModel, corner_energy


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _frame(T: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([100.0, 80.0, 40.0, 30.0])
    noise = torch.tensor([3.0, 3.0, 4.0, 3.0]) * torch.randn(1, T, 4, generator=g)
    boxes = base + noise
    valid = torch.ones(1, T, dtype=torch.bool)
    valid[0, -1] = False
    boxes[0, -1] = 0.0
    frame = torch.tensor([50.0])
    first = torch.tensor([40.0, 30.0]).expand(1, T, 2).clone()
    return boxes, valid, frame, first


def _model(T: int = 5, seed: int = 1) -> FusionModel:
    m = FusionModel(T, sigma0=0.6, damping=0.0, max_iter=100, tol=1e-13).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return m


def test_corner_energy_gradcheck_y_and_params() -> None:
    g = torch.Generator().manual_seed(0)
    B, T = 3, 4
    y = torch.randn(B, 2, generator=g, requires_grad=True)
    c = torch.randn(B, T, 2, generator=g, requires_grad=True)
    w = torch.rand(B, T, generator=g, requires_grad=True)
    v = (0.5 + torch.rand(B, T, 2, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(corner_energy, (y, c, w, v))
    assert torch.autograd.gradgradcheck(corner_energy, (y, c, w, v))


def test_closed_forms_match_autograd() -> None:
    g = torch.Generator().manual_seed(3)
    B, T = 4, 6
    y = torch.randn(B, 2, generator=g)
    c, w = torch.randn(B, T, 2, generator=g), torch.rand(B, T, generator=g)
    v = 0.5 + torch.rand(B, T, 2, generator=g)
    grad = torch.func.vmap(torch.func.grad(lambda yy, cc, ww, vv: corner_energy(
        yy[None], cc[None], ww[None], vv[None])[0]))(y, c, w, v)
    hess = torch.func.vmap(torch.func.hessian(lambda yy, cc, ww, vv: corner_energy(
        yy[None], cc[None], ww[None], vv[None])[0]))(y, c, w, v)
    torch.testing.assert_close(corner_energy.gradient(y, c, w, v), grad)
    torch.testing.assert_close(corner_energy.hessian(y, c, w, v), hess)


def _flat_params(m: FusionModel) -> list[tuple[str, torch.nn.Parameter]]:
    return list(m.named_parameters())


def _fd_check(m: FusionModel, fn, eps: float = 1e-6, rtol: float = 1e-5) -> None:
    """Compare autograd of scalar ``fn()`` w.r.t. every model parameter with central FD."""
    m.zero_grad()
    fn().backward()
    for name, p in _flat_params(m):
        analytic = p.grad.detach().clone().reshape(-1)
        numeric = torch.zeros_like(analytic)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + eps
                up = float(fn())
                flat[i] = old - eps
                down = float(fn())
                flat[i] = old
            numeric[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(analytic, numeric, rtol=rtol, atol=1e-7, msg=name)


def test_energy_gradient_wrt_model_parameters() -> None:
    """E at a fixed y depends on every learnt parameter through wells / weights / widths."""
    m = _model()
    inputs = _frame()
    y = torch.tensor([[-0.4, -0.3], [0.45, 0.35]])

    def total() -> torch.Tensor:
        w = m.wells(*inputs)
        return sum(corner_energy(y[k:k + 1], w["centres"][:, k], w["weights"],
                                 w["inv_var"][k][None]).sum() for k in range(2))

    _fd_check(m, total)


def test_argmin_gradient_wrt_parameters_matches_minimiser_fd() -> None:
    """d y*/d params by the implicit gradient (λ = 0) vs finite differences of the re-solved
    minimiser, one frame, both corners; the loss is a fixed random projection of y*."""
    m = _model()
    inputs = _frame()
    proj = torch.randn(1, 2, 2, generator=torch.Generator().manual_seed(5))
    y0, _, _ = m(*inputs)
    # the minimiser is a genuine minimum: zero gradient and positive-definite Hessian
    w = m.wells(*inputs)
    for k in range(2):
        args = (y0[:, k].detach(), w["centres"][:, k].detach(), w["weights"].detach(),
                w["inv_var"][k][None].detach())
        assert corner_energy.gradient(*args).abs().max() < 1e-9
        assert torch.linalg.eigvalsh(corner_energy.hessian(*args)).min() > 0

    def loss() -> torch.Tensor:
        y, _, _ = m(*inputs)
        return (y * proj).sum()

    _fd_check(m, loss, eps=1e-6, rtol=1e-4)
