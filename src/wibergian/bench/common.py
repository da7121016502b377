"""What every benchmarked method implements, and the settings shared by all of them.

A method is an object with a name, the library it comes from, the gradient it computes (the
damping ``λ`` of *our* gradient it must reproduce) and three calls:

- ``prepare() -> float``: one-off set-up (JAX: tracing and compilation); returns its seconds.
- ``forward() -> ctx``: the forward pass of one training step (solve + loss), blocking.
- ``backward(ctx) -> dict[str, np.ndarray]``: the gradient of the loss w.r.t. the learnable
  parameters, blocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Damping of the implicit gradient used by ours, TorchOpt and JAXopt ridge-CG (the library's
#: default ``λ``).
DAMPING = 0.1
#: W1: fixed number of damped Newton iterations after the start-point search.
W1_ITERS = 20
#: W3: L-BFGS iterations in the forward.
W3_ITERS = 30

#: Relative tolerance ``||g - g_ours|| / ||g_ours||`` of the gradient-agreement check, by kind
#: of linear solve the method's gradient uses (direct solves agree to rounding; CG stops at a
#: residual; unrolling agrees only as far as the forward has converged).
TOL_DIRECT = 1e-6
TOL_ITERATIVE = 1e-4
TOL_UNROLLED = 1e-4


class GradientMismatch(AssertionError):
    """A method's gradient disagrees with ours beyond its documented tolerance."""


@dataclass
class MethodInfo:
    """Static description of a method (goes into the JSON)."""

    name: str
    library: str
    gradient: str  # how the gradient is computed, in words
    ref_damping: float  # the λ of our gradient this method must reproduce
    tolerance: float
    #: the forward stops once every problem has converged (Optimistix's rule) instead of
    #: running the workload's fixed iteration count
    stops_when_converged: bool = False


class BenchMethod:
    """Base class: subclasses set ``info`` and implement ``forward`` / ``backward``."""

    info: MethodInfo

    def prepare(self) -> float:
        return 0.0

    def forward(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, ctx: Any) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def gradient(self) -> dict[str, np.ndarray]:
        """One full step; the gradient as float64 numpy arrays."""
        return self.backward(self.forward())


def relative_error(g: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """``||g - ref|| / ||ref||`` over all parameters concatenated (same keys required)."""
    if set(g) != set(ref):
        raise GradientMismatch(f"gradient keys differ: {sorted(g)} vs {sorted(ref)}")
    num = sum(float(np.sum((np.asarray(g[k], np.float64) - ref[k]) ** 2)) for k in ref)
    den = sum(float(np.sum(np.asarray(ref[k], np.float64) ** 2)) for k in ref)
    if not np.isfinite(num):
        return float("inf")
    return float(np.sqrt(num / max(den, 1e-300)))


def check_agreement(
    name: str, g: dict[str, np.ndarray], ref: dict[str, np.ndarray], tolerance: float
) -> float:
    """Raise :class:`GradientMismatch` unless ``relative_error(g, ref) <= tolerance``."""
    err = relative_error(g, ref)
    if not err <= tolerance:
        worst = max(ref, key=lambda k: float(np.abs(np.asarray(g[k]) - ref[k]).max()))
        raise GradientMismatch(
            f"GRADIENT MISMATCH: method {name!r} disagrees with ours: relative error {err:.3e} > "
            f"tolerance {tolerance:.1e} (largest difference in {worst!r}). Refusing to time it."
        )
    return err
