"""``ArgminLayer``: an energy module whose minimiser is the layer's output.

    class Welsch(nn.Module):                     # the energy: parameters are ordinary
        def __init__(self):                      # nn.Parameters
            super().__init__()
            self.log_sigma = nn.Parameter(torch.zeros(()))
        def forward(self, y, x):                 # y (B, 1), x (B, N) -> (B,)
            s2 = self.log_sigma.exp() ** 2
            return -torch.exp(-(x - y) ** 2 / s2).sum(-1)

    layer = ArgminLayer(Welsch(), damping=0.1)
    y_star = layer(y0, x)                        # differentiable w.r.t. x and log_sigma

The layer calls the energy through ``torch.func.functional_call``, passing its parameters as
``argmin`` params, so gradients reach them through the damped implicit adjoint, and the module
behaves as any other under optimisers, ``state_dict`` and ``DistributedDataParallel``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .argmin import ArgminInfo, argmin


class ArgminLayer(nn.Module):
    """Wrap an energy module ``energy(y, *inputs) -> (B,)`` as a layer returning ``argmin_y``.

    Args:
        energy: an ``nn.Module`` whose ``forward(y, *inputs)`` returns one energy per problem.
        **argmin_kwargs: defaults for :func:`wibergian.argmin` (``damping``, ``solver``,
            ``compile``, …); each call may override them. With ``compile=True`` the compiled
            kernels are kept between calls (one energy function per input layout).
    """

    def __init__(self, energy: nn.Module, **argmin_kwargs: Any) -> None:
        super().__init__()
        self.energy = energy
        self.argmin_kwargs = argmin_kwargs
        self.last_info: ArgminInfo | None = None
        self._energy_fns: dict[tuple[Any, ...], Any] = {}

    def forward(self, y0: Tensor, *inputs: Tensor, **overrides: Any) -> Tensor:
        names = [name for name, _ in self.energy.named_parameters()]
        values = [p for _, p in self.energy.named_parameters()]
        k = len(inputs)
        # one energy function per layout, kept: compile=True caches its kernels per energy
        key = (k, tuple(names))
        fn = self._energy_fns.get(key)
        if fn is None:
            module = self.energy

            def fn(y: Tensor, *ps: Tensor, _names=tuple(names), _k=k) -> Tensor:
                return functional_call(module, dict(zip(_names, ps[_k:], strict=True)),
                                       (y, *ps[:_k]))

            # the module's parameters reach fn as arguments: compile=True's guard
            # (trace_guard.py) then does not re-trace when an optimizer updates them in place
            fn._wibergian_passed_parameters = module  # type: ignore[attr-defined]
            self._energy_fns[key] = fn
        kwargs = {**self.argmin_kwargs, **overrides, "return_info": True}
        y_star, info = argmin(fn, y0, (*inputs, *values), **kwargs)
        self.last_info = info
        return y_star

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.argmin_kwargs.items())


def detach_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's parameters (handy for checkpoints and comparisons)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}
