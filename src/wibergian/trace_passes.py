"""How a compiled kernel's graph is built (``compiled.py``, ``compile=True``).

``make_fx`` traces the function on fake tensors of one block; then, in order:

1. the ``torch.func`` Hessian route and the multi-start candidates: ``vmap``'s copies of an
   unbatched matrix folded into one product (``fold.py``);
2. the Hessian routes: algebraic simplification (``simplify.py``, with ``onehot.py``'s one-hot
   products), the ``torch.func`` route when ``compiled.SIMPLIFY_GRAPH``, the reverse route when
   ``compiled.SIMPLIFY_REVERSE``; a route ``torch.func`` refuses is traced the reverse way;
3. every graph: CPU matrix-vector products lowered (``matvec.py``, ``compiled.LOWER_MATVEC``),
   identity matrices stored as buffers (``index_consts.py``), divisions by small broadcast
   operands hoisted as reciprocals (``reciprocal.py``).

A rewrite that raises leaves the graph as it was before it (re-traced; counted in
``compiled.SIMPLIFY_FALLBACKS`` / ``compiled.MATVEC_FALLBACKS``). The switches and counters live
in ``compiled.py`` (read at trace time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .fold import fold_expanded_bmm
from .index_consts import store_identities
from .reciprocal import hoist_reciprocals
from .simplify import simplify_graph


def trace_graph(ce: Any, fn: Callable[..., Any], yb: Tensor, pb: list[Tensor]) -> Any:
    """The rewritten graph of ``fn`` (a ``CompiledEnergy`` ``ce``'s function) at ``(yb, pb)``."""
    from . import compiled

    graph = _simplified(ce, fn, yb, pb)
    if compiled.LOWER_MATVEC:
        try:
            compiled.lower_matvec(graph)
        except Exception:  # noqa: BLE001 - the graph as traced and simplified (counted)
            compiled.MATVEC_FALLBACKS["count"] += 1
            graph = _simplified(ce, fn, yb, pb)
    store_identities(graph)
    hoist_reciprocals(graph)
    return graph


def _simplified(ce: Any, fn: Callable[..., Any], yb: Tensor, pb: list[Tensor]) -> Any:
    """``make_fx`` graph of ``fn`` (fake tensors); for the ``torch.func`` route and the
    candidates ``vmap``'s copies folded away (``fold.py``), the Hessian routes then simplified
    (``simplify.py``); the reverse route where ``torch.func`` refuses the energy."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from . import compiled

    if fn == ce._vgh_func:
        try:
            graph = make_fx(fn, tracing_mode="fake")(yb, *pb)
        except Exception:  # noqa: BLE001 - not functorch-compatible: the reverse route
            fn = ce._vgh
        else:
            fold_expanded_bmm(graph)
            if compiled.SIMPLIFY_GRAPH:
                try:
                    simplify_graph(graph)
                except Exception:  # noqa: BLE001 - the folded graph, unsimplified (counted)
                    compiled.SIMPLIFY_FALLBACKS["count"] += 1
                    graph = make_fx(fn, tracing_mode="fake")(yb, *pb)
                    fold_expanded_bmm(graph)
            return graph
    graph = make_fx(fn, tracing_mode="fake")(yb, *pb)
    if fn == ce._candidates:  # vmap's C copies of an unbatched matrix, folded too
        fold_expanded_bmm(graph)
    if fn == ce._vgh and compiled.SIMPLIFY_REVERSE:
        try:
            simplify_graph(graph)
        except Exception:  # noqa: BLE001 - the graph as traced (counted)
            compiled.SIMPLIFY_FALLBACKS["count"] += 1
            graph = make_fx(fn, tracing_mode="fake")(yb, *pb)
    return graph
