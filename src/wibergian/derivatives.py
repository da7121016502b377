"""Batched derivatives of a user energy with respect to ``y``.

Problems are independent (``E_b`` depends on ``y[b]`` only), so the gradient of ``Σ_b E_b`` with
respect to ``y`` is the stack of per-problem gradients, and row ``i`` of every problem's Hessian is
the gradient of ``Σ_b ∂E_b/∂y_bi``. Closed forms declared by the energy (see ``energy.py``) are
used when present.

Shapes: ``y`` is ``(B, n)``; gradients ``(B, n)``; Hessians ``(B, n, n)``.

Two autograd routes to the dense Hessian of a plain energy (``HESSIAN_ROUTE``):

- ``"reverse"``: one forward pass, one ``create_graph`` backward for ``g``, then ``n`` reverse
  passes through ``g``'s graph (row ``i`` is ``∂(Σ_b g_bi)/∂y``);
- ``"func"``: forward-over-reverse with ``torch.func``: ``jvp`` of ``y ↦ ∇_y Σ_b E_b`` along the
  ``n`` coordinate directions (the same direction for every problem), vectorised by ``vmap`` over
  the directions: column ``i`` of every problem's Hessian in one pass. No parameter needs to be
  marked batched or shared: the energy always sees the whole batch.

``"auto"`` takes ``"func"`` for ``n ≥ FUNC_MIN_N`` (the measured crossover, see
docs/benchmarks.md) and ``"reverse"`` below. ``torch.func`` needs a functorch-compatible energy
(it refuses, for example, an old-style ``autograd.Function`` without ``setup_context`` and reads
of a tensor's storage such as ``.numpy()``; both tested): an energy that fails under it is
remembered and served by ``"reverse"`` from then on (counted in
:data:`FUNC_FALLBACKS`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .energy import EnergyFn, closed_gradient, closed_hessian
from .row_matvec import autograd_grad

#: ``"auto"`` | ``"reverse"`` | ``"func"``: how :func:`value_gradient_hessian` builds the dense
#: Hessian of an energy without declared derivatives
HESSIAN_ROUTE = {"route": "auto"}
#: ``"auto"`` uses ``torch.func`` from this dimension up (``None``: never; see the module doc)
FUNC_MIN_N: int | None = None
#: energies that failed under ``torch.func`` (each served by the reverse route afterwards)
FUNC_FALLBACKS = {"count": 0}
_func_incompatible: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def energy_value(energy: EnergyFn, y: Tensor, params: Sequence[Tensor]) -> Tensor:
    """``E(y; w)`` with its shape checked: ``(B,)``."""
    e = energy(y, *params)
    if not isinstance(e, Tensor) or e.shape != (y.shape[0],):
        got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise ValueError(
            f"energy(y, *params) must return one value per problem, shape ({y.shape[0]},) for y "
            f"of shape {tuple(y.shape)}; it returned {got}. Sum over everything but the batch "
            "dimension inside your energy."
        )
    return e


def gradient(
    energy: EnergyFn, y: Tensor, params: Sequence[Tensor], *, create_graph: bool = False
) -> Tensor:
    """``∇_y E(y; w)``, shape ``(B, n)``.

    With ``create_graph`` the result stays differentiable (w.r.t. ``y`` when ``y`` requires grad,
    and w.r.t. any ``params`` that require grad).
    """
    closed = closed_gradient(energy)
    if closed is not None:
        with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
            return closed(y, *params)
    with torch.enable_grad():
        yv = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
        e = energy_value(energy, yv, params)
        (g,) = torch.autograd.grad(e.sum(), yv, create_graph=create_graph)
    return g


def gradient_graph(energy: EnergyFn, y: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``(y_leaf, g)`` with ``g = ∇_y E`` kept differentiable w.r.t. the leaf ``y_leaf`` and the
    ``params`` that require grad: the common start of Hessian-vector products and of the adjoint.
    """
    with torch.enable_grad():
        yv = y.detach().requires_grad_(True)
        closed = closed_gradient(energy)
        if closed is not None:
            g = closed(yv, *params)
        else:
            e = energy_value(energy, yv, params)
            (g,) = autograd_grad(e.sum(), yv, create_graph=True)
    return yv, g


def hessian_from_graph(yv: Tensor, g: Tensor, *, create_graph: bool = False) -> Tensor:
    """Dense Hessians ``(B, n, n)`` from a differentiable gradient ``g`` of leaf ``yv``.

    One reverse pass per coordinate: row ``i`` is ``∂(Σ_b g_bi)/∂y``.
    """
    n = yv.shape[1]
    rows = []
    with torch.enable_grad():
        for i in range(n):
            if not g.requires_grad:  # gradient independent of y: Hessian is zero
                rows.append(torch.zeros_like(yv))
                continue
            (r,) = torch.autograd.grad(
                g[:, i].sum(), yv, retain_graph=True, create_graph=create_graph, allow_unused=True
            )
            rows.append(torch.zeros_like(yv) if r is None else r)
    return torch.stack(rows, dim=1)


def gradient_and_hessian(
    energy: EnergyFn, y: Tensor, params: Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """``(∇_y E, ∇²_y E)`` at ``y``, shapes ``(B, n)`` and ``(B, n, n)``, detached."""
    closed_h = closed_hessian(energy)
    if closed_h is not None:
        with torch.no_grad():
            return gradient(energy, y, params), closed_h(y, *params)
    yv, g = gradient_graph(energy, y, [p.detach() for p in params])
    h = hessian_from_graph(yv, g)
    h = 0.5 * (h + h.transpose(1, 2))
    return g.detach(), h.detach()


def declares_value_and_gradient(energy: EnergyFn) -> bool:
    """Whether the energy declares ``value_and_gradient`` (one pass for both)."""
    return callable(getattr(energy, "value_and_gradient", None))


def value_and_gradient(
    energy: EnergyFn, y: Tensor, params: Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """``(E, ∇_y E)`` at ``y``, detached: shapes ``(B,)`` and ``(B, n)``; from the energy's
    declared ``value_and_gradient`` when it has one, else from one forward and one reverse pass
    (a value pass and the closed-form gradient where only that is declared)."""
    if not declares_value_and_gradient(energy):
        if closed_gradient(energy) is not None:
            with torch.no_grad():
                e = energy_value(energy, y, params)
            return e, gradient(energy, y, params).detach()
        with torch.enable_grad():  # one forward pass for both
            yv = y.detach().requires_grad_(True)
            e = energy_value(energy, yv, [p.detach() for p in params])
            (g,) = torch.autograd.grad(e.sum(), yv)
        return e.detach(), g
    with torch.no_grad():
        e, g = energy.value_and_gradient(y, *params)  # type: ignore[attr-defined]
    if e.shape != (y.shape[0],) or g.shape != y.shape:
        raise ValueError(
            f"energy.value_and_gradient must return shapes ({y.shape[0]},) and "
            f"{tuple(y.shape)}; got {tuple(e.shape)} and {tuple(g.shape)}"
        )
    return e, g


def value_gradient_hessian(
    energy: EnergyFn, y: Tensor, params: Sequence[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(E, ∇_y E, ∇²_y E)`` at ``y``, detached: shapes ``(B,)``, ``(B, n)``, ``(B, n, n)``.

    An energy may declare ``value_gradient_hessian(y, *params)`` returning all three from one
    pass (for example one exponential per term instead of three); otherwise the value comes from
    the same forward pass that builds autograd's gradient graph (closed-form ``gradient`` /
    ``hessian`` are used when declared, as in :func:`gradient_and_hessian`).
    """
    ps = [p.detach() for p in params]
    fused = getattr(energy, "value_gradient_hessian", None)
    if callable(fused):
        with torch.no_grad():
            e, g, h = fused(y, *ps)
        b, n = y.shape
        if e.shape != (b,) or g.shape != (b, n) or h.shape != (b, n, n):
            raise ValueError(
                f"energy.value_gradient_hessian must return shapes ({b},), ({b}, {n}), "
                f"({b}, {n}, {n}); got {tuple(e.shape)}, {tuple(g.shape)}, {tuple(h.shape)}"
            )
        # a declared or compiled route may return H in a permuted layout (compile=True's traced
        # torch.func route does): every consumer's ops are several times slower on it
        return e, g, h.contiguous()
    if closed_hessian(energy) is not None or closed_gradient(energy) is not None:
        with torch.no_grad():
            e = energy_value(energy, y, ps)
        g, h = gradient_and_hessian(energy, y, ps)
        return e, g, h
    if _use_func(energy, y.shape[1]):
        try:
            return func_value_gradient_hessian(energy, y, ps)
        except Exception:  # noqa: BLE001 - not functorch-compatible: the reverse route
            _mark_incompatible(energy)
    with torch.enable_grad():
        yv = y.detach().requires_grad_(True)
        e = energy_value(energy, yv, ps)
        (g,) = torch.autograd.grad(e.sum(), yv, create_graph=True)
        h = hessian_from_graph(yv, g)
    h = 0.5 * (h + h.transpose(1, 2))
    return e.detach(), g.detach(), h.detach()


def _use_func(energy: EnergyFn, n: int) -> bool:
    route = HESSIAN_ROUTE["route"]
    if route not in ("auto", "reverse", "func"):
        raise ValueError(f"HESSIAN_ROUTE must be 'auto', 'reverse' or 'func'; got {route!r}")
    if route == "reverse" or (route == "auto" and (FUNC_MIN_N is None or n < FUNC_MIN_N)):
        return False
    try:
        return energy not in _func_incompatible
    except TypeError:  # not weak-referenceable: try every time
        return True


def _mark_incompatible(energy: EnergyFn) -> None:
    FUNC_FALLBACKS["count"] += 1
    try:
        _func_incompatible[energy] = True
    except TypeError:
        pass


def func_value_gradient_hessian(
    energy: EnergyFn, y: Tensor, params: Sequence[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(E, ∇_y E, ∇²_y E)`` by forward-over-reverse (``torch.func``), detached.

    ``vmap`` over the ``n`` directions ``e_i`` (``(n, B, n)``, the same unit vector for every
    problem) of ``jvp(y ↦ ∇_y Σ_b E_b)``: output ``i`` is column ``i`` of every Hessian. Raises
    whatever ``torch.func`` raises for an incompatible energy.
    """
    from torch.func import grad, jvp, vmap

    b, n = y.shape
    ps = [p.detach() for p in params]
    y = y.detach()

    def total(yy: Tensor) -> tuple[Tensor, Tensor]:
        e = energy_value(energy, yy, ps)
        return e.sum(), e

    grad_with_value = grad(total, has_aux=True)

    def column(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (g, e), (hcol, _) = jvp(grad_with_value, (y,), (t,))
        return hcol, g, e

    basis = torch.eye(n, dtype=y.dtype, device=y.device)[:, None, :].expand(n, b, n)
    with torch.no_grad():
        cols, g, e = vmap(column, out_dims=(0, None, None))(basis)
    h = cols.permute(1, 2, 0)  # h[b, j, i] = ∂g_bj/∂y_bi
    h = 0.5 * (h + h.transpose(1, 2))
    return e, g, h


def hvp_operator(
    energy: EnergyFn, y: Tensor, params: Sequence[Tensor]
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``(g, v ↦ H v)`` at ``y``: the gradient and a batched Hessian-vector product.

    The gradient graph is built once and reused by every product (reverse over reverse), so a
    product costs one backward pass. ``v`` and ``H v`` have shape ``(B, n)``. An energy that
    declares ``hvp_operator(y, *params)`` (linearise once, then ``v ↦ H v`` without autograd;
    see ``adjoint.py``) supplies the product itself.
    """
    declared = getattr(energy, "hvp_operator", None)
    if callable(declared):
        ps = [p.detach() for p in params]
        with torch.no_grad():
            g0 = gradient(energy, y.detach(), ps)
            apply = declared(y.detach(), *ps)

        def closed_hvp(v: Tensor) -> Tensor:
            with torch.no_grad():
                return apply(v)

        return g0, closed_hvp
    from .compiled_hvp import compiled_hvp_operator

    compiled = compiled_hvp_operator(energy, y, params)  # compile=True: one fused kernel
    if compiled is not None:
        return compiled
    yv, g = gradient_graph(energy, y, [p.detach() for p in params])

    def hvp(v: Tensor) -> Tensor:
        if not g.requires_grad:
            return torch.zeros_like(v)
        with torch.enable_grad():
            (hv,) = autograd_grad(g, yv, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv

    return g.detach(), hvp
