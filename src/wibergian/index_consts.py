"""Identity matrices in a traced graph stored as constant buffers (``compile=True``).

Inductor lowers ``aten.eye`` as an index comparison (``iota(i) == iota(j)``, cast to the dtype)
evaluated inside every kernel that reads it, element by element: in float64 on CPU each vector
of a broadcast identity costs a ``uint8`` vector compare, a mask conversion and a multiply. The
Hessians of ``E = f(y) + ½ λ ||y - μ||²`` read ``λ I`` broadcast over the batch (the ``vmap``
route keeps ``eye`` from its one-hot basis, ``simplify.py``), twice in the symmetrisation
``½ (H + Hᵀ)``: at ``B = 1000``, ``n = 32`` the final ``(B, n, n)`` kernel took ~4.2 ms, ~1.5 of
them the symmetrisation alone (``python benchmarks/vgh_kernel.py``).

:func:`store_identities` replaces each ``eye`` node of a traced ATen graph (computed from no
input; at most :data:`MAX_ELEMENTS` entries) by a ``get_attr`` of a buffer holding the same
values, which the compiled kernel then loads (a broadcast read of ``n²`` numbers that stay in
cache) instead of recomputing. Exact: the buffer holds the values ``eye`` returns, with its dtype
and device; views, products and sums of it are unchanged.
"""

from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten
#: identities larger than this many entries are left to Inductor (a buffer read is then no
#: cheaper than the index comparison)
MAX_ELEMENTS = 1 << 16
#: ``False`` only to measure the pass (``python benchmarks/vgh_kernel.py``)
ENABLED = True
_EYE = {aten.eye.default, aten.eye.m}


def store_identities(gm: fx.GraphModule) -> int:
    """Replace the ``eye`` nodes of ``gm`` (in place) by constant buffers (nothing when
    :data:`ENABLED` is false); returns how many."""
    if not ENABLED:
        return 0
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _EYE:
            continue
        if any(isinstance(a, fx.Node) for a in node.args):  # (sizes given as traced values)
            continue
        kwargs = {k: v for k, v in node.kwargs.items() if k != "pin_memory"}
        try:
            value = node.target(*node.args, **kwargs)
        except Exception:  # noqa: BLE001 - not evaluable here (e.g. another device): left as is
            continue
        if value.numel() > MAX_ELEMENTS or value.layout != torch.strided:
            continue
        name = f"_identity_{count}"
        while hasattr(gm, name):
            name += "_"
        gm.register_buffer(name, value)
        with graph.inserting_before(node):
            const = graph.get_attr(name)
        const.meta.update(node.meta)
        node.replace_all_uses_with(const)
        graph.erase_node(node)
        count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count
