"""The library's own exceptions and warnings, and how it warns.

Exceptions (all subclasses of :class:`WibergianError`):

- :class:`NonFiniteDerivativeError` (also a ``FloatingPointError``): the energy is finite at a
  point where its gradient or Hessian is not (``sqrt(||y - x||²)`` at ``y = x``, ``|y|`` at 0)
  and no cheap recovery exists. The message names the problem indices, the quantity and the
  likely cause.
- :class:`LinearSolveError`: a linear solve failed in a way no fallback recovers from.

Bad arguments raise the built-in ``ValueError`` / ``TypeError`` with the argument's name.

Warnings (all subclasses of :class:`WibergianWarning`, itself a ``RuntimeWarning``, so one
``warnings.filterwarnings("ignore", category=wibergian.WibergianWarning)`` silences them all):

- :class:`NonConvergenceWarning`: problems did not converge in the inner solver.
- :class:`FallbackWarning`: a linear solve met a matrix that is not positive (semi-)definite and
  used the documented, counted fallback (forward final step or backward).
- :class:`NonSmoothWarning`: the derivatives were not finite at a start point and the start was
  perturbed (a counted recovery).
- :class:`CompileFallbackWarning`: ``argmin(..., compile=True)`` could not compile the energy's
  functions and runs them eagerly (counted in ``wibergian.compiled.FALLBACKS``).

:func:`warn` attributes a warning to the first stack frame outside ``wibergian`` and ``torch``,
so the warning names the user's line: the ``argmin(...)`` call, or for a warning raised in the
backward pass, the ``loss.backward()`` (or ``torch.autograd.grad``) call that ran it. (On CPU the
autograd engine runs the backward on the calling thread, so that line is on the stack; where it
runs on a device worker thread, no user frame exists and the warning names the adjoint instead.)
Python's default filter then shows each warning once per user line.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

__all__ = [
    "CompileFallbackWarning",
    "FallbackWarning",
    "LinearSolveError",
    "NonConvergenceWarning",
    "NonFiniteDerivativeError",
    "NonSmoothWarning",
    "WibergianError",
    "WibergianWarning",
    "nonfinite_derivative",
    "warn",
]


class WibergianError(RuntimeError):
    """Base class of the library's own errors."""


class NonFiniteDerivativeError(WibergianError, FloatingPointError):
    """The energy's gradient or Hessian is NaN/Inf where the energy itself is finite."""


class LinearSolveError(WibergianError):
    """A linear solve failed and no fallback could recover."""


class WibergianWarning(RuntimeWarning):
    """Base class of the library's warnings."""


class NonConvergenceWarning(WibergianWarning):
    """Some problems of a batch did not converge in the inner solver."""


class FallbackWarning(WibergianWarning):
    """A linear solve met a non-positive-definite matrix and used the documented fallback."""


class NonSmoothWarning(WibergianWarning):
    """Derivatives were not finite at a start point; the start was perturbed to recover."""


class CompileFallbackWarning(WibergianWarning):
    """``compile=True`` could not compile the energy's functions, or cannot guard (or keeps
    re-tracing for) the Python state they read; eager is used instead."""


_SKIP = tuple(
    os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (sys.modules[__name__.rsplit(
        ".", 1)[0]], torch) if getattr(m, "__file__", None)
)


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside wibergian and torch (from ``warn``'s
    caller's point of view)."""
    frame = sys._getframe(2)  # the caller of warn()
    level = 2
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not name.startswith(_SKIP) and not name.startswith("<frozen"):
            return level
        frame = frame.f_back
        level += 1
    return 2


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the user's line (see the module docstring)."""
    warnings.warn(message, category, stacklevel=_user_stacklevel())


def nonfinite_derivative(where: str, quantity: str, mask: torch.Tensor) -> NonFiniteDerivativeError:
    """The error for a ``quantity`` (gradient, Hessian) that is NaN/Inf where the energy is
    finite, naming the problems where ``mask`` ``(B,)`` is set."""
    idx = mask.nonzero().flatten().tolist()
    more = " …" if len(idx) > 10 else ""
    return NonFiniteDerivativeError(
        f"{where}: the {quantity} is NaN/Inf at problem(s) {idx[:10]}{more} although the "
        "energy is finite there. Likely cause: the energy is not differentiable at that point, "
        "e.g. sqrt(||y - x||²) or |y - x| with y exactly at a data point x (a geometric median "
        "started at, or minimised at, a data point). Start elsewhere, smooth the energy "
        "(sqrt(||y - x||² + ε²)), or declare a closed-form gradient/hessian that is finite there."
    )
