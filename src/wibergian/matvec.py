"""Batched matrix-vector products rewritten for Inductor's CPU code generator (``compile=True``).

Inductor lowers a CPU ``bmm`` with one output column (``(B, M, K) @ (B, K, 1)``) or one output
row as ``mul`` + ``sum`` over ``K`` ("decompose when memory bound", ``kernel/bmm.py``). When
``K`` is the contiguous dimension of the matrix (``X @ y[..., None]`` with ``X`` ``(B, M, K)``
contiguous: the ``z = X y`` of every dense energy), in float64, its C++ code vectorises *along*
the reduction: a masked vector load and a horizontal sum per output row, about 60 ns each on this
machine, whatever ``K``; at ``B = 1000``, ``M = 64`` the compiled product takes ~4 ms at
``K = 8`` where eager ``bmm`` takes ~0.7 ms. (A reduction over a non-contiguous dimension,
``Xᵀ r``, is vectorised across the outputs and compiles well; it is left alone.)

:func:`lower_matvec` rewrites each such CPU ``bmm`` of a traced ATen graph, before
``torch.compile``, by the form measured fastest for its ``K``
(``python benchmarks/matvec_lowering.py``, docs/method.md; float64, ``B = 1000``, ``M = 64``):

- **unrolled** (``UNROLL_MIN_K ≤ K ≤ UNROLL_MAX_K``): ``z = Σ_k X[:, :, k] · v[:, k]``, ``K``
  pointwise terms that Inductor fuses with the energy's next operations and vectorises across
  the ``M`` outputs (strided loads, no horizontal sums);
- **extern** (``UNROLL_MAX_K < K ≤ EXTERN_MAX_K``): the product as the custom operator
  ``wibergian::extern_bmm``, whose body is eager ``torch.bmm`` (Inductor calls it as an opaque
  kernel and cannot decompose it);
- **shared matrix** (the matrix's batch stride is 0, i.e. one ``(M, K)`` matrix expanded over
  the batch, for every ``K ≥ UNROLL_MIN_K``): one ``mm``, ``v (B, K) @ Xᵀ (K, M)``;
- anything else is left unchanged: ``K < UNROLL_MIN_K`` (Inductor does not vectorise along so
  short a reduction: ``K = 3…7`` compile as fast as unrolled, the backward's mixed kernel 1.2-1.4×
  faster), ``K > EXTERN_MAX_K`` (the per-row cost is then a small part of the row's work: at
  ``K = 64`` neither form beat Inductor's beyond the noise, at ``K = 96, 128`` both lost), GPU
  tensors (Inductor's GPU lowering is another code path; not measured here), products that are
  not matrix-vector, and dtypes other than float64: in float32 Inductor's own lowering is fast
  (value kernel 0.61 ms at ``K = 8``, where float64 takes 5.4) and the rewrite measured
  1.2-1.65× slower at ``K = 8…32``.

A one-row product ``(B, 1, K) @ (B, K, N)`` whose ``K`` is contiguous in the matrix is the
transposed case (``(Bᵀ aᵀ)ᵀ``) and is rewritten the same way. Each rewrite is an exact identity
up to floating-point summation order, with the original output's shape, dtype and (contiguous)
strides; the matrix's layout is read from the traced fake tensors (``node.meta["val"]``).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor, fx

aten = torch.ops.aten

#: the reduction lengths rewritten as ``K`` unrolled pointwise terms (inclusive bounds)
UNROLL_MIN_K = 8
UNROLL_MAX_K = 32
#: above ``UNROLL_MAX_K`` and up to this, the product is an opaque eager ``torch.bmm``
EXTERN_MAX_K = 48
#: a product with this many outputs over a non-contiguous ``K ≥ UNROLL_MIN_K`` (``Xᵀ r``) is
#: rewritten as that many reductions (:func:`_narrow`); ``None``: never
NARROW_M: int | None = 2
#: ``None``: choose by ``K`` as above; ``"unroll"`` / ``"extern"`` / ``"none"``: force one form
#: for every matrix-vector product with ``K ≥ 2`` (to measure them, benchmarks/matvec_lowering.py)
FORCE: str | None = None


@torch.library.custom_op("wibergian::extern_bmm", mutates_args=())
def extern_bmm(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm(a, b)``, opaque to Inductor (called as an external kernel)."""
    return torch.bmm(a, b)


@extern_bmm.register_fake
def _extern_bmm_fake(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


def _val(x: object) -> Tensor | None:
    v = x.meta.get("val") if isinstance(x, fx.Node) else None
    return v if isinstance(v, Tensor) else None


def choose(k: int, shared: bool) -> str:
    """The form a CPU matrix-vector product with reduction length ``k`` (contiguous in the
    matrix) is rewritten to: ``"unroll"``, ``"extern"``, ``"mm"`` (shared matrix) or
    ``"none"``."""
    if FORCE is not None:
        return "none" if k < 2 else ("mm" if shared and FORCE != "none" else FORCE)
    if k < UNROLL_MIN_K:
        return "none"
    if shared:
        return "mm"
    if k <= UNROLL_MAX_K:
        return "unroll"
    return "extern" if k <= EXTERN_MAX_K else "none"


def _matvec(node: fx.Node) -> tuple[fx.Node, fx.Node, bool, Tensor] | None:
    """``(matrix, vector, transposed, matrix value)`` when ``node`` is a float64 CPU ``bmm``
    that Inductor would lower as a reduction over the matrix's contiguous dimension: ``(B, M, K) @
    (B, K, 1)`` with ``K`` contiguous in the first operand, or ``(B, 1, K) @ (B, K, N)`` with
    ``K`` contiguous in the second (``transposed``: the product of the operands' transposes)."""
    if node.op != "call_function" or node.target != aten.bmm.default or len(node.args) != 2:
        return None
    a, b = node.args
    va, vb, out = _val(a), _val(b), _val(node)
    if va is None or vb is None or out is None or va.dim() != 3 or vb.dim() != 3:
        return None
    if va.device.type != "cpu" or vb.device.type != "cpu" or va.dtype != torch.float64:
        return None
    _, m, k = va.shape
    n = vb.shape[2]
    if k < 2:
        return None
    if n == 1 and m > 1 and va.stride(2) == 1:
        return a, b, False, va
    if m == 1 and n > 1 and vb.stride(1) == 1:
        return b, a, True, vb.transpose(1, 2)
    return None


def _narrow(node: fx.Node) -> tuple[fx.Node, fx.Node, bool] | None:
    """``(matrix, vector, transposed)`` when ``node`` is a float64 CPU ``bmm`` ``(B, m, K) @
    (B, K, 1)`` with ``m = NARROW_M`` outputs and ``K ≥ UNROLL_MIN_K`` not contiguous in the
    matrix (or its transpose ``(B, 1, K) @ (B, K, m)``, ``K`` not contiguous in the second)."""
    if (NARROW_M is None or FORCE is not None or node.op != "call_function"
            or node.target != aten.bmm.default or len(node.args) != 2):
        return None
    a, b = node.args
    va, vb = _val(a), _val(b)
    if va is None or vb is None or va.dim() != 3 or vb.dim() != 3 or va.dtype != torch.float64:
        return None
    if va.device.type != "cpu" or vb.device.type != "cpu" or va.shape[2] < UNROLL_MIN_K:
        return None
    if va.shape[1] == NARROW_M and vb.shape[2] == 1 and va.stride(2) != 1:
        return a, b, False
    if va.shape[1] == 1 and vb.shape[2] == NARROW_M and vb.stride(1) != 1:
        return b, a, True
    return None


def _lower_narrow(graph: fx.Graph, node: fx.Node, mat: fx.Node, vec: fx.Node, transposed: bool
                  ) -> fx.Node:
    """``z[:, j] = Σ_k A[:, j, k] v[:, k]``, one reduction per output ``j`` (``m = 2`` outputs
    over a strided ``K``: Inductor otherwise vectorises across the two outputs and leaves the
    producers of ``v`` scalar; ``python benchmarks/onehot_reverse.py``)."""
    with graph.inserting_before(node):
        if transposed:  # (B, 1, K) @ (B, K, m) = ((B, m, K) @ (B, K, 1))ᵀ
            mat = graph.call_function(aten.permute.default, (mat, [0, 2, 1]))
        v = graph.call_function(aten.reshape.default, (vec, [_val(vec).shape[0], -1]))  # (B, K)
        cols = []
        for j in range(NARROW_M):
            p = graph.call_function(aten.mul.Tensor, (
                graph.call_function(aten.select.int, (mat, 1, j)), v))
            cols.append(graph.call_function(aten.sum.dim_IntList, (p, [1], True)))
        z = graph.call_function(aten.stack.default, (cols, 2 if transposed else 1))
    return z


def lower_matvec(gm: fx.GraphModule) -> dict[str, int]:
    """Rewrite the CPU matrix-vector ``bmm`` nodes of ``gm`` (in place) as the module doc says;
    returns how many were rewritten per form (empty: the graph is unchanged)."""
    graph = gm.graph
    counts: Counter[str] = Counter()
    for node in list(graph.nodes):
        narrow = _narrow(node)
        if narrow is not None:
            node.replace_all_uses_with(_lower_narrow(graph, node, *narrow))
            graph.erase_node(node)
            counts["narrow"] += 1
            continue
        hit = _matvec(node)
        if hit is None:
            continue
        mat, vec, transposed, vm = hit
        b, m, k = vm.shape
        form = choose(k, shared=vm.stride(0) == 0 and b > 1)
        if form == "none":
            continue
        with graph.inserting_before(node):
            if transposed:  # (B, 1, K) @ (B, K, N) = ((B, N, K) @ (B, K, 1))ᵀ
                mat = graph.call_function(aten.permute.default, (mat, [0, 2, 1]))
                vec = graph.call_function(aten.permute.default, (vec, [0, 2, 1]))
            if form == "mm":  # v (B, K) @ X[0]ᵀ (K, M)
                x0 = graph.call_function(aten.select.int, (mat, 0, 0))
                xt = graph.call_function(aten.permute.default, (x0, [1, 0]))
                v2 = graph.call_function(aten.reshape.default, (vec, [b, k]))
                z = graph.call_function(aten.mm.default, (v2, xt))
                z = graph.call_function(aten.unsqueeze.default, (z, 2))
            elif form == "unroll":
                z = None
                for j in range(k):
                    xj = graph.call_function(aten.select.int, (mat, 2, j))  # (B, M)
                    vj = graph.call_function(aten.select.int, (vec, 1, j))  # (B, 1)
                    t = graph.call_function(aten.mul.Tensor, (xj, vj))
                    z = t if z is None else graph.call_function(aten.add.Tensor, (z, t))
                z = graph.call_function(aten.unsqueeze.default, (z, 2))
            elif form == "extern":
                z = graph.call_function(torch.ops.wibergian.extern_bmm.default, (mat, vec))
            else:
                raise ValueError(f"matvec.FORCE: unknown form {form!r}")
            if transposed:
                z = graph.call_function(aten.permute.default, (z, [0, 2, 1]))
        node.replace_all_uses_with(z)
        graph.erase_node(node)
        counts[form] += 1
    if counts:
        graph.lint()
        gm.recompile()
    return dict(counts)
