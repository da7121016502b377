"""When ``compile=True`` re-traces: the guard on the Python state its kernels baked in.

A trace keeps every Python value the energy reads that is not an argument (``trace_guard.py``).
:class:`Retracing` (a base of ``compiled.CompiledEnergy``) holds the fingerprint the kernels were
traced with and, before they are reused (:meth:`Retracing.refresh`, once per ``argmin`` call):

1. compares it with the energy's fingerprint now; on a difference, drops every kernel (the next
   call traces them again; its compile seconds reach ``info.compile_s``), counted in
   :data:`RETRACES`;
2. arms a value check: the first reuse in the call of a kernel built before it (``value``,
   ``vgh``, ``candidates``) compares the block's first row with the eager energy's value (one
   eager call on one row) and drops the kernels on a mismatch: state the fingerprint does not
   see (inside library objects). Kernels traced in the same call baked the same state, so one
   check per such group and call suffices (groups all checked in one call are then merged:
   usually one eager call per ``argmin`` call). It cannot see a change that leaves the energy's
   value at that point unchanged; the backward's ``mixed`` kernel is not checked (a change
   between ``argmin`` and its backward is not seen: the backward uses the kernels the forward
   checked).

Past :data:`RETRACE_LIMIT` re-traces of one energy, it runs eagerly for good with one
``CompileFallbackWarning`` (its state keeps changing: pass the changing value as a parameter
tensor). State the fingerprint cannot describe makes it run eagerly at once, with one warning.
Both are counted in ``compiled.FALLBACKS["count"]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .errors import CompileFallbackWarning, warn
from .trace_guard import State, Undescribable, describe

#: re-traces after the energy's Python state changed or a reused kernel's value disagreed with
#: the eager energy's
RETRACES = {"count": 0}
#: re-traces of one energy before it runs eagerly for good (like ``torch.compile``'s cache limit)
RETRACE_LIMIT = 8
#: the value check (2. above); ``False`` keeps the fingerprint alone (saves one eager call on
#: one row per ``argmin`` call: 0.1-1.2 % of a call at B = 1,000, benchmarks/trace_guard_cost.py)
VALUE_CHECK = True
#: kernel kinds whose first row the value check compares with the eager energy's value
_CHECKED = ("value", "vgh", "candidates")


def close(got: Tensor, want: Tensor) -> bool:
    """A compiled result equals the eager one up to rounding (fused kernels sum differently)."""
    tol = 1e-6 if want.dtype == torch.float64 else 1e-3
    return got.shape == want.shape and torch.allclose(got, want, rtol=tol, atol=tol,
                                                      equal_nan=True)


def _close_value(got: Tensor, want: Tensor) -> bool:
    """:func:`close` for one energy value, on Python floats (two reads, no tensor temporaries)."""
    if got.numel() != 1 or want.numel() != 1:
        return close(got, want)
    g, w = float(got), float(want)
    tol = 1e-6 if want.dtype == torch.float64 else 1e-3
    return g == w or abs(g - w) <= tol + tol * abs(w) or (math.isnan(g) and math.isnan(w))


class Retracing:
    """The re-trace bookkeeping of a compiled energy (module docstring). The subclass provides
    ``energy``, ``error``, ``_kernels`` and counts its fallbacks through :meth:`_give_up`."""

    energy: Any
    error: str | None
    _kernels: dict[tuple[Any, ...], Any]

    def _init_guard(self) -> None:
        self.retraces = 0
        self._state: State | None = None  # the Python state the kernels were traced with
        # kernels traced in one call share the state they baked in: one group (the call's
        # number), checked once per call; groups all checked in a call are merged after it
        self._calls = 0
        self._group: dict[tuple[Any, ...], int] = {}
        self._unchecked: set[int] = set()  # groups to check on a kernel's next reuse

    def refresh(self) -> None:
        """Before reusing the kernels (once per ``argmin`` call): re-trace if the Python state
        the energy reads changed since they were traced; arm the value check."""
        if self.error is not None:
            return
        state = self._describe()
        if state is None:
            return
        if self._state is None or not self._kernels:
            self._state = state
        elif state != self._state:
            self._retrace(state, "the Python state it reads changed")
        groups = {self._group.get(k, -1) for k in self._kernels} if VALUE_CHECK else set()
        if groups and not self._unchecked:  # every group agreed with the last call's state
            self._group = dict.fromkeys(self._kernels, min(groups))
            groups = {min(groups)}
        self._calls += 1
        self._unchecked = groups

    def _built(self, key: tuple[Any, ...]) -> None:
        """A kernel was traced (and checked against eager) in this call."""
        self._group[key] = self._calls
    def _record_state(self) -> bool:
        """Before a trace: the state it reads, if not recorded yet (an energy used without
        :meth:`refresh`); ``False`` when it cannot be described (then eager)."""
        if self._state is None:
            self._state = self._describe()
        return self._state is not None

    def _describe(self) -> State | None:
        try:
            return describe(self.energy)
        except Exception as exc:  # noqa: BLE001 - Undescribable, or a walk that failed: eager
            if not isinstance(exc, Undescribable):
                exc = Undescribable(f"{type(exc).__name__}: {str(exc)[:200]}")
            self._give_up(
                f"the Python state it reads cannot be guarded ({exc}): a compiled trace would "
                "keep its value silently. Pass the values the energy reads as parameter "
                "tensors, or keep them in plain numbers, tuples, dicts or small tensors")
            return None

    def _retrace(self, state: State, why: str) -> None:
        """Drop the kernels (the next call traces them again); eager past the limit."""
        self._kernels.clear()
        self._group.clear()
        self._unchecked.clear()
        self._state = state
        self.retraces += 1
        RETRACES["count"] += 1
        if self.retraces > RETRACE_LIMIT:
            self._give_up(
                f"{why}, and it was re-traced {RETRACE_LIMIT} times: its Python state keeps "
                "changing between calls. Pass the changing value (a scale, a weight, a flag) "
                "as a parameter tensor instead of reading it from a closure, a global or an "
                "attribute")

    def _give_up(self, why: str) -> None:
        from . import compiled

        self.error = why
        compiled.FALLBACKS["count"] += 1
        warn(f"argmin({getattr(self, 'option', 'compile=True')}): running the energy eagerly: "
             f"{why} (counted in wibergian.compiled.FALLBACKS)", CompileFallbackWarning)
        self._kernels.clear()

    def _checked_reuse(self, key: tuple[Any, ...], out: Any, yb: Tensor, pb: list[Tensor],
                       flags: list[bool]) -> bool:
        """The value check of a reused kernel (armed by :meth:`refresh`: once per call and group
        of kernels traced together): ``False`` after a mismatch, the kernels then dropped
        (re-traced, or eager past the limit)."""
        group = self._group.get(key, -1)
        if group not in self._unchecked or key[0] not in _CHECKED:
            return True
        self._unchecked.discard(group)
        kind = key[0]
        got = out[0] if isinstance(out, (tuple, list)) else out
        y1 = yb[:1, 0] if kind == "candidates" else yb[:1]
        got = got[:1, 0] if kind == "candidates" else got[:1]
        with torch.no_grad():
            want = self.energy(y1, *(p[:1] if f else p for p, f in zip(pb, flags, strict=True)))
        if _close_value(got, want):
            return True
        state = self._describe()
        if state is not None:
            self._retrace(state, "its compiled value disagreed with the eager energy's (state "
                          "the guard does not see changed)")
        return False
