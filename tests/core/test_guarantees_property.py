"""Property-based checks of the promises over hostile families (issue 13).

Every example checks: the result is finite, the damped gradient obeys
``||dL/dw|| ≤ ||∂∇E/∂w||₂·||ȳ|| / λ`` (per problem; here ``∂∇E/∂w = -C``), and anything raised
is one of the library's own errors. Families:

- saddles and near-singular Hessians with eigenvalues spread over 1e-3…1e8 (float64) or
  1e-3…1e3 (float32), on the dense and the CG back end, at arbitrary (non-stationary) points;
- non-converged solves of a non-convex quartic (one or two solver iterations, both back ends);
- non-smooth energies (a weighted geometric median started at a data point).
"""

from __future__ import annotations

import math
import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wibergian
from wibergian.adjoint import AdjointSpec, vjp

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([torch.float64, torch.float32])


def _spectrum(data, n: int, dtype: torch.dtype, lam: float) -> torch.Tensor:
    top = 8.0 if dtype == torch.float64 else 3.0
    logs = data.draw(st.lists(st.floats(-3.0, top), min_size=n, max_size=n))
    ev = torch.tensor([10.0**v for v in logs], dtype=torch.float64)
    k = data.draw(st.integers(0, min(2, n - 1)))  # negative eigenvalues, in (-3λ, 0)
    for i in range(k):  # the hostile range is (-λ, 0): H + λI is positive definite there
        ev[i] = -lam * data.draw(st.one_of(st.floats(1e-6, 0.5), st.floats(0.5, 0.999),
                                           st.floats(1.0, 3.0)))
    if data.draw(st.booleans()):
        ev[-1] = 0.0  # an exactly flat direction
    return ev


def _problem(data, n: int, dtype: torch.dtype, lam: float):
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    hmat = (q @ torch.diag(_spectrum(data, n, dtype, lam)) @ q.T).to(dtype)
    hmat = 0.5 * (hmat + hmat.T)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(1, n, generator=g, dtype=torch.float64).to(dtype)
    gbar = torch.randn(1, n, generator=g, dtype=torch.float64)
    if data.draw(st.booleans()):  # ȳ and ∂∇E/∂w aligned with the most negative direction
        c[:, 0] += 10 * q[:, 0]
        gbar += 10 * q[:, 0]
    return hmat, c.to(dtype), y, gbar.to(dtype)


def _bound(c: torch.Tensor, gbar: torch.Tensor, lam: float) -> float:
    return float(torch.linalg.matrix_norm(c.double(), ord=2) * gbar.double().norm() / lam)


def _slack(dtype: torch.dtype) -> float:
    return 1 + (1e-9 if dtype == torch.float64 else 1e-4)


@SETTINGS
@given(data=st.data(), dtype=DTYPES,
       back=st.sampled_from([("dense", "ridge"), ("dense", "floor"), ("cg", "ridge")]),
       lam=st.sampled_from([0.1, 1e-3, 2.0, 0.0]))
def test_bound_and_finiteness_on_saddles_with_wide_spectra(data, dtype, back, lam):
    backend, regulariser = back
    n = data.draw(st.integers(2, 12))
    hmat, c, y, gbar = _problem(data, n, dtype, max(lam, 0.1))

    def energy(y, w):
        return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

    w = torch.zeros(3, dtype=dtype, requires_grad=True)
    spec = AdjointSpec(energy, lam, regulariser, backend, "implicit", warn=False)
    (gw,) = vjp(spec, y, (w,), gbar)
    assert torch.isfinite(gw).all()
    if lam == 0:  # plain implicit differentiation: no bound, but never NaN/Inf
        return
    assert float(gw.double().norm()) <= _bound(c, gbar, lam) * _slack(dtype)
    # where λ is well above the dtype's resolution of H's spectrum, and so is every negative
    # eigenvalue (the CG back end's Ritz test flags curvature below τ = 8·eps·||T||; float32
    # found H = Q diag(-3.9e-4, 1, 239) Qᵀ, 1.7τ, unflagged there), the detection did the work,
    # not the last-resort cap on ||u|| (which holds the bound in any case)
    eps, hnorm = torch.finfo(dtype).eps, float(torch.linalg.matrix_norm(hmat.double(), 2))
    ev = torch.linalg.eigvalsh(hmat.double())
    visible = bool((ev[ev < 0].abs() >= 1e2 * 8 * eps * hnorm).all())
    if lam >= 1e3 * eps * hnorm and visible:
        assert spec.record["bound_capped"] == 0


def test_a_negative_eigenvalue_at_the_float32_detection_limit_is_held_by_the_cap():
    """Found by the property above: float32, CG back end, λ = 0.1, H = Q diag(-3.9e-4, 1, 239) Qᵀ
    with ȳ and ∂∇E/∂w along the negative direction. The Ritz test does not flag -3.9e-4
    (1.7·τ in float32), so the ridge solve alone would exceed ||ȳ||/λ by 0.4 %; the cap on ||u||
    holds the bound, and says so."""
    dtype, lam, n = torch.float32, 0.1, 3
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.tensor([-lam * 0.00390625, 1.0, 10.0**2.37890625], dtype=torch.float64)
    hmat = (q @ torch.diag(ev) @ q.T).to(dtype)
    hmat = 0.5 * (hmat + hmat.T)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(1, n, generator=g, dtype=torch.float64).to(dtype)
    gbar = torch.randn(1, n, generator=g, dtype=torch.float64)
    c[:, 0] += 10 * q[:, 0]
    gbar += 10 * q[:, 0]
    c, gbar = c.to(dtype), gbar.to(dtype)

    def energy(y, w):
        return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

    w = torch.zeros(3, dtype=dtype, requires_grad=True)
    spec = AdjointSpec(energy, lam, "ridge", "cg", "implicit", warn=False)
    (gw,) = vjp(spec, y, (w,), gbar)
    assert torch.isfinite(gw).all()
    assert float(gw.double().norm()) <= _bound(c, gbar, lam) * _slack(dtype)
    assert spec.record["bound_capped"] == 1


@SETTINGS
@given(data=st.data(), dtype=DTYPES, backend=st.sampled_from(["dense", "cg"]),
       iters=st.integers(1, 2), solver=st.sampled_from(["newton", "lbfgs"]))
def test_non_converged_solves_of_a_nonconvex_quartic_stay_bounded(data, dtype, backend, iters,
                                                                   solver):
    lam = 0.1
    n = data.draw(st.integers(2, 8))
    hmat, c, y0, gbar = _problem(data, n, dtype, lam)
    scale = data.draw(st.sampled_from([0.0, 1e-3, 1.0]))

    def energy(y, w):  # ∂∇E/∂w = -C; indefinite H near 0, bounded below by the quartic
        return (0.5 * ((y @ hmat) * y).sum(-1) + scale * (y**4).sum(-1)
                - (y * (w @ c.T)).sum(-1))

    w = torch.zeros(3, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wibergian.WibergianWarning)
        try:
            y = wibergian.argmin(energy, 3 * y0, (w,), damping=lam, linear_solver=backend,
                                 solver=solver, max_iter=iters)
        except wibergian.WibergianError:
            return
        assert torch.isfinite(y).all()
        (y * gbar).sum().backward()
    assert torch.isfinite(w.grad).all()
    assert float(w.grad.double().norm()) <= _bound(c, gbar, lam) * _slack(dtype)


def geometric_median(y, x, w):
    return (w * ((y[:, None, :] - x) ** 2).sum(-1).sqrt()).sum(-1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=DTYPES, solver=st.sampled_from(["newton", "lbfgs"]),
       heavy=st.floats(0.5, 6.0))
def test_non_smooth_geometric_median_never_gives_nan_gradients(data, dtype, solver, heavy):
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    b, k, d = 2, data.draw(st.integers(3, 6)), data.draw(st.integers(1, 3))
    x = torch.randn(b, k, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    w = torch.ones(b, k, dtype=dtype)
    w[:, 0] = heavy
    w.requires_grad_(True)
    start = data.draw(st.integers(0, k - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wibergian.WibergianWarning)
        try:
            y = wibergian.argmin(geometric_median, x[:, start].detach().clone(), (x, w),
                                 solver=solver, max_iter=30)
            y.sum().backward()
        except wibergian.WibergianError as err:  # allowed: the library's own, named error
            assert "problem" in str(err)
            return
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    assert not math.isnan(float(w.grad.sum()))
