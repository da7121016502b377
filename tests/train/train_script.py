"""A tiny training run for the trainer's subprocess tests (plain python or under torchrun).

Model (float64): h = tanh(W x + c) in R^6, then a `wibergian.ArgminLayer`
    y*(h) = argmin_y ||A y - h||^2 + exp(s) ||y||^2 + 0.1 sum(y^4)   in R^3
(damped Newton forward, damped implicit adjoint backward; W, c, A, s ordinary nn.Parameters).
Loss: mean squared error to generated targets (mean over the local batch).

``--data``: "tensors" (fixed generated set of 64 examples), "online" (a fresh generated batch per
step from the trainer's generator) or "dataset" (a torch Dataset over the fixed set).
``--noise``: dropout on h and a random term drawn from numpy and python's ``random`` in the
loss, so that exact resume needs every RNG state restored.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from wibergian import ArgminLayer
from wibergian.train import (
    TrainConfig,
    Trainer,
    add_train_args,
    config_from_args,
    run_dir_from_args,
    seed_everything,
)

DIM_X, DIM_H, DIM_Y = 4, 6, 3


class Energy(nn.Module):
    """E(y; h) = ||A y - h||^2 + exp(s) ||y||^2 + 0.1 sum(y^4): y (B, 3), h (B, 6) -> (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(DIM_H, DIM_Y))
        self.s = nn.Parameter(torch.tensor(-1.0))

    def forward(self, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        fit = ((y @ self.A.T - h) ** 2).sum(-1)
        return fit + torch.exp(self.s) * (y**2).sum(-1) + 0.1 * (y**4).sum(-1)


class Net(nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.enc = nn.Linear(DIM_X, DIM_H)
        self.drop = nn.Dropout(dropout)
        self.argmin = ArgminLayer(Energy(), damping=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.tanh(self.enc(x)))
        return self.argmin(h.new_zeros(h.shape[0], DIM_Y), h)


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0] * x[:, 1], torch.sin(x[:, 2]), x[:, 3] - x[:, 0]], dim=1)


def fixed_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, DIM_X, generator=g, dtype=torch.float64)
    return x, target(x)


def online(step: int, gen: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch_size, DIM_X, generator=gen, dtype=torch.float64)
    return x, target(x) + 0.01 * torch.randn(batch_size, DIM_Y, generator=gen,
                                             dtype=torch.float64)


def train_one(args: argparse.Namespace, data_kind: str, run_dir: Path | None,
              resume: bool) -> None:
    """One training run of the tiny model on ``data_kind`` data."""
    cfg = config_from_args(args, plot=False, keep_checkpoints=None, eval_every=10)
    seed_everything(cfg.seed)
    model = Net(0.2 if args.noise else 0.0).double()
    x, y = fixed_data()
    if data_kind == "tensors":
        data = (x, y)
    elif data_kind == "dataset":
        data = TensorDataset(x, y)
    else:
        def data(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return online(step, gen, cfg.batch_size)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        bx, by = batch
        loss = ((m(bx) - by) ** 2).mean()
        if args.noise:
            loss = loss * (1.0 + 0.1 * float(np.random.randn()) + 0.1 * random.random())  # noqa: NPY002
        return loss, {"mae": float((m(bx) - by).abs().mean().detach())}

    def eval_fn(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"mse": float(((m(x) - y) ** 2).mean())}

    Trainer(model, loss_fn, data, cfg, run_dir=run_dir, resume=resume, eval_fn=eval_fn).fit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    add_train_args(p, TrainConfig(steps=30, batch_size=16, lr=0.05, checkpoint_every=10,
                                  log_every=5))
    p.add_argument("--data", default="tensors",
                   help="tensors, online or dataset; a comma list runs one training per kind "
                        "(in --out/KIND), sharing one process group under torchrun")
    p.add_argument("--noise", action="store_true")
    args = p.parse_args(argv)
    run_dir, resume = run_dir_from_args(args)
    kinds = args.data.split(",")
    if len(kinds) == 1:
        train_one(args, kinds[0], run_dir, resume)
        return 0
    own_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")
    try:
        for kind in kinds:
            train_one(args, kind, None if run_dir is None else run_dir / kind, resume)
        if own_group:
            dist.barrier()  # both processes done before either destroys the group
    finally:
        if own_group:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
