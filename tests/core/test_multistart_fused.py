"""compile=True's multi-start: every candidate scored by one fused kernel
(``CompiledEnergy.candidate_values``), equal to one eager call per candidate; a kernel that
cannot be built gives up only itself (counted), never the energy's other kernels."""

from __future__ import annotations

import warnings

import pytest
import torch

import wibergian
import wibergian.compiled as compiled_mod
import wibergian.solvers.multistart as ms

D = torch.float64


def wells(y, a, c, m, s):
    """``(B,)``: ``-Σ_k m_k exp(-((y0 - a_bk)² + (y1 - c_bk)²) / s²)``; ``a, c`` ``(B, K)``
    batched, ``m`` ``(K,)`` and ``s`` (scalar) shared."""
    u = ((y[:, :1] - a) ** 2 + (y[:, 1:] - c) ** 2) / s**2
    return -(m * torch.exp(-u)).sum(-1)


def _data(b, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = 3 * torch.randn(b, k, generator=g, dtype=D)
    c = 3 * torch.randn(b, k, generator=g, dtype=D)
    m = 0.5 + torch.rand(k, generator=g, dtype=D)
    return a, c, m, torch.tensor(1.5, dtype=D)


def _per_candidate(energy, cand, params):
    return torch.stack([energy(cand[:, j], *params) for j in range(cand.shape[1])], 1)


@pytest.mark.slow
def test_fused_candidate_scores_equal_per_candidate_calls(monkeypatch):
    """Blocks of 4 rows over B = 10 (the short last block overlaps, no padding): every problem's
    C energies equal the eager per-candidate ones, float64, from the fused kernel (no fallback)."""
    monkeypatch.setattr(compiled_mod, "MAX_ROWS", 4)

    def energy(y, a, c, m, s):  # a fresh energy object: no cached kernels
        return wells(y, a, c, m, s)

    a, c, m, s = _data(10)
    cand = torch.stack([a, c], -1)  # the wells themselves are the candidates (B, K, 2)
    ce = compiled_mod.compiled_energy(energy)
    before = dict(compiled_mod.FALLBACKS)
    es = ce.candidate_values(cand, a, c, m, s)
    assert not ce.optional_errors and ce.error is None, (ce.optional_errors, ce.error)
    assert es is not None and es.shape == (10, 5)
    torch.testing.assert_close(es, _per_candidate(wells, cand, (a, c, m, s)), rtol=1e-12,
                               atol=1e-12)
    assert compiled_mod.FALLBACKS == before
    # multistart takes that route: same energies, and argmin starts at the lowest one
    torch.testing.assert_close(ms.candidate_energies(ce, cand, (a, c, m, s)), es, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wibergian.CompileFallbackWarning)
        _, info = wibergian.argmin(energy, cand[:, 0], (a, c, m, s), candidates=cand,
                                   compile=True, return_info=True, warn=False)
    want_idx = _per_candidate(wells, cand, (a, c, m, s)).argmin(1)
    assert torch.equal(info.start_index, want_idx)


def _refused_candidate_kernel(energy, seed):
    """The candidate kernel of ``energy`` on W1 data is refused once, counted; returns
    ``(compiled energy, candidates, params, fallback count before)``."""
    a, c, m, s = _data(6, seed=seed)
    cand = torch.stack([a, c], -1)
    ce = compiled_mod.compiled_energy(energy)
    before = compiled_mod.FALLBACKS["candidates"]
    assert ce.candidate_values(cand, a, c, m, s) is None
    assert compiled_mod.FALLBACKS["candidates"] == before + 1
    return ce, cand, (a, c, m, s), before


def test_unbuildable_candidate_kernel_falls_back_alone(monkeypatch):
    """An energy vmap cannot batch (it reads a value with ``.item()``): the candidate kernel
    fails, is counted, the candidates are scored one call each (same energies as eager), and the
    energy is not marked failed (its other kernels may still compile)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # no C++ compiler needed here

    def energy(y, a, c, m, s):
        scale = float(y.abs().max().item()) * 0 + 1.0  # a data-dependent read
        return scale * wells(y, a, c, m, s)

    ce, cand, (a, c, m, s), before = _refused_candidate_kernel(energy, seed=1)
    assert "candidates" in ce.optional_errors and ce.error is None
    assert ce.candidate_values(cand, a, c, m, s) is None  # not retried
    assert compiled_mod.FALLBACKS["candidates"] == before + 1
    with pytest.warns(wibergian.CompileFallbackWarning):  # its value kernel fails the same way
        es = ms.candidate_energies(ce, cand, (a, c, m, s))
    torch.testing.assert_close(es, _per_candidate(wells, cand, (a, c, m, s)), rtol=0, atol=0)


def test_candidate_kernel_checked_against_eager(monkeypatch):
    """A kernel that disagrees with the eager energy on its first block is refused (counted) and
    the per-candidate route gives the right energies."""
    def wrong_compile(fn, **kw):
        return lambda *args: fn(*args) + 1.0

    monkeypatch.setattr(torch, "compile", wrong_compile)

    def energy(y, a, c, m, s):
        return wells(y, a, c, m, s)

    ce = _refused_candidate_kernel(energy, seed=2)[0]
    assert "disagrees" in ce.optional_errors["candidates"]


# ------------------------------------------------------------------ the backward's mixed kernel


def _grads(energy, a, c, m, s, **kw):
    a, c, m, s = (t.clone().requires_grad_(True) for t in (a, c, m, s))
    cand = torch.stack([a.detach(), c.detach()], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wibergian.CompileFallbackWarning)
        y = wibergian.argmin(energy, cand[:, 0], (a, c, m, s), candidates=cand, warn=False, **kw)
    w = torch.linspace(0.5, 1.5, y.numel(), dtype=D).reshape(y.shape)
    return (y.detach(), *torch.autograd.grad((y * w).sum(), (a, c, m, s)))


def _compiled_and_eager(energy, data):
    """``(y*, grads)`` with ``compile=True`` on ``energy``, the same eagerly on ``wells``, and
    the energy's compiled wrapper."""
    got = _grads(energy, *data, compile=True)
    return got, _grads(wells, *data), compiled_mod.compiled_energy(energy)


@pytest.mark.slow
def test_compiled_backward_kernel_equals_eager(monkeypatch):
    """compile=True's backward (the mixed product ∂<∇E, u>/∂w from one compiled kernel) gives the
    eager gradients, float64, for batched (a, c: (B, K)), shared (m: (K,)) and scalar (s)
    parameters, over blocks of 4 rows with B = 10 (overlapping last block: its repeated rows must
    not be counted twice in the shared parameters' sums)."""
    monkeypatch.setattr(compiled_mod, "MAX_ROWS", 4)

    def energy(y, a, c, m, s):  # a fresh energy object: no cached kernels
        return wells(y, a, c, m, s)

    before = compiled_mod.FALLBACKS["mixed"]
    got, want, ce = _compiled_and_eager(energy, _data(10, seed=3))
    assert ce.error is None and not ce.optional_errors, (ce.error, ce.optional_errors)
    assert any(isinstance(k[0], tuple) and k[0][0] == "mixed" for k in ce._kernels)
    assert compiled_mod.FALLBACKS["mixed"] == before
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


def test_mixed_kernel_failure_falls_back_to_eager(monkeypatch):
    """When only the backward's kernel cannot be built, it is counted and the eager backward
    gives the same gradients; the energy's other kernels stay in use."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # traced graphs, run as they are
    real = compiled_mod.CompiledEnergy._trace

    def trace(self, fn, yb, pb):
        if getattr(fn, "func", None) == self._mixed:
            raise RuntimeError("cannot trace the mixed product")
        return real(self, fn, yb, pb)

    monkeypatch.setattr(compiled_mod.CompiledEnergy, "_trace", trace)

    def energy(y, a, c, m, s):
        return wells(y, a, c, m, s)

    before = compiled_mod.FALLBACKS["mixed"]
    got, want, ce = _compiled_and_eager(energy, _data(6, seed=4))
    assert compiled_mod.FALLBACKS["mixed"] == before + 1
    assert "mixed" in ce.optional_errors and ce.error is None
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
