"""Vectorised optimisers for R independent scalar parameters (the toy's σ of R runs).

Each run r has its own optimiser kind, learning rate and clipping threshold; one call of
`RunOptimizer.step(g)` applies, per run, exactly the update the matching ``torch.optim`` class
would apply to a one-element parameter (tested against torch in tests/damping):

- ``sgd``: ``w -= lr g``;
- ``momentum``: ``v = m v + g; w -= lr v`` (``torch.optim.SGD(momentum=m)``, m = 0.9);
- ``asgd``: ``w -= lr g`` plus the running mean of the iterates ``mean(w_1..w_k)``
  (``wibergian.train.averaging.AveragedSGD``, the trainer's ``"asgd"``);
- ``adam``: ``torch.optim.Adam`` with betas (0.9, 0.999), eps 1e-8.

Clipping (``clip[r] > 0``): ``g <- g · min(1, clip / |g|)``, the scalar case of
``clip_grad_norm_``, applied before the optimiser sees the gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KINDS = ("sgd", "momentum", "asgd", "adam")
MOMENTUM = 0.9
BETAS = (0.9, 0.999)
EPS = 1e-8


class RunOptimizer:
    """Per-run optimiser state for ``w`` of shape ``(R,)`` (float64)."""

    def __init__(self, kinds: Sequence[str], lr: Sequence[float], clip: Sequence[float],
                 w0: torch.Tensor) -> None:
        bad = sorted(set(kinds) - set(KINDS))
        if bad:
            raise ValueError(f"unknown optimiser kinds {bad}; choose from {KINDS}")
        r = w0.shape[0]
        if len(kinds) != r or len(lr) != r or len(clip) != r:
            raise ValueError("kinds, lr and clip need one entry per run")
        dt = w0.dtype
        self.kind = {k: torch.tensor([x == k for x in kinds]) for k in KINDS}
        self.lr = torch.tensor(list(lr), dtype=dt)
        self.clip = torch.tensor(list(clip), dtype=dt)
        self.w = w0.clone()
        self.v = torch.zeros_like(w0)        # momentum buffer / Adam first moment
        self.s = torch.zeros_like(w0)        # Adam second moment
        self.avg = w0.clone()                # ASGD average
        self.k = 0

    def clipped(self, g: torch.Tensor) -> torch.Tensor:
        on = self.clip > 0
        scale = torch.where(on & (g.abs() > self.clip),
                            self.clip / g.abs().clamp_min(1e-300), torch.ones_like(g))
        return g * scale

    def step(self, g: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """One update of the runs where ``alive``; returns the new ``w`` (others unchanged)."""
        self.k += 1
        k = self.k
        g = torch.where(alive, self.clipped(g), torch.zeros_like(g))
        new = self.w.clone()
        plain = self.kind["sgd"] | self.kind["asgd"]
        new = torch.where(plain, self.w - self.lr * g, new)
        v_m = MOMENTUM * self.v + g
        new = torch.where(self.kind["momentum"], self.w - self.lr * v_m, new)
        b1, b2 = BETAS
        m = b1 * self.v + (1 - b1) * g
        s = b2 * self.s + (1 - b2) * g * g
        mhat, shat = m / (1 - b1 ** k), s / (1 - b2 ** k)
        new = torch.where(self.kind["adam"], self.w - self.lr * mhat / (shat.sqrt() + EPS), new)
        self.v = torch.where(alive, torch.where(self.kind["adam"], m, v_m), self.v)
        self.s = torch.where(alive & self.kind["adam"], s, self.s)
        new = torch.where(alive, new, self.w)
        mu = 1.0 / k                         # running mean of w_1..w_k
        self.avg = torch.where(alive, self.avg + mu * (new - self.avg), self.avg)
        self.w = new
        return new

    def evaluation_weights(self) -> torch.Tensor:
        """What a run is evaluated with: the average for ``asgd``, ``w`` otherwise."""
        return torch.where(self.kind["asgd"], self.avg, self.w)
