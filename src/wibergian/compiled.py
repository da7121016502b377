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
  (``fold.py``), then simplified (``simplify.py``: the products with ``vmap``'s one-hot basis,
  zero tangents, unit factors and copies removed, each rewrite a checked identity): for
  ``E = Σ softplus(X y) + …``, ``H = Xᵀ diag(σ') X`` is one ``bmm`` with ``n`` columns, as
  written by hand, instead of ``2n`` matrix-vector passes over ``X``. The crossover is measured
  (``python -m wibergian.bench.user``, docs/method.md); if ``torch.func`` refuses the energy,
  the reverse route is traced instead; if a rewrite raises, the folded graph is compiled
  unsimplified (counted in :data:`SIMPLIFY_FALLBACKS`). The reverse route's graph is simplified
  too (:data:`SIMPLIFY_REVERSE`: its products with the one-hot cotangents ``e_i`` become
  selects, ``onehot.py``).

Every kernel's graph (these two and the two below) then has its float64 CPU matrix-vector
``bmm`` nodes rewritten (``matvec.py``: Inductor's own lowering, ~3× slower than eager at
``K = 8``); if that raises, it is compiled unrewritten (counted in :data:`MATVEC_FALLBACKS`).

Two more kernels serve one step each and, if they cannot be built, give up only that step
(counted in ``FALLBACKS["candidates"]`` / ``["mixed"]``; the step then runs eagerly):

- ``candidate_values(cands, *params) -> (B, C)``: multi-start's scores, the energy ``vmap``-ed
  over the ``C`` candidates with the parameters unchanged: one fused pass, no ``C``-fold copies
  (``vmap``'s copies of a matrix in a ``bmm`` folded, ``fold.py``);
- ``mixed_vjp``: the first-order backward's ``∂<∇_y E, u>/∂w`` for the solved ``u``
  (``adjoint.vjp``, implicit adjoint, dense back end, Hessian or factor and ``∇_y E`` from the
  forward: the kernel does not recompute the gradient), traced through autograd's double
  backward like the Hessian. Gradients of parameters shared by all
  rows are summed over the blocks (an overlapping last block zeroes ``u`` on its repeated rows).
  Double backward (``create_graph=True``), forward mode and the other adjoints stay eager.

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

The contract (like ``jax.jit``'s): ``y`` and ``params`` are the kernels' arguments; any other
Python value the energy reads (closure, global, ``self.sigma``, ``t.item()``) is baked in. So
:func:`compiled_energy` calls ``refresh()`` once per ``argmin`` call (``retrace.py``; what is
fingerprinted: ``trace_guard.py``): changed state re-traces (:data:`RETRACES`), a reused kernel's
first row is checked against eager, and past ``retrace.RETRACE_LIMIT`` re-traces or for state
it cannot describe the energy runs eagerly (one warning).
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .energy import EnergyFn
from .errors import CompileFallbackWarning, warn  # the warning's old path still imports
from .matvec import lower_matvec  # noqa: F401 - trace_passes calls it through here
from .retrace import RETRACES, Retracing, close  # noqa: F401 - RETRACES: counted here too
from .trace_passes import trace_graph
from .vector_width import inductor_options

MAX_ROWS = 4096
#: ``value_gradient_hessian`` of a plain energy is traced by ``torch.func`` (forward-over-reverse,
#: ``vmap``'s copies folded, ``fold.py``, then simplified, ``simplify.py``) from this dimension
#: up, by ``n`` reverse passes below: the crossover measured by ``python -m wibergian.bench.user``
#: (docs/method.md, "compile=True"; with the reverse graph simplified too, ``onehot.py``, it won
#: at n = 4…7: ``python benchmarks/onehot_reverse.py``); ``None``: always reverse
FUNC_MIN_N: int | None = 8
#: the traced ``torch.func`` graph is simplified (``simplify.py``) after folding; ``False`` only
#: to measure the passes (``python -m wibergian.bench.user``)
SIMPLIFY_GRAPH = True
#: the traced reverse-route graph (``n < FUNC_MIN_N``) is simplified too (``onehot.py``: its
#: one-hot cotangents' products); ``False`` only to measure it (benchmarks/onehot_reverse.py)
SIMPLIFY_REVERSE = True
#: traced graphs whose simplification raised (each then compiled folded, unsimplified)
SIMPLIFY_FALLBACKS = {"count": 0}
#: rewrite matrix-vector ``bmm`` nodes (``matvec.py``); ``False`` only to measure the pass
LOWER_MATVEC = True
MATVEC_FALLBACKS = {"count": 0}  # graphs whose ``matvec.py`` rewrite raised (compiled as traced)
#: energies whose compilation failed (each then runs eagerly); ``candidates`` / ``mixed`` /
#: ``hvp``: energies whose fused multi-start kernel / backward kernel / Hessian-vector product
#: (``compiled_hvp.py``) failed (that step runs eagerly)
FALLBACKS = {"count": 0, "candidates": 0, "mixed": 0, "hvp": 0}
#: kernels whose failure gives up only themselves (the caller then takes the eager route):
#: multi-start's fused candidate scores and the backward's mixed product
_OPTIONAL = ("candidates", "mixed", "hvp")
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


def _optional(kind: Any) -> str | None:
    """The ``_OPTIONAL`` name of a kernel kind (``"candidates"`` or ``("mixed", wrt)``)."""
    name = kind[0] if isinstance(kind, tuple) else kind
    return name if name in _OPTIONAL else None


def block_rows(b: int) -> int:
    """Rows per compiled block for a batch of ``b`` problems (kernels are built per block size)."""
    return min(b, MAX_ROWS)


class CompiledEnergy(Retracing):
    """The user's energy with compiled no-gradient ``__call__`` and ``value_gradient_hessian``.

    Calls that track gradients (the backward's ``∂∇E/∂w``) run the eager energy unchanged; the
    kernels are re-traced when the Python state they baked in changes (:class:`Retracing`).
    """

    #: multi-start scores candidates one ``(B, n)`` call each (``solvers/multistart.py``)
    scores_per_candidate = True

    def __init__(self, energy: EnergyFn) -> None:
        self.energy = energy
        self.compile_seconds = 0.0
        self.error: str | None = None
        self._kernels: dict[tuple[Any, ...], Callable[..., Any]] = {}
        #: why an optional kernel (``_OPTIONAL``) could not be built; the others stay compiled
        self.optional_errors: dict[str, str] = {}
        #: how the caller asked for compilation (named in warnings): ``compile=True``, or
        #: ``compile='auto'`` (the default, ``auto_compile.py``)
        self.option = "compile=True"
        self._init_guard()

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

    def _candidates(self, cands: Tensor, *params: Tensor) -> Tensor:
        """``(B, C)``: the energy of every candidate ``cands[:, j]`` ``(B, n)``, ``vmap``-ed over
        ``j`` with the parameters unchanged (what ``C`` separate calls compute)."""
        return torch.func.vmap(lambda yc: self.energy(yc, *params), in_dims=1, out_dims=1)(cands)

    def _mixed(self, wrt: tuple[int, ...], y: Tensor, u: Tensor, *params: Tensor,
               with_grad: bool = True) -> tuple[Tensor, ...]:
        """``(g, *∂<g, u>/∂w_i)``, the products as the vector-Jacobian product of ``g`` with
        ``u``; ``with_grad=False`` (the kernel :meth:`mixed_vjp` compiles): the products alone,
        so what feeds ``g``'s value alone (``X y`` for a ridge term's parameters) is dead code."""
        from .derivatives import gradient_graph

        with torch.enable_grad():
            ps = [p.detach().requires_grad_(True) if i in wrt else p
                  for i, p in enumerate(params)]
            _, g = gradient_graph(self.energy, y, ps)
            targets = [ps[i] for i in wrt]
            got = (torch.autograd.grad(g, targets, grad_outputs=u, allow_unused=True)
                   if g.requires_grad else [None] * len(targets))
        grads = tuple(torch.zeros_like(t) if d is None else d.detach()
                      for t, d in zip(targets, got, strict=True))
        return (g.detach(), *grads) if with_grad else grads

    def _hvp(self, y: Tensor, v: Tensor, *params: Tensor) -> Tensor:
        """``H v`` at ``y`` by the eager double backward (``compiled_hvp.py`` traces it)."""
        from .derivatives import gradient_graph

        with torch.enable_grad():
            yv, g = gradient_graph(self.energy, y, params)
            hv = (torch.autograd.grad(g, yv, grad_outputs=v, allow_unused=True)[0]
                  if g.requires_grad else None)
        return torch.zeros_like(v) if hv is None else hv.detach()

    def hvp(self, y: Tensor, v: Tensor, params: Sequence[Tensor]) -> Tensor | None:
        """``H v`` ``(B, n)`` from one compiled kernel, or ``None`` when it cannot be built
        (counted in ``FALLBACKS["hvp"]``; the caller takes the eager product)."""
        if self.error is not None or "hvp" in self.optional_errors or y.shape[0] == 0:
            return None
        return self._run("hvp", self._hvp, y, [v, *params])

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

    def candidate_values(self, cands: Tensor, *params: Tensor) -> Tensor | None:
        """Energies ``(B, C)`` of candidates ``(B, C, n)`` from one fused kernel (no ``C``-fold
        copies of the parameters, one pass), or ``None`` when that kernel cannot be built (the
        caller then scores the candidates one call each; counted in ``FALLBACKS["candidates"]``).
        """
        if self.error is not None or "candidates" in self.optional_errors or cands.shape[0] == 0:
            return None
        return self._run("candidates", self._candidates, cands, params)

    def mixed_vjp(self, y: Tensor, u: Tensor, params: Sequence[Tensor], wrt: tuple[int, ...]
                  ) -> list[Tensor] | None:
        """``[∂/∂w_i Σ_b <∇_y E_b, u_b> for i in wrt]`` at ``y`` from one compiled kernel: the
        backward's mixed product (``adjoint.py``) without an eager double backward (``∇_y E``
        itself is not recomputed: the backward checks the forward's, ``AdjointSpec.grad``).
        ``u`` ``(B, n)`` is held fixed. Over blocks of rows the gradients of batched parameters
        are concatenated and those of shared ones summed (an overlapping last block has its
        repeated rows' ``u`` zeroed). ``None`` when the kernel cannot be built (the
        caller takes the eager route; counted in ``FALLBACKS["mixed"]``)."""
        b = y.shape[0]
        if self.error is not None or "mixed" in self.optional_errors or b == 0:
            return None
        flags = [p.dim() >= 1 and p.shape[0] == b for p in params]
        fn = functools.partial(self._mixed, wrt, with_grad=False)
        r = block_rows(b)
        grads: list[list[Tensor]] = [[] for _ in wrt]
        for lo in range(0, b, r):
            start = min(lo, b - r)
            skip = lo - start
            ub = u[start:start + r]
            if skip:
                ub = ub.clone()
                ub[:skip] = 0
            pb = [p[start:start + r] if f else p for p, f in zip(params, flags, strict=True)]
            out = self._run(("mixed", wrt), fn, y[start:start + r], [ub, *pb])
            if out is None:
                return None
            for k, (i, gi) in enumerate(zip(wrt, out, strict=True)):
                grads[k].append(gi[skip:] if flags[i] else gi)
        summed = [torch.cat(parts) if flags[i] else torch.stack(parts).sum(0)
                  for i, parts in zip(wrt, grads, strict=True)]
        return summed

    # machinery ----------------------------------------------------------------------------
    def _run(self, kind: str, fn: Callable[..., Any], y: Tensor, params: Sequence[Tensor],
             flags: list[bool] | None = None, block: int | None = None) -> Any:
        """``fn(y, *params)`` by the compiled kernel of ``kind``, over blocks of
        ``block_rows(B)`` rows (or ``block``, which must divide ``B``); ``flags`` marks the
        batched parameters (default: the multi-start rule, first dimension ``B``)."""
        b = y.shape[0]
        if b == 0:
            return fn(y, *params)
        r = block if block is not None else block_rows(b)
        if flags is None:
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
            if kernel is not None:
                out = kernel(yb, *pb)
                if not self._checked_reuse(key, out, yb, pb, flags):  # re-traced (retrace.py)
                    kernel = None
            if kernel is None:
                kernel = None if self.error is not None else self._build(key, fn, yb, pb)
                if kernel is None:  # compilation failed: eager for good
                    return None if _optional(kind) else fn(y, *params)
                out = kernel(yb, *pb)
            skip = lo - start
            if skip == 0:  # (a whole block: outputs that are not per row, too, pass unchanged)
                outs.append(out)
            else:
                outs.append(tuple(o[skip:] for o in out) if isinstance(out, (tuple, list))
                            else out[skip:])
        if len(outs) == 1:
            return outs[0]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(z) for z in zip(*outs, strict=True))
        return torch.cat(outs)

    def _trace(self, fn: Callable[..., Any], yb: Tensor, pb: list[Tensor]) -> Any:
        """The graph compiled for ``fn`` at a block ``(yb, pb)``: ``trace_passes.py``."""
        return trace_graph(self, fn, yb, pb)

    def _build(self, key: tuple[Any, ...], fn: Callable[..., Any], yb: Tensor,
               pb: list[Tensor]) -> Callable[..., Any] | None:
        if not self._record_state():  # the state this trace bakes in cannot be guarded
            return None
        t = time.perf_counter()
        try:
            with torch.no_grad():
                graph = self._trace(fn, yb, pb)
                kernel = torch.compile(graph, dynamic=False,
                                       options=inductor_options(yb.device, pb,
                                                                yb.shape[0]))
                got = kernel(yb, *pb)
                if fn == self._candidates:  # checked on a few rows, one eager call per candidate
                    rows = min(yb.shape[0], 64)
                    got = got[:rows]
                    pr = [p[:rows] if p.dim() >= 1 and p.shape[0] == yb.shape[0] else p
                          for p in pb]
                    want = torch.stack([self.energy(yb[:rows, j], *pr)
                                        for j in range(yb.shape[1])], 1)
                else:
                    want = (self._vgh if fn == self._vgh_func else fn)(yb, *pb)
            got_t = got if isinstance(got, (tuple, list)) else (got,)
            want_t = want if isinstance(want, (tuple, list)) else (want,)
            for g, w in zip(got_t, want_t, strict=True):
                if not close(g, w):
                    raise RuntimeError("the compiled kernel disagrees with the eager energy")
        except Exception as exc:  # noqa: BLE001 - any failure: eager, once, counted
            name = _optional(key[0])
            if name:  # only this kernel is given up: its caller takes the eager route
                self.optional_errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                FALLBACKS[name] += 1
                return None
            self.error = f"{type(exc).__name__}: {str(exc)[:300]}"
            FALLBACKS["count"] += 1
            warn(
                f"argmin({self.option}): could not compile the energy ({self.error}); running "
                "it eagerly (counted in wibergian.compiled.FALLBACKS; compile=False skips "
                "the attempt)",
                CompileFallbackWarning)
            self._kernels.clear()
            return None
        finally:
            self.compile_seconds += time.perf_counter() - t
        self._kernels[key] = kernel
        self._built(key)
        return kernel


def compiled_energy(energy: EnergyFn, option: str = "compile=True") -> CompiledEnergy:
    """The (cached) :class:`CompiledEnergy` of ``energy``: one per energy object, so repeated
    calls reuse its kernels. An energy that declares its own ``value_gradient_hessian`` is
    wrapped too (its declared function is what gets compiled). ``option``: how the caller asked
    (``"compile=True"`` or ``"compile='auto'"``), named in the wrapper's warnings."""
    if isinstance(energy, CompiledEnergy):
        energy.refresh()
        return energy
    try:
        hit = _cache.get(energy)
    except TypeError:  # not weak-referenceable: no cache
        hit = CompiledEnergy(energy)
        hit.option = option
        return hit
    if hit is None:
        hit = CompiledEnergy(energy)
        hit.option = option
        _cache[energy] = hit
    hit.refresh()  # re-traced if the Python state its kernels baked in changed (retrace.py)
    return hit
