"""Fold ``vmap``'s copies of unbatched matrices out of a traced graph (``compile=True``).

``torch.func.vmap`` batches ``bmm(A, V)`` whose ``V`` carries the vmapped dimension ``k`` (here:
the ``n`` coordinate directions of the Hessian, ``derivatives.func_value_gradient_hessian``) and
whose ``A`` does not by *expanding* ``A`` to ``(k, B, p, m)``, copying it (``clone``) and running
one ``bmm`` over ``k·B`` matrices: ``k`` copies of the data, ``k`` passes over it. For a dense
energy such as ``E_b(y) = Σ softplus(X_b y) + …`` with ``X`` ``(B, M, n)`` that is ``n`` copies
of ``X`` per Hessian. JAX's batching rule instead folds ``k`` into the free dimension of the
product; :func:`fold_expanded_bmm` does the same on the ATen graph ``make_fx`` traced, before
Inductor sees it:

    bmm(expand(A)[k·B, p, m], V[k·B, m, q])  →  bmm(A[B, p, m], V'[B, m, k·q])   (k, B, p, q)
    bmm(V[k·B, p, m], expand(A)[k·B, m, q])  →  bmm(V'[B, k·p, m], A[B, m, q])   (k, B, p, q)

with ``V'`` the small operand's permuted copy (``k·B·m·q`` numbers, not ``k·B·p·m``; an explicit
contiguous ``clone``, so Inductor writes it in the layout ``bmm`` reads fastest rather than
passing a view whose columns are ``B·m`` apart, 1.9× slower measured at ``n = 32``), and the
result permuted back to ``(k·B, p, q)``. Same numbers (each output entry is the same dot
product), one pass over ``A``. The rewrite matches ``A`` reached from the ``bmm`` operand
through ``view``/``_unsafe_view``/``reshape``/``clone``/``alias`` nodes down to an ``expand``
that prepends one dimension ``k`` to a 3-D tensor ``(B, ·, ·)``; anything else is left alone.
"""

from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten
_PASS_THROUGH = {aten.view.default, aten._unsafe_view.default, aten.reshape.default,
                 aten.clone.default, aten.alias.default}


_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default}


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _expanded_source(node: fx.Node) -> tuple[fx.Node, int] | None:
    """``(A, k)`` when ``node`` (``(k·B, r, c)``) is ``A`` ``(B, r, c)`` repeated ``k`` times along
    a new leading dimension (vmap's copy of an unbatched operand), else ``None``."""
    shape = _shape(node)
    if shape is None or len(shape) != 3:
        return None
    cur = node
    while isinstance(cur, fx.Node) and cur.op == "call_function" and cur.target in _PASS_THROUGH:
        cur = cur.args[0]
    if not (isinstance(cur, fx.Node) and cur.op == "call_function"
            and cur.target == aten.expand.default):
        return None
    src = cur.args[0]
    src_shape, out_shape = _shape(src), _shape(cur)
    if src_shape is None or out_shape is None or len(src_shape) != 3 or len(out_shape) != 4:
        return None
    k = out_shape[0]
    if tuple(out_shape[1:]) != src_shape or shape != (k * src_shape[0], *src_shape[1:]):
        return None
    return src, k


def fold_expanded_bmm(gm: fx.GraphModule) -> int:
    """Rewrite every ``bmm`` with one vmap-expanded operand in ``gm`` (in place); returns how many
    were rewritten. The other operand must not be expanded too (left alone then)."""
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.bmm.default:
            continue
        a, v = node.args
        left, right = _expanded_source(a), _expanded_source(v)
        if (left is None) == (right is None):
            continue
        out = _shape(node)
        if left is not None:
            src, k = left
            b, p, m = _shape(src)
            q = out[2]
            with graph.inserting_before(node):
                v4 = graph.call_function(aten.reshape.default, (v, [k, b, m, q]))
                vp = graph.call_function(aten.permute.default, (v4, [1, 2, 0, 3]))
                vc = graph.call_function(aten.clone.default, (vp,),
                                         {"memory_format": torch.contiguous_format})
                vf = graph.call_function(aten.reshape.default, (vc, [b, m, k * q]))
                r = graph.call_function(aten.bmm.default, (src, vf))  # (B, p, k·q)
                r4 = graph.call_function(aten.view.default, (r, [b, p, k, q]))
                rp = graph.call_function(aten.permute.default, (r4, [2, 0, 1, 3]))
                new = graph.call_function(aten.reshape.default, (rp, [k * b, p, q]))
        else:
            src, k = right
            b, m, q = _shape(src)
            p = out[1]
            with graph.inserting_before(node):
                a4 = graph.call_function(aten.reshape.default, (a, [k, b, p, m]))
                ap = graph.call_function(aten.permute.default, (a4, [1, 0, 2, 3]))
                ac = graph.call_function(aten.clone.default, (ap,),
                                         {"memory_format": torch.contiguous_format})
                af = graph.call_function(aten.reshape.default, (ac, [b, k * p, m]))
                r = graph.call_function(aten.bmm.default, (af, src))  # (B, k·p, q)
                r4 = graph.call_function(aten.view.default, (r, [b, k, p, q]))
                rp = graph.call_function(aten.permute.default, (r4, [1, 0, 2, 3]))
                new = graph.call_function(aten.reshape.default, (rp, [k * b, p, q]))
        for user in list(node.users):  # vmap's own view back to (k, B, p, q): no copy needed
            if (user.op == "call_function" and user.target in _VIEWS
                    and _shape(user) == (k, out[0] // k, out[1], out[2])):
                user.replace_all_uses_with(rp)
                graph.erase_node(user)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    if count:
        for node in graph.nodes:  # views downstream of a permuted result may need a copy
            if node.op == "call_function" and node.target in _VIEWS:
                node.target = aten.reshape.default
        graph.eliminate_dead_code()
        gm.recompile()
    return count

