"""``compile=True``'s Hessian-vector products, for the matrix-free solvers.

Newton-CG, the matrix-free final step and the CG backward multiply by ``H`` through the
gradient's retained graph (``derivatives.hvp_operator``): each product is one eager backward pass
in which every elementwise operation reads and writes memory on its own. With a compiled energy
(``compile=True``) the product ``v ↦ H v`` at ``y`` is instead one kernel,
:meth:`~wibergian.compiled.CompiledEnergy.hvp`: the eager double backward traced by ``make_fx``
and compiled like the other kernels (``compiled.py``, checked against eager when built), which
recomputes the forward and the gradient with the product in fused loops and keeps no graph.
Measured on one product (``python benchmarks/compiled_hvp.py --rounds 9``, one thread,
float64, medians of paired rounds): the W3 denoising energy at 512×512 (``conv2d`` and a
Lorentzian penalty) 0.075 → 0.030 s (0.41, 10-90 % 0.38-0.42); the ridge-logistic energy at
n = 128, B = 1,000 (memory-bound ``bmm``) 0.021 → 0.019 s (0.86, 0.74-0.95).

An energy that declares its own ``hvp_operator`` keeps it. If the kernel cannot be built the
products run eagerly (counted in ``compiled.FALLBACKS["hvp"]``), as they do under ``torch.func``
transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor


def compiled_product(energy: object, y: Tensor, params: Sequence[Tensor]
                     ) -> Callable[[Tensor], Tensor] | None:
    """``v ↦ H v`` at ``y`` from the compiled kernel, or ``None`` where it does not apply (not a
    compiled energy, a declared ``hvp_operator``, a failed kernel, ``torch.func`` active). If
    the kernel fails when first built, the returned function computes the products eagerly."""
    from .compiled import CompiledEnergy
    from .derivatives import hvp_operator
    from .function import _transforms_active

    if (not isinstance(energy, CompiledEnergy) or energy.error is not None
            or "hvp" in energy.optional_errors or _transforms_active()
            or callable(getattr(energy.energy, "hvp_operator", None))):
        return None
    y0 = y.detach()
    ps = [p.detach() for p in params]
    eager: list[Callable[[Tensor], Tensor]] = []

    def product(v: Tensor) -> Tensor:
        if not eager:
            out = energy.hvp(y0, v.detach(), ps)
            if out is not None:
                return out
            eager.append(hvp_operator(energy.energy, y0, ps)[1])
        return eager[0](v)

    return product


def compiled_hvp_operator(energy: object, y: Tensor, params: Sequence[Tensor]
                          ) -> tuple[Tensor, Callable[[Tensor], Tensor]] | None:
    """``(∇E, v ↦ H v)`` at ``y`` for ``derivatives.hvp_operator``: the gradient by one eager
    pass (no graph kept), the products by :func:`compiled_product`; ``None`` where that does
    not apply."""
    product = compiled_product(energy, y, params)
    if product is None:
        return None
    from .derivatives import gradient

    return gradient(energy.energy, y.detach(), [p.detach() for p in params]), product
