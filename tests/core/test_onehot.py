"""onehot.py and matvec's two-output rule: the compiled reverse-route Hessian (n < FUNC_MIN_N).

The reverse route's row ``i`` pushes the one-hot cotangent ``e_i`` back through ``z = X y``:
``bmm(X, e_i)``, rewritten to column ``i`` of ``X``. Checked on whole traced graphs (the
ridge-logistic energy, a shared-weight MLP: the rule fires, outputs equal the unsimplified
graph's and the closed form) and on tiny graphs where a naive rewrite would be wrong (the rule
must not fire). Float64 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import wibergian.compiled as compiled_mod
import wibergian.derivatives as der
from wibergian import matvec
from wibergian.bench.user import logistic_energy
from wibergian.simplify import simplify_graph

D = torch.float64
aten = torch.ops.aten


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def mlp(y, t, w1, b1, w2, lam):
    """Shared weights (``mm``, not ``bmm``) and a tanh."""
    r = torch.tanh(y @ w1.T + b1) @ w2.T - t
    return 0.5 * (r * r).sum(-1) + 0.5 * lam * (y * y).sum(-1)


def _logistic(b, n, seed):
    g = _gen(seed)
    x = torch.randn(b, 12, n, generator=g, dtype=D) / math.sqrt(n)
    t = (torch.rand(b, 12, generator=g, dtype=D) > 0.5).to(D)
    return torch.randn(b, n, generator=g, dtype=D), (
        x, t, torch.tensor(-0.4, dtype=D), torch.randn(n, generator=g, dtype=D))


def _mlp(b, n, seed):
    g = _gen(seed)
    return torch.randn(b, n, generator=g, dtype=D), (
        torch.randn(b, 5, generator=g, dtype=D), torch.randn(7, n, generator=g, dtype=D),
        torch.randn(7, generator=g, dtype=D), torch.randn(5, 7, generator=g, dtype=D),
        torch.tensor(0.5, dtype=D))


def _closed_hessian(y, x, t, log_lam, mu):
    s = torch.sigmoid((x @ y.unsqueeze(-1)).squeeze(-1))
    return x.mT @ ((s * (1 - s)).unsqueeze(-1) * x) + log_lam.exp() * torch.eye(y.shape[1],
                                                                               dtype=D)


def _reverse_graph(energy, y, ps):
    return make_fx(lambda yy, *pp: der.value_gradient_hessian(energy, yy, pp),
                   tracing_mode="fake")(y, *ps)


def _one_hot_bmms(gm):
    """``bmm`` / ``mm`` nodes with an operand whose value depends on no input (built from
    ``ones_like``, ``zeros``, … of any tensor: only its shape is read)."""
    creators = {aten.ones_like.default, aten.zeros_like.default, aten.full_like.default,
                aten.zeros.default, aten.ones.default, aten.full.default, aten.eye.default}

    def const(x):
        stack, seen = [x], set()
        while stack:
            nd = stack.pop()
            if nd.op == "placeholder":
                return False
            if nd.target in creators:
                continue
            for a in nd.all_input_nodes:
                if a not in seen:
                    seen.add(a)
                    stack.append(a)
        return True
    return sum(1 for nd in gm.graph.nodes if nd.target in (aten.bmm.default, aten.mm.default)
               and any(const(a) for a in nd.all_input_nodes))


@pytest.mark.parametrize(("energy", "make", "n", "products"),
                         [(logistic_energy, _logistic, 2, 2), (logistic_energy, _logistic, 3, 3),
                          (mlp, _mlp, 2, 2)])
def test_reverse_graph_loses_its_one_hot_products(energy, make, n, products):
    y, ps = make(6, n, 0)
    with torch.no_grad():
        plain = _reverse_graph(energy, y, ps)
        simple = _reverse_graph(energy, y, ps)
        assert _one_hot_bmms(plain) == products
        counts = simplify_graph(simple)
        assert counts.get("one-hot product") == products, counts
        assert _one_hot_bmms(simple) == 0
        for seed in (1, 2):  # input-independent graphs: other data, same shapes
            y2, ps2 = make(6, n, seed)
            got, want = simple(y2, *ps2), plain(y2, *ps2)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape and g.dtype == w.dtype
                torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
            if energy is logistic_energy:
                torch.testing.assert_close(got[2], _closed_hessian(y2, *ps2), rtol=1e-12,
                                           atol=1e-12)


def test_compiled_reverse_route_equals_eager_and_closed_form():
    """n = 2, compile=True's kernel: the reverse graph simplified (one-hot products gone) and
    its two-output ``Xᵀ r`` products as two reductions (matvec.NARROW_M); value, gradient and
    Hessian equal eager and ``Xᵀ diag(σ') X + e^{log λ} I``."""
    y, ps = _logistic(40, 2, 3)
    ps = (torch.randn(40, 16, 2, generator=_gen(4), dtype=D), torch.rand(40, 16, generator=_gen(5),
                                                                         dtype=D), *ps[2:])
    before = (dict(compiled_mod.FALLBACKS), dict(compiled_mod.SIMPLIFY_FALLBACKS),
              dict(compiled_mod.MATVEC_FALLBACKS))
    ce = compiled_mod.CompiledEnergy(lambda yy, *pp: logistic_energy(yy, *pp))
    graph = ce._trace(ce._vgh_route(2), y, list(ps))
    assert _one_hot_bmms(graph) == 0
    assert not any(nd.target == aten.bmm.default and nd.meta["val"].shape[1:] == (2, 1)
                   for nd in graph.graph.nodes)  # the Xᵀ r products: two reductions each
    with torch.no_grad():
        e, g, h = ce.value_gradient_hessian(y, *ps)
    assert ce.error is None
    e0, g0, h0 = der.value_gradient_hessian(logistic_energy, y, ps)
    for got, want in ((e, e0), (g, g0), (h, h0), (h, _closed_hessian(y, *ps))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert before == (dict(compiled_mod.FALLBACKS), dict(compiled_mod.SIMPLIFY_FALLBACKS),
                      dict(compiled_mod.MATVEC_FALLBACKS))


# ------------------------------------------------------------------ the rule on tiny graphs

A = torch.randn(3, 5, 4, generator=_gen(7), dtype=D)


def _check(fn, *inputs, fires):
    """Trace and simplify ``fn``: the outputs equal eager's bit for bit; the one-hot rule fired
    ``fires`` times."""
    gm = make_fx(fn, tracing_mode="fake")(*inputs)
    counts = simplify_graph(gm)
    assert counts.get("one-hot product", 0) == fires, counts
    got, want = gm(*inputs), fn(*inputs)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    return gm


def _e(k, size=4, scale=1.0, batch=3):
    """``scale·e_k`` as a reverse pass builds it: ``select_backward`` of a broadcast constant."""
    ones = torch.full((), scale, dtype=D).expand(batch)
    return aten.select_backward(ones, [batch, size], 1, k)


@pytest.mark.parametrize("scale", [1.0, -2.5])
def test_one_hot_column_row_and_shared_products(scale):
    _check(lambda a: torch.bmm(a, _e(2, scale=scale).unsqueeze(2)), A, fires=1)  # column 2
    _check(lambda a: torch.bmm(_e(1, 5, scale).unsqueeze(1), a), A, fires=1)  # row 1
    w = torch.randn(4, 6, generator=_gen(8), dtype=D)
    _check(lambda ww: torch.mm(_e(3, scale=scale), ww), w, fires=1)  # rows of mm(V, W)
    _check(lambda ww: torch.mm(ww.T, _e(0, 4, scale, 2).T), w, fires=1)  # columns of mm(W, V)
    def sliced(a):  # a slice's cotangent: slice_backward of ones into column 2
        sl = aten.slice_backward(torch.ones(3, 1, dtype=D), [3, 4], 1, 2, 3, 1)
        return torch.bmm(a, sl.unsqueeze(2))
    _check(sliced, A, fires=1)


# every constant is built inside the traced function (a captured tensor is no computation)
@pytest.mark.parametrize("basis", [
    lambda: (_e(0) + _e(3)).unsqueeze(2),                 # two non-zeros per column
    lambda: torch.eye(4, dtype=D)[:3].unsqueeze(2),       # e_b in batch b: a gather
    lambda: torch.eye(4, dtype=D)[:, :2].expand(3, 4, 2),  # columns e_0, e_1: other fibres
    lambda: _e(1, scale=0.0).unsqueeze(2),                # all zero (the zero rule's case)
])
def test_products_that_are_not_one_hot_are_kept(basis):
    _check(lambda a: torch.bmm(a, basis()), A, fires=0)


def test_one_hot_of_an_input_is_not_assumed():
    e_in = _e(2).unsqueeze(2).contiguous()  # the values of e_2, but an input: not a constant
    _check(lambda a, v: torch.bmm(a, v), A, e_in, fires=0)


def test_one_hot_select_of_a_mutated_operand_is_not_taken():
    def fn(a):
        b = a.clone()
        z = torch.bmm(b, _e(1).unsqueeze(2))
        b.mul_(2)  # the select would be a view of b: it must not see this write
        return z + b.sum()
    _check(fn, A, fires=0)


# ------------------------------------------------------------- matvec: two outputs, strided K

def _xt_r(x, r):
    return torch.bmm(x.mT, r.unsqueeze(-1))


@pytest.mark.parametrize(("n", "k", "dtype", "fires"), [
    (2, 16, D, True), (3, 16, D, False), (2, 4, D, False), (2, 16, torch.float32, False)])
def test_two_output_products_become_two_reductions(n, k, dtype, fires):
    x = torch.randn(5, k, n, generator=_gen(9), dtype=dtype)
    r = torch.randn(5, k, generator=_gen(10), dtype=dtype)
    for fn, args in ((_xt_r, (x, r)),  # Xᵀ r: (B, n, K) @ (B, K, 1), K strided
                     (lambda xx, rr: torch.bmm(rr.unsqueeze(1), xx), (x, r))):  # rᵀ X
        gm = make_fx(fn, tracing_mode="fake")(*args)
        counts = matvec.lower_matvec(gm)
        assert counts == ({"narrow": 1} if fires else {}), counts
        assert (aten.bmm.default in {nd.target for nd in gm.graph.nodes}) != fires
        x2 = torch.randn(5, k, n, generator=_gen(11), dtype=dtype)
        r2 = torch.randn(5, k, generator=_gen(12), dtype=dtype)
        args2 = (x2, r2)
        got, want = gm(*args2), fn(*args2)
        assert got.shape == want.shape and got.is_contiguous() == want.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
