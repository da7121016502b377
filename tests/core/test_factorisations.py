"""Every distinct matrix is factored at most once per ``argmin`` call (dense back end).

The library's Cholesky entry points (``cholesky.cholesky``, ``cholesky.shifted_cholesky``) are
wrapped where each module calls them and the matrices factored are counted per caller. With
``I = Σ_b iterations_b`` (the Newton iterations each problem was active) and ``B`` convex
problems, one forward+backward factors

- ``H + μI`` once per active problem and iteration (Newton: ``I``, never a stopped problem);
- ``H(y_pre) - τI`` once per problem (the second-order check = the semi-definiteness
  certificate; the final step and the backward at ``y_pre`` reuse its verdict): ``B``;
- ``H(y_pre) + λI`` once (final step): ``B``;
- at ``y* ≠ y_pre`` (the final step moved the problem) no ``H(y*) + λI``: the backward refines
  from the final step's factor (``refine.py``), and factors ``H(y*) - τI`` only for the problems
  whose ``H`` moved by more than ``sqrt(eps)·λ`` (the certificate's margin); with
  ``final_step=False`` only ``H(y*) + λI``, and nothing at all with ``adjoint="newton_step"``
  (its matrix is the final step's ``H(y_pre) + λI``).

And the hand-over changes nothing: a solver whose certificate is withheld gives bit-identical
points, gradients and fallback counts on a batch mixing minima, saddles and unconverged
problems.
"""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

import wibergian
from wibergian import cholesky as cholesky_module
from wibergian import linsolve, spectral
from wibergian.bench.user import DenseData, logistic_energy
from wibergian.bench.workloads import make_w1, w1_energy, w1_loss
from wibergian.solvers import NewtonTrustRegion, curvature, newton

D = torch.float64
CALLERS = {"newton": newton, "check": curvature, "certificate": spectral, "linsolve": linsolve}


@pytest.fixture
def factored(monkeypatch):
    """``Counter``: matrices factored by each caller of the library's Cholesky entry points
    (``cholesky.cholesky``, ``cholesky.shifted_cholesky``), and ``eigh`` calls."""
    counts: collections.Counter = collections.Counter()
    wrapped = 0
    for name, module in CALLERS.items():
        for entry in ("cholesky", "shifted_cholesky"):
            real = getattr(cholesky_module, entry)
            if getattr(module, entry, None) is not real:
                continue

            def counted(m, *a, _name=name, _real=real, **k):
                counts[_name] += m.shape[0]
                return _real(m, *a, **k)

            monkeypatch.setattr(module, entry, counted)
            wrapped += 1
    assert wrapped >= len(CALLERS)  # every caller found (a rename would silently count 0)
    real_eigh = torch.linalg.eigh

    def eigh(*a, **k):
        counts["eigh"] += 1
        return real_eigh(*a, **k)

    monkeypatch.setattr(torch.linalg, "eigh", eigh)
    return counts


def _logistic(b: int, n: int, **kw):
    d = DenseData(b, n)
    log_lam, mu = d.log_lam.clone().requires_grad_(), d.mu.clone().requires_grad_()
    y, info = wibergian.argmin(logistic_energy, torch.zeros(b, n, dtype=D),
                               (d.x, d.t, log_lam, mu), return_info=True, warn=False, **kw)
    ((y - d.y_true) ** 2).sum().backward()
    return y, info


@pytest.mark.parametrize("n", [2, 8, 32])
def test_default_call_factors_each_matrix_once(factored, n):
    b = 40
    _, info = _logistic(b, n)
    assert bool(info.converged.all()) and bool(info.final_step_accepted.all())
    assert factored["newton"] == int(info.iterations.sum())  # active problems only
    assert factored["check"] == 0 and factored["eigh"] == 0  # no inertia test, no eigh
    # certificates H - τI: at y_pre (the check, reused by the final step) and at y* only where
    # H moved more than the margin (backward)
    assert b <= factored["certificate"] < 2 * b
    assert factored["linsolve"] == b  # H(y_pre) + λI (final step); the backward refines from it
    assert info.backward["refined"] == b and info.backward["reused_factor"] is True
    assert float(info.backward["backward_residual"].max()) < 1e-13


def test_newton_factors_only_active_problems_with_staggered_convergence(factored):
    # problems converging at different iterations: the loop must not refactor stopped ones
    _, info = _logistic(60, 8)
    assert int(info.iterations.min()) < int(info.iterations.max())
    assert factored["newton"] == int(info.iterations.sum())
    assert factored["newton"] < 60 * int(info.iterations.max())


def test_without_final_step_the_backward_reuses_the_certificate(factored):
    b = 40
    _, info = _logistic(b, 8, final_step=False)
    assert factored["newton"] == int(info.iterations.sum())
    assert factored["certificate"] == b and factored["linsolve"] == b  # H(y*) + λI only
    assert factored["check"] == 0 and factored["eigh"] == 0
    assert info.backward["reused_factor"] is False


def test_newton_step_adjoint_reuses_the_final_steps_factor(factored):
    b = 40
    _, info = _logistic(b, 8, adjoint="newton_step")
    assert factored["certificate"] == b
    assert factored["linsolve"] == b  # the final step's H(y_pre) + λI, nothing in the backward
    assert info.backward["reused_factor"] is True
    assert (info.backward["backward_residual"] < 1e-12).all()  # still measured


def test_w1_closed_form_route_factors_each_matrix_once(factored):
    d = make_w1(64)
    m, s0, s1 = (p.clone().requires_grad_() for p in (d.m, d.s0, d.s1))
    cands = torch.stack([d.a, d.c], -1)
    y, info = wibergian.argmin(w1_energy, cands[:, 0], (d.a, d.c, m, s0, s1), candidates=cands,
                               return_info=True, warn=False)
    w1_loss(y, d.g).backward()
    accepted = int(info.final_step_accepted.sum())
    assert factored["newton"] == int(info.iterations.sum())
    assert 64 <= factored["certificate"] <= 64 + accepted and factored["eigh"] == 0
    assert factored["linsolve"] == 64  # H(y_pre) + λI; the backward refines from its factor
    assert info.backward["refined"] == 64


@dataclasses.dataclass
class _Withheld(NewtonTrustRegion):
    """Newton that does not hand its certificate on (the final step and backward redo it)."""

    def minimize(self, energy, y0, params):
        return dataclasses.replace(super().minimize(energy, y0, params), psd=None)


def _wells(y, a, w):
    return 0.25 * ((y * y - 1) ** 2).sum(-1) + 0.5 * (
        y * (a @ y.unsqueeze(-1)).squeeze(-1)).sum(-1) + (w * y).sum(-1)


@pytest.mark.parametrize("kw", [{"max_iter": 0}, {"max_iter": 2}, {}, {"final_step": False},
                                {"adjoint": "newton_step", "max_iter": 1}])
def test_handing_the_certificate_on_changes_no_result(kw):
    """Minima (H = 2I), saddles (H = -I, ∇E = 0; diag(2, 2, -1)) and random starts: the same
    points, gradients, saddle flags and fallback counts as with every certificate recomputed."""
    g = torch.Generator().manual_seed(1)
    b, n = 30, 3
    y0 = torch.tensor([[0.0] * n, [1.0] * n, [-1.0, 1.0, 0.0]], dtype=D).repeat(b // 3, 1)
    y0[::5] += torch.randn(6, n, generator=g, dtype=D)
    a = torch.zeros(b, n, n, dtype=D)
    a[1::4] = 0.05 * torch.randn(n, n, generator=g, dtype=D).expand(len(range(1, b, 4)), n, n)
    a = 0.5 * (a + a.mT)
    max_iter = kw.pop("max_iter", 100)
    out = []
    for solver in (NewtonTrustRegion(max_iter=max_iter), _Withheld(max_iter=max_iter)):
        w = torch.zeros(n, dtype=D, requires_grad=True)
        y, info = wibergian.argmin(_wells, y0, (a, w), solver=solver, return_info=True,
                                   warn=False, **kw)
        (gw,) = torch.autograd.grad((y ** 3).sum(), w)
        out.append((y.detach(), gw, info))
    (y1, g1, i1), (y2, g2, i2) = out
    assert torch.equal(y1, y2) and torch.equal(g1, g2)
    assert torch.equal(i1.saddle, i2.saddle) and torch.equal(i1.converged, i2.converged)
    assert i1.forward_fallbacks == i2.forward_fallbacks
    assert i1.backward["backward_fallbacks"] == i2.backward["backward_fallbacks"]
    if max_iter == 0:  # the stationary saddles are reported and get the counted fallback
        assert int(i1.saddle.sum()) >= 10
        assert i1.backward["backward_fallbacks"] >= int(i1.saddle.sum())


@pytest.mark.parametrize("n", [1, 2, 3, 8, 32])
def test_shifted_cholesky_in_place_equals_the_out_of_place_factor(n):
    """``shifted_cholesky`` (factored in its own buffer) gives ``cholesky``'s factor of
    ``H + σI`` bit for bit, reading the lower triangle, for a permuted layout too, and leaves
    ``H`` alone."""
    g = torch.Generator().manual_seed(n)
    a = torch.randn(20, n, n, generator=g, dtype=D)
    h = a @ a.mT + 1e-13 * torch.randn(20, n, n, generator=g, dtype=D)  # not exactly symmetric
    h[3] = -h[3] - 2 * torch.eye(n, dtype=D)  # one that does not factor (σ < 1)
    s = torch.rand(20, generator=g, dtype=D)
    m = h.clone()
    torch.diagonal(m, dim1=-2, dim2=-1).add_(s[:, None])
    ref, ok_ref = cholesky_module.cholesky(m)
    before = h.clone()
    for layout in (h, h.permute(2, 0, 1).contiguous().permute(1, 2, 0)):
        chol, ok = cholesky_module.shifted_cholesky(layout, s)
        assert torch.equal(ok, ok_ref) and not bool(ok[3])
        assert torch.equal(chol[ok], ref[ok])
        assert torch.equal(layout, before)
    work = cholesky_module.work_buffer(20, n, h)
    chol, _ = cholesky_module.shifted_cholesky(h, s, out=work)
    assert torch.equal(chol[ok_ref], ref[ok_ref])
    if n > 2:
        assert chol.data_ptr() == work.data_ptr()  # factored in the buffer given
