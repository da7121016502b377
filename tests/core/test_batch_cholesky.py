"""The batch-vectorised Cholesky kernels (``batch_cholesky.py``) and their routing in
``cholesky.py``: factors and solves against LAPACK / ``torch.linalg.solve``, failure flags,
the caller's buffer layout, the LAPACK fallback, and a whole ``argmin`` through both routes."""

from __future__ import annotations

import pytest
import torch

import wibergian
from wibergian import batch_cholesky as bc
from wibergian import cholesky as ch


@pytest.fixture(autouse=True)
def _kernels_built():
    if bc._kernel("factor", torch.float64) is None:
        pytest.skip("no C++ toolchain: the kernels fall back to LAPACK")
    old = bc.ENABLED
    bc.ENABLED = True
    with bc.active(True):  # as inside an argmin call whose energy is compiled
        yield
    bc.ENABLED = old


def _spd(b: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, 2 * n, generator=gen, dtype=torch.float64)
    return (a @ a.mT / n).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-5)])
@pytest.mark.parametrize("n", [3, 8, 17, 40])
@pytest.mark.parametrize("b", [1, 7, 37])
def test_factor_and_solve_match_lapack(dtype, tol, n, b):
    h = _spd(b, n, dtype, seed=n + b)
    shift = torch.rand(b, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.01
    m = h + torch.diag_embed(shift.unsqueeze(-1).expand(b, n))
    ref = torch.linalg.cholesky(m.double())
    assert bc.applies(h)
    chol, ok = ch.shifted_cholesky(h, shift)
    assert bool(ok.all())
    assert float((chol.double() - ref).abs().max() / ref.abs().max()) < tol
    assert bool((torch.triu(chol, 1) == 0).all())
    g = torch.randn(b, n, dtype=dtype, generator=torch.Generator().manual_seed(2))
    x = ch.cholesky_apply(chol, g)
    want = torch.linalg.solve(m.double(), g.double())
    assert float((x.double() - want).abs().max() / want.abs().max()) < 100 * tol
    # a scalar shift, and the unshifted factor
    chol_s, _ = ch.shifted_cholesky(h, 0.25)
    ref_s = torch.linalg.cholesky(h.double() + 0.25 * torch.eye(n, dtype=torch.float64))
    assert float((chol_s.double() - ref_s).abs().max() / ref_s.abs().max()) < tol
    chol_0, ok_0 = ch.cholesky(h + torch.eye(n, dtype=dtype))
    ref_0 = torch.linalg.cholesky(h.double() + torch.eye(n, dtype=torch.float64))
    assert bool(ok_0.all())
    assert float((chol_0.double() - ref_0).abs().max() / ref_0.abs().max()) < tol


def test_factor_written_into_the_callers_buffer_in_its_layout():
    """The Newton solver and ``dense_solve`` keep the factor as their column-major work buffer
    (``cholesky.work_buffer``): the kernel must write it in that layout, not its own."""
    b, n = 19, 12
    h = _spd(b, n, torch.float64)
    work = ch.work_buffer(b, n, h)
    chol, ok = ch.shifted_cholesky(h, 0.5, out=work)
    m = h + 0.5 * torch.eye(n, dtype=torch.float64)
    assert bool(ok.all())
    for f in (chol, work):  # the returned factor and the buffer the caller holds
        assert float((f @ f.mT - m).abs().max()) < 1e-13
    # a block of a larger buffer (dense_solve's 4 MB blocks), and a row-major buffer
    big = ch.work_buffer(2 * b, n, h)
    chol_blk, _ = ch.shifted_cholesky(h, 0.5, out=big[b:])
    assert float((big[b:] @ big[b:].mT - m).abs().max()) < 1e-13
    assert chol_blk.data_ptr() == big[b:].data_ptr()
    rowmajor = torch.empty(b, n, n, dtype=torch.float64)
    ch.shifted_cholesky(h, 0.5, out=rowmajor)
    assert float((rowmajor @ rowmajor.mT - m).abs().max()) < 1e-13
    # the solve reads either layout
    g = torch.randn(b, n, dtype=torch.float64)
    want = torch.linalg.solve(m, g)
    for f in (work, rowmajor):
        assert float((ch.cholesky_apply(f, g) - want).abs().max() / want.abs().max()) < 1e-13


def test_failure_flags():
    """A pivot that is not positive and finite fails its matrix only (LAPACK's verdict; an
    infinite pivot fails too, as in the closed form for n ≤ 2)."""
    h = torch.eye(5, dtype=torch.float64).repeat(10, 1, 1)
    h[3, 2, 2] = -1.0
    h[4, 4, 4] = 0.0
    h[5, 4, 4] = float("nan")
    h[6, 1, 1] = float("inf")
    h[7, 3, 1] = 2.0  # indefinite through an off-diagonal entry (lower triangle)
    h[8, 1, 3] = 2.0  # the upper triangle is not read
    _, ok = ch.shifted_cholesky(h, 0.0)
    want = torch.ones(10, dtype=torch.bool)
    want[[3, 4, 5, 6, 7]] = False
    assert torch.equal(ok, want)
    lapack_ok = torch.linalg.cholesky_ex(h)[1] == 0
    assert torch.equal(ok[[0, 1, 2, 3, 4, 5, 7, 8, 9]], lapack_ok[[0, 1, 2, 3, 4, 5, 7, 8, 9]])


def test_empty_batch_and_lapack_routes():
    h = _spd(0, 6, torch.float64)
    chol, ok = ch.shifted_cholesky(h, 0.1)
    assert chol.shape == (0, 6, 6) and ok.shape == (0,)
    assert ch.cholesky_apply(chol, torch.zeros(0, 6, dtype=torch.float64)).shape == (0, 6)
    h = _spd(4, 6, torch.float64)
    assert not bc.applies(h.requires_grad_())  # autograd through a factor: LAPACK
    assert not bc.applies(_spd(4, 2, torch.float64))  # closed forms
    assert not bc.applies(_spd(4, bc.MAX_N + 1, torch.float64))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:  # no memory to read: LAPACK's (fake) kernel
        fake = mode.from_tensor(_spd(4, 6, torch.float64))
        assert not bc.applies(fake)
        assert ch.shifted_cholesky(fake, 0.1)[0].shape == (4, 6, 6)
    seen = []
    torch.func.vmap(lambda m: seen.append(bc.applies(m.unsqueeze(0))) or m.sum())(
        _spd(3, 6, torch.float64))
    assert seen == [False]  # a torch.func-wrapped batch


def test_unbuildable_kernel_falls_back_to_lapack(monkeypatch):
    """No compiler: counted once, and the factorisation is LAPACK's, unchanged."""
    monkeypatch.setattr(bc, "_kernels", {})
    monkeypatch.setattr(bc, "_build", lambda kind, dtype: (_ for _ in ()).throw(OSError("cc")))
    before = bc.FALLBACKS["count"]
    h = _spd(5, 7, torch.float64)
    chol, ok = ch.shifted_cholesky(h, 0.1)
    chol2, _ = ch.shifted_cholesky(h, 0.1)
    assert bc.FALLBACKS["count"] == before + 1  # the factor kernel, tried once
    ref = torch.linalg.cholesky(h + 0.1 * torch.eye(7, dtype=torch.float64))
    assert torch.equal(chol, ref) and torch.equal(chol2, ref) and bool(ok.all())


def _ridge_logistic(y, x, t, log_lam, mu):
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    return (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * log_lam.exp() * (
        (y - mu) ** 2).sum(-1)


def test_argmin_same_through_kernels_and_lapack():
    """A whole dense-Newton ``argmin`` (forward, final step, refined backward) through the
    kernels and through LAPACK: the same iterations, ``y*`` and parameter gradients equal to
    what the solver resolves (rounding differences in the factors move the iterates by ~1e-16,
    and a problem that stops on "no representable decrease" is then ~1e-8 from the minimum in
    the gradient, ~1e-9 in ``y*`` after the damped final step: measured ≤ 5e-10 here), and the
    kernel route's gradient against central differences (float64)."""
    gen = torch.Generator().manual_seed(0)
    b, m, n = 40, 24, 6
    x = torch.randn(b, m, n, generator=gen, dtype=torch.float64) / n**0.5
    t = (torch.rand(b, m, generator=gen, dtype=torch.float64) < 0.5).double()

    def run(enabled, log_lam, mu):
        bc.ENABLED = enabled
        lam = log_lam.clone().requires_grad_()
        mu_ = mu.clone().requires_grad_()
        y, info = wibergian.argmin(_ridge_logistic, torch.zeros(b, n, dtype=torch.float64),
                                   (x, t, lam, mu_), compile=True, warn=False,
                                   return_info=True, tol=1e-12)
        loss = (y**2).sum()
        loss.backward()
        return y.detach(), info, lam.grad, mu_.grad, loss.item()

    lam0 = torch.tensor(-0.5, dtype=torch.float64)
    mu0 = torch.linspace(-1, 1, n, dtype=torch.float64)
    y_k, info_k, gl_k, gm_k, _ = run(True, lam0, mu0)
    y_l, info_l, gl_l, gm_l, _ = run(False, lam0, mu0)
    assert info_k.backward["refined"] == b  # the backward refined from the kernel's factor
    assert torch.equal(info_k.iterations, info_l.iterations)
    assert bool(info_k.converged.all())
    assert float((y_k - y_l).abs().max()) < 1e-8
    assert float(info_k.grad_norm.max()) < 1e-7
    assert abs(float(gl_k - gl_l)) < 1e-7 * (1 + abs(float(gl_l)))
    assert float((gm_k - gm_l).abs().max()) < 1e-7 * (1 + float(gm_l.abs().max()))
    # the damped implicit gradient in closed form at y* (independent of both routes):
    # dy*/d log λ = -(H + 0.1 I)^-1 λ (y* - μ), dy*/dμ = (H + 0.1 I)^-1 λ, H = Xᵀ diag(σ') X + λI
    lam = float(lam0.exp())
    s_ = torch.sigmoid((x @ y_k.unsqueeze(-1)).squeeze(-1))
    hess = x.mT @ ((s_ * (1 - s_)).unsqueeze(-1) * x) + lam * torch.eye(n, dtype=torch.float64)
    m_inv = torch.linalg.inv(hess + 0.1 * torch.eye(n, dtype=torch.float64))
    dy_dlam = -(m_inv @ (lam * (y_k - mu0)).unsqueeze(-1)).squeeze(-1)
    want_l = float((2 * y_k * dy_dlam).sum())
    want_m = (2 * y_k.unsqueeze(-2) @ (lam * m_inv)).squeeze(-2).sum(0)
    assert abs(float(gl_k) - want_l) < 1e-9 * (1 + abs(want_l))
    assert float((gm_k - want_m).abs().max()) < 1e-9 * (1 + float(want_m.abs().max()))


def test_route_is_the_calls_not_the_processes(monkeypatch):
    """The kernels serve an ``argmin`` call whose energy is compiled (forward and backward) and
    never an eager one, whatever was compiled before in the process: a run resumed in a fresh
    process factors as the uninterrupted run did."""
    calls = []
    real = bc.factor
    monkeypatch.setattr(bc, "factor", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 12, 5, generator=gen, dtype=torch.float64)
    t = (torch.rand(16, 12, generator=gen, dtype=torch.float64) < 0.5).double()
    lam = torch.zeros((), dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(5, dtype=torch.float64)
    with bc.active(False):  # outside any argmin call: the default
        for compile_, used in ((True, True), (False, False), ("auto", False)):
            calls.clear()
            y = wibergian.argmin(_ridge_logistic, torch.zeros(16, 5, dtype=torch.float64),
                                 (x, t, lam, mu), compile=compile_, warn=False)
            y.sum().backward()
            assert bool(calls) == used, compile_
        assert bc._ACTIVE.get() is False  # each call restored what it found
