"""simplify.py: the rewrites of the traced torch.func Hessian graph (compile=True), float64.

Whole graphs: the simplified graph of four energies of different shapes (batched ``bmm`` data,
per-problem wells, a shared-weight MLP, a robust line fit) gives the unsimplified graph's value,
gradient and Hessian on inputs other than the traced ones, and the logistic Hessian its closed
form. Per rewrite: a tiny graph where the identity holds (the rule fires, outputs unchanged) and
one where it does not (the rule must not fire: a naive rewrite would change the outputs).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import wibergian.compiled as compiled_mod
import wibergian.derivatives as der
from wibergian.bench.workloads import make_w1, w1_energy
from wibergian.fold import fold_expanded_bmm
from wibergian.simplify import simplify_graph

D = torch.float64
aten = torch.ops.aten


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def logistic(y, x, t, log_lam, mu):
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    nll = (torch.nn.functional.softplus(z) - t * z).sum(-1)
    return nll + 0.5 * log_lam.exp() * ((y - mu) ** 2).sum(-1)


def mlp(y, t, w1, b1, w2, lam):
    """A small MLP inside the energy: shared weights (``mm``, not ``bmm``), tanh."""
    r = torch.tanh(y @ w1.T + b1) @ w2.T - t
    return 0.5 * (r * r).sum(-1) + 0.5 * lam * (y * y).sum(-1)


def geman_mcclure(y, x, t, log_s):
    """Robust line fit, Geman-McClure ρ(r) = r²/(r² + s²)."""
    r = t - y[:, :1] - y[:, 1:2] * x
    r2 = r * r
    return (r2 / (r2 + torch.exp(2 * log_s))).sum(-1) + 1e-3 * (y * y).sum(-1)


def _logistic_case(b, n, seed):
    g = _gen(seed)
    x = torch.randn(b, 12, n, generator=g, dtype=D) / math.sqrt(n)
    t = (torch.rand(b, 12, generator=g, dtype=D) > 0.5).to(D)
    y = torch.randn(b, n, generator=g, dtype=D)
    return logistic, y, (x, t, torch.tensor(-0.4, dtype=D), torch.randn(n, generator=g, dtype=D))


def _w1_case(b, n, seed):
    w = make_w1(b, seed=seed)
    y = torch.stack([w.a[:, 0], w.c[:, 0]], -1) + 0.1
    return w1_energy, y, (w.a, w.c, w.m, w.s0, w.s1)


def _mlp_case(b, n, seed):
    g = _gen(seed)
    return mlp, torch.randn(b, n, generator=g, dtype=D), (
        torch.randn(b, 5, generator=g, dtype=D), torch.randn(7, n, generator=g, dtype=D),
        torch.randn(7, generator=g, dtype=D), torch.randn(5, 7, generator=g, dtype=D),
        torch.tensor(0.5, dtype=D))


def _gm_case(b, n, seed):
    g = _gen(seed)
    x = torch.linspace(-1, 1, 9, dtype=D).expand(b, 9).contiguous()
    t = 0.3 + 0.8 * x + 0.3 * torch.randn(b, 9, generator=g, dtype=D)
    return geman_mcclure, 0.5 * torch.randn(b, 2, generator=g, dtype=D), (
        x, t, torch.tensor(-1.0, dtype=D))


def _traced(energy, y, ps):
    def vgh(yy, *pp):
        return der.func_value_gradient_hessian(energy, yy, pp)

    gm = make_fx(vgh, tracing_mode="fake")(y, *ps)
    fold_expanded_bmm(gm)
    return gm


CASES = {"logistic": (_logistic_case, 6, {"identity product"}),
         "w1": (_w1_case, 2, {"unit factor"}),
         "mlp": (_mlp_case, 4, {"one-hot product", "zero product"}),
         "geman-mcclure": (_gm_case, 2, {"copy into fresh buffer"})}


@pytest.mark.parametrize("name", list(CASES))
def test_simplified_graph_equals_unsimplified_on_fresh_inputs(name):
    make, n, rules = CASES[name]
    energy, y, ps = make(5, n, 0)
    with torch.no_grad():
        plain = _traced(energy, y, ps)
        simple = _traced(energy, y, ps)
        counts = simplify_graph(simple)
        assert rules <= set(counts), counts  # the rewrites this graph needs did fire
        assert len(simple.graph.nodes) < len(plain.graph.nodes)
        for seed in (1, 2):  # the graphs are input-independent: other data, same shapes
            _, y2, ps2 = make(5, n, seed)
            want = plain(y2, *ps2)
            got = simple(y2, *ps2)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape and g.dtype == w.dtype
                torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12 * w.abs().max())
            reverse = der.value_gradient_hessian(energy, y2, ps2)  # n reverse passes, eager
            torch.testing.assert_close(got[2], reverse[2], rtol=1e-10, atol=1e-10)
            if name == "logistic":  # the closed form Xᵀ diag(σ') X + λI
                x, t, log_lam, mu = ps2
                s = torch.sigmoid((x @ y2.unsqueeze(-1)).squeeze(-1))
                h = x.mT @ ((s * (1 - s)).unsqueeze(-1) * x) + log_lam.exp() * torch.eye(n,
                                                                                        dtype=D)
                torch.testing.assert_close(got[2], h, rtol=1e-12, atol=1e-12)
    if name == "logistic":  # no product with the basis is left: one bmm for H, two for E, g
        bmms = [nd for nd in simple.graph.nodes if nd.target == aten.bmm.default]
        assert len(bmms) == 3


def test_large_basis_is_still_recognised(monkeypatch):
    """vmap's basis ``(n, B, n)`` too large to copy (n = 128, B = 4096 in use; here the limit
    is lowered): the reshapes are followed back to a view of ``eye``, the product still goes."""
    import wibergian.simplify as simplify_mod

    monkeypatch.setattr(simplify_mod, "MAX_CONST", 40)  # eye(6) fits, n·B·n = 180 does not
    energy, y, ps = _logistic_case(5, 6, 0)
    with torch.no_grad():
        gm = _traced(energy, y, ps)
        assert simplify_graph(gm).get("identity product") == 1
        torch.testing.assert_close(gm(y, *ps)[2], der.value_gradient_hessian(energy, y, ps)[2],
                                   rtol=1e-10, atol=1e-12)


def test_compiled_trace_is_simplified(monkeypatch):
    """compile=True's traced torch.func graph is the simplified one (no compilation here)."""
    monkeypatch.setattr(compiled_mod, "FUNC_MIN_N", 1)
    energy, y, ps = _logistic_case(4, 3, 0)
    ce = compiled_mod.CompiledEnergy(lambda yy, *pp: energy(yy, *pp))
    with torch.no_grad():
        gm = ce._trace(ce._vgh_route(3), y, list(ps))
        got = gm(y, *ps)
    assert not any(nd.target == aten.eye.default and any(u.target == aten.bmm.default
                                                       for u in nd.users)
                   for nd in gm.graph.nodes)
    for g, w in zip(got, der.value_gradient_hessian(energy, y, ps), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ one rewrite at a time


def _check(fn, *inputs, fires=None, absent=()):
    """Trace ``fn``, simplify; the outputs are bit-identical to the eager function's (the
    rewrites are exact), ``fires`` fired (or nothing fired when ``None``) and no node targets
    ``absent``."""
    gm = make_fx(fn, tracing_mode="fake")(*inputs)
    counts = simplify_graph(gm)
    if fires is None:
        assert counts == {}, counts
    else:
        assert counts.get(fires, 0) >= 1, counts
    targets = {nd.target for nd in gm.graph.nodes}
    assert not targets & set(absent), targets
    got, want = gm(*inputs), fn(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
    return gm, counts


A = torch.randn(2, 4, 3, generator=_gen(3), dtype=D)


def test_identity_basis_product():
    _check(lambda a: torch.bmm(a, torch.eye(3, dtype=D).expand(2, 3, 3)) * 2, A,
           fires="identity product", absent={aten.bmm.default})
    _check(lambda a: torch.bmm(torch.eye(4, dtype=D).expand(2, 4, 4), a) * 2, A,
           fires="identity product", absent={aten.bmm.default})


@pytest.mark.parametrize("basis", [
    lambda: 2 * torch.eye(3, dtype=D),                    # a scaled identity
    lambda: torch.ones(3, 3, dtype=D) - torch.eye(3, dtype=D),  # one-hot's complement
    lambda: torch.eye(3, dtype=D) + 1e-300,               # almost the identity
])
def test_non_identity_basis_is_kept(basis):
    gm, _ = _check(lambda a: torch.bmm(a, basis().expand(2, 3, 3)), A, fires=None)
    assert any(nd.target == aten.bmm.default for nd in gm.graph.nodes)


def test_identity_of_an_input_is_not_assumed():
    eye = torch.eye(3, dtype=D).expand(2, 3, 3).contiguous()  # an input: not a constant
    _check(lambda a, e: torch.bmm(a, e) * 2, A, eye, fires=None)


def test_one_hot_rows_product():
    w = torch.randn(3, 5, generator=_gen(4), dtype=D)

    def blocked(ww):  # rows e_0 ×4, e_1 ×4, e_2 ×4: vmap's basis over 4 problems
        s = torch.eye(3, dtype=D)[:, None, :].expand(3, 4, 3).reshape(12, 3)
        return torch.mm(s, ww) * 2

    def tiled(ww):  # rows e_0, e_1, e_2, e_0, ...
        s = torch.eye(3, dtype=D)[None].expand(4, 3, 3).reshape(12, 3)
        return torch.mm(s, ww) * 2

    def first_row(ww):  # one-hot rows, all e_0: not vmap's basis; row 0 of w (onehot.py)
        s = torch.eye(3, dtype=D)[0:1][:, None, :].expand(3, 4, 3).reshape(12, 3)
        return torch.mm(s, ww) * 2

    _check(blocked, w, fires="one-hot product", absent={aten.mm.default})
    _check(tiled, w, fires="one-hot product", absent={aten.mm.default})
    _check(first_row, w, fires="one-hot product", absent={aten.mm.default})


def test_zero_products_and_sums():
    x = torch.randn(2, 3, 4, generator=_gen(5), dtype=D)
    zeros = lambda *s: torch.zeros((), dtype=D).expand(*s)  # noqa: E731
    _check(lambda a: torch.bmm(zeros(2, 5, 3), a) + 1, x, fires="zero product",
           absent={aten.bmm.default})
    _check(lambda a: torch.ops.aten.sigmoid_backward(zeros(2, 3, 4), a) + a, x,
           fires="zero product")
    _check(lambda a: (a * 3) + zeros(2, 3, 4), x, fires="add zero", absent={aten.add.Tensor})
    # not zero: a tiny constant
    _check(lambda a: torch.bmm(torch.full((2, 5, 3), 1e-300, dtype=D), a) + 1, x, fires=None)
    # the zero is the second argument of a *_backward op (its output, not its gradient)
    _check(lambda a: torch.ops.aten.sigmoid_backward(a, zeros(2, 3, 4)) + 1, x, fires=None)


def test_add_zero_keeps_dtype_and_shape():
    x32 = torch.randn(2, 3, generator=_gen(6), dtype=torch.float32)
    # float32 + float64 zeros is float64: returning x would change the dtype
    _check(lambda a: (a * 3) + torch.zeros(2, 3, dtype=D), x32, fires=None)
    # the zeros broadcast x up to (4, 2, 3): returning x would change the shape
    _check(lambda a: (a * 3) + torch.zeros(4, 2, 3, dtype=torch.float32), x32, fires=None)


def test_unit_factors_and_powers():
    x = torch.randn(3, 4, generator=_gen(7), dtype=D)
    _check(lambda a: torch.sin(a) * 1, x, fires="unit factor", absent={aten.mul.Tensor})
    _check(lambda a: torch.sin(a) ** 1.0, x, fires="unit factor")
    _check(lambda a: torch.sin(a) * torch.ones(3, 4, dtype=D), x, fires="unit factor")
    gm, _ = _check(lambda a: torch.sin(a) ** 0.0 * a, torch.tensor([[float("nan"), 2.0]],
                                                                     dtype=D),
                   fires="power zero", absent={aten.pow.Tensor_Scalar})
    i = torch.arange(6).reshape(2, 3)
    _check(lambda a: (a + 1) * 1.0 + 0, i, fires=None)  # int * 1.0 is float: kept
    _check(lambda a: torch.sin(a) * 1.5, x, fires=None)
    _check(lambda a: torch.sin(a) * torch.ones(2, 3, 4, dtype=D), x, fires=None)  # broadcasts


def test_copies_of_unchanged_tensors():
    v = torch.randn(1, 4, generator=_gen(8), dtype=D)
    _check(lambda a: torch.sin(a).expand(5, 4).clone() * 2, v, fires="copy of unchanged tensor",
           absent={aten.clone.default})
    # a dtype change is a real conversion
    _check(lambda a: torch.sin(a).expand(5, 4).to(torch.float32) * 2, v, fires=None)
    # a copy that makes a permuted tensor contiguous is kept (the layout is its purpose)
    m = torch.randn(3, 4, generator=_gen(9), dtype=D)
    gm = make_fx(lambda a: torch.sin(a).t().clone(memory_format=torch.contiguous_format) * 2,
                 tracing_mode="fake")(m)
    assert "copy of unchanged tensor" not in simplify_graph(gm)


def test_copy_into_fresh_buffer_and_mutated_buffers():
    v = torch.randn(4, generator=_gen(10), dtype=D)

    def fresh(a):
        buf = torch.zeros(3, 4, dtype=D)
        return buf.copy_(torch.sin(a)) * 2

    _check(fresh, v, fires="copy into fresh buffer", absent={aten.copy_.default})

    def viewed(a):  # a view of the buffer, taken before the copy, sees the copied values
        buf = torch.zeros(3, 4, dtype=D)
        row = buf[0]
        out = buf.copy_(torch.sin(a)) * 2
        return out + row

    gm = make_fx(viewed, tracing_mode="fake")(v)
    assert "copy into fresh buffer" not in simplify_graph(gm)
    torch.testing.assert_close(gm(v), viewed(v), rtol=0, atol=0)


def test_outputs_never_alias_inputs():
    x = torch.randn(3, 4, generator=_gen(11), dtype=D)
    gm = make_fx(lambda a: (a * 1, a.expand(2, 3, 4) * 1), tracing_mode="fake")(x)
    assert simplify_graph(gm).get("unit factor") == 2
    out, wide = gm(x)
    assert out.data_ptr() != x.data_ptr() and wide.is_contiguous()
    out.add_(1.0)  # a caller may update an output in place
    assert not torch.equal(out, x)
