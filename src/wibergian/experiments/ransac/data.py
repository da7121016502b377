"""Generated data for the MLESAC toy (Toso et al. 2019, Fig. 2).

One problem: ``n_inliers`` points ``x_i ~ N(c, inlier_std²)`` with centre ``c ~ U[-spread, spread]``
among ``n_outliers`` points ``x_j ~ U[-spread, spread]`` (paper: 10 inliers, 100 outliers,
spread 40, std 4). The target is the *sample* mean of the inliers, ``mu = mean_i x_i``.

Every problem is a deterministic function of ``(stream, seed, step)``: the damped and the
undamped runs of one seed see exactly the same samples (common random numbers), the held-out
test set is a separate stream, and a run can be replayed step by step (the trainer path and the
batched path draw identical data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: Stream identifiers mixed into the seed: training samples and the held-out test set.
TRAIN_STREAM = 1
TEST_STREAM = 2


@dataclass(frozen=True)
class ToySpec:
    """Sizes of one generated problem (defaults: the paper's)."""

    n_inliers: int = 10
    n_outliers: int = 100
    spread: float = 40.0
    inlier_std: float = 4.0

    def __post_init__(self) -> None:
        if self.n_inliers < 1 or self.n_outliers < 0:
            raise ValueError(
                f"need n_inliers >= 1 and n_outliers >= 0; got {self.n_inliers}, {self.n_outliers}"
            )
        if not (self.spread > 0 and self.inlier_std > 0):
            raise ValueError(f"spread and inlier_std must be > 0; got {self.spread}, "
                             f"{self.inlier_std}")

    @property
    def n_points(self) -> int:
        return self.n_inliers + self.n_outliers


@dataclass
class ToyBatch:
    """A batch of ``B`` generated problems.

    Attributes:
        x: ``(B, N)`` points, inliers first then outliers (the order does not matter to E).
        mu: ``(B,)`` sample mean of each problem's inliers (the target).
        centre: ``(B,)`` the centre ``c`` the inliers were drawn around.
    """

    x: Tensor
    mu: Tensor
    centre: Tensor


#: The paper's sizes.
PAPER_SPEC = ToySpec()


def make_generator(stream: int, seed: int, step: int) -> torch.Generator:
    """A torch generator seeded from ``(stream, seed, step)`` through numpy's SeedSequence."""
    if min(stream, seed, step) < 0:
        raise ValueError(f"stream, seed and step must be >= 0; got {stream}, {seed}, {step}")
    state = np.random.SeedSequence([stream, seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def sample_problems(
    n: int, generator: torch.Generator, spec: ToySpec = ToySpec(),
    dtype: torch.dtype = torch.float64,
) -> ToyBatch:
    """Draw ``n`` independent problems with ``generator`` (shapes in :class:`ToyBatch`)."""
    if n < 1:
        raise ValueError(f"need at least one problem; got n={n}")
    s = spec.spread
    centre = (torch.rand(n, generator=generator, dtype=dtype) * 2 - 1) * s
    inl = centre[:, None] + spec.inlier_std * torch.randn(
        n, spec.n_inliers, generator=generator, dtype=dtype)
    out = (torch.rand(n, spec.n_outliers, generator=generator, dtype=dtype) * 2 - 1) * s
    return ToyBatch(x=torch.cat([inl, out], dim=1), mu=inl.mean(dim=1), centre=centre)


def train_batch(seeds: list[int], step: int, per_seed: int = 1, spec: ToySpec = ToySpec(),
                dtype: torch.dtype = torch.float64) -> ToyBatch:
    """The training problems of update ``step`` for each seed, stacked seed-major.

    Returns ``B = len(seeds) * per_seed`` problems; rows ``k*per_seed:(k+1)*per_seed`` belong to
    ``seeds[k]`` and depend only on ``(seeds[k], step)``.
    """
    parts = [sample_problems(per_seed, make_generator(TRAIN_STREAM, sd, step), spec, dtype)
             for sd in seeds]
    return ToyBatch(x=torch.cat([p.x for p in parts]), mu=torch.cat([p.mu for p in parts]),
                    centre=torch.cat([p.centre for p in parts]))


def test_set(n: int = 1000, seed: int = 0, spec: ToySpec = ToySpec(),
             dtype: torch.dtype = torch.float64) -> ToyBatch:
    """``n`` held-out problems (a stream disjoint from every training sample)."""
    return sample_problems(n, make_generator(TEST_STREAM, seed, 0), spec, dtype)
