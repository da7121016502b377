"""Same configuration, same numbers: two runs give identical metrics and parameters (dropout,
numpy and python randomness in the loss, and on-the-fly data all included)."""

from __future__ import annotations

import random

import numpy as np
import torch

from wibergian.train import TrainConfig, Trainer


def _run(kit, seed):
    torch.manual_seed(1234)  # the trainer re-seeds everything itself from cfg.seed
    random.seed(99)
    model = kit.script.Net(0.3).double()

    def data(step, gen):
        return kit.script.online(step, gen, 12)

    def loss_fn(m, batch):
        bx, by = batch
        noise = 1.0 + 0.1 * float(np.random.randn()) + 0.1 * random.random()  # noqa: NPY002
        loss = ((m(bx) - by) ** 2).mean() * noise
        return loss, {"noise": noise}

    cfg = TrainConfig(steps=12, batch_size=12, lr=0.05, seed=seed, log_every=1, quiet=True,
                      plot=False, lr_schedule="cosine", grad_clip=1.0)
    result = Trainer(model, loss_fn, data, cfg).fit()
    for r in result.history:
        r.pop("wall")
    return result.history, model.state_dict()


def test_same_config_gives_identical_metrics_and_parameters(kit):
    h1, p1 = _run(kit, seed=7)
    h2, p2 = _run(kit, seed=7)
    assert h1 == h2
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    h3, _ = _run(kit, seed=8)  # and the seed matters
    assert [r["loss"] for r in h3] != [r["loss"] for r in h1]
