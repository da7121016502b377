"""The user's-energy rows of W2 and W3: the energy in plain PyTorch, ``argmin`` with every default.

Like ``user.py``'s W1 and D rows: no declared derivatives (no closed-form gradient, Hessian,
``value_and_gradient`` or ``hvp_operator``), no solver object, no bench-only kernel, every
default of :func:`wibergian.argmin` (``solver="auto"``, ``linear_solver="auto"``, ``damping=0.1``,
its default ``tol`` / ``max_iter`` / ``cg_tol``, ``final_step=True``). ``compile=True`` rows are
the same call with the library's opt-in compiled path (its compile time is the first call).

What the defaults pick:

- W2 (``n = 40``): ``solver="auto"`` → the dense trust-region Newton (``n ≤ 40``), Hessians by
  autograd of the plain energy; ``linear_solver="auto"`` → the dense (Cholesky) backward
  (``n ≤ 64``). Same start (``y0 = 0``) and loss as ``W2OursArgmin``.
- W3 (``n = H·W``): ``solver="auto"`` → matrix-free trust-region Newton-CG on autograd
  Hessian-vector products (reverse over reverse through ``conv2d``), run to the default
  tolerance; ``linear_solver="auto"`` → the CG backward on the same autograd products. Same
  start (the noisy image) and loss as ``W3Ours``, which instead runs 30 L-BFGS iterations on
  the closed-form derivatives (a different forward: the gradients agree only where both have
  converged, hence the check on a small crop, ``suite.w3_agreement``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

import wibergian

from .common import DAMPING
from .methods_torch import _leaves
from .user import _UserMethod, own_function
from .workloads import W2Data, W3Data, w2_energy, w2_loss, w3_loss


class W2User(_UserMethod):
    """``argmin(w2_energy, zeros, (w, x, A, σ))`` with every default: dense Newton with autograd
    Hessians (``n = 40``), dense damped implicit backward (λ = 0.1)."""

    def __init__(self, data: W2Data, compile: bool | str = "auto"):
        self.d = data
        self.compile = compile
        self.energy = own_function(w2_energy)
        self.params = _leaves(A=data.A, sigma=data.sigma)
        self.info = self._info(compile, "solver auto → dense Newton, ", DAMPING)

    def loss(self) -> Tensor:
        p = self.params
        y0 = torch.zeros(self.d.batch, self.d.y_true.shape[1], dtype=self.d.x.dtype)
        y = wibergian.argmin(self.energy, y0, (self.d.w, self.d.x, p["A"], p["sigma"]),
                             warn=False, compile=self.compile)
        return w2_loss(y, self.d.y_true)


def w3_user_energy(shape: tuple[int, int]) -> Callable[..., Tensor]:
    """The W3 energy as a user writes it for images of ``shape = (H, W)``:
    ``E(x) = ½||x - z||² + Σ_j α_j Σ_p log(1 + (f_j ⋆ x)_p² / s_j²)``, ``(B,)`` for ``x, z``
    ``(B, H·W)`` (the maths of ``W3Energy.__call__``, nothing else)."""

    def energy(y: Tensor, z: Tensor, filters: Tensor, alpha: Tensor, scale: Tensor) -> Tensor:
        resp = torch.nn.functional.conv2d(y.reshape(y.shape[0], 1, *shape), filters)
        pen = torch.log1p((resp / scale[None, :, None, None]) ** 2)
        prior = (alpha[None, :, None, None] * pen).sum(dim=(1, 2, 3))
        return 0.5 * ((y - z) ** 2).sum(-1) + prior

    return energy


class W3User(_UserMethod):
    """``argmin(energy, noisy, (noisy, f, α, s))`` with every default: Newton-CG forward on
    autograd Hessian-vector products to the default tolerance, CG damped implicit backward
    (λ = 0.1). One energy object per method, so ``compile=True`` compiles once. Its calls take
    tens of seconds: the default row switches to compiled after one eager call."""

    max_warmup = 1

    def __init__(self, data: W3Data, compile: bool | str = "auto"):
        self.d = data
        self.compile = compile
        self.energy = w3_user_energy(data.shape)
        self.params = _leaves(filters=data.filters, alpha=data.alpha, scale=data.scale)
        self.info = self._info(compile, "solver auto → Newton-CG to convergence, CG backward, ",
                               DAMPING)

    def loss(self) -> Tensor:
        p = self.params
        y = wibergian.argmin(self.energy, self.d.noisy,
                             (self.d.noisy, p["filters"], p["alpha"], p["scale"]),
                             warn=False, compile=self.compile)
        return w3_loss(y, self.d.clean)
