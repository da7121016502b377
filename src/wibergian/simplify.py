"""Algebraic simplification of the traced Hessian graphs (``compile=True``).

``derivatives.func_value_gradient_hessian`` pushes the ``n`` coordinate directions ``e_k``
through the energy's forward-mode derivative under ``vmap``; traced by ``make_fx`` the graph
still multiplies by that one-hot basis, carries autograd's zero tangents and unit factors and
copies tensors that only repeat along the vmapped dimension. After ``fold.py``, the passes here
rewrite the ATen graph in place, each a sound identity checked on values and metadata (shapes,
dtypes, devices from ``node.meta["val"]``, refreshed by fake-tensor propagation before every
sweep), never on names:

- **one-hot basis.** ``bmm(A, S) → A`` and ``bmm(S, A) → A`` when ``S`` is the identity in every
  batch; ``mm(S, A)`` with ``S = reshape(C)``, ``C[k, r, :] = e_k`` (or ``C[r, k, :] = e_k``)
  is row ``k`` of ``A`` repeated: ``expand`` + ``reshape`` of ``A``, no product.
  (``Σ_j A_ij δ_jk = A_ik``.) For ``E = Σ softplus(X y)`` the tangent of ``X y`` along ``e_k`` is
  column ``k`` of ``X``: the ``65 M``-flop ``bmm(X, I)`` at ``n = 32`` disappears.
- **zeros.** ``bmm``/``mm``/``mul`` with an all-zero operand and the ``*_backward`` ops with a
  zero incoming gradient give zeros; ``x + 0 → x`` and ``x - 0 → x`` when the result has ``x``'s
  shape and dtype.
- **units.** ``x·1``, ``x/1``, ``x**1 → x``, ``x·ones → x`` (same shape and dtype), ``x**0 → 1``.
- **copies.** ``_to_copy``/``clone`` keeping dtype, device and layout, of a tensor no operation
  mutates, is its input (an ``expand`` then stays a broadcast view: the ``n`` copies vmap made of
  a tensor that repeats along the directions are not materialised); ``copy_`` of ``src`` into a
  fresh zero buffer used only there is ``expand(src)``.

The reverse route (``derivatives.value_gradient_hessian``, ``n < compiled.FUNC_MIN_N``) is
simplified too: its row ``i`` pushes the cotangent ``e_i`` (``select_backward`` of ones) back
through the gradient's graph, and ``onehot.py``'s rule turns ``bmm(X, V)`` with every fibre of
``V`` along the contracted dimension the same ``c·e_k`` into ``c·X[..., k:k+1]`` (a select, no
product; ``bmm(V, A)`` and ``mm`` alike).

"Constant" means computed from no input (``eye``, ``zeros``, ``full``, ``*_like`` and views, copies,
``select_backward`` / ``slice_backward`` and pointwise ops of those): such tensors are evaluated
here on their few distinct values (a broadcast dimension is kept as a stride-0 view), so the
identity, one-hot and zero tests are checks of actual values, skipped (no rewrite) above
:data:`MAX_CONST` distinct numbers; a tensor any in-place operation writes to (through any view) is
no constant. The zero and identity rules assume finite operands (``0·∞`` is NaN, the rewritten graph
gives 0), as compilers' algebraic simplifiers do: at a point where the energy's value or gradient is
already non-finite the solvers report it, but a non-finite term that only the unsimplified Hessian
would show is not reproduced. Every ``view`` becomes ``reshape`` (a rewritten operand may be a
non-contiguous view), and an output that would alias an input, be a broadcast view or not be
contiguous is cloned (every consumer of ``H`` makes it contiguous anyway).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor, fx

from .onehot import SCATTERS, one_hot_product, scattered_value

aten = torch.ops.aten
MAX_CONST = 1 << 20  # distinct values evaluated per constant tensor

_CREATE = {aten.zeros.default: 0.0, aten.ones.default: 1.0, aten.zeros_like.default: 0.0,
           aten.ones_like.default: 1.0, aten._efficientzerotensor.default: 0.0,
           aten._new_zeros_with_same_feature_meta.default: 0.0, aten.new_zeros.default: 0.0,
           aten.new_ones.default: 1.0}
_FULL = {aten.full.default, aten.full_like.default, aten.new_full.default}
_VIEW = {aten.expand.default, aten.permute.default, aten.unsqueeze.default, aten.squeeze.dim,
         aten.squeeze.dims, aten.squeeze.default, aten.transpose.int, aten.t.default,
         aten.alias.default, aten.detach.default, aten.select.int, aten.slice.Tensor}
_RESHAPE = {aten.view.default, aten._unsafe_view.default, aten.reshape.default}
_COPY = {aten.clone.default, aten._to_copy.default}
_ZERO_IF_ANY = {aten.bmm.default, aten.mm.default, aten.mul.Tensor}
_ZERO_IF_FIRST = {aten.softplus_backward.default, aten.sigmoid_backward.default,
                  aten.tanh_backward.default, aten.threshold_backward.default, aten.mul.Scalar,
                  aten.neg.default, aten.sum.dim_IntList, aten.sum.default}
_FRESH = {aten._new_zeros_with_same_feature_meta.default, aten.zeros.default,
          aten.zeros_like.default, aten.new_zeros.default, aten.empty.memory_format}


def _val(x: Any) -> Tensor | None:
    v = x.meta.get("val") if isinstance(x, fx.Node) else None
    return v if isinstance(v, Tensor) else None


def _compress(t: Tensor) -> Tensor:
    """The distinct values of ``t``: every stride-0 (broadcast) dimension cut to length 1."""
    return t[tuple(slice(0, 1) if s == 0 else slice(None) for s in t.stride())]


def _is_mutation(node: fx.Node) -> bool:
    return node.op == "call_function" and getattr(
        getattr(node.target, "_schema", None), "is_mutable", False)


def _mutations(graph: fx.Graph) -> dict[fx.Node, int]:
    """For every node, how many in-place operations write to its storage: nodes joined by
    views (and an in-place op's result, an alias of its first argument) share one count."""
    parent: dict[fx.Node, fx.Node] = {}

    def root(x: fx.Node) -> fx.Node:
        while parent.get(x, x) is not x:
            x = parent[x]
        return x

    for node in graph.nodes:
        if node.op == "call_function" and node.args and isinstance(node.args[0], fx.Node) and (
                node.target in _VIEW or node.target in _RESHAPE or _is_mutation(node)):
            parent[root(node)] = root(node.args[0])
    count: Counter[fx.Node] = Counter(root(n) for n in graph.nodes if _is_mutation(n))
    return {n: count[root(n)] for n in graph.nodes}


class _Consts:
    """Values of the graph's input-independent nodes (``None``: depends on an input, or too
    large, or an operation not modelled here)."""

    def __init__(self, mutations: dict[fx.Node, int]) -> None:
        self.memo: dict[fx.Node, Tensor | None] = {}
        self.mutations = mutations  # a tensor written in place is no constant

    def __call__(self, node: Any) -> Tensor | None:
        if not isinstance(node, fx.Node):
            return None
        if node not in self.memo:
            self.memo[node] = None  # cycles cannot occur; guards re-entry
            try:
                self.memo[node] = self._eval(node)
            except Exception:  # noqa: BLE001 - anything unexpected: not a known constant
                self.memo[node] = None
        return self.memo[node]

    def _eval(self, node: fx.Node) -> Tensor | None:
        if node.op != "call_function" or self.mutations.get(node, 1):
            return None
        f, a, v = node.target, node.args, _val(node)
        if f in _CREATE or f in _FULL:
            fill = _CREATE.get(f, a[-1] if f in _FULL else 0.0)
            return torch.full((), fill, dtype=v.dtype).expand(v.shape)
        if f == aten.eye.default:
            return torch.eye(*a, dtype=v.dtype) if v.numel() <= MAX_CONST else None
        if f in _VIEW:
            x = self(a[0])
            return None if x is None else f(x, *a[1:])
        if f in _RESHAPE:
            return self._reshape(node)
        if f in SCATTERS:  # a reverse pass's one-hot cotangent e_i (onehot.py)
            x = self(a[0])
            return None if x is None else scattered_value(x, node)
        if f in _COPY or f == aten.copy_.default:
            x = self(a[-1] if f == aten.copy_.default else a[0])
            if x is None:
                return None
            return _compress(x).to(v.dtype).expand(v.shape)
        if torch.Tag.pointwise in getattr(f, "tags", ()):
            args = [self(x) if isinstance(x, fx.Node) else x for x in a]
            if any(x is None for x in args):
                return None
            shape = v.shape
            tensors = [x.expand(shape) for x in args if isinstance(x, Tensor)]
            keep = tuple(slice(0, 1) if all(t.stride(d) == 0 for t in tensors) else slice(None)
                         for d in range(len(shape)))
            small = [x.expand(shape)[keep] if isinstance(x, Tensor) else x for x in args]
            if small and isinstance(small[0], Tensor) and small[0].numel() > MAX_CONST:
                return None
            return f(*small, **node.kwargs).expand(shape)
        return None

    def _reshape(self, node: fx.Node) -> Tensor | None:
        """``reshape(reshape(x, s1), s2) = reshape(x, s2)``: walk back to a source whose value
        can be viewed with the new shape (no copy), else copy a small one."""
        shape = list(node.args[1])
        cur: Any = node.args[0]
        while isinstance(cur, fx.Node):
            x = self(cur)  # None (too large to copy): an earlier source may still view
            if x is not None:
                try:
                    return x.view(shape)
                except RuntimeError:
                    pass
            t = cur.target if cur.op == "call_function" else None
            if t in _RESHAPE or t in (aten.alias.default, aten.detach.default, aten.clone.default):
                cur = cur.args[0]
            elif t == aten.expand.default and _val(cur.args[0]) is not None and tuple(
                    _val(cur.args[0]).shape) == tuple(_val(cur).shape):
                cur = cur.args[0]
            else:
                break
        x = self(node.args[0])
        return x.reshape(shape) if x is not None and x.numel() <= MAX_CONST else None


def _is(c: Tensor | None, value: float) -> bool:
    return c is not None and bool((_compress(c) == value).all())


def _batch_identity(c: Tensor | None) -> bool:
    """``c`` is ``(B, m, m)`` with every batch the identity."""
    if c is None or c.dim() != 3 or c.shape[1] != c.shape[2]:
        return False
    s = _compress(c)
    if s.shape[1:] != c.shape[1:]:
        return False
    return bool(torch.equal(s, torch.eye(c.shape[1], dtype=c.dtype).expand_as(s)))


def _one_hot_rows(consts: _Consts, s: fx.Node) -> tuple[str, int] | None:
    """``("blocked", r)`` when ``s`` ``(m·r, m)`` is a reshape of ``C`` ``(m, r, m)`` with
    ``C[k, j] = e_k``; ``("tiled", r)`` for ``C`` ``(r, m, m)`` with ``C[j, k] = e_k``."""
    if s.op != "call_function" or s.target not in _RESHAPE:
        return None
    c = consts(s.args[0])
    if c is None or c.dim() != 3:
        return None
    for kind, perm in (("blocked", (1, 0, 2)), ("tiled", (0, 1, 2))):
        p = c.permute(perm)  # (r, m, m): every slice should be the identity
        if _batch_identity(p):
            return kind, p.shape[0]
    return None


class _Rewriter:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.g = gm.graph
        self.mutations = _mutations(gm.graph)
        self.consts = _Consts(self.mutations)
        self.counts: Counter[str] = Counter()

    def const_full(self, node: fx.Node, value: float) -> fx.Node:
        v = _val(node)
        with self.g.inserting_before(node):
            s = self.g.call_function(aten.full.default, ([], value), {
                "dtype": v.dtype, "layout": torch.strided, "device": v.device})
            return self.g.call_function(aten.expand.default, (s, list(v.shape)))

    def same(self, node: fx.Node, x: Any) -> bool:
        """``x`` can stand for ``node``: a tensor node of the same shape and dtype, not
        mutated."""
        v, w = _val(node), _val(x)
        return (v is not None and w is not None and tuple(v.shape) == tuple(w.shape)
                and v.dtype == w.dtype and v.device == w.device and not self.mutations.get(x, 1))

    def rewrite(self, node: fx.Node) -> tuple[str, fx.Node] | None:  # noqa: C901
        f, a, c = node.target, node.args, self.consts
        if f == aten.copy_.default:  # the one write to a fresh buffer read nowhere else
            buf, src = a[0], a[1]
            if (isinstance(buf, fx.Node) and buf.op == "call_function" and buf.target in _FRESH
                    and len(buf.users) == 1 and self.mutations.get(node) == 1
                    and _val(src) is not None and _val(node) is not None
                    and _val(src).dtype == _val(node).dtype):
                with self.g.inserting_before(node):
                    e = self.g.call_function(aten.expand.default, (src, list(_val(node).shape)))
                return "copy into fresh buffer", e
        if _val(node) is None or self.mutations.get(node, 1):
            return None
        if f == aten.bmm.default:
            if _batch_identity(c(a[1])) and self.same(node, a[0]):
                return "identity product", a[0]
            if _batch_identity(c(a[0])) and self.same(node, a[1]):
                return "identity product", a[1]
        if f in (aten.bmm.default, aten.mm.default) and c(node) is None:
            hit = one_hot_product(self, node)
            if hit is not None:
                return hit
        if f == aten.mm.default and isinstance(a[0], fx.Node):
            hit = _one_hot_rows(c, a[0])
            w = _val(a[1])
            if hit is not None and w is not None and w.dtype == _val(node).dtype:
                kind, r = hit
                m, h = w.shape
                with self.g.inserting_before(node):
                    if kind == "blocked":
                        u = self.g.call_function(aten.unsqueeze.default, (a[1], 1))
                        e = self.g.call_function(aten.expand.default, (u, [m, r, h]))
                    else:
                        u = self.g.call_function(aten.unsqueeze.default, (a[1], 0))
                        e = self.g.call_function(aten.expand.default, (u, [r, m, h]))
                    return "one-hot product", self.g.call_function(aten.reshape.default,
                                                                   (e, [m * r, h]))
        tensors = [x for x in a if isinstance(x, fx.Node)]
        if c(node) is None:  # (a constant node stays: its consumers use its value)
            if f in _ZERO_IF_ANY and any(_is(c(x), 0.0) for x in tensors):
                return "zero product", self.const_full(node, 0.0)
            if f in _ZERO_IF_FIRST and _is(c(a[0]), 0.0):
                return "zero product", self.const_full(node, 0.0)
        if f in (aten.add.Tensor, aten.sub.Tensor) and len(tensors) == 2:
            x, y = a[0], a[1]
            if _is(c(y), 0.0) and self.same(node, x):
                return "add zero", x
            if f == aten.add.Tensor and _is(c(x), 0.0) and self.same(node, y):
                return "add zero", y
        if f in (aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar,
                 aten.pow.Tensor_Scalar):
            x, y = a[0], a[1]
            if isinstance(y, (int, float)) and not isinstance(y, bool) and y == 1:
                if self.same(node, x):
                    return "unit factor", x
            if f == aten.pow.Tensor_Scalar and isinstance(y, (int, float)) and y == 0:
                return "power zero", self.const_full(node, 1.0)
            if f == aten.mul.Tensor and isinstance(y, fx.Node):
                if _is(c(y), 1.0) and self.same(node, x):
                    return "unit factor", x
                if _is(c(x), 1.0) and self.same(node, y):
                    return "unit factor", y
        if f in _COPY and isinstance(a[0], fx.Node) and self.same(node, a[0]):
            v, w = _val(node), _val(a[0])
            kw = node.kwargs
            if (v.layout == w.layout and kw.get("dtype", w.dtype) == w.dtype
                    and kw.get("device", w.device) == w.device
                    and kw.get("layout", w.layout) == w.layout
                    and kw.get("memory_format") in (None, torch.preserve_format)):
                return "copy of unchanged tensor", a[0]
        return None


def _refresh(gm: fx.GraphModule) -> None:
    """Recompute every node's ``meta["val"]`` (fake tensors) from the placeholders'."""
    from torch._guards import detect_fake_mode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    inputs = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    FakeTensorProp(gm, detect_fake_mode(inputs)).propagate_dont_convert_inputs(*inputs)


def _protect_outputs(graph: fx.Graph) -> None:
    """Clone an output that is (a view of) an input or a broadcast view, or not contiguous
    (every consumer of ``H`` makes it contiguous: the kernel then writes it so)."""
    out = next(n for n in graph.nodes if n.op == "output")
    views = _VIEW | _RESHAPE

    def risky(x: fx.Node) -> bool:
        while x.op == "call_function" and x.target in views:
            if x.target == aten.expand.default:
                return True
            x = x.args[0]
        return x.op == "placeholder" or x.target in (aten.full.default,)

    def fix(arg: Any) -> Any:
        v = _val(arg)
        if isinstance(arg, fx.Node) and (risky(arg) or (v is not None and not v.is_contiguous())):
            with graph.inserting_before(out):
                return graph.call_function(aten.clone.default, (arg,),
                                           {"memory_format": torch.contiguous_format})
        return arg

    out.args = (fx.node.map_aggregate(out.args[0], fix),)


def simplify_graph(gm: fx.GraphModule, max_sweeps: int = 10) -> dict[str, int]:
    """Apply the rewrites of the module doc to ``gm`` in place until none fires; returns how
    many times each fired (empty: the graph is unchanged)."""
    graph = gm.graph
    counts: Counter[str] = Counter()
    for _ in range(max_sweeps):
        for node in graph.nodes:  # a rewritten operand may be a non-contiguous view
            if node.op == "call_function" and node.target in _RESHAPE:
                node.target = aten.reshape.default
        gm.recompile()
        _refresh(gm)
        rw = _Rewriter(gm)
        fired = 0
        for node in list(graph.nodes):
            if node.op != "call_function" or not node.users:
                continue
            hit = rw.rewrite(node)
            if hit is None:
                continue
            rule, new = hit
            if new is node:
                continue
            node.replace_all_uses_with(new)
            counts[rule] += 1
            fired += 1
            if node.target == aten.copy_.default:  # its buffer is dead now
                buf = node.args[0]
                graph.erase_node(node)
                graph.erase_node(buf)
        graph.eliminate_dead_code()
        if not fired:
            break
    if counts:
        _protect_outputs(graph)
        graph.eliminate_dead_code()
        gm.recompile()
    return dict(counts)
