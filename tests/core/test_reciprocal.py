"""Division by a small broadcast operand rewritten as multiplication by its reciprocal
(``reciprocal.py``): where it fires, what it leaves alone, and that results stay within rounding."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import wibergian
import wibergian.reciprocal as rec
from wibergian.bench.w1 import make_w1, w1_energy

D = torch.float64
aten = torch.ops.aten


def _divs(gm) -> int:
    return sum(n.target == aten.div.Tensor for n in gm.graph.nodes)


def _scaled(y, a, s):
    return ((y[:, :1] - a) ** 2 / s**2).sum(-1) + (y / y.sum(-1, keepdim=True)).sum(-1)


def test_divisions_by_a_small_broadcast_tensor_are_hoisted_and_agree_to_rounding():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(64, 3, generator=g, dtype=D)
    a = torch.randn(64, 40, generator=g, dtype=D)
    s = torch.rand(40, generator=g, dtype=D) + 0.5
    gm = make_fx(_scaled, tracing_mode="fake")(y, a, s)
    assert _divs(gm) == 2
    want = gm(y, a, s)
    assert rec.hoist_reciprocals(gm) == 1  # (64, 40) / (40,); not (64, 3) / (64, 1)
    assert _divs(gm) == 1
    assert sum(n.target == torch.ops.wibergian.reciprocal.default for n in gm.graph.nodes) == 1
    got = gm(y, a, s)
    torch.testing.assert_close(got, want, rtol=4 * torch.finfo(D).eps, atol=0)


def test_nonfinite_divisors_keep_their_class():
    x = torch.tensor([[1.0, -1.0, 0.0, 2.0]] * 16, dtype=D)
    d = torch.tensor([0.0, 0.0, 0.0, float("inf")], dtype=D)
    gm = make_fx(lambda x, d: x / d, tracing_mode="fake")(x, d)
    want = gm(x, d)
    assert rec.hoist_reciprocals(gm) == 1
    got = gm(x, d)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got[~torch.isnan(got)], want[~torch.isnan(want)])  # ±inf and 0 exactly


def test_switched_off_or_same_size_divisions_are_left_alone(monkeypatch):
    x = torch.rand(8, 8, dtype=D) + 1
    gm = make_fx(lambda x, d: x / d, tracing_mode="fake")(x, x.clone())
    assert rec.hoist_reciprocals(gm) == 0  # the divisor is as large as the result
    gm = make_fx(lambda x, d: x / d, tracing_mode="fake")(x, x[0].clone())
    monkeypatch.setattr(rec, "ENABLED", False)
    assert rec.hoist_reciprocals(gm) == 0


@pytest.mark.parametrize("batch", [300])
def test_compiled_w1_with_reciprocals_matches_eager(batch):
    """W1's user energy (two divisions by ``s0², s1²`` per term, multi-start over 72 wells):
    compile=True (the pass rewrites its divisions) against eager, the minimisers and gradients
    equal to the solver's tolerance."""
    d = make_w1(batch)
    cands = torch.stack([d.a, d.c], -1)
    out = []
    before = rec.COUNTS["rewritten"]
    for comp in (False, True):
        s0 = d.s0.clone().requires_grad_(True)

        def energy(y, a, c, m, s0, s1):  # a fresh object: its own compiled kernels
            return w1_energy(y, a, c, m, s0, s1)

        y, info = wibergian.argmin(energy, cands[:, 0], (d.a, d.c, d.m, s0, d.s1),
                                   candidates=cands, return_info=True, compile=comp, warn=False)
        (y ** 2).sum().backward()
        out.append((y.detach(), s0.grad, info.start_index))
    assert rec.COUNTS["rewritten"] > before
    (y0, g0, i0), (y1, g1, i1) = out
    assert torch.equal(i0, i1)  # the same wells chosen
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-8)
    torch.testing.assert_close(g1, g0, rtol=1e-7, atol=1e-10)
