"""``argmin(..., compile="auto")``, the default (``auto_compile.py``): when it compiles, and that
what it returns then equals eager and the closed form.

The suite runs with the switch off (conftest.py); these tests turn it on for a block with
``auto_compile_after``. One test compiles (a few seconds); the others stay eager or make
compilation fail on purpose.
"""

from __future__ import annotations

import argparse
import importlib
import warnings

import pytest
import torch

import wibergian
from wibergian import auto_compile, cli, compiled
from wibergian.errors import CompileFallbackWarning

D = torch.float64


def quad(y: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``E = ½ s ||y - a||² + ½ ||y||²``: ``y* = s a / (s + 1)``, ``H = (s + 1) I``."""
    return 0.5 * s * ((y - a) ** 2).sum(-1) + 0.5 * (y**2).sum(-1)


def _call(energy, a, s, compile="auto"):
    y, info = wibergian.argmin(energy, torch.zeros_like(a.detach()), (a, s), return_info=True,
                               compile=compile)
    return y, info


def _compiled(energy) -> bool:
    return compiled._cache.get(energy) is not None


def test_auto_compiles_after_the_count_and_matches_eager_and_closed_form():
    def energy(y, a, s):  # a fresh object: nothing counted or cached for it yet
        return quad(y, a, s)

    a = torch.randn(6, 3, dtype=D, requires_grad=True)
    s = torch.tensor(2.0, dtype=D, requires_grad=True)
    before = auto_compile.AUTO["compiled"]
    with auto_compile.auto_compile_after(2, unknowns=0):
        for _ in range(2):
            y, info = _call(energy, a, s)
            assert info.compile_s == 0.0 and not _compiled(energy)
        y, info = _call(energy, a, s)  # the third call of this signature compiles
    assert _compiled(energy) and info.compile_s > 0
    assert auto_compile.AUTO["compiled"] == before + 1
    ga, gs = torch.autograd.grad(y.sum(), (a, s))
    y_eager, _ = _call(energy, a, s, compile=False)
    ga_e, gs_e = torch.autograd.grad(y_eager.sum(), (a, s))
    torch.testing.assert_close(y, y_eager, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close((ga, gs), (ga_e, gs_e), rtol=1e-9, atol=1e-12)
    # independent closed form: y* = s a/(s+1); the damped derivative divides by H + λ = s+1+λ
    lam = 0.1
    sd = s.detach()
    torch.testing.assert_close(y.detach(), sd * a.detach() / (sd + 1), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ga, torch.full_like(ga, float(sd / (sd + 1 + lam))), rtol=1e-8,
                               atol=1e-10)
    want_gs = (a.detach() * (1 - sd / (sd + 1))).sum() / (sd + 1 + lam)  # -(H+λ)^-1 ∂∇E/∂s
    torch.testing.assert_close(gs, want_gs, rtol=1e-8, atol=1e-10)


class _Recorded:
    """Stands in for the compiled wrapper: runs the energy eagerly, records that it was asked."""

    compile_seconds = 0.0

    def __init__(self, energy, option, builds):
        self.energy = energy
        builds.append(option)

    def __call__(self, *args):
        return self.energy(*args)


def test_auto_counts_per_signature_and_per_object(monkeypatch):
    builds: list[str] = []
    monkeypatch.setattr(importlib.import_module("wibergian.argmin"), "compiled_energy",
                        lambda e, option: _Recorded(e, option, builds))

    def energy(y, a, s):
        return quad(y, a, s)

    a5, a7 = torch.randn(5, 2, dtype=D), torch.randn(7, 2, dtype=D)
    s = torch.tensor(1.0, dtype=D)
    with auto_compile.auto_compile_after(3, unknowns=42):
        for _ in range(3):
            _call(energy, a5, s)  # 10 unknowns a call
            _call(energy, a7, s)  # another row count: its own count (14 a call)
        assert builds == []
        _call(energy, a7, s)  # 3 calls and 42 unknowns: compiled
        assert builds == ["compile='auto'"]
        for _ in range(2):  # 3 calls but 30 unknowns: 2 more eager calls reach 50 ≥ 42
            _call(energy, a5, s)
        assert builds == ["compile='auto'"]
        _call(energy, a5, s)
        assert builds == ["compile='auto'"] * 2
        _call(energy, a5, s)  # compiled already: no new count, compiled again
        assert builds == ["compile='auto'"] * 3
        for _ in range(8):  # a new function object per call never reaches the count
            _call(lambda y, a, s: quad(y, a, s), a5, s)
        assert len(builds) == 3
        _call(energy, a5, s, compile=False)  # False never compiles, True at once
        assert len(builds) == 3
        _call(lambda y, a, s: quad(y, a, s), a5, s, compile=True)
        assert builds[-1] == "compile=True"
    with auto_compile.auto_compile_after(0):  # 0: never
        for _ in range(5):
            _call(energy, a5, s)
    assert len(builds) == 4


def test_default_thresholds_spare_small_loops(monkeypatch):
    """With the shipped thresholds (20 calls, 200,000 unknowns), the README's loop (B = 64,
    n = 1, 101 steps) stays eager; B = 1,000, n = 8 compiles on its 26th call."""
    builds: list[str] = []
    monkeypatch.setattr(importlib.import_module("wibergian.argmin"), "compiled_energy",
                        lambda e, option: _Recorded(e, option, builds))

    def energy(y, a, s):
        return quad(y, a, s)

    assert (auto_compile._DEFAULT_AFTER, auto_compile.AFTER_UNKNOWNS) == (20, 200_000)
    small, big = torch.randn(64, 1, dtype=D), torch.randn(1000, 8, dtype=D)
    s = torch.tensor(1.0, dtype=D)
    with auto_compile.auto_compile_after(20, unknowns=200_000):
        for _ in range(101):
            _call(energy, small, s)
        assert builds == []
        for i in range(26):
            _call(energy, big, s)
            assert builds == ([] if i < 25 else ["compile='auto'"])


def test_auto_compiles_the_newton_solvers_only(monkeypatch):
    """L-BFGS runs on gradients and values, which stay eager: "auto" leaves it eager, counted.
    The dense Newton solver (compiled value-gradient-Hessian) and Newton-CG (compiled
    Hessian-vector products; ``solver="auto"`` above n = 40) switch."""
    builds: list[str] = []
    monkeypatch.setattr(importlib.import_module("wibergian.argmin"), "compiled_energy",
                        lambda e, option: _Recorded(e, option, builds))

    def energy(y, a, s):
        return quad(y, a, s)

    a, s = torch.randn(5, 3, dtype=D), torch.tensor(1.0, dtype=D)
    wide = torch.randn(2, 41, dtype=D)  # solver="auto" picks Newton-CG above n = 40
    before = auto_compile.AUTO["not_compiled_solver"]
    with auto_compile.auto_compile_after(1, unknowns=0):
        for _ in range(3):
            wibergian.argmin(energy, torch.zeros_like(a), (a, s), solver="lbfgs")
        assert builds == []
        assert auto_compile.AUTO["not_compiled_solver"] == before + 3
        for _ in range(2):
            _call(energy, wide, s)  # Newton-CG: compiled on the second call
        assert builds == ["compile='auto'"]
        for _ in range(2):
            _call(energy, a, s)  # the default dense Newton: its own signature
        assert builds == ["compile='auto'"] * 2


def test_auto_leaves_an_unguardable_energy_eager_without_warning():
    stream = iter(range(10**6))  # its next value cannot be fingerprinted (trace_guard.py)

    def energy(y, a, s):
        _ = stream
        return quad(y, a, s)

    a, s = torch.randn(4, 2, dtype=D), torch.tensor(3.0, dtype=D)
    before = auto_compile.AUTO["unguardable"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with auto_compile.auto_compile_after(1, unknowns=0):
            for _ in range(4):
                y, info = _call(energy, a, s)
    assert auto_compile.AUTO["unguardable"] == before + 1
    assert not _compiled(energy) and info.compile_s == 0.0
    torch.testing.assert_close(y, 3.0 * a / 4.0)


def test_auto_compile_failure_warns_once_naming_compile_false(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)

    def energy(y, a, s):
        return quad(y, a, s)

    a, s = torch.randn(4, 2, dtype=D), torch.tensor(1.0, dtype=D)
    before = compiled.FALLBACKS["count"]
    with auto_compile.auto_compile_after(1, unknowns=0):
        _call(energy, a, s)
        with pytest.warns(CompileFallbackWarning, match=r"compile='auto'.*compile=False"):
            y, _ = _call(energy, a, s)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: later calls run eagerly without a warning
            y2, _ = _call(energy, a, s)
    assert compiled.FALLBACKS["count"] == before + 1
    torch.testing.assert_close(y, a / 2)
    torch.testing.assert_close(y2, a / 2)


@pytest.mark.parametrize("bad", ["yes", 1, None, "True"])
def test_compile_argument_is_checked(bad):
    a, s = torch.randn(2, 2, dtype=D), torch.tensor(1.0, dtype=D)
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        _call(quad, a, s, compile=bad)


def test_environment_variable_and_context_manager(monkeypatch):
    monkeypatch.setenv("WIBERGIAN_AUTO_COMPILE_AFTER", " 7 ")
    assert auto_compile._after_from_env() == 7
    for raw in ("many", "-1", "2.5"):
        monkeypatch.setenv("WIBERGIAN_AUTO_COMPILE_AFTER", raw)
        with pytest.raises(ValueError, match="WIBERGIAN_AUTO_COMPILE_AFTER"):
            auto_compile._after_from_env()
    old = auto_compile.AFTER_CALLS, auto_compile.AFTER_UNKNOWNS
    with pytest.raises(RuntimeError), auto_compile.auto_compile_after(5, unknowns=9):
        assert (auto_compile.AFTER_CALLS, auto_compile.AFTER_UNKNOWNS) == (5, 9)
        raise RuntimeError
    assert (auto_compile.AFTER_CALLS, auto_compile.AFTER_UNKNOWNS) == old  # restored on error
    with auto_compile.auto_compile_after(4):
        assert auto_compile.AFTER_UNKNOWNS == old[1]  # unknowns=None leaves it
    for bad in ((-2, None), (3, -1), (2.5, None), (True, None)):
        with pytest.raises(ValueError, match="whole number"):
            with auto_compile.auto_compile_after(*bad):
                pass


@pytest.mark.parametrize(("argv", "command", "want"), [
    ([], "ransac", 0), (["--compile", "auto"], "ransac", 13), ([], "bench", 13)])
def test_cli_compile_option(monkeypatch, argv, command, want):
    seen = []
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", choices=("off", "auto"), default="off")
    parser.add_argument("command")
    parser.set_defaults(func=lambda args: seen.append(auto_compile.AFTER_CALLS) or 0)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with auto_compile.auto_compile_after(13):
        assert cli.main([*argv, command]) == 0
        assert auto_compile.AFTER_CALLS == 13
    assert seen == [want]


def test_auto_switch_under_torch_func_and_forward_mode():
    """The call that compiles, and those after it, give torch.func.grad and forward-mode
    derivatives equal to the eager ones."""

    def energy(y, a, s):  # quartic: Newton iterates, the Hessian depends on y
        return 0.5 * s * ((y - a) ** 2).sum(-1) + 0.25 * (y**4).sum(-1)

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(6, 3, dtype=D, generator=gen)
    s = torch.tensor(2.0, dtype=D)
    y0 = torch.zeros(6, 3, dtype=D)

    def loss(s_, compile):
        return wibergian.argmin(energy, y0, (a, s_), compile=compile).pow(2).sum()

    def tangent(compile):
        from torch.autograd.forward_ad import dual_level, make_dual, unpack_dual

        with dual_level():
            y = wibergian.argmin(energy, y0, (a, make_dual(s, torch.ones_like(s))),
                                 compile=compile)
            return unpack_dual(y).tangent

    want_g = torch.func.grad(lambda s_: loss(s_, False))(s)
    want_t = tangent(False)
    with auto_compile.auto_compile_after(1, unknowns=0):
        got = [torch.func.grad(lambda s_: loss(s_, "auto"))(s) for _ in range(3)]
        tangents = [tangent("auto") for _ in range(2)]
    assert _compiled(energy)
    for g in got:
        torch.testing.assert_close(g, want_g, rtol=1e-9, atol=1e-12)
    for t in tangents:
        torch.testing.assert_close(t, want_t, rtol=1e-9, atol=1e-12)
