"""The shared torch.compile kernels: same answers as eager, and a counted fallback."""

from __future__ import annotations

import pytest
import torch

from wibergian.bench import fused
from wibergian.bench.workloads import make_w1, w1_best_candidate


def _perturbed(batch: int, seed: int):
    d = make_w1(batch, seed=seed)
    g = torch.Generator().manual_seed(seed)
    m = d.m * (0.5 + torch.rand(d.m.shape, generator=g, dtype=d.m.dtype))
    s0 = d.s0 * (0.3 + 2 * torch.rand(d.s0.shape, generator=g, dtype=d.s0.dtype))
    s1 = d.s1 * (0.3 + 2 * torch.rand(d.s1.shape, generator=g, dtype=d.s1.dtype))
    return d, m, s0, s1


def test_compiled_search_picks_the_float64_argmin():
    d, m, s0, s1 = _perturbed(2500, seed=7)  # 2500 = 2 full blocks + a padded one
    fused.configure(False)
    eager = w1_best_candidate(d.a, d.c, m, s0, s1)
    fused.configure(True)
    got = w1_best_candidate(d.a, d.c, m, s0, s1)
    status = fused.STATUS.get("w1_search", {})
    if status.get("backend") != "compiled":
        pytest.skip(f"torch.compile unavailable here: {status.get('error')}")
    assert torch.equal(got, eager)
    # and the float64 argmin is what a direct evaluation gives
    u = ((d.a[:, :, None] - d.a[:, None, :]) ** 2 / s0**2
         + (d.c[:, :, None] - d.c[:, None, :]) ** 2 / s1**2)
    j = (m * torch.exp(-u)).sum(-1).argmax(-1)
    assert torch.equal(got[:, 0], d.a.gather(1, j[:, None])[:, 0])


def test_a_failing_compilation_falls_back_to_eager_and_is_recorded(monkeypatch):
    def broken_compile(fn, **_):
        def run(*args):
            raise RuntimeError("no C++ compiler (simulated)")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    d, m, s0, s1 = _perturbed(300, seed=3)
    fused.configure(False)
    eager = w1_best_candidate(d.a, d.c, m, s0, s1)
    fused.configure(True)
    got = w1_best_candidate(d.a, d.c, m, s0, s1)
    assert torch.equal(got, eager)
    status = fused.STATUS["w1_search"]
    assert status["backend"] == "eager"
    assert "simulated" in status["error"]


def test_run_blocked_pads_and_trims_the_last_block():
    calls = []

    def fn(x, scale):
        calls.append(x.shape[0])
        return x * scale, x.sum(-1)

    fused.configure(False)
    x = torch.arange(14.0).reshape(7, 2)
    y, s = fused.run_blocked("t", fn, 3, (x,), (torch.tensor(2.0),))
    assert torch.equal(y, 2 * x) and torch.equal(s, x.sum(-1))
    assert calls == [3, 3, 1]  # eager: no padding


def test_fused_w1_energy_matches_eager_and_follows_in_place_changes():
    from wibergian.bench.workloads import W1Energy

    d, m, s0, s1 = _perturbed(4100, seed=5)  # two column blocks, the second padded
    y = torch.stack([d.a[:, 3], d.c[:, 3]], -1) + 0.5
    fused.configure(False)
    ref = W1Energy().value_gradient_hessian(y, d.a, d.c, m, s0, s1)
    fused.configure(True)
    en = W1Energy()
    got = en.value_gradient_hessian(y, d.a.detach(), d.c.detach(), m, s0, s1)
    status = fused.STATUS.get("w1_vgh", {})
    if status.get("backend") != "compiled":
        pytest.skip(f"torch.compile unavailable here: {status.get('error')}")
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)
    # the transposed copies are cached per solve; an in-place change must rebuild them
    d.a[7] += 1.0
    fused.configure(False)
    ref2 = W1Energy().value_gradient_hessian(y, d.a, d.c, m, s0, s1)
    fused._settings["enabled"] = True  # keep the compiled kernel and this energy's cache
    got2 = en.value_gradient_hessian(y, d.a.detach(), d.c.detach(), m, s0, s1)
    torch.testing.assert_close(got2[1], ref2[1], rtol=0, atol=1e-12)
    assert not torch.allclose(got2[1][7], got[1][7])
