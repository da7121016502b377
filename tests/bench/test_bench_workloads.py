"""Workload definitions, the memory probe, the growth-exponent fit and the report."""

from __future__ import annotations

import pytest
import torch

from wibergian.bench import machine
from wibergian.bench.report import render, targets_section
from wibergian.bench.scaling import growth_exponent
from wibergian.bench.workloads import (
    K_WELLS,
    N_INLIERS,
    W1Energy,
    make_w1,
    w1_best_candidate,
    w1_energy,
)


def test_w1_generation_spec():
    d = make_w1(2000, seed=0)
    assert d.a.shape == (2000, K_WELLS) and d.a.dtype == torch.float64
    inl = torch.stack([d.a[:, :N_INLIERS], d.c[:, :N_INLIERS]], -1) - d.g[:, None]
    assert inl.std().item() == pytest.approx(3.0, rel=0.02)
    out = torch.stack([d.a[:, N_INLIERS:], d.c[:, N_INLIERS:]], -1)
    assert out.abs().max() <= 60.0 and out.abs().max() > 59.0
    assert torch.equal(d.a, make_w1(2000, seed=0).a)  # seeded
    assert (d.m == 1).all() and (d.s0 == 10).all() and (d.s1 == 10).all()


def test_w1_closed_forms_match_autograd_across_blocks():
    d = make_w1(23, seed=5)
    en = W1Energy(rows=7)  # 4 blocks, the last one short
    ps = (d.a, d.c, d.m * (1 + torch.rand(K_WELLS, dtype=torch.float64)), d.s0, d.s1)
    y = (d.g + torch.randn(23, 2, dtype=torch.float64)).requires_grad_(True)
    e = w1_energy(y, *ps)
    (g,) = torch.autograd.grad(e.sum(), y, create_graph=True)
    h = torch.stack([torch.autograd.grad(g[:, i].sum(), y, retain_graph=True)[0]
                     for i in range(2)], 1)
    with torch.no_grad():
        ev, gv, hv = en.value_gradient_hessian(y, *ps)
    assert torch.allclose(ev, e, atol=1e-12) and torch.allclose(en(y, *ps), e, atol=1e-12)
    assert torch.allclose(gv, g, atol=1e-12) and torch.allclose(en.gradient(y, *ps), g)
    assert torch.allclose(hv, h, atol=1e-12) and torch.allclose(en.hessian(y, *ps), h)


def test_best_candidate_matches_brute_force():
    d = make_w1(37, seed=6)
    y0 = w1_best_candidate(d.a, d.c, d.m, d.s0, d.s1, chunk_bytes=3 * K_WELLS * K_WELLS * 8)
    cand = torch.stack([d.a, d.c], -1)
    es = torch.stack([w1_energy(cand[:, j], d.a, d.c, d.m, d.s0, d.s1) for j in range(K_WELLS)], 1)
    best = cand[torch.arange(37), es.argmin(1)]
    assert torch.equal(y0, best)


def test_growth_exponent_recovers_power_law():
    xs = [1e3, 3e3, 1e4, 3e4]
    assert growth_exponent(xs, [2.0 * x**1.5 for x in xs]) == pytest.approx(1.5, abs=1e-9)
    with pytest.raises(ValueError):
        growth_exponent([1.0], [1.0])


_PROBE = """
import gc, json, numpy as np
from wibergian.bench import machine
machine.set_malloc_threshold(machine.SMALL_THRESHOLD)
gc.collect(); machine.trim()
if not machine.reset_peak():
    print(json.dumps(None)); raise SystemExit
base = machine.rss_mib()
a = np.ones(8_000_000)  # 61 MiB, every page written
peak = machine.peak_mib()
del a
gc.collect(); machine.trim(); machine.reset_peak()
print(json.dumps([base, peak, machine.peak_mib()]))
"""


def test_peak_memory_probe_sees_a_large_allocation():
    # In a fresh interpreter: what earlier tests left in this process's heap (freed pages that
    # an allocation can reuse without growing the resident set) must not change the result.
    import json
    import os
    import subprocess
    import sys

    if not machine.reset_peak():
        pytest.skip("/proc/self/clear_refs not available")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=120, env=env, check=True).stdout
    got = json.loads(out)
    if got is None:
        pytest.skip("/proc/self/clear_refs not available")
    base, peak, after = got
    assert peak - base > 50
    assert after - base < 20  # freed memory left the resident set


def _row(lib, fwd, bwd, fpk=10.0, bpk=10.0):
    return {"library": lib, "gradient": "g", "ref_damping": 0.0, "agreement_rel_error": 0.0,
            "agreement_tolerance": 1e-6, "repeats": 3, "forward_s": fwd, "backward_s": bwd,
            "total_s": fwd + bwd, "forward_peak_mib": fpk, "retained_after_forward_mib": 0.0,
            "backward_peak_mib": bpk, "first_call_s": None, "total_ratio_to_ours": 1.0}


def test_report_targets_verdicts():
    early = {"stops_when_converged": True}
    w1 = {"workload": "W1", "size": 20000, "label": "W1", "primary": "ours", "rounds": 3,
          "stop_reason": "stable", "wall_s": 1.0, "load_before": [1, 1, 1],
          "load_after": [1, 1, 1],
          "methods": {"ours": _row("wibergian", 1.0, 0.2),
                      "torch unrolled": _row("torch", 4.0, 2.0),
                      "ours (stops when converged)": {**_row("wibergian", 0.3, 0.1), **early},
                      "torch unrolled (4 iterations)": {**_row("torch", 0.6, 0.4), **early},
                      "jaxopt ridge-CG": _row("jaxopt", 1.5, 0.1),
                      "optimistix Newton": {**_row("optimistix", 0.5, 0.1), **early}}}
    text = targets_section({"workloads": [w1]})
    lines = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| W1")}

    def line(prefix: str) -> str:
        (hit,) = [v for k, v in lines.items() if k.startswith(prefix)]
        return hit

    assert "**met**" in line("W1 B=20000: ours total ≤ fastest JAX anchor running the same")
    assert "(jaxopt ridge-CG)" in line("W1 B=20000: ours total ≤ fastest JAX anchor running")
    assert "**met**" in line("W1 B=20000: ours total ≤ fastest JAX anchor, both stopping")  # .4<.6
    assert "not met" in line("W1 B=20000: ours (20 iterations) total ≤ optimistix")  # 1.2 > 0.6
    assert "**met**" in line("W1 B=20000: ≥ 5× faster than unrolled PyTorch (20")  # 6/1.2 = 5
    assert "not met" in line("W1 B=20000: ≥ 5× faster than unrolled PyTorch, both")  # 1.0/0.4
    assert "**met**" in line("W1 B=20000: backward ≤ 0.25× forward")
    doc = render({"machine": {"cpu_model": "X", "logical_cores": 2}, "workloads": [w1]})
    assert "optimistix Newton" in doc and "| cpu_model | X |" in doc


def test_w2_closed_hessian_matches_autograd():
    from wibergian.bench.workloads import W2Energy, make_w2, w2_energy

    d = make_w2(3, seed=2)
    sigma = d.sigma * (1 + torch.rand(d.sigma.shape, dtype=torch.float64))
    y = torch.randn(3, d.A.shape[1], dtype=torch.float64)
    h = torch.stack([torch.autograd.functional.hessian(
        lambda v, i=i: w2_energy(v[None], d.w[i:i + 1], d.x[i:i + 1], d.A, sigma).sum(), y[i])
        for i in range(3)])
    torch.testing.assert_close(W2Energy().hessian(y, d.w, d.x, d.A, sigma), h, rtol=0,
                               atol=1e-10)


def test_w3_closed_gradient_and_its_hvp_match_autograd():
    pytest.importorskip("skimage")
    from wibergian.bench.workloads import W3Energy, make_w3

    d = make_w3(12, seed=1)
    en = W3Energy(d.shape)
    y = (d.noisy + 0.3 * torch.randn(d.noisy.shape, dtype=torch.float64)).requires_grad_(True)
    f = d.filters.clone().requires_grad_(True)
    ps = (d.noisy, f, d.alpha * 3, d.scale)
    (g_auto,) = torch.autograd.grad(en(y, *ps).sum(), y, create_graph=True)
    g_closed = en.gradient(y, *ps)
    torch.testing.assert_close(g_closed, g_auto, rtol=0, atol=1e-10)
    v = torch.randn(y.shape, dtype=torch.float64)
    # Hessian-vector product and mixed derivative (what the CG adjoint differentiates)
    auto = torch.autograd.grad((g_auto * v).sum(), (y, f))
    closed = torch.autograd.grad((g_closed * v).sum(), (y, f))
    for a, c in zip(auto, closed, strict=True):
        torch.testing.assert_close(c, a, rtol=0, atol=1e-10)
    # the declared linearised operator used by the CG adjoint
    hv = en.hvp_operator(y.detach(), *(t.detach() for t in ps))(v)
    torch.testing.assert_close(hv, auto[0], rtol=0, atol=1e-10)
    # value and gradient from one pass (L-BFGS's line search)
    e_vg, g_vg = en.value_and_gradient(y.detach(), *(t.detach() for t in ps))
    torch.testing.assert_close(e_vg, en(y, *ps).detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(g_vg, g_auto.detach(), rtol=0, atol=1e-10)
