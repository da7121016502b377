"""Autograd's batched ``Xᵀ w`` in the layout the CPU's BLAS serves fast (eager backward passes).

A user's energy that writes ``X @ y.unsqueeze(-1)`` (``X`` ``(B, M, K)``) has, in every backward
pass through it, the product ``Xᵀ w`` (``w`` ``(B, M, 1)``): ``torch.bmm`` of a transposed view
with a column. On this machine's MKL that call costs up to twice the same product written as a
row times the untransposed matrix, ``(wᵀ X)ᵀ`` (``python benchmarks/row_matvec.py --rounds 15``,
B = 1,000, float64, one thread: 0.49-0.73 of the time at ``M·K ≥ 2,048``, 0.74-0.98 at 512,
results equal bit for bit). The Hessian-vector products of Newton-CG and of the matrix-free
backward, and the gradient graphs they start from, are such backward passes, reading ``X`` once
or twice per product: on the ridge-logistic workload at n = 128 (Newton-CG, B = 1,000) the whole
call takes 0.88 of the time (``benchmarks/newton_overheads.py --old <rev> --n 128``). The mode
costs a Python call per operation, so it is not used around the dense path's ``n`` reverse
passes: wrapped around every autograd call, the eager dense Newton at n = 8 took 1.3× longer.

:func:`autograd_grad` is ``torch.autograd.grad`` under a mode that rewrites every
``aten.bmm(a, b)`` with ``b`` a column ``(B, K, 1)``, ``a`` a transposed view
(``a.stride(-2) == 1``) and ``a.shape[-2]·a.shape[-1] ≥`` :data:`MIN_ELEMENTS` on the CPU, as
``bmm(bᵀ, aᵀ)ᵀ``: the same sums, so results differ by rounding at most (the order of the
additions may change). It is a ``TorchDispatchMode`` (below autograd: a graph recorded inside
records the original operation), used for the Hessian-vector products
(``derivatives.hvp_operator``, ``adjoint.py``'s matrix-free solve),
``derivatives.gradient_graph`` and the backward's mixed term, never while ``torch.func``
transforms, ``torch.compile`` or another dispatch mode (``make_fx`` tracing a compiled kernel,
fake tensors) are active: it is then plain ``torch.autograd.grad``.
If an operation fails under it, the call is repeated without it and the rewrite is switched off
for the process (counted in :data:`COUNTS` ``["failed"]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

#: switch for the rewrite (False: :func:`autograd_grad` is ``torch.autograd.grad``)
ENABLED = True
#: smallest ``M·K`` of a rewritten product (below it the two layouts cost the same or the
#: rewrite loses)
MIN_ELEMENTS = 2048
#: ``rewritten``: products rewritten; ``failed``: calls repeated without the mode
COUNTS = {"rewritten": 0, "failed": 0}

_BMM = torch.ops.aten.bmm.default


def _wanted(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (b.dim() == 3 and b.shape[-1] == 1 and a.dim() == 3 and a.device.type == "cpu"
            and a.stride(-2) == 1 and a.stride(-1) != 1
            and a.shape[-2] * a.shape[-1] >= MIN_ELEMENTS and a.dtype == b.dtype
            and a.dtype in (torch.float32, torch.float64))


class _RowMatvec(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        if func is _BMM and not kwargs and _wanted(*args):
            a, b = args
            COUNTS["rewritten"] += 1
            return func(b.mT, a.mT).mT
        return func(*args, **(kwargs or {}))


def _usable() -> bool:
    if not ENABLED:
        return False
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False  # compiling, or tracing (make_fx, fake tensors): record what was written
    return torch._C._functorch.peek_interpreter_stack() is None


def autograd_grad(*args: Any, **kwargs: Any) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad`` with the rewrite on; an error under the mode repeats the call
    without it and switches the rewrite off (a graph freed by the failed call raises
    again, as it would have)."""
    global ENABLED
    if not _usable():
        return torch.autograd.grad(*args, **kwargs)
    try:
        with _RowMatvec():
            return torch.autograd.grad(*args, **kwargs)
    except Exception:  # noqa: BLE001 - an operation the mode cannot run: go on without it
        ENABLED = False
        COUNTS["failed"] += 1
        return torch.autograd.grad(*args, **kwargs)
