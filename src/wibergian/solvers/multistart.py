"""Multi-start: evaluate the energy at candidate points and start from the best one.

``candidates`` has shape ``(B, C, n)``: ``C`` candidate starts per problem (for tracker fusion,
every tracker's corner). The energy is evaluated at each candidate (``C`` batched calls, so that
batched parameters keep their ``(B, ...)`` layout) and problem ``b`` starts at its lowest one.
Non-finite energies never win; ``mask`` ``(B, C)`` excludes candidates (for example trackers that
failed on this frame).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..derivatives import energy_value
from ..energy import EnergyFn


def best_candidate(
    energy: EnergyFn,
    candidates: Tensor,
    params: Sequence[Tensor],
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The lowest-energy candidate per problem.

    Returns:
        ``(y0, index)``: starts ``(B, n)`` and the chosen candidate index ``(B,)``.
    """
    if candidates.dim() != 3:
        raise ValueError(
            f"candidates must have shape (B, C, n); got {tuple(candidates.shape)}"
        )
    b, c, _ = candidates.shape
    if c == 0:
        raise ValueError("candidates has no candidate (C = 0)")
    if mask is not None and mask.shape != (b, c):
        raise ValueError(f"candidate mask must have shape ({b}, {c}); got {tuple(mask.shape)}")
    ps = [p.detach() for p in params]
    with torch.no_grad():
        es = torch.stack([energy_value(energy, candidates[:, j], ps) for j in range(c)], dim=1)
        es = torch.where(torch.isfinite(es), es, torch.full_like(es, float("inf")))
        if mask is not None:
            es = torch.where(mask.bool(), es, torch.full_like(es, float("inf")))
        idx = es.argmin(dim=1)
        y0 = candidates[torch.arange(b, device=candidates.device), idx]
    return y0.detach().clone(), idx
