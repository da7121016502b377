"""Regression tests for the guarantees of issue 13 (items 1-5) and the warnings of issue 11.

The bound: with ``E = ½ yᵀHy - yᵀCw`` we have ``∂∇E/∂w = -C``, so the promise is
``||dL/dw|| ≤ ||C||₂·||ȳ|| / λ`` per problem, whatever ``H`` is.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import wibergian
from wibergian.adjoint import AdjointSpec, vjp
from wibergian.linsolve import cg_solve, dense_solve

LAM = 0.1


def quadratic_energy(hmat: torch.Tensor, c: torch.Tensor):
    def energy(y, w):  # ∇E = H y - C w
        return 0.5 * ((y @ hmat) * y).sum(-1) - (y * (w @ c.T)).sum(-1)

    return energy


def _bound(c: torch.Tensor, gbar: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(c.double(), ord=2) * gbar.double().norm() / LAM)


# ---- item 1: the dense path resolves a small negative eigenvalue beside a large one ---------

@pytest.mark.parametrize("dtype,big", [(torch.float64, 1e8), (torch.float32, 1e3)])
def test_dense_bound_holds_for_small_negative_eigenvalue_beside_a_large_one(dtype, big):
    hmat = torch.diag(torch.tensor([-0.09, big], dtype=dtype))
    c = torch.eye(2, dtype=dtype)
    w = torch.zeros(2, dtype=dtype, requires_grad=True)  # y* = 0 is a stationary point (saddle)
    with pytest.warns(wibergian.FallbackWarning):  # the final step meets the saddle
        y, info = wibergian.argmin(quadratic_energy(hmat, c), torch.zeros(1, 2, dtype=dtype),
                                   (w,), return_info=True)
    assert float(info.grad_norm.max()) == 0.0
    gbar = torch.tensor([[1.0, 1.0]], dtype=dtype)
    with pytest.warns(wibergian.FallbackWarning):
        (y * gbar).sum().backward()
    # the old test passed H + sqrt(eps)·max|h|·I and gave 1/(λ - 0.09) = 100 along e₀ (10×)
    assert float(w.grad.double().norm()) <= _bound(c, gbar) * (1 + 1e-6)
    assert info.backward["backward_fallbacks"] == 1
    # eigenvalue clamp: e₀ gets 1/(0 + λ), e₁ gets 1/(big + λ)
    want = torch.tensor([1 / LAM, 1 / (big + LAM)], dtype=torch.float64)
    assert torch.allclose(w.grad.double(), want, rtol=1e-5)


def test_dense_certificate_does_not_flag_positive_definite_or_flat_hessians():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    ev = torch.tensor([0.0, 1e-14, 1e-3, 1.0, 1e4, 1e8], dtype=torch.float64)
    h = (q @ torch.diag(ev) @ q.T)[None].expand(3, 6, 6).clone()
    h[1] = torch.eye(6, dtype=torch.float64)
    rhs = torch.randn(3, 6, generator=g, dtype=torch.float64)
    v, stats = dense_solve(h, rhs, LAM)
    assert stats.fallbacks == 0
    direct = torch.linalg.solve(h + LAM * torch.eye(6, dtype=torch.float64), rhs)
    rel = (v - direct).norm(dim=-1) / direct.norm(dim=-1)
    assert float(rel.max()) < 1e-6  # cond(H + λI) = 1e9: both answers are this close


# ---- item 2: the CG path detects negative curvature -----------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cg_bound_holds_with_one_negative_eigenvalue(dtype):
    n, b = 100, 40
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(0.025), math.log(25.0),
                                                                 generator=g))
    ev[0] = -0.09
    hmat = (q @ torch.diag(ev) @ q.T).to(dtype)
    gbar = torch.randn(b, n, generator=g, dtype=torch.float64).to(dtype)
    # without detection, CG on H + λI converges (λ_min(H + λI) = 0.01 > 0) and gives ~1/0.01
    x, stats = cg_solve(lambda p: p @ hmat, gbar, LAM)
    assert stats.fallbacks == b and stats.shifted == b
    ratio = x.double().norm(dim=-1) / gbar.double().norm(dim=-1) * LAM
    assert float(ratio.max()) <= 1 + 1e-6
    # the shifted system was solved to tolerance
    assert float(stats.residual.max()) < (1e-8 if dtype == torch.float64 else 1e-4)
    # end to end through the adjoint (CG back end), with the cap as the last line of defence
    c = torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    w = torch.zeros(3, dtype=dtype, requires_grad=True)
    y = torch.zeros(b, n, dtype=dtype)
    spec = AdjointSpec(quadratic_energy(hmat, c), LAM, "ridge", "cg", "implicit", warn=False)
    for k in range(1):
        (gw,) = vjp(spec, y[k:k + 1], (w,), gbar[k:k + 1])
        assert float(gw.double().norm()) <= _bound(c, gbar[k:k + 1]) * (1 + 1e-5)
    assert spec.record["backward_fallbacks"] == 1


def test_cg_does_not_flag_positive_semidefinite_hessians():
    n = 80
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.cat([torch.zeros(5, dtype=torch.float64),
                    torch.logspace(-3, 3, n - 5, dtype=torch.float64)])
    hmat = q @ torch.diag(ev) @ q.T
    rhs = torch.randn(8, n, generator=g, dtype=torch.float64)
    x, stats = cg_solve(lambda p: p @ hmat, rhs, LAM, max_iter=400)
    assert stats.fallbacks == 0 and stats.shifted == 0
    direct = torch.linalg.solve(hmat + LAM * torch.eye(n, dtype=torch.float64), rhs.T).T
    assert torch.allclose(x, direct, rtol=1e-7, atol=1e-8)


# ---- items 3 and 4: non-finite derivatives at a finite energy, and the eigh crash -----------

def geometric_median(y, x, w):
    """Σ_i w_i ||y - x_i||: finite everywhere, autograd gradient NaN at y = x_i."""
    return (w * ((y[:, None, :] - x) ** 2).sum(-1).sqrt()).sum(-1)


def _points():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_geometric_median_started_at_the_heavy_point_does_not_crash(solver):
    # weights 5,1,1,1: the minimum is the heavy point itself, a kink; main crashed with
    # torch._C._LinAlgError (linalg.eigh failed to converge) in the final step's fallback
    x = _points().requires_grad_(True)
    w = torch.tensor([[5.0, 1.0, 1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y, info = wibergian.argmin(geometric_median, x[:, 0].detach().clone(), (x, w),
                                   solver=solver, return_info=True)
        (y.sum() + 0 * w.sum()).backward()
    kinds = {r.category for r in rec}
    assert wibergian.NonSmoothWarning in kinds and info.perturbed_starts == 1
    assert float((y - x[:, 0]).detach().norm()) < 1e-6  # it found the kink
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    assert all(r.filename == __file__ for r in rec)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_geometric_median_started_at_a_data_point_recovers_and_matches_finite_differences(solver):
    x = _points()
    w = torch.ones(1, 4, dtype=torch.float64)

    def solve(xx):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wibergian.NonSmoothWarning)
            return wibergian.argmin(geometric_median, xx[:, 0].clone(), (xx, w), solver=solver,
                                    damping=0.0, tol=1e-11, return_info=True)

    xv = x.clone().requires_grad_(True)
    y, info = solve(xv)
    assert info.perturbed_starts == 1 and bool(info.converged.all())
    y[0, 0].backward()
    # central differences of the minimiser in the second point's coordinates
    for j in range(3):
        e = torch.zeros_like(x)
        e[0, 1, j] = 1e-5
        fd = (solve(x + e)[0][0, 0] - solve(x - e)[0][0, 0]) / 2e-5
        assert abs(float(xv.grad[0, 1, j]) - float(fd)) < 1e-6


def test_nonfinite_hessian_in_the_backward_names_the_problem():
    class Kink:  # |y|^1.5: gradient finite at 0, Hessian infinite there
        def __call__(self, y, a):
            return (a * y.abs() ** 1.5).sum(-1)

        def hessian(self, y, a):
            return torch.diag_embed(0.75 * a * y.abs() ** -0.5)

    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.5, 0.2], [0.0, 0.3]], dtype=torch.float64)
    spec = AdjointSpec(Kink(), LAM, "ridge", "dense", "implicit")
    with pytest.raises(wibergian.NonFiniteDerivativeError, match=r"Hessian.*problem\(s\) \[1\]"):
        vjp(spec, y, (a,), torch.ones_like(y))


def test_nonfinite_gradient_in_the_backward_names_the_problem_and_the_cause():
    x = torch.zeros(2, 1, 3, dtype=torch.float64)
    x[1] = 1.0
    w = torch.ones(2, 1, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]], dtype=torch.float64)  # y = x for b = 1
    spec = AdjointSpec(geometric_median, LAM, "ridge", "cg", "implicit")
    with pytest.raises(wibergian.NonFiniteDerivativeError,
                       match=r"gradient.*problem\(s\) \[1\].*sqrt"):
        vjp(spec, y, (x, w), torch.ones_like(y))


def test_eigh_failure_falls_back_to_the_gershgorin_shift_and_keeps_the_bound(monkeypatch):
    h = torch.tensor([[[-0.05, 0.3], [0.3, 2.0]], [[1.0, 0.0], [0.0, -3.0]]], dtype=torch.float64)
    rhs = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=torch.float64)
    real = torch.linalg.eigh

    def broken(m):
        raise torch.linalg.LinAlgError("linalg.eigh: failed to converge (simulated)")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    v, stats = dense_solve(h, rhs, LAM)
    monkeypatch.setattr(torch.linalg, "eigh", real)
    assert stats.fallbacks == 2 and torch.isfinite(v).all()
    assert bool((v.norm(dim=-1) <= rhs.norm(dim=-1) / LAM).all())
    # Gershgorin: s = max_i(Σ_j≠i |h_ij| - h_ii); the solve is (H + (s + λ)I)^-1 g
    s = torch.tensor([0.35, 3.0], dtype=torch.float64)
    want = torch.linalg.solve(h + (s + LAM)[:, None, None] * torch.eye(2, dtype=torch.float64),
                              rhs)
    assert torch.allclose(v, want)


# ---- item 5: inputs, each error naming the argument -----------------------------------------

def _sq(y, *p):
    return (y**2).sum(-1)


@pytest.mark.parametrize("damping,err,match", [
    (float("inf"), ValueError, "damping must be finite"),
    (float("nan"), ValueError, "damping must be finite"),
    (-0.1, ValueError, "damping must be >= 0"),
    ("0.1", TypeError, "damping must be a real number"),
    (None, TypeError, "damping must be a real number"),
])
def test_bad_damping_is_named(damping, err, match):
    with pytest.raises(err, match=match):
        wibergian.argmin(_sq, torch.zeros(2, 1), (), damping=damping)


def test_damping_may_be_a_python_int_or_a_scalar_tensor():
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    for lam in (1, torch.tensor(1.0)):
        w.grad = None
        y = wibergian.argmin(lambda y, w: ((y - w) ** 2).sum(-1), torch.zeros(1, 1,
                             dtype=torch.float64), (w,), damping=lam)
        y.sum().backward()
        assert math.isclose(float(w.grad), 2 / 3)  # (H + λ)^-1 ∂∇E/∂w = 2/(2 + 1)


def test_candidates_of_another_dtype_are_refused():
    x = torch.randn(3, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"candidates has dtype torch.float32.*y0 has"):
        wibergian.argmin(lambda y, x: ((y - x) ** 2).sum(-1), x[:, :1], (x,),
                         candidates=x.float().unsqueeze(-1))


def test_candidate_mask_without_any_allowed_candidate_names_the_problem():
    x = torch.randn(3, 5, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(ValueError, match=r"candidate_mask allows no candidate for problem\(s\) "
                                         r"\[2\]"):
        wibergian.argmin(lambda y, x: ((y - x) ** 2).sum(-1), x[:, :1], (x,),
                         candidates=x.unsqueeze(-1), candidate_mask=mask)
    with pytest.raises(TypeError, match="candidate_mask must be a bool"):
        wibergian.argmin(lambda y, x: ((y - x) ** 2).sum(-1), x[:, :1], (x,),
                         candidates=x.unsqueeze(-1), candidate_mask=mask.double())


def test_zero_unknowns_and_half_precision_are_refused():
    with pytest.raises(ValueError, match="n = 0"):
        wibergian.argmin(_sq, torch.zeros(3, 0), ())
    for dt in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match="half precision is not supported"):
            wibergian.argmin(_sq, torch.zeros(3, 1, dtype=dt), ())


def test_energy_that_does_not_depend_on_y_is_named():
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="does not depend on y"):
        wibergian.argmin(lambda y, w: (w**2).sum() * torch.ones(y.shape[0], dtype=y.dtype),
                         torch.zeros(2, 3, dtype=torch.float64), (w,))


@pytest.mark.parametrize("which,bad_shape", [("gradient", (2,)), ("hessian", (2, 3))])
def test_declared_derivative_of_the_wrong_shape_is_named(which, bad_shape):
    class Declared:
        def __call__(self, y, a):
            return 0.5 * (a * y * y).sum(-1)

        def gradient(self, y, a):
            return a * y if which != "gradient" else (a * y).sum(-1)

        def hessian(self, y, a):
            h = torch.diag_embed(a.expand_as(y))
            return h if which != "hessian" else h[:, 0]

    a = torch.tensor([2.0, 4.0, 1.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=rf"energy.{which}\(y, \*params\) must return shape"):
        wibergian.argmin(Declared(), torch.ones(2, 3, dtype=torch.float64), (a,))


# ---- issue 11 item 4: the library's warnings, attributed to the user's line -----------------

def test_warning_and_error_classes_live_in_one_module_and_share_bases():
    from wibergian import errors

    for name in ("FallbackWarning", "NonConvergenceWarning", "NonSmoothWarning",
                 "CompileFallbackWarning"):
        cls = getattr(wibergian, name)
        assert cls is getattr(errors, name) and issubclass(cls, wibergian.WibergianWarning)
        assert issubclass(cls, RuntimeWarning)
    from wibergian.compiled import CompileFallbackWarning  # the old import path still works

    assert CompileFallbackWarning is wibergian.CompileFallbackWarning
    assert issubclass(wibergian.NonFiniteDerivativeError, wibergian.WibergianError)
    assert issubclass(wibergian.NonFiniteDerivativeError, FloatingPointError)
    assert wibergian.argmin.__module__ == "wibergian.argmin"
    from wibergian.argmin import FallbackWarning

    assert FallbackWarning is errors.FallbackWarning  # old import path still works


def _saddle():
    w = torch.tensor([0.2, -0.1], dtype=torch.float64, requires_grad=True)

    def energy(y, w):  # H = diag(1, -1)
        return 0.5 * (y[:, 0] ** 2 - y[:, 1] ** 2) + (y * w).sum(-1)

    return energy, w


def test_forward_and_backward_warnings_point_at_the_callers_lines():
    energy, w = _saddle()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y, info = wibergian.argmin(energy, torch.zeros(2, 2, dtype=torch.float64), (w,),
                                   solver=wibergian.NewtonTrustRegion(max_iter=3),
                                   return_info=True)
        forward = list(rec)
        y.sum().backward()
        backward = rec[len(forward):]
    cats = [r.category for r in forward]
    assert wibergian.NonConvergenceWarning in cats and wibergian.FallbackWarning in cats
    assert info.forward_fallbacks == 2  # the final Newton step's fallbacks are now warned
    assert [r.category for r in backward] == [wibergian.FallbackWarning]
    assert all(r.filename == __file__ for r in rec)
    assert backward[0].lineno == forward[0].lineno + 4  # the y.sum().backward() line


def test_warning_through_the_layer_points_at_the_layer_call():
    class Saddle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.2, -0.1], dtype=torch.float64))

        def forward(self, y):
            return 0.5 * (y[:, 0] ** 2 - y[:, 1] ** 2) + (y * self.w).sum(-1)

    layer = wibergian.ArgminLayer(Saddle(), solver=wibergian.NewtonTrustRegion(max_iter=2))
    with pytest.warns(wibergian.WibergianWarning) as rec:
        layer(torch.zeros(1, 2, dtype=torch.float64))  # through nn.Module.__call__ and forward
    assert {r.category for r in rec} == {wibergian.NonConvergenceWarning,
                                         wibergian.FallbackWarning}
    assert all(r.filename == __file__ for r in rec)


def test_warn_false_silences_forward_and_backward():
    energy, w = _saddle()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        y, info = wibergian.argmin(energy, torch.zeros(2, 2, dtype=torch.float64), (w,),
                                   solver=wibergian.NewtonTrustRegion(max_iter=3),
                                   return_info=True, warn=False)
        y.sum().backward()
    assert info.forward_fallbacks == 2 and info.backward["backward_fallbacks"] == 2
    assert not info.converged.any()


def test_a_nan_from_upstream_passes_through_without_a_misleading_error():
    w = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    y = wibergian.argmin(lambda y, w: ((y - w) ** 2).sum(-1), torch.zeros(2, 2,
                         dtype=torch.float64), (w,))
    (y * torch.tensor([[1.0, 1.0], [float("nan"), 1.0]], dtype=torch.float64)).sum().backward()
    assert torch.isnan(w.grad).all()  # the NaN is the loss's, not argmin's: torch's convention


def test_inference_mode_works_like_no_grad():
    # argmin runs outside inference mode on copies of its inputs (function.py; the refusal in
    # checks.start_energy is then unreachable through argmin)
    with torch.inference_mode():
        y_inf = wibergian.argmin(_sq, torch.ones(2, 1), ())
    with torch.no_grad():  # works, and carries no graph
        y_ng = wibergian.argmin(_sq, torch.ones(2, 1), ())
    assert not y_ng.requires_grad and not y_inf.requires_grad
    assert torch.equal(y_inf, y_ng)


def test_argmin_jacobian_names_a_nonfinite_derivative():
    x = torch.zeros(2, 1, 2, dtype=torch.float64)
    w = torch.ones(2, 1, dtype=torch.float64)
    y = torch.tensor([[0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)  # y = x for problem 1
    with pytest.raises(wibergian.NonFiniteDerivativeError, match=r"argmin_jacobian.*\[1\]"):
        wibergian.argmin_jacobian(geometric_median, y, (x, w))


def test_a_solver_that_stops_on_a_kink_is_reported_and_the_backward_raises():
    class Stay:  # a custom solver that returns its start: a data point of a geometric median
        def minimize(self, energy, y0, params):
            b = y0.shape[0]
            return wibergian.SolveResult(y=y0.clone(), converged=torch.ones(b, dtype=torch.bool),
                                         iterations=torch.zeros(b, dtype=torch.long))

    x = _points().requires_grad_(True)
    w = torch.ones(1, 4, dtype=torch.float64)
    with pytest.warns(wibergian.NonSmoothWarning, match="1 of 1 problems end at a point"):
        y, info = wibergian.argmin(geometric_median, x[:, 2].detach().clone(), (x, w),
                                   solver=Stay(), return_info=True)
    assert not info.converged.any() and info.final_step_accepted.tolist() == [False]
    with pytest.raises(wibergian.NonFiniteDerivativeError, match=r"gradient.*\[0\].*sqrt"):
        y.sum().backward()


def test_eigh_failure_of_one_problem_in_a_batch_is_isolated(monkeypatch):
    g = torch.Generator().manual_seed(5)
    h = torch.randn(9, 3, 3, generator=g, dtype=torch.float64)
    h = h + h.mT
    h[6, 0, 0] = 1e300  # the one LAPACK "fails" on (simulated below)
    rhs = torch.randn(9, 3, generator=g, dtype=torch.float64)
    real = torch.linalg.eigh
    calls = []

    def flaky(m):
        calls.append(m.shape[0])
        if bool((m.abs() > 1e299).any()):
            raise torch.linalg.LinAlgError("linalg.eigh: failed to converge (simulated)")
        return real(m)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    v, stats = dense_solve(h, rhs, LAM)
    assert torch.isfinite(v).all() and len(calls) <= 2 * math.ceil(math.log2(9)) + 3
    ev, q = real(torch.cat([h[:6], h[7:]]))
    want = q @ ((q.mT @ torch.cat([rhs[:6], rhs[7:]])[..., None])[..., 0]
                / (ev.clamp_min(0) + LAM))[..., None]
    assert torch.allclose(torch.cat([v[:6], v[7:]]), want[..., 0])
    assert bool(stats.fallback_mask[6]) and math.isnan(float(stats.min_eigenvalue[6]))


def test_lbfgs_replaces_an_accepted_point_without_a_gradient_by_a_shorter_step():
    from wibergian.solvers.nonfinite import shorter_finite_step

    def energy(y):  # smooth bowl plus a kink at y = 1 (autograd gradient NaN there)
        return 0.5 * (y[:, 0] - 0.5) ** 2 + 0.1 * ((y[:, 0] - 1.0) ** 2).sqrt()

    y = torch.tensor([[2.0], [3.0]], dtype=torch.float64)
    e = energy(y)
    g = torch.tensor([[1.6], [2.6]], dtype=torch.float64)  # ∇E at y
    d = -torch.ones(2, 1, dtype=torch.float64)
    step = torch.tensor([1.0, 1.0], dtype=torch.float64)  # problem 0 lands on the kink
    slope = (g * d).sum(-1)
    y_new = y + step[:, None] * d
    g_new = torch.tensor([[float("nan")], [1.6]], dtype=torch.float64)
    accepted = torch.tensor([True, True])
    bad = torch.tensor([True, False])
    y2, e2, g2, acc2 = shorter_finite_step(energy, [], y, e, g, d, step, slope, 1e-4,
                                           (y_new, energy(y_new), g_new, accepted), bad)
    assert acc2.tolist() == [True, True] and float(y2[0, 0]) == 1.5  # half the step
    assert torch.isfinite(g2).all() and float(y2[1, 0]) == 2.0  # problem 1 untouched
    assert float(e2[0]) < float(e[0])


def test_y_dependence_is_tested_once_per_energy_object():
    """The start's autograd check runs on the first call of an energy object; later calls
    evaluate the start without a graph (what lets compile=True use its compiled value there;
    with the dense Newton solver that start pass is the solver's first value-gradient-Hessian,
    tests/core/test_newton_overheads.py)."""
    calls = []

    def energy(y, w):
        calls.append(torch.is_grad_enabled() and y.requires_grad)
        return ((y - w) ** 2).sum(-1)

    w = torch.ones(2, 3, dtype=torch.float64)
    y0 = torch.zeros(2, 3, dtype=torch.float64)
    wibergian.argmin(energy, y0, (w,), solver="lbfgs")
    first = calls[0]
    calls.clear()
    wibergian.argmin(energy, y0, (w,), solver="lbfgs")
    assert first is True and calls[0] is False


def test_finite_params_whose_sum_overflows_are_accepted():
    """The first test is one sum; finite entries whose sum overflows to inf go on to the exact
    test (largest and smallest entries) and are accepted."""
    from wibergian.checks import _all_finite

    w = torch.full((4, 3), 1e308, dtype=torch.float64)
    assert not bool(torch.isfinite(w.sum())) and _all_finite(w)
    w[1, 2] = -1e308
    assert _all_finite(w)
    w[3, 0] = float("nan")
    assert not _all_finite(w)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_params_found_by_the_reductions(bad):
    """The finiteness test (largest and smallest entry) finds NaN and ±Inf anywhere."""
    w = torch.ones(4, 3, dtype=torch.float64)
    w[2, 1] = bad
    with pytest.raises(ValueError, match=r"params\[0\] contains NaN or Inf"):
        wibergian.argmin(_sq_w, torch.zeros(4, 3, dtype=torch.float64), (w,))
    y0 = torch.zeros(4, 3, dtype=torch.float64)
    y0[3, 0] = bad
    with pytest.raises(ValueError, match="y0 contains NaN or Inf"):
        wibergian.argmin(_sq_w, y0, (torch.ones(4, 3, dtype=torch.float64),))


def _sq_w(y, w):
    return ((y - w) ** 2).sum(-1)
