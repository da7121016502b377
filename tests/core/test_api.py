"""The public API: validation, empty batches, dtypes, multi-start, the layer, diagnostics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wibergian


def welsch_1d(y, x, sigma):
    return -torch.exp(-((x - y) ** 2) / sigma**2).sum(-1)


def data(dtype=torch.float64, b=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 30, generator=g, dtype=torch.float64) * 3
    x[:, :10] = 1.0 + 0.1 * torch.randn(b, 10, generator=g, dtype=torch.float64)
    return x.to(dtype)


def test_energy_with_wrong_output_shape_is_named():
    x = data()
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        wibergian.argmin(lambda y, x: ((x - y) ** 2), torch.zeros(5, 1, dtype=torch.float64),
                         (x,))


@pytest.mark.parametrize(
    "y0,params,err,match",
    [
        (torch.zeros(5), (), ValueError, "shape \\(B, n\\)"),
        ([[0.0]], (), TypeError, "torch.Tensor"),
        (torch.zeros(5, 1, dtype=torch.long), (), TypeError, "floating"),
        (torch.zeros(5, 1), (torch.ones(3, dtype=torch.float64),), TypeError, "dtype"),
        (torch.zeros(5, 1), (1.0,), TypeError, "params\\[0\\] is a float"),
        (torch.full((5, 1), float("nan")), (), ValueError, "y0 contains NaN"),
        (torch.zeros(5, 1), (torch.tensor([float("inf")]),), ValueError, "params\\[0\\]"),
    ],
)
def test_bad_input_gets_a_clear_error(y0, params, err, match):
    with pytest.raises(err, match=match):
        wibergian.argmin(lambda y, *p: (y**2).sum(-1), y0, params)


def test_bad_options_are_rejected():
    y0 = torch.zeros(2, 1)
    f = lambda y: (y**2).sum(-1)  # noqa: E731
    for kw, match in [({"damping": -1.0}, "damping"), ({"solver": "bfgs"}, "solver"),
                      ({"linear_solver": "qr"}, "linear_solver"), ({"adjoint": "x"}, "adjoint"),
                      ({"regulariser": "tikhonov"}, "regulariser")]:
        with pytest.raises(ValueError, match=match):
            wibergian.argmin(f, y0, (), **kw)


def test_empty_batch_returns_empty_result_that_backpropagates():
    sigma = torch.tensor(1.0, requires_grad=True)
    y = wibergian.argmin(welsch_1d, torch.zeros(0, 1), (torch.zeros(0, 4), sigma))
    assert y.shape == (0, 1)
    y.sum().backward()
    assert sigma.grad is not None and float(sigma.grad) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_agree(dtype):
    x = data(dtype)
    sigma = torch.tensor(1.0, dtype=dtype, requires_grad=True)
    cands = x.unsqueeze(-1)
    y = wibergian.argmin(welsch_1d, x[:, :1], (x, sigma), candidates=cands, tol=1e-5)
    y.sum().backward()
    assert y.dtype == dtype and sigma.grad.dtype == dtype
    x64 = data(torch.float64)
    s64 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    y64 = wibergian.argmin(welsch_1d, x64[:, :1], (x64, s64), candidates=x64.unsqueeze(-1))
    y64.sum().backward()
    assert torch.allclose(y.double(), y64, atol=1e-4)
    assert torch.allclose(sigma.grad.double(), s64.grad, rtol=1e-3, atol=1e-4)


def test_multistart_starts_from_the_lowest_energy_candidate_and_honours_the_mask():
    x = data()
    sigma = torch.tensor(0.5, dtype=torch.float64)
    cands = x.unsqueeze(-1)
    y, info = wibergian.argmin(welsch_1d, x[:, :1], (x, sigma), candidates=cands,
                               return_info=True)
    e = torch.stack([welsch_1d(cands[:, j], x, sigma) for j in range(30)], 1)
    assert torch.equal(info.start_index, e.argmin(1))
    assert torch.allclose(y, torch.ones(5, 1, dtype=torch.float64), atol=0.2)  # the inlier mode
    mask = torch.ones(5, 30, dtype=torch.bool)
    mask[:, :10] = False  # forbid the inliers as starts
    _, info2 = wibergian.argmin(welsch_1d, x[:, :1], (x, sigma), candidates=cands,
                                candidate_mask=mask, return_info=True)
    assert bool((info2.start_index >= 10).all())


def test_info_reports_convergence_and_non_convergence_warns_with_counts():
    x = data()
    sigma = torch.tensor(1.0, dtype=torch.float64)
    _, info = wibergian.argmin(welsch_1d, x[:, :1], (x, sigma), return_info=True)
    assert info.converged.all() and (info.grad_norm < 1e-7).all()
    assert info.iterations.dtype == torch.long and (info.iterations > 0).all()
    with pytest.warns(wibergian.NonConvergenceWarning, match="5 of 5 problems"):
        _, info = wibergian.argmin(welsch_1d, x[:, :1] + 5, (x, sigma),
                                   solver=wibergian.NewtonTrustRegion(max_iter=1),
                                   final_step=False, return_info=True)
    assert info.num_not_converged == 5


def test_backward_diagnostics_are_recorded():
    x = data()
    sigma = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    y, info = wibergian.argmin(welsch_1d, x[:, :1], (x, sigma), return_info=True)
    y.sum().backward()
    assert info.backward["backward_fallbacks"] == 0
    assert (info.backward["backward_residual"] < 1e-10).all()


class Welsch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, y, x):
        return -torch.exp(-((x - y) ** 2) / torch.exp(2 * self.log_sigma)).sum(-1)


def test_layer_matches_the_functional_call_and_trains():
    x = data()
    layer = wibergian.ArgminLayer(Welsch(), damping=0.1)
    y = layer(x[:, :1], x)
    y.sum().backward()
    ls = torch.zeros((), dtype=torch.float64, requires_grad=True)
    y2 = wibergian.argmin(lambda y, x, ls: -torch.exp(-((x - y) ** 2) / torch.exp(2 * ls)).sum(-1),
                          x[:, :1], (x, ls))
    y2.sum().backward()
    assert torch.allclose(y, y2)
    assert torch.allclose(layer.energy.log_sigma.grad, ls.grad)
    assert layer.last_info is not None and layer.last_info.converged.all()
    assert "damping=0.1" in repr(layer)


def test_no_graph_when_nothing_requires_grad():
    x = data()
    y = wibergian.argmin(welsch_1d, x[:, :1], (x, torch.tensor(1.0, dtype=torch.float64)))
    assert not y.requires_grad
    with torch.no_grad():
        s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        y = wibergian.argmin(welsch_1d, x[:, :1], (x, s))
    assert not y.requires_grad


def test_closed_form_derivatives_are_used_and_agree_with_autograd():
    class Quad:
        calls = 0

        def __call__(self, y, a):
            return 0.5 * (a * y * y).sum(-1) - y.sum(-1)

        def gradient(self, y, a):
            Quad.calls += 1
            return a * y - 1

        def hessian(self, y, a):
            return torch.diag_embed(a.expand_as(y))

    a = torch.tensor([2.0, 4.0], dtype=torch.float64, requires_grad=True)
    y = wibergian.argmin(Quad(), torch.zeros(3, 2, dtype=torch.float64), (a,))
    assert torch.allclose(y, (1 / a).expand(3, 2))
    y.sum().backward()
    # dy/da = -(a + λ)^-1 * y  per coordinate, summed over 3 problems
    want = -3 * (1 / a.detach()) / (a.detach() + 0.1)
    assert torch.allclose(a.grad, want)
    assert Quad.calls > 0
