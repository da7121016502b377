"""``argmin(..., compile="auto")``, the default: compile an energy once it is called in a loop.

Eagerly, every operation of the user's energy, and each of the ``n`` reverse passes that build
its Hessian, is its own kernel; ``compile=True`` traces and fuses them (``compiled.py``) but
spends seconds compiling each energy and problem shape. Measured (``python
benchmarks/auto_compile_cost.py``; 2 cores shared with other work, one thread, forward + backward
per call):

- ridge-logistic energy, n = 8, B = 1,000: the compiling calls took 31 s with an empty Inductor
  cache and 10 s with a warm one; eager calls 0.12-0.18 s, compiled ones 0.09 s: repaid after
  ~320 calls;
- the README's energy (n = 1, B = 64, ``--energy readme --unknowns 0``): eager 0.04-0.05 s,
  compiled 0.033-0.035 s per call, 12 s (warm cache) to 38 s (empty) of compiling: repaid only
  after ~800-4,000 calls, far more than the README's 101 steps.

So ``"auto"`` compiles a *signature*

    (energy object, y's trailing shape, dtype, device, rows per compiled block)

once it has run :data:`AFTER_CALLS` (20) eager calls **and** solved :data:`AFTER_UNKNOWNS`
(200,000) unknowns eagerly (``Σ B·n`` over those calls): a deterministic stand-in for the eager
seconds a compilation must repay. W1 at B = 20,000 (40,000 unknowns a call) compiles after 20
calls, the ridge-logistic energy at n = 8, B = 1,000 after 25, at n = 2 after 100; the README's
example never does. A one-off call never compiles, and an odd last batch (another row count)
stays eager until it recurs as often. The switch depends on counts only, never on timings: a
seeded run repeats to the last digit. Compiled and eager results agree to rounding (each kernel
is checked against the eager energy when built, ``compiled.py``; reused kernels are guarded,
``retrace.py``).

Left eager, silently (counted in :data:`AUTO`):

- a call whose solver has no compiled kernels (L-BFGS, SciPy, the quadratic solve, a solver
  object of the user's): they run on gradients and values only. The two Newton solvers switch:
  the dense one runs on the compiled value-gradient-Hessian, Newton-CG (``solver="auto"``
  above n = 40) on the compiled Hessian-vector product (``compiled_hvp.py``: on the W3
  denoising energy at 512×512 a whole call took 19.1 instead of 38.6 s, after 8.5 s of
  compiling in its first call; on the ridge-logistic energy at n = 128, B = 1,000, 0.92 of the
  eager time, 10-90 % 0.84-0.95). Before the compiled product, compiling a Newton-CG call
  carried only the energy's value and gave no consistent gain (n = 128, B = 100, five runs:
  compiled/eager 1.26, 1.16, 0.85, 1.06, 0.90);
- an energy whose Python state the guard cannot fingerprint (``trace_guard.py``;
  ``compile=True`` would warn and run eagerly; ``"auto"`` does not compile it at all);
- an energy object that is not weak-referenceable, and calls made while ``torch.compile`` is
  tracing (the caller compiles);
- an energy created anew for each call (a ``lambda`` in the loop, ``obj.method`` bound afresh,
  ``Energy(...)`` per call) never reaches the count: each object counts from zero.

If compiling fails (no C++ compiler, an energy ``make_fx`` cannot trace), the energy runs
eagerly for good with one :class:`~wibergian.CompileFallbackWarning` that names
``compile=False``, counted in ``compiled.FALLBACKS``.

Controls: ``compile=False`` (never) or ``True`` (from the first call) per call;
:data:`AFTER_CALLS` for the process, initialised from the environment variable
``WIBERGIAN_AUTO_COMPILE_AFTER`` (a whole number; ``0`` never compiles automatically); and
:func:`auto_compile_after`, a context manager that sets both thresholds for a block.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .trace_guard import describe

#: the values ``argmin``'s ``compile`` accepts
MODES = (True, False, "auto")
_ENV = "WIBERGIAN_AUTO_COMPILE_AFTER"
_DEFAULT_AFTER = 20


def _after_from_env() -> int:
    raw = os.environ.get(_ENV, str(_DEFAULT_AFTER)).strip()
    try:
        after = int(raw)
    except ValueError:
        raise ValueError(f"{_ENV} must be a whole number of eager calls before compile='auto' "
                         f"compiles (0 = never); got {raw!r}") from None
    if after < 0:
        raise ValueError(f"{_ENV} must be ≥ 0 (0 = never compile automatically); got {after}")
    return after


#: eager calls of one signature before ``compile="auto"`` compiles it; ``0``: never
AFTER_CALLS: int = _after_from_env()
#: and the unknowns those eager calls must have solved for (``Σ B·n``) before it compiles: a
#: deterministic stand-in for the eager seconds a compilation has to repay
AFTER_UNKNOWNS = 200_000
#: signatures compiled automatically; calls left eager because the energy's state cannot be
#: guarded, the energy is not weak-referenceable, or the solver has no compiled kernels (not
#: one of the two Newton solvers)
AUTO = {"compiled": 0, "unguardable": 0, "unreferenceable": 0, "not_compiled_solver": 0}
_NEVER, _COMPILED = -1, -2
_counts: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], tuple[int, int]]] = \
    weakref.WeakKeyDictionary()


def check_mode(compile: Any) -> None:
    """Raise on a ``compile`` that is not ``True``, ``False`` or ``"auto"``."""
    if not any(compile is m if isinstance(m, bool) else compile == m for m in MODES):
        raise ValueError(f"compile must be True, False or 'auto'; got {compile!r}")


@contextlib.contextmanager
def auto_compile_after(calls: int, unknowns: int | None = None) -> Iterator[None]:
    """Within the block, ``compile="auto"`` compiles after ``calls`` eager calls (``0``: never)
    that solved at least ``unknowns`` unknowns (``Σ B·n``; unchanged if ``None``).

    >>> with auto_compile_after(0):  # doctest: +SKIP
    ...     y = argmin(energy, y0, params)   # eager, however often it is called
    """
    global AFTER_CALLS, AFTER_UNKNOWNS
    for name, v in (("calls", calls), ("unknowns", 0 if unknowns is None else unknowns)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a whole number ≥ 0; got {v!r}")
    old = AFTER_CALLS, AFTER_UNKNOWNS
    AFTER_CALLS = calls
    if unknowns is not None:
        AFTER_UNKNOWNS = unknowns
    try:
        yield
    finally:
        AFTER_CALLS, AFTER_UNKNOWNS = old


def wants_compile(compile: Any, energy: Any, y0: Tensor, rows: int,
                  compiled_solver: bool = True) -> bool:
    """Whether this ``argmin`` call runs the compiled path (``rows``: rows per compiled block;
    ``compiled_solver``: the solver runs on compiled kernels, the dense Newton one on the
    value-gradient-Hessian, Newton-CG on the Hessian-vector product).

    ``compile="auto"`` counts the call against its signature (module docstring)."""
    if compile is True or compile is False:
        return compile
    if AFTER_CALLS == 0 or torch.compiler.is_compiling():
        return False
    if not compiled_solver:
        AUTO["not_compiled_solver"] += 1
        return False
    try:
        per = _counts.setdefault(energy, {})
    except TypeError:  # not weak-referenceable: nowhere to keep its count
        AUTO["unreferenceable"] += 1
        return False
    key = (tuple(y0.shape[1:]), y0.dtype, y0.device, rows)
    calls, work = per.get(key, (0, 0))
    if calls == _NEVER:
        return False
    if calls < 0:  # compiled already
        return True
    if calls < AFTER_CALLS or work < AFTER_UNKNOWNS:
        per[key] = (calls + 1, work + y0.numel())
        return False
    try:  # the first compiled call of this signature
        describe(energy)
    except Exception:  # noqa: BLE001 - cannot be guarded: compiling could bake it in
        per[key] = (_NEVER, work)
        AUTO["unguardable"] += 1
        return False
    per[key] = (_COMPILED, work)
    AUTO["compiled"] += 1
    return True
