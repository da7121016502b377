"""Generated robust line-fitting problems whose points carry noisy descriptors.

One problem: a line ``v = a u + b`` with ``a ~ U[-1, 1]``, ``b ~ U[-0.5, 0.5]`` and ``N`` points
``(u_i, v_i)``, ``u_i ~ U[-1, 1]``. A fraction ``outlier_frac`` are outliers,
``v_i ~ U[-2, 2]``; the inliers lie on the line with Gaussian noise whose standard deviation is
``noise_good`` for "precise" inliers and ``noise_bad`` for "imprecise" ones (half each).

Each point has a descriptor ``f_i ∈ R^D`` (``D = 2 k``), a stand-in for a local appearance
descriptor: the first ``k`` entries are ``s_i m + ε`` with ``s_i = +1`` for inliers, ``-1`` for
outliers, the last ``k`` are ``q_i m + ε`` with ``q_i = +1`` for precise points, ``-1``
otherwise (outliers: random sign), ``ε ~ N(0, I)`` and ``m = signal / sqrt(k)`` per entry. So
the descriptor is only *correlated* with being an inlier and with being precise; neither is
readable from it exactly.

The inlier label is what a classifier can be trained on; the precision is visible to the
end-to-end loss only (through the fitted line). This split is deliberate and documented in
docs/endtoend.md: it is the situation where training through the fit can help.

Every problem also carries ``C`` RANSAC-style hypotheses: lines through ``C`` random pairs of
its points (the multi-start candidates of the robust fit).

All data here is generated (labelled so in every output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

TRAIN_STREAM = 11
TEST_STREAM = 12
LABEL = "generated data (robust line fitting with noisy per-point descriptors)"


@dataclass(frozen=True)
class LineSpec:
    """Sizes and noise levels of one generated problem."""

    n_points: int = 40
    outlier_frac: float = 0.5
    noise_good: float = 0.01
    noise_bad: float = 0.15
    half_dim: int = 3
    signal: float = 1.5
    n_hypotheses: int = 16

    def __post_init__(self) -> None:
        if self.n_points < 4:
            raise ValueError(f"n_points must be >= 4; got {self.n_points}")
        if not 0.0 <= self.outlier_frac < 1.0:
            raise ValueError(f"outlier_frac must be in [0, 1); got {self.outlier_frac}")
        if min(self.noise_good, self.noise_bad) <= 0:
            raise ValueError("noise levels must be > 0")
        if self.half_dim < 1 or self.n_hypotheses < 1:
            raise ValueError("half_dim and n_hypotheses must be >= 1")

    @property
    def feat_dim(self) -> int:
        return 2 * self.half_dim

    @property
    def n_inliers(self) -> int:
        return max(2, round(self.n_points * (1 - self.outlier_frac)))


def make_generator(stream: int, seed: int, step: int = 0) -> torch.Generator:
    """A torch generator seeded from ``(stream, seed, step)`` (numpy SeedSequence mixing)."""
    state = np.random.SeedSequence([stream, seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def sample_batch(n: int, generator: torch.Generator, spec: LineSpec = LineSpec(),
                 dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Draw ``n`` problems.

    Returns a dict of tensors with first dimension ``n``:
        ``u``, ``v`` ``(n, N)`` point coordinates; ``feats`` ``(n, N, D)`` descriptors;
        ``inlier`` ``(n, N)`` 0/1; ``precise`` ``(n, N)`` 0/1 (inliers only);
        ``theta`` ``(n, 2)`` true ``(a, b)``; ``hyp`` ``(n, C, 2)`` pair hypotheses.
    """
    if n < 1:
        raise ValueError(f"need at least one problem; got n={n}")
    g = generator
    N, ni = spec.n_points, spec.n_inliers
    a = torch.rand(n, generator=g, dtype=dtype) * 2 - 1
    b = torch.rand(n, generator=g, dtype=dtype) - 0.5
    u = torch.rand(n, N, generator=g, dtype=dtype) * 2 - 1
    inlier = torch.zeros(n, N, dtype=dtype)
    inlier[:, :ni] = 1.0
    precise = torch.zeros(n, N, dtype=dtype)
    precise[:, : ni // 2] = 1.0
    std = torch.where(precise > 0, spec.noise_good, spec.noise_bad)
    v_in = a[:, None] * u + b[:, None] + std * torch.randn(n, N, generator=g, dtype=dtype)
    v_out = torch.rand(n, N, generator=g, dtype=dtype) * 4 - 2
    v = torch.where(inlier > 0, v_in, v_out)
    k = spec.half_dim
    m = spec.signal / k**0.5
    s = inlier * 2 - 1
    q_rand = torch.randint(0, 2, (n, N), generator=g).to(dtype) * 2 - 1
    q = torch.where(inlier > 0, precise * 2 - 1, q_rand)
    eps = torch.randn(n, N, 2 * k, generator=g, dtype=dtype)
    feats = torch.cat([s[..., None] * m + eps[..., :k], q[..., None] * m + eps[..., k:]], -1)
    # shuffle point order per problem (the model must not rely on it)
    perm = torch.argsort(torch.rand(n, N, generator=g), dim=1)
    take = lambda t: torch.gather(t, 1, perm if t.dim() == 2 else perm[..., None].expand_as(t))  # noqa: E731
    u, v, inlier, precise, feats = map(take, (u, v, inlier, precise, feats))
    hyp = pair_hypotheses(u, v, spec.n_hypotheses, g)
    return {"u": u, "v": v, "feats": feats, "inlier": inlier, "precise": precise,
            "theta": torch.stack([a, b], -1), "hyp": hyp}


def pair_hypotheses(u: Tensor, v: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Lines through ``count`` random point pairs per problem: ``(B, count, 2)`` ``(a, b)``.

    Pairs with nearly equal ``u`` get a clamped denominator (their line is steep and will lose the
    lowest-energy selection)."""
    B, N = u.shape
    i = torch.randint(0, N, (B, count), generator=generator)
    j = (i + 1 + torch.randint(0, N - 1, (B, count), generator=generator)) % N
    u1, v1 = torch.gather(u, 1, i), torch.gather(v, 1, i)
    u2, v2 = torch.gather(u, 1, j), torch.gather(v, 1, j)
    du = u2 - u1
    du = torch.where(du.abs() < 1e-3, torch.full_like(du, 1e-3) * torch.sign(du + 1e-12), du)
    a = (v2 - v1) / du
    b = v1 - a * u1
    return torch.stack([a, b], -1)


def train_sampler(seed: int, spec: LineSpec = LineSpec(), dtype: torch.dtype = torch.float64):
    """A trainer data callable ``(step, generator) -> batch``: fresh problems every update.

    The batch size comes from the trainer through a closure attribute ``batch_size`` set by
    the caller; problems depend on ``(seed, step)`` only, so a resumed run sees the same data."""

    def fn(step: int, generator: torch.Generator) -> dict[str, Tensor]:
        return sample_batch(fn.batch_size, make_generator(TRAIN_STREAM, seed, step), spec, dtype)

    fn.batch_size = 32  # type: ignore[attr-defined]
    return fn


def test_batch(n: int = 1000, seed: int = 0, spec: LineSpec = LineSpec(),
               dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """``n`` held-out problems from a stream disjoint from every training problem."""
    return sample_batch(n, make_generator(TEST_STREAM, seed), spec, dtype)
