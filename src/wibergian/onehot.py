"""One-hot products of the traced reverse-route Hessian graph (``simplify.py``, ``compile=True``).

Below ``compiled.FUNC_MIN_N`` the compiled Hessian is ``derivatives.value_gradient_hessian``
traced: row ``i`` is the reverse pass of the cotangent ``e_i`` (``select_backward`` of ones)
through the gradient's graph. For ``E = Σ softplus(X y) + …`` that pass meets ``z = X y`` and
multiplies ``X`` by the constant one-hot column: ``bmm(X, V)``, ``V`` ``(B, K, 1)`` with every
batch slice ``e_i``, a product over ``K`` to read column ``i`` of ``X``.

Two pieces, used by ``simplify.py``:

- :func:`scattered_value`: the value of ``select_backward`` / ``slice_backward`` of a constant
  (a zero tensor with the incoming gradient written at an index or a slice), computed on the
  gradient's distinct values (a broadcast dimension stays a stride-0 view), so ``e_i`` is a
  known constant like ``eye`` or ``ones``;
- :func:`one_hot_product`: ``bmm(A, V) → c·A[:, :, k:k+1]`` when every fibre of ``V`` along the
  contracted dimension is the same ``c·e_k`` (``Σ_j A_mj c δ_jk = c A_mk``), expanded to the
  product's shape; likewise ``bmm(V, A) → c·A[:, k:k+1, :]`` and ``mm(V, W)`` / ``mm(W, V)``.
  The test is on the evaluated value (exactly one non-zero entry, the same ``k`` and ``c`` in
  every fibre), never on names; the result has the product's shape and dtype and ``A`` must not
  be written in place (the select is a view). Like the zero rules it assumes finite operands
  (``0·∞`` terms of the product are dropped).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, fx

aten = torch.ops.aten
SCATTERS = {aten.select_backward.default, aten.slice_backward.default}
#: product → (operand holding the one-hot fibres, the other operand, the fibres' dimension in
#: the one-hot operand, the dimension of the other operand that is selected)
_PRODUCTS = {aten.bmm.default: ((1, 0, 1, 2), (0, 1, 2, 1)),
             aten.mm.default: ((1, 0, 0, 1), (0, 1, 1, 0))}


def _distinct(t: Tensor, keep: int | None = None) -> Tensor:
    """``t`` with every stride-0 (broadcast) dimension but ``keep`` cut to length 1."""
    return t[tuple(slice(0, 1) if s == 0 and d != keep else slice(None)
                   for d, s in enumerate(t.stride()))]


def scattered_value(x: Tensor, node: fx.Node) -> Tensor:
    """The value of ``node`` (``select_backward`` / ``slice_backward``) for the incoming gradient's
    value ``x``, computed on ``x``'s distinct values and expanded to the full shape."""
    sizes = list(node.args[1])
    dim = node.args[2] % len(sizes)
    if node.target == aten.select_backward.default:
        s = _distinct(x)
        small = list(s.shape)
        small.insert(dim, sizes[dim])
    else:
        s = _distinct(x, keep=dim)
        small = list(s.shape)
        small[dim] = sizes[dim]
    return node.target(s, small, *node.args[2:]).expand(sizes)


def one_hot_fibre(c: Tensor | None, dim: int) -> tuple[int, float] | None:
    """``(k, c)`` when every fibre of ``c`` along ``dim`` is the same ``c·e_k`` (``c ≠ 0``)."""
    if c is None or c.dim() == 0:
        return None
    rows = _distinct(c, keep=dim).movedim(dim, -1)
    rows = rows.reshape(-1, rows.shape[-1])
    first = rows[0]
    nz = torch.nonzero(first).flatten()
    if len(nz) != 1 or not bool((rows == first).all()):
        return None
    k = int(nz[0])
    return k, float(first[k])


def one_hot_product(rw: Any, node: fx.Node) -> tuple[str, fx.Node] | None:
    """The rewrite of ``bmm`` / ``mm`` ``node`` with a one-hot operand (module doc), or ``None``.
    ``rw``: ``simplify._Rewriter`` (its graph, constants and in-place counts)."""
    if node.target not in _PRODUCTS or len(node.args) != 2:
        return None
    out = node.meta.get("val")
    for hot, other, fdim, sdim in _PRODUCTS[node.target]:
        a = node.args[other]
        hit = one_hot_fibre(rw.consts(node.args[hot]), fdim)
        w = a.meta.get("val") if isinstance(a, fx.Node) else None
        if hit is None or w is None or rw.consts(a) is not None or rw.mutations.get(a, 1):
            continue
        if w.dtype != out.dtype or w.device != out.device:
            continue
        k, scale = hit
        with rw.g.inserting_before(node):
            s = rw.g.call_function(aten.slice.Tensor, (a, sdim, k, k + 1))
            if scale != 1.0:
                s = rw.g.call_function(aten.mul.Tensor, (s, scale))
            return "one-hot product", rw.g.call_function(aten.expand.default,
                                                         (s, list(out.shape)))
    return None
