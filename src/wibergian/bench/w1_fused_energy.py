"""W1's value, gradient and Hessian as one fused loop, for the forward solves that keep no graph.

The eager version (``w1._w1_vgh``) makes ~15 passes over ``(B, K)`` per evaluation, 11-14
ms at B = 20,000, and is called 21 times per W1 forward. Compiled as it stands, with the wells
``K`` as the last (reduced) dimension, Inductor's six reductions did not vectorise (12.5 ms).
With the data transposed to ``(K, B)`` the reductions run across ``K`` rows while the loop
vectorises along the contiguous batch: 5.6 ms for the whole batch (measured here, 1 thread).

The transposed copies of ``a`` and ``c`` are cut once per solve into contiguous blocks of
``COLS`` problems (the last padded, so one compilation serves every batch size) and reused by
every evaluation of that solve: the cache is keyed on the tensors' memory, shape, strides and
version counters (it holds the tensors, so their memory cannot be reused while cached), so a
different or modified tensor rebuilds it. Only calls without
autograd tracking come here (``W1Energy.value_gradient_hessian``); compilation and its
fallback are ``fused.py``'s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..compiled import pad_rows
from . import fused

COLS = 4096


def _vgh_columns(y0: Tensor, y1: Tensor, a_t: Tensor, c_t: Tensor, m: Tensor, i0: Tensor,
                 i1: Tensor) -> tuple[Tensor, ...]:
    """One block: ``y0, y1`` ``(COLS,)``, ``a_t, c_t`` ``(K, COLS)``, ``m, i0, i1`` ``(K, 1)``.
    Returns ``E, g0, g1, h00, h11, h01``, each ``(COLS,)`` (see ``w1._w1_vgh``)."""
    d0, d1 = y0 - a_t, y1 - c_t
    t0, t1 = d0 * i0, d1 * i1
    w = m * torch.exp(-(d0 * t0 + d1 * t1))
    wt0, wt1 = w * t0, w * t1
    return (-w.sum(0), 2.0 * wt0.sum(0), 2.0 * wt1.sum(0),
            (w * (2.0 * i0) - 4.0 * wt0 * t0).sum(0), (w * (2.0 * i1) - 4.0 * wt1 * t1).sum(0),
            -4.0 * (wt0 * t1).sum(0))


class ColumnBlocks:
    """``a, c`` ``(B, K)`` as contiguous ``(K, COLS)`` blocks, rebuilt only when they change."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._keep: tuple[Tensor, Tensor] | None = None
        self._blocks: list[tuple[Tensor, Tensor]] = []

    @staticmethod
    def _key_of(a: Tensor, c: Tensor) -> tuple:
        # detach() makes a new tensor object per call but shares the storage and the version
        # counter; holding the tensors (below) keeps their memory from being reused meanwhile
        return tuple((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t._version)
                     for t in (a, c))

    def get(self, a: Tensor, c: Tensor) -> list[tuple[Tensor, Tensor]]:
        key = self._key_of(a, c)
        if key != self._key:
            self._blocks = [(pad_rows(a[lo:lo + COLS].T, COLS, 1),
                             pad_rows(c[lo:lo + COLS].T, COLS, 1))
                            for lo in range(0, a.shape[0], COLS)]
            self._key, self._keep = key, (a, c)
        return self._blocks


def value_gradient_hessian(cache: ColumnBlocks, y: Tensor, a: Tensor, c: Tensor, m: Tensor,
                           s0: Tensor, s1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(E (B,), ∇E (B, 2), ∇²E (B, 2, 2))`` through the fused kernel (untracked tensors)."""
    b = y.shape[0]
    i0, i1 = (1.0 / s0**2)[:, None], (1.0 / s1**2)[:, None]
    mm = m[:, None]
    outs = []
    for j, (a_t, c_t) in enumerate(cache.get(a, c)):
        lo = j * COLS
        n = min(COLS, b - lo)
        y0, y1 = pad_rows(y[lo:lo + n, 0], COLS), pad_rows(y[lo:lo + n, 1], COLS)
        out = fused.run("w1_vgh", _vgh_columns, y0, y1, a_t, c_t, mm, i0, i1)
        outs.append(torch.stack(out, -1)[:n])
    e, g0, g1, h00, h11, h01 = torch.cat(outs).unbind(-1)
    g = torch.stack([g0, g1], -1)
    h = torch.stack([torch.stack([h00, h01], -1), torch.stack([h01, h11], -1)], -2)
    return e, g, h

