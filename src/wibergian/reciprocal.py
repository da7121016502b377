"""Division by a small broadcast operand becomes multiplication by its reciprocal
(``compile=True``).

Energies divide by their scale parameters: ``(y - a)² / s²`` with ``s`` one value per term,
broadcast over the batch (and, for multi-start scores, over the candidates). Traced and compiled,
each ``div`` is a vector division per element of the large operand; on this machine's CPU a
float64 vector division costs about as much as the vector ``exp`` beside it, and W1's multi-start
scores (``K² = 5,184`` terms per problem, two divisions each) are bound by them. Inductor fuses
a cheap pointwise op on the small operand (``s²``, or ``1/s²``) into the loop over the large one,
so a reciprocal written in the graph would still be recomputed per element.

:func:`hoist_reciprocals` rewrites each ``aten.div.Tensor(x, d)`` of a traced ATen graph whose
divisor ``d`` is a floating-point tensor with at most :data:`MAX_DIVISOR` elements and at least
:data:`MIN_RATIO` times fewer than the result, as ``x * r`` with ``r = wibergian::reciprocal(d)``,
an operator opaque to Inductor (its body is eager ``torch.reciprocal``): ``r`` is computed once
per call and read by the fused loop. ``x * (1/d)`` differs from ``x / d`` by at most about one
unit in the last place (two roundings instead of one), the order of what the compiled kernels'
other reassociations (sums in another order) already change; where ``d`` is 0, ``±inf`` or NaN
both give the same non-finite class (``x·inf`` for ``x/0``; ``0·inf`` is NaN as ``0/0`` is).
Measured (``python benchmarks/reciprocal.py``, W1's user energy, float64, one thread): see
docs/method.md.
"""

from __future__ import annotations

import torch
from torch import Tensor, fx

from .matvec import _val  # a node's traced value (the same helper as the matvec pass)

aten = torch.ops.aten
#: the pass runs (``False``: graphs keep their divisions; for benchmarks)
ENABLED = True
#: divisors with at most this many elements are hoisted
MAX_DIVISOR = 1 << 16
#: ... and only when the result has at least this many times more elements
MIN_RATIO = 8
#: divisions rewritten since import
COUNTS = {"rewritten": 0}


@torch.library.custom_op("wibergian::reciprocal", mutates_args=())
def reciprocal(d: Tensor) -> Tensor:
    """``1 / d``, opaque to Inductor (computed once, outside the fused loops)."""
    return torch.reciprocal(d)


@reciprocal.register_fake
def _reciprocal_fake(d: Tensor) -> Tensor:
    return torch.empty_like(d)


def hoist_reciprocals(gm: fx.GraphModule) -> int:
    """Rewrite (in place) the divisions of ``gm`` by small broadcast tensors as the module doc
    says; returns how many were rewritten (0: the graph is unchanged). One reciprocal node per
    distinct divisor node."""
    if not ENABLED:
        return 0
    graph = gm.graph
    done: dict[fx.Node, fx.Node] = {}
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.div.Tensor or node.kwargs:
            continue
        x, d = node.args[0], node.args[1]
        out, dv = _val(node), _val(d)
        if out is None or dv is None or not dv.is_floating_point() or dv.dtype != out.dtype:
            continue
        if dv.numel() > MAX_DIVISOR or dv.numel() * MIN_RATIO > out.numel():
            continue
        if dv.device.type != "cpu":  # Inductor's GPU code is another code path: not measured
            continue
        with graph.inserting_before(node):
            r = done.get(d)
            if r is None:
                r = graph.call_function(torch.ops.wibergian.reciprocal.default, (d,))
                r.meta["val"] = dv.new_empty(dv.shape)
                done[d] = r
            new = graph.call_function(aten.mul.Tensor, (x, r))
            new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    if count:
        graph.lint()
        gm.recompile()
        COUNTS["rewritten"] += count
    return count
