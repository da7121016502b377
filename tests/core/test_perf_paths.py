"""The fast paths of issue 14 compute what the plain paths compute.

torch.func Hessian = reverse-mode Hessian; batched multi-start = per-candidate loop; compile=True
= eager; each Hessian built once per call; host synchronisations in the hot loops bounded.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import wibergian
import wibergian.adjoint as adjoint_mod
import wibergian.compiled as compiled_mod
import wibergian.derivatives as der
from wibergian.linsolve import cg_solve
from wibergian.solvers import NewtonTrustRegion
from wibergian.solvers import multistart as ms

D = torch.float64


def logistic(y, x, t, lam):
    """Ridge-logistic energy ``(B,)``: per-problem ``x`` ``(B, M, n)``, ``t`` ``(B, M)``."""
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    return (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * lam * (y * y).sum(-1)


def logistic_data(b, n, m=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, m, n, generator=g, dtype=D) / math.sqrt(n)
    t = (torch.rand(b, m, generator=g, dtype=D) > 0.5).to(D)
    return x, t, torch.tensor(0.3, dtype=D)


def logistic_hessian(y, x, t, lam):
    """Independent closed form ``Xᵀ diag(σ'(Xy)) X + λI``."""
    s = torch.sigmoid((x @ y.unsqueeze(-1)).squeeze(-1))
    w = s * (1 - s)
    return x.mT @ (w.unsqueeze(-1) * x) + lam * torch.eye(y.shape[1], dtype=D)


@pytest.mark.parametrize("n", [1, 2, 8, 40])
def test_func_hessian_equals_reverse_and_closed_form(n):
    x, t, lam = logistic_data(5, n)
    y = torch.randn(5, n, generator=torch.Generator().manual_seed(1), dtype=D)
    e1, g1, h1 = der.func_value_gradient_hessian(logistic, y, (x, t, lam))
    old = der.HESSIAN_ROUTE["route"]
    try:
        der.HESSIAN_ROUTE["route"] = "reverse"
        e2, g2, h2 = der.value_gradient_hessian(logistic, y, (x, t, lam))
    finally:
        der.HESSIAN_ROUTE["route"] = old
    torch.testing.assert_close(h1, h2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e1, e2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h1, logistic_hessian(y, x, t, lam), rtol=1e-10, atol=1e-12)


class _Square(torch.autograd.Function):
    """An old-style autograd.Function (no ``setup_context``): torch.func refuses it."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return u * u

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return 2 * u * grad


def _with_function(y, x, t, lam):
    return logistic(y, x, t, lam) + _Square.apply(y).sum(-1)


def _with_numpy(y, x, t, lam):  # reads y's storage: no storage under torch.func
    return logistic(y, x, t, lam) + 0.0 * float(y.detach().numpy().sum())


@pytest.mark.parametrize("energy, extra", [(_with_function, 2.0), (_with_numpy, 0.0)])
def test_func_route_falls_back_for_non_functorch_energy(monkeypatch, energy, extra):
    x, t, lam = logistic_data(4, 3)
    y = torch.zeros(4, 3, dtype=D) + 0.2
    monkeypatch.setitem(der.HESSIAN_ROUTE, "route", "func")
    before = der.FUNC_FALLBACKS["count"]
    e, g, h = der.value_gradient_hessian(energy, y, (x, t, lam))
    assert der.FUNC_FALLBACKS["count"] == before + 1
    want = logistic_hessian(y, x, t, lam) + extra * torch.eye(3, dtype=D)
    torch.testing.assert_close(h, want, rtol=1e-10, atol=1e-12)
    der.value_gradient_hessian(energy, y, (x, t, lam))  # remembered: no second attempt
    assert der.FUNC_FALLBACKS["count"] == before + 1


def welsch_wells(y, a, c, m):
    """W1-like wells: ``a, c`` ``(B, K)`` batched, ``m`` ``(K,)`` shared."""
    u = (y[:, :1] - a) ** 2 / 4.0 + (y[:, 1:] - c) ** 2 / 4.0
    return -(m * torch.exp(-u)).sum(-1)


def loop_scores(energy, cand, params):
    return torch.stack([energy(cand[:, j], *params) for j in range(cand.shape[1])], 1)


@pytest.mark.parametrize("k", [5, 7])  # k = B: a shared parameter looks batched by shape
def test_batched_multistart_matches_loop(k):
    b = 7
    g = torch.Generator().manual_seed(3)
    a, c = torch.randn(b, k, generator=g, dtype=D) * 3, torch.randn(b, k, generator=g, dtype=D)
    m = torch.rand(k, generator=g, dtype=D) + 0.5
    cand = torch.stack([a, c], -1)
    mask = torch.rand(b, k, generator=g) > 0.3
    mask[:, 0] = True
    flags = [True, True, False] if k == b else None
    es = ms.candidate_energies(welsch_wells, cand, (a, c, m), batched_params=flags,
                               max_rows=10)  # blocks of one problem
    torch.testing.assert_close(es, loop_scores(welsch_wells, cand, (a, c, m)))
    y0, idx = ms.best_candidate(welsch_wells, cand, (a, c, m), mask, batched_params=flags)
    ref = torch.where(mask, loop_scores(welsch_wells, cand, (a, c, m)), math.inf).argmin(1)
    assert torch.equal(idx, ref)
    assert torch.equal(y0, cand[torch.arange(b), ref])


def test_multistart_falls_back_per_candidate():
    calls = []

    def fixed_batch(y, a, c, m):  # refuses any batch but B rows
        calls.append(y.shape[0])
        if y.shape[0] != 4:
            raise RuntimeError("this energy only takes 4 rows")
        return welsch_wells(y, a, c, m)

    g = torch.Generator().manual_seed(4)
    a, c = torch.randn(4, 6, generator=g, dtype=D), torch.randn(4, 6, generator=g, dtype=D)
    m = torch.ones(6, dtype=D)
    before = ms.FALLBACKS["per_candidate"]
    _, idx = ms.best_candidate(fixed_batch, torch.stack([a, c], -1), (a, c, m))
    assert ms.FALLBACKS["per_candidate"] == before + 1
    assert torch.equal(idx, loop_scores(welsch_wells, torch.stack([a, c], -1), (a, c, m))
                       .argmin(1))



class _PerCandidateEnergy:
    """Stands for a compiled energy (``scores_per_candidate``): records the rows of each call."""

    scores_per_candidate = True

    def __init__(self):
        self.rows = []

    def __call__(self, y, a, c, m):
        self.rows.append(y.shape[0])
        return welsch_wells(y, a, c, m)


@pytest.mark.parametrize("b, per_candidate", [(3, False), (6, True)])
def test_compiled_energy_scores_per_candidate_above_threshold(monkeypatch, b, per_candidate):
    """A compiled energy with B ≥ PER_CANDIDATE_MIN_ROWS is scored by C calls on (B, n) with the
    parameters unchanged (no C-fold copies), same energies, no fallback counted; below, in
    blocks."""
    monkeypatch.setattr(ms, "PER_CANDIDATE_MIN_ROWS", 4)
    g = torch.Generator().manual_seed(6)
    a, c = torch.randn(b, 5, generator=g, dtype=D), torch.randn(b, 5, generator=g, dtype=D)
    m = torch.rand(5, generator=g, dtype=D)
    cand = torch.stack([a, c], -1)
    energy = _PerCandidateEnergy()
    before = ms.FALLBACKS["per_candidate"]
    es = ms.candidate_energies(energy, cand, (a, c, m), max_rows=10)
    torch.testing.assert_close(es, loop_scores(welsch_wells, cand, (a, c, m)), rtol=0, atol=0)
    assert ms.FALLBACKS["per_candidate"] == before
    assert energy.rows == ([b] * 5 if per_candidate else [10, 5])
    assert getattr(compiled_mod.CompiledEnergy, "scores_per_candidate", False)


def _step(energy, **kw):
    x, t, lam = logistic_data(6, 3, seed=5)
    lam = lam.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    y = wibergian.argmin(energy, torch.zeros(6, 3, dtype=D), (x, t, lam), warn=False, **kw)
    (y * torch.linspace(0.5, 1.5, 18, dtype=D).reshape(6, 3)).sum().backward()
    return y.detach(), x.grad, lam.grad


def test_compile_fallback_when_compile_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)

    def energy(y, x, t, lam):  # a fresh energy object: no cached kernels
        return logistic(y, x, t, lam)

    before = compiled_mod.FALLBACKS["count"]
    with pytest.warns(compiled_mod.CompileFallbackWarning):
        got = _step(energy, compile=True)
    assert compiled_mod.FALLBACKS["count"] == before + 1
    want = _step(energy)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_compile_matches_eager():
    def energy(y, x, t, lam):
        return logistic(y, x, t, lam)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", compiled_mod.CompileFallbackWarning)
        got = _step(energy, compile=True)
    want = _step(energy)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    ce = compiled_mod.compiled_energy(energy)
    assert ce.error is not None or ce.compile_seconds > 0  # compiled, or said why not
    assert ce is compiled_mod.compiled_energy(energy)  # cached per energy


def test_each_hessian_built_once_per_call(monkeypatch):
    points: list[torch.Tensor] = []
    real = der.hessian_from_graph

    def counting(yv, g, **kw):
        points.append(yv.detach().clone())
        return real(yv, g, **kw)

    monkeypatch.setattr(der, "hessian_from_graph", counting)
    monkeypatch.setattr(adjoint_mod, "hessian_from_graph", counting)
    x, t, lam = logistic_data(6, 3, seed=5)
    lam = lam.clone().requires_grad_(True)
    y, info = wibergian.argmin(logistic, torch.zeros(6, 3, dtype=D), (x, t, lam),
                               return_info=True, warn=False)
    n_forward = len(points)
    y.sum().backward()
    assert len(points) == n_forward  # the backward reused the forward's Hessian at y*
    # the solver's iterations, plus the final step's new point: each point once
    assert n_forward == int(info.iterations.max()) + 2
    for i in range(len(points)):
        for j in range(i):
            assert not torch.equal(points[i], points[j])
    assert lam.grad is not None and torch.isfinite(lam.grad)


class SyncCounter:
    """Counts host synchronisations: ``bool``/``int``/``float`` of a tensor, ``.item()``,
    ``.tolist()`` and ``nonzero``."""

    NAMES = ("__bool__", "__int__", "__float__", "item", "tolist", "nonzero")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def wrapped(*a, _real=real, **k):
                self.count += 1
                return _real(*a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)


def test_newton_loop_syncs_only_every_check(monkeypatch):
    x, t, lam = logistic_data(8, 4, seed=6)
    y0 = torch.zeros(8, 4, dtype=D)
    # second_order=False: the saddle check (its own early-out test per iteration) is off
    counter = SyncCounter(monkeypatch)
    res1 = NewtonTrustRegion(tol=1e-300, max_iter=30, second_order=False).minimize(
        logistic, y0, (x, t, lam))
    every_iteration = counter.count
    ran = int(res1.iterations.max())
    assert every_iteration >= ran >= 4  # the counter sees the per-iteration check
    counter.count = 0
    res = NewtonTrustRegion(tol=1e-300, max_iter=30, check_every=ran + 1,
                            second_order=False).minimize(logistic, y0, (x, t, lam))
    # the finite-start test before the loop, then iterations 0 and ran + 1: nothing else
    assert counter.count <= 3
    torch.testing.assert_close(res.y, res1.y)
    assert torch.equal(res.iterations, res1.iterations)


def test_cg_loop_syncs_once_per_iteration(monkeypatch):
    g = torch.Generator().manual_seed(7)
    a = torch.randn(5, 30, 30, generator=g, dtype=D)
    h = a @ a.mT / 30 + torch.eye(30, dtype=D)
    rhs = torch.randn(5, 30, generator=g, dtype=D)
    counter = SyncCounter(monkeypatch)
    v, stats = cg_solve(lambda p: (h @ p.unsqueeze(-1)).squeeze(-1), rhs, 0.1, max_iter=30)
    # one "all stopped?" test per iteration, plus the fallback bookkeeping once at the end
    assert counter.count <= int(stats.iterations.max()) + 1 + 6
    torch.testing.assert_close(torch.linalg.solve(h + 0.1 * torch.eye(30, dtype=D), rhs), v,
                               rtol=1e-7, atol=1e-8)


def logistic_right(y, x, t, lam):
    """The same energy with the data on the right of the product: ``z = (yᵀ Xᵀ)ᵀ``."""
    z = (y.unsqueeze(1) @ x.mT).squeeze(1)
    return (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * lam * (y * y).sum(-1)


def _copies_of_expand(gm):
    """vmap's copies: ``clone`` nodes of an ``expand`` (the fold's own contiguous copies of the
    small permuted operand are of a ``permute``)."""
    return sum(nd.target == torch.ops.aten.clone.default
               and nd.args[0].target == torch.ops.aten.expand.default for nd in gm.graph.nodes)


@pytest.mark.parametrize("energy", [logistic, logistic_right])
@pytest.mark.parametrize("n", [2, 9])
def test_folded_func_graph_equals_closed_form(energy, n):
    """fold.py: the traced torch.func graph with vmap's copies of X folded into one product per
    bmm gives the same value, gradient and Hessian (closed form Xᵀdiag(σ')X+λI), float64."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from wibergian.fold import fold_expanded_bmm

    x, t, lam = logistic_data(5, n)
    y = torch.randn(5, n, generator=torch.Generator().manual_seed(2), dtype=D)

    def vgh(yy, xx, tt, ll):
        return der.func_value_gradient_hessian(energy, yy, (xx, tt, ll))

    with torch.no_grad():
        gm = make_fx(vgh, tracing_mode="fake")(y, x, t, lam)
        before = _copies_of_expand(gm)
        folded = fold_expanded_bmm(gm)
        after = _copies_of_expand(gm)
        e, g, h = gm(y, x, t, lam)
    assert folded >= 1 and after < before  # vmap's copies of X are gone
    e2, g2, h2 = vgh(y, x, t, lam)
    torch.testing.assert_close(h, h2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e, e2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, logistic_hessian(y, x, t, lam), rtol=1e-10, atol=1e-12)


def test_fold_leaves_unrelated_bmm_alone():
    """A bmm whose operands both carry their own batch (no expand) is not rewritten."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from wibergian.fold import fold_expanded_bmm

    a, b = torch.randn(4, 3, 5, dtype=D), torch.randn(4, 5, 2, dtype=D)
    gm = make_fx(torch.bmm, tracing_mode="fake")(a, b)
    assert fold_expanded_bmm(gm) == 0
    torch.testing.assert_close(gm(a, b), torch.bmm(a, b), rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_func_route_hessian_equals_closed_form(monkeypatch):
    """compile=True traces the torch.func route (folded) from FUNC_MIN_N up: its Hessian is the
    closed form, float64, and the kernel compiled without falling back. Blocks of 4 rows over
    B = 6: the short last block is rows 2-5 (overlapping, no padding), every row still right."""
    monkeypatch.setattr(compiled_mod, "FUNC_MIN_N", 3)
    monkeypatch.setattr(compiled_mod, "MAX_ROWS", 4)

    def energy(y, x, t, lam):  # a fresh energy object: no cached kernels
        return logistic(y, x, t, lam)

    x, t, lam = logistic_data(6, 4)
    y = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=D)
    ce = compiled_mod.compiled_energy(energy)
    assert ce._vgh_route(4) == ce._vgh_func and ce._vgh_route(2) == ce._vgh
    with torch.no_grad():
        e, g, h = ce.value_gradient_hessian(y, x, t, lam)
    assert ce.error is None, ce.error
    assert h.shape == (6, 4, 4) and len(ce._kernels) == 1
    torch.testing.assert_close(h, logistic_hessian(y, x, t, lam), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e, logistic(y, x, t, lam), rtol=1e-12, atol=1e-12)
