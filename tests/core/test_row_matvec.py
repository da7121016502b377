"""Autograd's transposed batched matrix-vector products run as row products inside the library's
Hessian-vector products (``row_matvec.py``), with the same results."""

from __future__ import annotations

import pytest
import torch

import wibergian
from wibergian import row_matvec
from wibergian.bench.user import DenseData, logistic_energy
from wibergian.derivatives import hvp_operator

D = torch.float64


@pytest.fixture(autouse=True)
def _reset():
    row_matvec.COUNTS.update(rewritten=0, failed=0)
    yield
    row_matvec.ENABLED = True


def _closed_hvp(d, y, v):
    """``(Xᵀ diag(σ'(Xy)) X + e^{log λ} I) v`` for the ridge-logistic energy."""
    z = (d.x @ y.unsqueeze(-1)).squeeze(-1)
    s = torch.sigmoid(z)
    xv = (d.x @ v.unsqueeze(-1)).squeeze(-1)
    return (d.x.mT @ (s * (1 - s) * xv).unsqueeze(-1)).squeeze(-1) + d.log_lam.exp() * v


def test_hessian_vector_products_use_row_products_and_equal_the_closed_form():
    d = DenseData(40, 64, seed=1)  # M·K = 64·64 ≥ MIN_ELEMENTS
    g = torch.Generator().manual_seed(2)
    y = torch.randn(40, 64, generator=g, dtype=D)
    v = torch.randn(40, 64, generator=g, dtype=D)
    params = (d.x, d.t, d.log_lam, d.mu)
    _, hvp = hvp_operator(logistic_energy, y, params)
    got = hvp(v)
    assert row_matvec.COUNTS["rewritten"] >= 2 and row_matvec.COUNTS["failed"] == 0
    torch.testing.assert_close(got, _closed_hvp(d, y, v), rtol=1e-12, atol=1e-12)
    row_matvec.ENABLED = False
    before = row_matvec.COUNTS["rewritten"]
    _, hvp_plain = hvp_operator(logistic_energy, y, params)
    plain = hvp_plain(v)
    assert row_matvec.COUNTS["rewritten"] == before
    torch.testing.assert_close(got, plain, rtol=1e-13, atol=1e-13)


def test_only_large_transposed_columns_on_the_cpu_are_rewritten():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, 48, generator=g, dtype=D)
    w = torch.randn(5, 64, 1, generator=g, dtype=D)
    assert row_matvec._wanted(x.mT, w)
    assert not row_matvec._wanted(x.mT.contiguous(), w)  # not a transposed view
    assert not row_matvec._wanted(x[:, :8, :8].mT, w[:, :8])  # too small
    assert not row_matvec._wanted(x.mT, torch.cat([w, w], -1))  # not a column
    assert not row_matvec._wanted(x.mT.to(torch.complex128), w.to(torch.complex128))
    # the rewrite computes the product itself
    mode = row_matvec._RowMatvec()
    with mode:
        got = torch.bmm(x.mT, w)
    assert row_matvec.COUNTS["rewritten"] == 1
    torch.testing.assert_close(got, torch.bmm(x.mT, w), rtol=1e-14, atol=1e-14)


def test_under_torch_func_the_mode_stays_off():
    seen = []
    y = torch.ones(3, dtype=D)
    torch.func.grad(lambda z: seen.append(row_matvec._usable()) or z.square().sum())(y)
    seen.append(row_matvec._usable())
    assert seen == [False, True]


def test_a_failure_under_the_mode_repeats_the_call_without_it(monkeypatch):
    """If the mode breaks an operation, the gradient is computed without it, the rewrite is
    switched off and counted: never a wrong or missing gradient."""
    def broken(a, b):
        raise RuntimeError("an operation the mode cannot run")

    monkeypatch.setattr(row_matvec, "_wanted", broken)
    d = DenseData(6, 64, seed=4)
    lam = d.log_lam.clone().requires_grad_(True)
    y = wibergian.argmin(logistic_energy, torch.zeros(6, 64, dtype=D), (d.x, d.t, lam, d.mu),
                         solver="newton_cg", linear_solver="cg", compile=False, warn=False)
    y.sum().backward()
    assert row_matvec.COUNTS["failed"] == 1 and not row_matvec.ENABLED
    monkeypatch.undo()
    row_matvec.ENABLED = False
    lam0 = d.log_lam.clone().requires_grad_(True)
    y0 = wibergian.argmin(logistic_energy, torch.zeros(6, 64, dtype=D), (d.x, d.t, lam0, d.mu),
                          solver="newton_cg", linear_solver="cg", compile=False, warn=False)
    y0.sum().backward()
    assert torch.equal(y, y0) and torch.equal(lam.grad, lam0.grad)


def test_a_traced_graph_records_the_product_as_written():
    """Under ``make_fx`` (how ``compile=True`` traces its kernels) the mode stays off, so the
    graph holds the original ``bmm`` and no rewrite is counted."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(4, 64, 48, dtype=D)
    w = torch.randn(4, 64, 1, dtype=D)

    def f(y):
        with torch.enable_grad():
            yv = y.detach().requires_grad_(True)
            z = (x @ yv.unsqueeze(-1)).squeeze(-1)
            return row_matvec.autograd_grad((z * w.squeeze(-1)).sum(), yv)[0]

    graph = make_fx(f)(torch.zeros(4, 48, dtype=D))
    assert row_matvec.COUNTS["rewritten"] == 0
    torch.testing.assert_close(graph(torch.zeros(4, 48, dtype=D)), f(torch.zeros(4, 48, dtype=D)))
    assert row_matvec.COUNTS["rewritten"] == 1  # the eager call itself
