"""matvec.py: CPU matrix-vector ``bmm`` nodes rewritten before ``torch.compile`` (float64).

Graph level (no compilation, fast): for ``z = X y`` energies at ``K`` on both sides of every
threshold, with batched and shared ``X`` and the one-row form ``yᵀ Xᵀ``, the rewritten graph run
eagerly equals the traced graph on inputs other than the traced ones, and the rewrite is the
form ``choose`` names (a wrong form, index or transpose changes the outputs or the node counts).
Left alone: ``Xᵀ r`` (reduction over a non-contiguous dimension), ``K`` outside the rewritten
range, float32, non-CPU graphs. End to end: the compiled value, value-gradient-Hessian and mixed
kernels agree with eager autograd (1e-10), and ``argmin(compile=True)``'s solution and gradients
with ``compile=False``'s; a raising pass falls back to the unrewritten graph, counted.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import wibergian
import wibergian.compiled as compiled_mod
import wibergian.derivatives as der
from wibergian import matvec
from wibergian.bench.user import logistic_energy
from wibergian.matvec import choose, lower_matvec

D = torch.float64
aten = torch.ops.aten
EXTERN = torch.ops.wibergian.extern_bmm.default


def _gen(seed):
    return torch.Generator().manual_seed(seed)


logistic = logistic_energy  # the benchmark's ridge-logistic energy (bench/user.py)


def row_form(y, x, t, log_lam, mu):
    """The same energy with ``z`` as a one-row product ``(B, 1, K) @ (B, K, M)``."""
    z = (y.unsqueeze(1) @ x.mT).squeeze(1)
    return (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * log_lam.exp() * (
        (y - mu) ** 2).sum(-1)


def transposed(y, x, t, log_lam, mu):
    """``Xᵀ r``: a reduction over ``X``'s non-contiguous dimension (left alone)."""
    r = torch.tanh(t)
    g = (x.mT @ r.unsqueeze(-1)).squeeze(-1)
    return (g * y).sum(-1) + 0.5 * log_lam.exp() * ((y - mu) ** 2).sum(-1)


def _case(b, k, seed, shared=False):
    g = _gen(seed)
    x = torch.randn(1 if shared else b, 10, k, generator=g, dtype=D) / k**0.5
    if shared:
        x = x[0]
    t = (torch.rand(b, 10, generator=g, dtype=D) > 0.5).to(D)
    y = torch.randn(b, k, generator=g, dtype=D)
    return y, [x, t, torch.tensor(-0.3, dtype=D), torch.randn(k, generator=g, dtype=D)]


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _matvec_bmms(gm):
    return sum(1 for n in gm.graph.nodes if matvec._matvec(n) is not None)


# thresholds on both sides: below / at / above each bound of the module's choice
KS = sorted({matvec.UNROLL_MIN_K - 1, matvec.UNROLL_MIN_K, matvec.UNROLL_MAX_K,
             matvec.UNROLL_MAX_K + 1, matvec.EXTERN_MAX_K, matvec.EXTERN_MAX_K + 1} - {0, 1})


# (the row form with a shared X is traced as one mm already: nothing to rewrite)
@pytest.mark.parametrize(("energy", "shared"), [(logistic, False), (logistic, True),
                                                (row_form, False)])
@pytest.mark.parametrize("k", KS)
def test_rewritten_graph_equals_traced_graph(energy, shared, k):
    y, ps = _case(5, k, seed=k, shared=shared)

    def value_gradient(yy, *pp):  # the value-gradient-Hessian's reverse pass, once
        return torch.func.grad_and_value(lambda z: energy(z, *pp).sum())(yy)

    vgh = functools.partial(der.value_gradient_hessian, energy)
    fns = [energy, value_gradient] + ([lambda yy, *pp: vgh(yy, pp)] if k <= 4 else [])
    for fn in fns:
        gm = make_fx(fn, tracing_mode="fake")(y, *ps)
        before = _matvec_bmms(gm)
        assert before >= 1
        ref = make_fx(fn, tracing_mode="fake")(y, *ps)
        counts = lower_matvec(gm)
        form = choose(k, shared)
        if form == "none":
            assert counts == {} and _matvec_bmms(gm) == before
        else:
            assert counts == {form: before} and _matvec_bmms(gm) == 0
            if form == "extern":
                assert EXTERN in _targets(gm)
            if form == "mm":
                assert aten.mm.default in _targets(gm)
        y2, ps2 = _case(5, k, seed=100 + k, shared=shared)  # other inputs than traced
        got, want = gm(y2, *ps2), ref(y2, *ps2)
        for g_, w_ in zip(torch.utils._pytree.tree_leaves(got),
                          torch.utils._pytree.tree_leaves(want), strict=True):
            assert g_.shape == w_.shape and g_.dtype == w_.dtype
            torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)


def test_transposed_product_float32_and_non_cpu_graphs_are_left_alone():
    y, ps = _case(4, 8, seed=1)
    gm = make_fx(transposed, tracing_mode="fake")(y, *ps)
    assert lower_matvec(gm) == {}
    assert aten.bmm.default in _targets(gm)
    # float32 (Inductor's own lowering measured fast there) is not touched
    gm = make_fx(logistic, tracing_mode="fake")(y.float(), *[p.float() for p in ps])
    assert lower_matvec(gm) == {} and aten.bmm.default in _targets(gm)
    # the same logistic graph on a non-CPU device (meta) is not touched
    meta = [p.to("meta") for p in ps]
    gm = make_fx(logistic)(y.to("meta"), *meta)
    assert _targets(gm).count(aten.bmm.default) == 1
    assert lower_matvec(gm) == {}


def test_forced_forms_are_identities_too(monkeypatch):
    """Each form at a ``K`` where the default would pick another (so all three are checked)."""
    for force in ("unroll", "extern"):
        monkeypatch.setattr(matvec, "FORCE", force)
        y, ps = _case(3, 6, seed=7)
        gm = make_fx(logistic, tracing_mode="fake")(y, *ps)
        assert lower_matvec(gm) == {force: 1}
        y2, ps2 = _case(3, 6, seed=8)
        torch.testing.assert_close(gm(y2, *ps2), logistic(y2, *ps2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,shared,full", [(8, False, True), (matvec.EXTERN_MAX_K, False, False),
                                           (8, True, False)])
def test_compiled_kernels_agree_with_eager(k, shared, full):
    """Value kernel for an unrolled, opaque and shared-matrix product; (``full``) the
    value-gradient-Hessian, multi-start candidate and mixed kernels too (their graphs
    rewritten)."""
    y, ps = _case(6, k, seed=k, shared=shared)
    ce = compiled_mod.CompiledEnergy(logistic)
    graph = ce._trace(ce._value, y, ps)
    assert _matvec_bmms(graph) == 0 and choose(k, shared) != "none"
    e0, g0, h0 = der.value_gradient_hessian(logistic, y, ps)
    with torch.no_grad():
        torch.testing.assert_close(ce(y, *ps), e0, rtol=1e-10, atol=1e-10)
        assert ce.error is None
        if not full:
            return
        e, g, h = ce.value_gradient_hessian(y, *ps)
    for got, want in ((e, e0), (g, g0), (h, h0)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    cands = torch.randn(y.shape[0], 3, k, generator=_gen(4), dtype=D)  # multi-start's kernel
    graph = ce._trace(ce._candidates, cands, ps)  # vmap's 3 copies of X folded: one (B, 10, k)
    bmms = [n for n in graph.graph.nodes if n.target == aten.bmm.default]
    assert [tuple(n.args[0].meta["val"].shape) for n in bmms] == [tuple(ps[0].shape)]
    assert _matvec_bmms(graph) == 0
    with torch.no_grad():
        scores = ce.candidate_values(cands, *ps)
    assert scores is not None and not ce.optional_errors
    torch.testing.assert_close(scores, torch.stack([logistic(cands[:, j], *ps) for j in range(3)],
                                                   1), rtol=1e-10, atol=1e-10)
    u = torch.randn(y.shape, generator=_gen(3), dtype=D)
    assert _matvec_bmms(ce._trace(functools.partial(ce._mixed, (2, 3)), y, [u, *ps])) == 0
    out = ce.mixed_vjp(y, u, ps, (2, 3))
    assert out is not None and not ce.optional_errors
    want = ce._mixed((2, 3), y, u, *ps)[1:]
    for got_, want_ in zip(out, want, strict=True):
        torch.testing.assert_close(got_, want_, rtol=1e-10, atol=1e-10)


def test_argmin_compile_true_matches_eager_solution_and_gradients():
    y0, ps = _case(6, 8, seed=11)
    grads = []
    for compile_ in (False, True):
        log_lam = ps[2].clone().requires_grad_(True)
        mu = ps[3].clone().requires_grad_(True)
        y = wibergian.argmin(logistic, torch.zeros_like(y0), (ps[0], ps[1], log_lam, mu),
                             compile=compile_, warn=False)
        (y * y0).sum().backward()
        grads.append((y.detach(), log_lam.grad, mu.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_a_raising_pass_falls_back_to_the_unrewritten_graph_counted(monkeypatch):
    def broken(gm):
        raise RuntimeError("broken pass")

    monkeypatch.setattr(compiled_mod, "lower_matvec", broken)
    before = compiled_mod.MATVEC_FALLBACKS["count"]
    y, ps = _case(4, 8, seed=5)
    ce = compiled_mod.CompiledEnergy(logistic)
    graph = ce._trace(ce._value, y, ps)
    assert compiled_mod.MATVEC_FALLBACKS["count"] == before + 1
    assert _matvec_bmms(graph) == 1  # the product as traced
    with torch.no_grad():
        got = ce(y, *ps)
    assert ce.error is None
    assert compiled_mod.MATVEC_FALLBACKS["count"] == before + 2  # the kernel's own trace
    torch.testing.assert_close(got, logistic(y, *ps), rtol=1e-12, atol=1e-12)


def test_the_mixed_kernel_reads_only_what_its_parameters_need():
    """The backward's compiled mixed product does not recompute ``∇_y E`` (the forward's is
    checked instead): for the ridge term's parameters ``(log λ, μ)`` nothing in its graph reads
    ``X`` or ``t`` once dead code is removed, and its values are the double backward's."""
    y, ps = _case(6, 8, seed=2)
    u = torch.randn(y.shape, generator=_gen(5), dtype=D)
    ce = compiled_mod.CompiledEnergy(logistic)
    graph = ce._trace(functools.partial(ce._mixed, (2, 3), with_grad=False), y, [u, *ps])
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    x_node, t_node = placeholders[2], placeholders[3]  # (y, u, X, t, log λ, μ)
    assert tuple(x_node.meta["val"].shape) == tuple(ps[0].shape)
    (output,) = [n for n in graph.graph.nodes if n.op == "output"]
    for data in (x_node, t_node):  # no output reads their values (a *_like reads the shape)
        assert output not in _reads_values_of(data)
    assert output in _reads_values_of(placeholders[1])  # u does reach it
    got = ce.mixed_vjp(y, u, ps, (2, 3))
    want = ce._mixed((2, 3), y, u, *ps)[1:]
    assert got is not None and len(got) == 2
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    lam = ps[2].exp()  # closed forms: ∂<g, u>/∂μ = -λ Σ_b u_b, ∂/∂log λ = λ Σ_b <y_b - μ, u_b>
    torch.testing.assert_close(got[1], -lam * u.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[0], lam * ((y - ps[3]) * u).sum(), rtol=1e-12, atol=1e-12)


_SHAPE_ONLY = {aten.ones_like.default, aten.zeros_like.default, aten.empty_like.default,
               aten.full_like.default}


def _reads_values_of(node):
    """The graph nodes whose values depend on ``node``'s (edges into a ``*_like`` op, which
    reads only its input's shape, do not count)."""
    seen, todo = set(), [node]
    while todo:
        for user in todo.pop().users:
            if user not in seen and user.target not in _SHAPE_ONLY:
                seen.add(user)
                todo.append(user)
    return seen
