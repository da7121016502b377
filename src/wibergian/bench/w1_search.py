"""W1's start-point search: the candidate of lowest energy per problem (``O(B·K²)``).

Every PyTorch method of W1 (ours, unrolled, TorchOpt) calls this same function, so whatever it
costs is shared; it is outside any gradient. Two back ends, both returning the float64 argmin:

- eager (``wibergian bench --no-compile``): float64 over blocks of about 4 MB (a large temporary
  is page-fault bound here).
- fused (``fused.py``, the default where ``torch.compile`` works): one loop scores every
  candidate in float32 (``K²`` exponentials per problem, no temporaries), keeps each problem's
  ``TOP`` best, and rescoring those in float64 picks the winner. The pick equals the float64
  argmin unless float32 rounding (relative ~1e-7 of an energy of order 10) pushes the float64
  winner out of the float32 top ``TOP``; the tests compare the two back ends.

Measured here at B = 20,000 (1 thread): eager float64 0.33-0.39 s, fused 0.11 s (compiling it
took 2.4 s, once per process).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import fused

TOP = 4  # float32 survivors rescored in float64
ROWS = 1024  # problems per fused call


def _scores(aa: Tensor, cc: Tensor, m: Tensor, i0: Tensor, i1: Tensor) -> Tensor:
    """``-E`` of every candidate ``j`` of every problem, ``(b, K)``: ``Σ_k m_k exp(-u_jk)``."""
    u = (aa.unsqueeze(2) - aa.unsqueeze(1)).square() * i0
    u = u + (cc.unsqueeze(2) - cc.unsqueeze(1)).square() * i1
    return (torch.exp(-u) * m).sum(-1)


def _pick(aa: Tensor, cc: Tensor, aa32: Tensor, cc32: Tensor, m: Tensor, i0: Tensor,
          i1: Tensor, m32: Tensor, i032: Tensor, i132: Tensor) -> Tensor:
    """Float32 scores (the float32 copies come in as inputs: converting inside the fused loop
    stopped it from vectorising, 3.6x slower), the ``TOP`` best, their float64 rescoring, the
    winner ``(b,)``."""
    top = torch.topk(_scores(aa32, cc32, m32, i032, i132), TOP, -1).indices
    ya, yc = aa.gather(1, top), cc.gather(1, top)  # (b, TOP), float64
    u = (ya.unsqueeze(2) - aa.unsqueeze(1)).square() * i0
    u = u + (yc.unsqueeze(2) - cc.unsqueeze(1)).square() * i1
    best = (torch.exp(-u) * m).sum(-1).argmax(-1)
    return top.gather(1, best[:, None])[:, 0]


def _eager(a: Tensor, c: Tensor, m: Tensor, i0: Tensor, i1: Tensor, chunk_bytes: int) -> Tensor:
    b, k = a.shape
    step = max(1, chunk_bytes // (k * k * a.element_size()))
    idx = torch.empty(b, dtype=torch.long)
    for lo in range(0, b, step):
        aa, cc = a[lo : lo + step], c[lo : lo + step]
        da = aa.unsqueeze(2) - aa.unsqueeze(1)  # (b, j, k): candidate j vs well k
        u = da.square_().mul_(i0)
        dc = cc.unsqueeze(2) - cc.unsqueeze(1)
        u.add_(dc.square_().mul_(i1))
        idx[lo : lo + step] = u.neg_().exp_().mul_(m).sum(-1).argmax(-1)
    return idx


def best_index(a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor,
               chunk_bytes: int = 4 << 20) -> Tensor:
    """Index ``(B,)`` of each problem's lowest-energy candidate (no gradient)."""
    with torch.no_grad():
        a, c = a.detach(), c.detach()
        m, s0, s1 = m.detach(), s0.detach(), s1.detach()
        i0, i1 = 1.0 / s0**2, 1.0 / s1**2
        if not fused.enabled() or a.shape[1] < TOP or a.dtype != torch.float64:
            return _eager(a, c, m, i0, i1, chunk_bytes)
        f = torch.float32
        low = (m.to(f), i0.to(f), i1.to(f))
        return fused.run_blocked("w1_search", _pick, ROWS, (a, c, a.to(f), c.to(f)),
                                 (m, i0, i1, *low))
