"""index_consts.py: ``eye`` in a traced graph stored as a constant buffer (compile=True).

Graph level: the pass replaces every ``eye`` (of any size and dtype below the limit) by a
``get_attr`` buffer and the graph's outputs stay bit-identical on inputs other than the traced
ones; it leaves graphs without ``eye`` (zeros, ``arange``, an input's ``diag_embed``), an
identity above the size limit and (switched off) every graph unchanged. End to end: the
compiled value-gradient-Hessian kernel, whose graph holds the stored identity, equals eager
autograd and the closed form to 1e-12 on the ridge-logistic energy and a ridge least-squares
energy, and the kernel built with the pass off bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import wibergian.compiled as compiled_mod
import wibergian.derivatives as der
from wibergian import index_consts
from wibergian.bench.user import logistic_energy
from wibergian.index_consts import store_identities

D = torch.float64
aten = torch.ops.aten


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _eyes(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function"
            and n.target in (aten.eye.default, aten.eye.m)]


def _buffers(gm):
    return [n for n in gm.graph.nodes if n.op == "get_attr"]


def ridge_sym(h, c):
    """The tail of a traced Hessian: ``½ (P + Pᵀ)``, ``P = H + 2 c I`` (square and
    rectangular ``eye``)."""
    p = h + (2 * torch.eye(h.shape[1], dtype=h.dtype)) * c
    q = torch.eye(h.shape[1], h.shape[2] + 1, dtype=h.dtype)[:, :-1]
    return 0.5 * (p + p.transpose(1, 2)) + q


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_identities_become_buffers_outputs_unchanged(dtype):
    h = torch.randn(3, 5, 5, generator=_gen(0), dtype=dtype)
    c = torch.tensor(0.7, dtype=dtype)
    gm = make_fx(ridge_sym)(h, c)
    assert len(_eyes(gm)) == 2
    assert store_identities(gm) == 2
    assert _eyes(gm) == [] and len(_buffers(gm)) == 2
    for node in _buffers(gm):
        buf = getattr(gm, node.target)
        assert buf.dtype == dtype and buf.shape in ((5, 5), (5, 6))
    for seed in (1, 2):  # other inputs: the graph does not depend on the traced ones
        h2 = torch.randn(3, 5, 5, generator=_gen(seed), dtype=dtype)
        c2 = torch.rand((), generator=_gen(seed), dtype=dtype)
        torch.testing.assert_close(gm(h2, c2), ridge_sym(h2, c2), rtol=0, atol=0)


def _no_eye(h, v):
    """Constants Inductor also builds from indices, none of them ``eye``."""
    r = torch.arange(h.shape[1], dtype=h.dtype)
    return h + torch.diag_embed(v) + r + torch.zeros_like(h)


def test_graphs_without_eye_large_identities_and_switched_off_are_left_alone(monkeypatch):
    h = torch.randn(2, 4, 4, generator=_gen(0), dtype=D)
    gm = make_fx(_no_eye)(h, torch.randn(2, 4, generator=_gen(1), dtype=D))
    code = gm.code
    assert store_identities(gm) == 0 and gm.code == code and _buffers(gm) == []

    monkeypatch.setattr(index_consts, "MAX_ELEMENTS", 24)  # eye(5) has 25 entries
    gm = make_fx(ridge_sym)(torch.randn(2, 5, 5, generator=_gen(2), dtype=D),
                            torch.tensor(1.0, dtype=D))
    assert store_identities(gm) == 0 and len(_eyes(gm)) == 2
    monkeypatch.setattr(index_consts, "MAX_ELEMENTS", 1 << 16)
    monkeypatch.setattr(index_consts, "ENABLED", False)
    assert store_identities(gm) == 0 and len(_eyes(gm)) == 2


def least_squares(y, w, t, log_lam):
    """``½ ||W y - t||² + ½ λ ||y||²``: ``H = Wᵀ W + λ I`` for every ``y``."""
    r = (w @ y.unsqueeze(-1)).squeeze(-1) - t
    return 0.5 * (r * r).sum(-1) + 0.5 * log_lam.exp() * (y * y).sum(-1)


def _logistic(b, n):
    g = _gen(n)
    x = torch.randn(b, 12, n, generator=g, dtype=D) / n**0.5
    t = (torch.rand(b, 12, generator=g, dtype=D) > 0.5).to(D)
    ps = [x, t, torch.tensor(-0.4, dtype=D), torch.randn(n, generator=g, dtype=D)]
    s_of = lambda y: torch.sigmoid((x @ y.unsqueeze(-1)).squeeze(-1))  # noqa: E731
    closed = lambda y: x.mT @ ((s_of(y) * (1 - s_of(y))).unsqueeze(-1) * x)  # noqa: E731
    return logistic_energy, ps, closed


def _least_squares(b, n):
    g = _gen(n + 1)
    w = torch.randn(b, 9, n, generator=g, dtype=D)
    ps = [w, torch.randn(b, 9, generator=g, dtype=D), torch.tensor(0.3, dtype=D)]
    return least_squares, ps, lambda y: w.mT @ w


@pytest.mark.parametrize("case", [_logistic, _least_squares])
def test_compiled_vgh_with_stored_identity_equals_eager_and_closed_form(case):
    b, n = 6, 8
    energy, ps, closed = case(b, n)
    lam = ps[-2].exp() if case is _logistic else ps[-1].exp()
    y = torch.randn(b, n, generator=_gen(7), dtype=D)
    ce = compiled_mod.CompiledEnergy(lambda yy, *pp: energy(yy, *pp))
    gm = ce._trace(ce._vgh_route(n), y, ps)
    assert _eyes(gm) == [] and len(_buffers(gm)) >= 1  # the ridge's λI reads the buffer
    with torch.no_grad():
        e, g, h = ce.value_gradient_hessian(y, *ps)
        assert ce.error is None
        y2 = torch.randn(b, n, generator=_gen(8), dtype=D)  # the kernel again, other point
        e2, g2, h2 = ce.value_gradient_hessian(y2, *ps)
    for yy, got in ((y, (e, g, h)), (y2, (e2, g2, h2))):
        want = der.value_gradient_hessian(energy, yy, ps)  # n reverse passes, eager
        for a, w in zip(got, want, strict=True):
            torch.testing.assert_close(a, w, rtol=1e-12, atol=1e-12 * w.abs().max().item())
        torch.testing.assert_close(got[2], closed(yy) + lam * torch.eye(n, dtype=D),
                                   rtol=1e-12, atol=1e-12)
    if case is _logistic:  # the kernel built without the pass: the same bits
        old = index_consts.ENABLED
        index_consts.ENABLED = False
        try:
            off = compiled_mod.CompiledEnergy(lambda yy, *pp: energy(yy, *pp))
            assert _eyes(off._trace(off._vgh_route(n), y, ps))
            with torch.no_grad():
                ref = off.value_gradient_hessian(y2, *ps)
        finally:
            index_consts.ENABLED = old
        for a, w in zip((e2, g2, h2), ref, strict=True):
            torch.testing.assert_close(a, w, rtol=0, atol=0)
