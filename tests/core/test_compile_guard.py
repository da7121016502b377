"""compile=True re-traces when the Python state its trace baked in changes (trace_guard.py).

Each pattern changes a value the energy reads without receiving it as an argument between two
``compile=True`` calls; y* and dy*/dw (``torch.autograd.grad``) must equal eager's both times,
the re-trace counter rises by one per change and not at all without one (kernels reused). The
energies all trace to the same graphs for the same scale, so Inductor's graph cache keeps this fast.
"""

from __future__ import annotations

import array
import functools
import shutil
import types
import warnings

import pytest
import torch
from torch import nn

import wibergian
import wibergian.compiled as compiled_mod
import wibergian.retrace as retrace
import wibergian.trace_guard as trace_guard
from wibergian.trace_guard import Undescribable, describe

D = torch.float64

pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="compile=True needs a C++ compiler (Inductor)")


def _base(y, w, c):
    return ((y - c * w) ** 2).sum(-1) + 0.1 * (y**4).sum(-1)


SCALE = 1.0
cfg = types.ModuleType("guard_test_cfg")
cfg.scale = 1.0


def _solve(energy, compile):
    w = torch.linspace(0.5, 1.5, 8, dtype=D).reshape(4, 2).requires_grad_(True)
    y0 = torch.zeros(4, 2, dtype=D)
    y, info = wibergian.argmin(energy, y0, (w,), compile=compile, warn=False, return_info=True)
    (g,) = torch.autograd.grad((y * torch.arange(1.0, 9.0, dtype=D).reshape(4, 2)).sum(), w)
    return y.detach(), g, info


def _same_as_eager(energy):
    y, g, info = _solve(energy, True)
    y_e, g_e, _ = _solve(energy, False)
    torch.testing.assert_close(y, y_e, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(g, g_e, rtol=1e-7, atol=1e-9)
    return y, info


# each pattern: (energy, set_scale)
def _dict_state():
    state = {"c": 1.0}
    return (lambda y, w: _base(y, w, state["c"])), (lambda c: state.__setitem__("c", c))


def _nonlocal_float():
    sigma = 1.0

    def energy(y, w):
        return _base(y, w, sigma)

    def set_scale(c):
        nonlocal sigma
        sigma = c

    return energy, set_scale


def _global_in_comprehension():
    def energy(y, w):  # the global is read by the comprehension (its own code object before
        return [_base(y, w, SCALE) for _ in (0,)][0]  # Python 3.12)

    def set_scale(c):
        global SCALE
        SCALE = c

    return energy, set_scale


def _user_module_attribute():
    def energy(y, w):
        return _base(y, w, cfg.scale)

    return energy, (lambda c: setattr(cfg, "scale", c))


class _Callable:
    def __init__(self):
        self.c = 1.0

    def __call__(self, y, w):
        return _base(y, w, self.c)


def _callable_object():
    e = _Callable()
    return e, (lambda c: setattr(e, "c", c))


def _bound_method():
    e = _Callable()
    return e.__call__, (lambda c: setattr(e, "c", c))


class _Module(nn.Module):
    def forward(self, y, w):
        return _base(y, w, 1.0 if self.training else 3.0)


def _module_training_flag():
    m = _Module()
    return m, (lambda c: m.train(c == 1.0))


def _partial_keyword():
    holder = {"e": functools.partial(_base, c=1.0)}

    def set_scale(c):
        holder["e"].keywords["c"] = c  # partial's keywords dict changed in place

    return holder["e"], set_scale


def _tensor_item_in_place():
    t = torch.tensor([1.0], dtype=D)  # read with .item(): a Python number, baked in

    def energy(y, w):
        return _base(y, w, t.item())

    return energy, (lambda c: t.fill_(c))


PATTERNS = [_dict_state, _nonlocal_float, _global_in_comprehension, _user_module_attribute,
            _callable_object, _bound_method, _module_training_flag, _partial_keyword,
            _tensor_item_in_place]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.__name__.strip("_"))
def test_changed_state_is_retraced(pattern):
    energy, set_scale = pattern()
    set_scale(1.0)
    r0 = compiled_mod.RETRACES["count"]
    y1, info = _same_as_eager(energy)
    ce = compiled_mod.compiled_energy(energy)
    assert ce.error is None, ce.error
    assert compiled_mod.RETRACES["count"] == r0
    set_scale(3.0)
    y3, info = _same_as_eager(energy)
    assert not torch.allclose(y1, y3)  # the change matters to the minimiser
    assert compiled_mod.RETRACES["count"] == r0 + 1 and ce.retraces == 1
    assert ce.error is None and info.compile_s > 0  # the re-trace's compile seconds
    # unchanged: the kernels are reused, nothing re-traced or compiled
    kernels = dict(ce._kernels)
    _, info = _same_as_eager(energy)
    assert compiled_mod.RETRACES["count"] == r0 + 1 and info.compile_s == 0
    assert ce._kernels == kernels and len(kernels) > 0


def test_retrace_limit_falls_back_to_eager_once(monkeypatch):
    monkeypatch.setattr(retrace, "RETRACE_LIMIT", 2)
    energy, set_scale = _nonlocal_float()
    fb0 = compiled_mod.FALLBACKS["count"]
    set_scale(1.0)
    _same_as_eager(energy)
    ce = compiled_mod.compiled_energy(energy)
    for c in (3.0, 1.0):  # two re-traces: still compiled
        set_scale(c)
        _same_as_eager(energy)
        assert ce.error is None
    set_scale(3.0)
    with pytest.warns(compiled_mod.CompileFallbackWarning, match="keeps changing"):
        _same_as_eager(energy)  # the third: eager for good, still right
    assert ce.error is not None and "parameter tensor" in ce.error
    assert compiled_mod.FALLBACKS["count"] == fb0 + 1 and not ce._kernels
    set_scale(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning only
        _same_as_eager(energy)


def test_value_check_catches_state_the_fingerprint_cannot_see():
    """A stdlib array is a library object (fingerprinted by identity): mutating it in place is
    not seen by the fingerprint; the first reused kernel's value check against eager is."""
    arr = array.array("d", [1.0])

    def energy(y, w):
        return _base(y, w, arr[0])

    s1 = describe(energy)
    _same_as_eager(energy)
    r0 = compiled_mod.RETRACES["count"]
    arr[0] = 3.0
    assert describe(energy) == s1  # invisible to the fingerprint
    _same_as_eager(energy)
    assert compiled_mod.RETRACES["count"] == r0 + 1


def test_undescribable_state_runs_eagerly():
    big = [1.0] * 2000  # more entries than trace_guard.LIMIT

    def energy(y, w):
        return _base(y, w, big[0])

    with pytest.raises(Undescribable, match="2000 entries"):
        describe(energy)
    with pytest.warns(compiled_mod.CompileFallbackWarning, match="cannot be guarded"):
        _same_as_eager(energy)
    big[0] = 3.0
    _same_as_eager(energy)  # eager: always the current value
    assert compiled_mod.compiled_energy(energy).error is not None


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.0, dtype=D))

    def forward(self, y, w):
        c = self.s if self.training else self.s * 3.0
        return ((y - c * w) ** 2).sum(-1) + 0.1 * (y**4).sum(-1)


def test_layer_parameters_are_arguments_not_state():
    """ArgminLayer passes the module's parameters as arguments: an optimizer step does not
    re-trace; ``eval()`` (read by the trace) does. Results equal eager's each time."""
    w = torch.linspace(0.5, 1.5, 8, dtype=D).reshape(4, 2)
    y0 = torch.zeros(4, 2, dtype=D)
    mod = _Scaled()
    layer = wibergian.ArgminLayer(mod, compile=True, warn=False)
    eager = wibergian.ArgminLayer(mod, warn=False)
    opt = torch.optim.SGD(mod.parameters(), lr=0.1)
    r0 = compiled_mod.RETRACES["count"]
    for step in range(3):
        if step == 2:
            mod.eval()
        y = layer(y0, w)
        (g,) = torch.autograd.grad(y.sum(), mod.s)
        y_e = eager(y0, w)
        (g_e,) = torch.autograd.grad(y_e.sum(), mod.s)
        torch.testing.assert_close(y, y_e, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(g, g_e, rtol=1e-7, atol=1e-9)
        assert compiled_mod.RETRACES["count"] == r0 + (step == 2)
        mod.s.grad = g
        opt.step()
    fn = next(iter(layer._energy_fns.values()))
    assert compiled_mod.compiled_energy(fn).error is None


def test_fingerprint_sees_each_kind_of_change():
    """The walk itself, without compiling: each change alters the key, nothing else does."""
    t = torch.zeros(3, dtype=D)
    opts = {"k": [1, 2.0, "a"], "s": {1, 2}}

    def helper(y):
        return y * opts["k"][1]

    def energy(y, w, scale=2.0, *, flag=True):
        return helper(y) * t.sum() * scale * flag

    s0 = describe(energy)
    assert describe(energy) == s0
    for change, undo in [
        (lambda: t.add_(1.0), None),  # in place: _version
        (lambda: opts["k"].append(3), lambda: opts["k"].pop()),
        (lambda: opts["s"].add(3), lambda: opts["s"].discard(3)),
        (lambda: setattr(energy, "__defaults__", (3.0,)), lambda: setattr(
            energy, "__defaults__", (2.0,))),
        (lambda: energy.__kwdefaults__.update(flag=False), lambda: energy.__kwdefaults__.update(
            flag=True)),
    ]:
        before = describe(energy)
        change()
        assert describe(energy) != before
        if undo is not None:
            undo()
            assert describe(energy) == before


class _Cfg:
    scale = 1.0  # a class attribute


def _recursive(y, k=2):
    return y if k == 0 else _recursive(y, k - 1)


def test_fingerprint_walks_objects_namespaces_and_helpers():
    """Class attributes, SimpleNamespace / argparse.Namespace / dataclass fields, small numpy
    arrays, rebound helper functions: a change alters the key; recursion terminates; library
    objects (a torch.Generator, torch.nn.functional) are identities; a big numpy array is
    refused."""
    import argparse
    import dataclasses

    import numpy as np

    @dataclasses.dataclass
    class Opts:
        beta: float = 1.0

    ns, args, opts = types.SimpleNamespace(a=1.0), argparse.Namespace(b=1.0), Opts()
    arr, gen = np.ones(3), torch.Generator()
    helpers = {"h": lambda y: y}

    def energy(y, w):
        z = _recursive(torch.nn.functional.softplus(y), 1) * _Cfg.scale * ns.a * args.b
        return (helpers["h"](z) * opts.beta * float(arr[0])).sum(-1) + 0 * torch.rand(
            1, generator=gen)

    s0 = describe(energy)
    assert describe(energy) == s0
    for change in [lambda: setattr(_Cfg, "scale", 2.0), lambda: setattr(ns, "a", 2.0),
                   lambda: setattr(args, "b", 2.0), lambda: setattr(opts, "beta", 2.0),
                   lambda: arr.__setitem__(0, 2.0), lambda: helpers.__setitem__("h", abs)]:
        before = describe(energy)
        change()
        assert describe(energy) != before
    _Cfg.scale = 1.0
    gen.manual_seed(3)  # library object: identity only (documented limit)
    before = describe(energy)
    assert describe(energy) == before
    installed = pytest.importorskip("packaging.version")  # a site-packages package
    assert trace_guard._is_library(installed.__name__)
    assert not trace_guard._is_library("wibergian.experiments") and trace_guard._is_library("os")
    big = np.zeros(5000)
    with pytest.raises(Undescribable, match="numpy array"):
        describe(lambda y, w: y * float(big[0]))


def test_closed_over_tensor_in_an_operation_runs_eagerly():
    """make_fx's fake tracing refuses an operation on a real (closed-over) tensor, so such an
    energy is never compiled (one warning) and an in-place change is always seen."""
    c = torch.tensor([1.0, 1.0], dtype=D)

    def energy(y, w):
        return ((y - c * w) ** 2).sum(-1) + 0.1 * (y**4).sum(-1)

    with pytest.warns(compiled_mod.CompileFallbackWarning, match="FakeTensor"):
        y1, _ = _same_as_eager(energy)
    c.fill_(3.0)
    y3, _ = _same_as_eager(energy)
    assert not torch.allclose(y1, y3)


def test_value_check_covers_multistart_scores():
    """The fused multi-start kernel (``candidates``) is checked on its first reuse too: a change
    the fingerprint cannot see re-traces, and the chosen start and y* equal eager's."""
    arr = array.array("d", [1.0])

    def energy(y, w):
        return _base(y, w, arr[0])

    w = torch.linspace(0.5, 1.5, 8, dtype=D).reshape(4, 2)
    cands = torch.stack([torch.full((4, 2), v, dtype=D) for v in (-2.0, 0.0, 2.0)], 1)

    def solve(compile):
        return wibergian.argmin(energy, cands[:, 0], (w,), candidates=cands, compile=compile,
                                warn=False, return_info=True)

    solve(True)
    assert "candidates" in {k[0] for k in compiled_mod.compiled_energy(energy)._kernels}
    r0 = compiled_mod.RETRACES["count"]
    arr[0] = 3.0
    (y, info), (y_e, info_e) = solve(True), solve(False)
    assert compiled_mod.RETRACES["count"] == r0 + 1
    assert torch.equal(info.start_index, info_e.start_index)
    torch.testing.assert_close(y, y_e, rtol=1e-9, atol=1e-10)


def test_value_check_once_per_call_and_group(monkeypatch):
    """The bookkeeping alone (no compiler): kernels traced in one call form a group checked once
    per call (one eager call); groups all checked in a call merge; a group not reused stays
    separate and is checked when it is; VALUE_CHECK = False checks nothing."""
    calls = []

    def energy(y, w):
        calls.append(y.shape[0])
        return (y * w).sum(-1)

    class Kernels(retrace.Retracing):
        def __init__(self):
            self.energy, self.error, self._kernels = energy, None, {}
            self._init_guard()

        def reuse(self, kind):
            w = torch.ones(3, 2, dtype=D)
            if kind == "candidates":  # (B, C, n) candidates, (B, C) scores
                y = torch.ones(3, 4, 2, dtype=D)
                out = torch.stack([energy(y[:, j], w) for j in range(4)], 1)
            else:
                y = torch.ones(3, 2, dtype=D)
                out = energy(y, w)
            calls.clear()
            ok = self._checked_reuse((kind,), out, y, [w], [True])
            return ok, len(calls)

        def build(self, kind):
            self._kernels[(kind,)] = object()
            self._built((kind,))

    k = Kernels()
    k.refresh()
    k.build("value")
    k.build("vgh")
    k.refresh()  # call 2: the call-1 group is checked once
    assert k.reuse("vgh") == (True, 1) and k.reuse("value") == (True, 0)
    k.build("candidates")  # a second group, traced in call 2
    k.refresh()  # call 3: every group was checked in call 2 -> merged, one check
    assert k.reuse("candidates") == (True, 1) and k.reuse("vgh") == (True, 0)
    k.build("mixed")  # group of call 3, never checkable
    k.refresh()
    assert len(k._unchecked) == 1  # merged again (mixed joined the checked group)
    k._unchecked = {k._group[("value",)], 99}
    k._group[("candidates",)] = 99  # pretend candidates was traced apart and not reused since
    assert k.reuse("value") == (True, 1) and k.reuse("candidates") == (True, 1)
    monkeypatch.setattr(retrace, "VALUE_CHECK", False)
    k.refresh()
    assert k.reuse("value") == (True, 0)
