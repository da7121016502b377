"""``argmin(..., compile=True)``: the derivative functions built from the user's energy, compiled.

``torch.compile`` cannot compile a plain energy's double backward (aot_autograd refuses it), and
an eager energy runs each elementwise operation as its own pass over memory. Instead, the
functions the solvers call without a gradient graph are traced to plain ATen graphs and those
graphs are compiled (Inductor fuses them into vectorised loops):

- ``value(y, *params) -> (B,)``: multi-start scoring, trial points;
- ``value_gradient_hessian(y, *params)``: traced once by ``make_fx`` with fake tensors (a
  data-dependent branch or ``.item()`` fails the trace instead of being baked in). Below
  :data:`FUNC_MIN_N` it is ``derivatives.value_gradient_hessian`` of the user's energy (``n``
  reverse passes, what runs eagerly); from ``n = FUNC_MIN_N`` up, a plain energy's (no declared
  derivatives) is the ``torch.func`` route (``vmap`` over the ``n`` directions of the ``jvp`` of
  the gradient) with ``vmap``'s ``n`` copies of each unbatched matrix folded into one product
  (``fold.py``): for ``E = Σ softplus(X y) + …``, ``H = Xᵀ diag(σ') X`` from two ``bmm`` with
  ``n`` columns instead of ``2n`` matrix-vector passes over ``X``. The crossover is measured
  (docs/benchmarks.md, "Hessian routes"); if ``torch.func`` refuses the energy, the reverse
  route is traced instead.

The backward's gradient graph (``∂∇E/∂w``) stays eager: it needs autograd w.r.t. the parameters.

Each kernel runs over blocks of ``R = min(B, MAX_ROWS)`` rows (a short last block is replaced
by the last ``R`` rows, views of the inputs, and the rows already computed are dropped: no
padded copies of the parameters), so one compilation per ``(kind, R, dtype, parameter
layout)`` serves every batch size above :data:`MAX_ROWS` (a smaller batch compiles for its own
size once). A parameter whose first dimension equals the number of rows of ``y`` is treated as
batched and sliced with the block; any other is shared (the rule of
``solvers/multistart.py``). The first
call of a kernel compiles it (its seconds accumulate in :attr:`CompiledEnergy.compile_seconds`
and reach ``ArgminInfo.compile_s``) and checks it against the eager function on that block; a
failure anywhere (no C++ compiler, an energy ``make_fx`` cannot trace, a mismatch) falls back to
eager for that energy, with one :class:`CompileFallbackWarning`, counted in :data:`FALLBACKS`.
Wrappers are cached per energy object (:func:`compiled_energy`).

The contract (like ``jax.jit``'s): the tensors passed as ``y`` and ``params`` are the trace's
arguments; every other Python value the energy reads (a closure float, a global, ``self.sigma``,
a ``functools.partial`` keyword, ``t.item()`` of a closed-over tensor, ``module.training``) is
baked into the kernels as a constant. So :func:`compiled_energy` (once per ``argmin`` call)
calls :meth:`CompiledEnergy.refresh`: it fingerprints what the energy can read
(``trace_guard.py``, which lists what is walked and what is not) and, when that changed since the
kernels were traced, drops them; the next call traces them again (counted in :data:`RETRACES`,
its seconds in ``compile_s``). Past :data:`RETRACE_LIMIT` re-traces of one energy it runs eagerly
for good with one :class:`CompileFallbackWarning` (its state keeps changing: pass the changing
value as a parameter tensor instead). State the fingerprint cannot describe (a container over
``trace_guard.LIMIT`` entries, a generator, …) runs that energy eagerly with one warning rather
than guess. Second line: the first kernel reused in a call is compared on its block's first row
with the eager energy's value, and re-traced on a mismatch (this sees state the walk does not,
such as a library object changed in place, when it moves the value at that point). Cost: a few
microseconds for a plain function plus one eager call on one row (``benchmarks/
trace_guard_cost.py``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .energy import EnergyFn
from .errors import CompileFallbackWarning, warn  # the warning's old path still imports
from .fold import fold_expanded_bmm
from .trace_guard import State, Undescribable, describe

MAX_ROWS = 4096
#: ``value_gradient_hessian`` of a plain energy is traced by ``torch.func`` (forward-over-reverse,
#: ``vmap``'s copies folded, ``fold.py``) from this dimension up, by ``n`` reverse passes below:
#: the crossover measured in docs/benchmarks.md ("Hessian routes"); ``None``: always reverse
FUNC_MIN_N: int | None = 16
#: energies whose compilation failed (each then runs eagerly)
FALLBACKS = {"count": 0}
#: re-traces after the energy's Python state changed (``trace_guard.py``) or its compiled value
#: disagreed with the eager one at a reused kernel's first row
RETRACES = {"count": 0}
#: re-traces of one energy before it runs eagerly for good (one ``CompileFallbackWarning``)
RETRACE_LIMIT = 8
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pad_rows(t: Tensor, size: int, dim: int = 0) -> Tensor:
    """``t`` extended to ``size`` along ``dim`` by repeating its first slice, contiguous (a
    compiled kernel then sees one static shape; the padded results are discarded)."""
    n = t.shape[dim]
    if n == size:
        return t.contiguous()
    first = t.narrow(dim, 0, 1)
    shape = list(t.shape)
    shape[dim] = size - n
    return torch.cat([t, first.expand(shape)], dim).contiguous()


def _rows(b: int) -> int:
    return min(b, MAX_ROWS)


class CompiledEnergy:
    """The user's energy with compiled no-gradient ``__call__`` and ``value_gradient_hessian``.

    Calls that track gradients (the backward's ``∂∇E/∂w``) run the eager energy unchanged.
    """

    #: multi-start scores candidates one ``(B, n)`` call each (``solvers/multistart.py``)
    scores_per_candidate = True

    def __init__(self, energy: EnergyFn) -> None:
        self.energy = energy
        self.compile_seconds = 0.0
        self.error: str | None = None
        self.retraces = 0
        self._kernels: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._state: State | None = None  # the Python state the kernels were traced with
        self._spot_check = False  # compare the next reused kernel's first row with eager

    def __getattr__(self, name: str) -> Any:
        # declared closed forms of the wrapped energy stay visible (derivatives.py looks them up)
        if name in ("gradient", "hessian", "hvp_operator", "value_and_gradient"):
            return getattr(self.energy, name)
        raise AttributeError(name)

    # the functions that are compiled -----------------------------------------------------
    def _value(self, y: Tensor, *params: Tensor) -> Tensor:
        return self.energy(y, *params)

    def _vgh(self, y: Tensor, *params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from .derivatives import value_gradient_hessian

        return value_gradient_hessian(self.energy, y, params)

    def _vgh_func(self, y: Tensor, *params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from .derivatives import func_value_gradient_hessian

        return func_value_gradient_hessian(self.energy, y, params)

    def _vgh_route(self, n: int) -> Callable[..., Any]:
        """The function traced for ``value_gradient_hessian``: ``torch.func`` (then folded,
        ``fold.py``) for a plain energy with ``n ≥ FUNC_MIN_N``, else the eager one's."""
        from .derivatives import HESSIAN_ROUTE
        from .energy import closed_gradient, closed_hessian

        e = self.energy
        plain = (not callable(getattr(e, "value_gradient_hessian", None))
                 and closed_gradient(e) is None and closed_hessian(e) is None)
        route = HESSIAN_ROUTE["route"]
        if plain and (route == "func" or (route == "auto" and FUNC_MIN_N is not None
                                          and n >= FUNC_MIN_N)):
            return self._vgh_func
        return self._vgh

    # the guard ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Before reusing the kernels (once per ``argmin`` call): re-trace if the Python state
        the energy reads changed since they were traced (``trace_guard.py``), and arm the value
        check of the next reused kernel."""
        if self.error is not None:
            return
        state = self._describe()
        if state is None:
            return
        if self._state is None or not self._kernels:
            self._state = state
        elif state != self._state:
            self._retrace(state, "the Python state it reads changed")
        self._spot_check = bool(self._kernels)

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
        """Drop the kernels (the next call traces them again); eager for good past
        :data:`RETRACE_LIMIT`."""
        self._kernels.clear()
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
        self.error = why
        FALLBACKS["count"] += 1
        warn(f"argmin(compile=True): running the energy eagerly: {why} (counted in "
             "wibergian.compiled.FALLBACKS)", CompileFallbackWarning)
        self._kernels.clear()

    def _agrees(self, out: Any, yb: Tensor, pb: list[Tensor], flags: list[bool]) -> bool:
        """The compiled energy value at the block's first row equals the eager energy's."""
        got = out[0] if isinstance(out, (tuple, list)) else out
        with torch.no_grad():
            want = self.energy(yb[:1], *(p[:1] if f else p for p, f in zip(pb, flags,
                                                                           strict=True)))
        return _close(got[:1], want)

    # protocol ---------------------------------------------------------------------------------
    def __call__(self, y: Tensor, *params: Tensor) -> Tensor:
        tracked = torch.is_grad_enabled() and (
            y.requires_grad or any(p.requires_grad for p in params))
        if tracked or self.error is not None:
            return self.energy(y, *params)
        return self._run("value", self._value, y, params)

    def value_gradient_hessian(self, y: Tensor, *params: Tensor
                               ) -> tuple[Tensor, Tensor, Tensor]:
        if self.error is not None:
            return self._vgh(y, *params)
        return self._run("vgh", self._vgh_route(y.shape[-1]), y, params)

    # machinery ----------------------------------------------------------------------------
    def _run(self, kind: str, fn: Callable[..., Any], y: Tensor, params: Sequence[Tensor]) -> Any:
        b = y.shape[0]
        if b == 0:
            return fn(y, *params)
        r = _rows(b)
        flags = [p.dim() >= 1 and p.shape[0] == b for p in params]
        key = (kind, r, y.dtype, y.device, y.shape[1:], tuple(
            (tuple(p.shape[1:]) if f else tuple(p.shape), p.dtype, f)
            for p, f in zip(params, flags, strict=True)))
        outs = []
        for lo in range(0, b, r):
            # a short last block is the last r rows (views, no copy; b ≥ r here): the rows
            # before lo are recomputed and dropped
            start = min(lo, b - r)
            yb = y[start:start + r].detach().contiguous()
            pb = [p[start:start + r].detach() if f else p.detach()
                  for p, f in zip(params, flags, strict=True)]
            kernel, out = self._kernels.get(key), None
            if kernel is not None and self._spot_check:  # reused: its first row against eager
                self._spot_check = False
                out = kernel(yb, *pb)
                if not self._agrees(out, yb, pb, flags):
                    state = self._describe()
                    if state is not None:
                        self._retrace(state, "its compiled value disagreed with the eager "
                                      "energy's (state the guard does not see changed)")
                    if self.error is not None:
                        return fn(y, *params)
                    kernel, out = None, None
            if kernel is None:
                kernel = self._build(key, fn, yb, pb)
                if kernel is None:  # compilation failed: eager for good
                    return fn(y, *params)
                self._spot_check = False  # built and checked against eager just now
            if out is None:
                out = kernel(yb, *pb)
            skip = lo - start
            outs.append(tuple(o[skip:] for o in out) if isinstance(out, (tuple, list))
                        else out[skip:])
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(z) for z in zip(*outs, strict=True))
        return torch.cat(outs)

    def _trace(self, fn: Callable[..., Any], yb: Tensor, pb: list[Tensor]) -> Any:
        """``make_fx`` graph of ``fn`` (fake tensors), ``vmap``'s copies folded away
        (``fold.py``); the ``torch.func`` route falls back to the reverse one if it fails."""
        from torch.fx.experimental.proxy_tensor import make_fx

        if fn == self._vgh_func:
            try:
                graph = make_fx(fn, tracing_mode="fake")(yb, *pb)
            except Exception:  # noqa: BLE001 - not functorch-compatible: the reverse route
                fn = self._vgh
            else:
                fold_expanded_bmm(graph)
                return graph
        return make_fx(fn, tracing_mode="fake")(yb, *pb)

    def _build(self, key: tuple[Any, ...], fn: Callable[..., Any], yb: Tensor,
               pb: list[Tensor]) -> Callable[..., Any] | None:
        if self._state is None:  # the state this trace reads (used without refresh())
            self._state = self._describe()
            if self._state is None:
                return None
        t = time.perf_counter()
        try:
            with torch.no_grad():
                graph = self._trace(fn, yb, pb)
                kernel = torch.compile(graph, dynamic=False)
                got = kernel(yb, *pb)
                want = (self._vgh if fn == self._vgh_func else fn)(yb, *pb)
            got_t = got if isinstance(got, (tuple, list)) else (got,)
            want_t = want if isinstance(want, (tuple, list)) else (want,)
            for g, w in zip(got_t, want_t, strict=True):
                if not _close(g, w):
                    raise RuntimeError("the compiled kernel disagrees with the eager energy")
        except Exception as exc:  # noqa: BLE001 - any failure: eager, once, counted
            self.error = f"{type(exc).__name__}: {str(exc)[:300]}"
            FALLBACKS["count"] += 1
            warn(
                f"argmin(compile=True): could not compile the energy ({self.error}); running "
                "it eagerly (counted in wibergian.compiled.FALLBACKS)",
                CompileFallbackWarning)
            self._kernels.clear()
            return None
        finally:
            self.compile_seconds += time.perf_counter() - t
        self._kernels[key] = kernel
        return kernel


def _close(got: Tensor, want: Tensor) -> bool:
    """A compiled result equals the eager one up to rounding (fused kernels sum differently)."""
    tol = 1e-6 if want.dtype == torch.float64 else 1e-3
    return got.shape == want.shape and torch.allclose(got, want, rtol=tol, atol=tol,
                                                      equal_nan=True)


def compiled_energy(energy: EnergyFn) -> CompiledEnergy:
    """The (cached) :class:`CompiledEnergy` of ``energy``: one per energy object, so repeated
    calls reuse its kernels. An energy that declares its own ``value_gradient_hessian`` is
    wrapped too (its declared function is what gets compiled)."""
    if isinstance(energy, CompiledEnergy):
        energy.refresh()
        return energy
    try:
        hit = _cache.get(energy)
    except TypeError:  # not weak-referenceable: no cache
        return CompiledEnergy(energy)
    if hit is None:
        hit = CompiledEnergy(energy)
        _cache[energy] = hit
    hit.refresh()
    return hit
