"""Multi-start: evaluate the energy at candidate points and start from the best one.

``candidates`` has shape ``(B, C, n)``: ``C`` candidate starts per problem (for tracker fusion,
every tracker's corner). Problem ``b`` starts at its lowest one. Non-finite energies never win;
``mask`` ``(B, C)`` excludes candidates (for example trackers that failed on this frame).

All candidates are scored in batched calls of the energy on ``(b·C, n)`` rows (problem-major:
row ``i·C + j`` is candidate ``j`` of problem ``i``), over blocks of problems so that one call
sees at most about ``max_rows`` rows. The parameters are expanded to match: a tensor whose first
dimension is ``B`` (with at least one dimension) is **batched** and each of its rows is repeated
``C`` times (``repeat_interleave``); every other tensor (scalars, and tensors whose first
dimension is not ``B``) is **shared** and passed unchanged. When ``B`` equals the first
dimension of a shared tensor the rule cannot tell them apart: pass ``batched_params`` to say
which are batched. An energy that cannot be evaluated this way (it raises, or returns the wrong
shape) is scored with ``C`` calls on ``(B, n)`` (one per candidate, parameters unchanged): the
documented fallback, counted in :data:`FALLBACKS`.

A compiled energy (``compiled.py``) scores all candidates with one fused kernel,
``CompiledEnergy.candidate_values`` (the energy ``vmap``-ed over the candidate dimension with the
parameters unchanged, traced and compiled: no ``C``-fold copies, one pass; W1 at B = 1,000, 72
candidates, one thread, medians of 8 interleaved rounds: B = 1,000 15 ms against 36 ms for 72
compiled calls, B = 4,096 61 against 101 ms, B = 20,000 0.27 against 0.39 s; the energies are
bit-identical; ``benchmarks/multistart_fused.py``). If that kernel cannot be built (counted in
``compiled.FALLBACKS["candidates"]``), a compiled energy (``scores_per_candidate``) with ``B ≥
PER_CANDIDATE_MIN_ROWS`` is scored with those ``C`` calls directly (not counted): its fused
kernel keeps no ``(rows, ·)`` temporaries, so the blocks' cache locality buys nothing and the
``C``-fold copies of the parameters cost more than the extra calls. Measured on W1 with
``compile=True`` (K = C = 72, one process, whole forward+backward step): B = 1,000 0.19 s per
candidate vs 0.27 s in blocks; B = 256 0.073 vs 0.060 s (the per-call overhead wins there); the
threshold 512 lies between. The eager energy keeps the blocks at every B (its temporaries stay in
cache: at B = 20,000 the blocks took 3.1 s against 3.7 s per candidate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..derivatives import energy_value
from ..energy import EnergyFn

#: rows per batched energy call (blocks of whole problems; at least one problem per block)
MAX_ROWS = 2048
#: a compiled energy (``scores_per_candidate``) is scored per candidate from this many problems
PER_CANDIDATE_MIN_ROWS = 512
#: how many searches fell back to one energy call per candidate
FALLBACKS = {"per_candidate": 0}


def batched_flags(params: Sequence[Tensor], batch: int,
                  batched_params: Sequence[bool] | None = None) -> list[bool]:
    """Which ``params`` are batched (first dimension ``batch``) under the rule above."""
    if batched_params is not None:
        flags = [bool(f) for f in batched_params]
        if len(flags) != len(params):
            raise ValueError(f"batched_params has {len(flags)} entries for {len(params)} params")
        for p, f in zip(params, flags, strict=True):
            if f and (p.dim() == 0 or p.shape[0] != batch):
                raise ValueError(f"a parameter marked batched has shape {tuple(p.shape)}, "
                                 f"not ({batch}, ...)")
        return flags
    return [p.dim() >= 1 and p.shape[0] == batch for p in params]


def _scores_batched(energy: EnergyFn, candidates: Tensor, params: Sequence[Tensor],
                    flags: Sequence[bool], max_rows: int) -> Tensor:
    b, c, n = candidates.shape
    per = max(1, max_rows // c)  # problems per block
    out = []
    for lo in range(0, b, per):
        hi = min(b, lo + per)
        y = candidates[lo:hi].reshape((hi - lo) * c, n)
        ps = [p[lo:hi].repeat_interleave(c, dim=0) if f else p
              for p, f in zip(params, flags, strict=True)]
        out.append(energy_value(energy, y, ps).reshape(hi - lo, c))
    return torch.cat(out) if len(out) > 1 else out[0]


def candidate_energies(energy: EnergyFn, candidates: Tensor, params: Sequence[Tensor],
                       batched_params: Sequence[bool] | None = None,
                       max_rows: int = MAX_ROWS) -> Tensor:
    """Energies ``(B, C)`` of every candidate (no gradient), batched with the per-candidate
    fallback described above."""
    b, c, _ = candidates.shape
    ps = [p.detach() for p in params]
    with torch.no_grad():
        fused = getattr(energy, "candidate_values", None)
        if callable(fused) and c > 1:
            es = fused(candidates, *ps)
            if es is not None:
                return es
        per_candidate = (getattr(energy, "scores_per_candidate", False)
                         and b >= PER_CANDIDATE_MIN_ROWS)
        if c > 1 and not per_candidate:
            flags = batched_flags(ps, b, batched_params)
            try:
                return _scores_batched(energy, candidates, ps, flags, max_rows)
            except (RuntimeError, ValueError, IndexError):
                FALLBACKS["per_candidate"] += 1
        return torch.stack([energy_value(energy, candidates[:, j], ps) for j in range(c)], 1)


def best_candidate(
    energy: EnergyFn,
    candidates: Tensor,
    params: Sequence[Tensor],
    mask: Tensor | None = None,
    batched_params: Sequence[bool] | None = None,
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
    with torch.no_grad():
        es = candidate_energies(energy, candidates, params, batched_params)
        es = torch.where(torch.isfinite(es), es, torch.full_like(es, float("inf")))
        if mask is not None:
            es = torch.where(mask.bool(), es, torch.full_like(es, float("inf")))
        idx = es.argmin(dim=1)
        y0 = candidates[torch.arange(b, device=candidates.device), idx]
    return y0.detach().clone(), idx
