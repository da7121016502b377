"""Run status: diverged on exploding or non-finite gradients (or parameters), collapsed when
the held-out IoU falls below the untrained model's; per-step gradient norms are recorded."""

from __future__ import annotations

import math

import torch

from wibergian.experiments.fusion.data import Frames
from wibergian.experiments.fusion.evaluate import COLLAPSE_MARGIN, apply_collapse
from wibergian.experiments.fusion.train import (
    FusionSettings,
    fusion_loss,
    grad_norm_summary,
    run_status,
    train_model,
)

S = FusionSettings()


def test_exploding_gradients_mean_diverged() -> None:
    calm = [1.0, 1.2, 0.9, 1.1] * 20
    assert run_status({"status": "completed", "steps": 80}, calm, S, 3.0)["status"] == \
        "completed"
    blown = calm[:30] + [5e3] + calm[31:]          # > 1e3 x the early median (about 1.05)
    r = run_status({"status": "completed", "steps": 80}, blown, S, 3.0)
    assert r["status"] == "diverged" and r["step"] == 31 and "exploding gradient" in r["reason"]
    r = run_status({"status": "completed"}, calm[:5] + [math.inf] + calm, S, 3.0)
    assert r["status"] == "diverged" and r["step"] == 6 and "non-finite" in r["reason"]
    r = run_status({"status": "completed", "steps": 80}, calm, S, 2e4)
    assert r["status"] == "diverged" and "parameters exploded" in r["reason"]
    # the trainer's own stop is kept as is
    stopped = {"status": "diverged", "step": 3, "reason": "non-finite loss"}
    assert run_status(stopped, calm, S, 1.0) == stopped
    g = grad_norm_summary([1.0, 3.0, 2.0, math.nan])
    assert g["median"] == 2.5 and g["max"] == math.inf


def test_collapsed_when_heldout_iou_falls_below_init() -> None:
    assert apply_collapse("completed", 0.05, 0.50) == "collapsed"
    assert apply_collapse("completed", 0.50 - COLLAPSE_MARGIN + 1e-3, 0.50) == "completed"
    assert apply_collapse("completed", 0.60, 0.50) == "completed"
    assert apply_collapse("diverged", 0.05, 0.50) == "diverged"


def _frames(n: int = 48, T: int = 4) -> Frames:
    g = torch.Generator().manual_seed(1)
    gt = torch.tensor([50.0, 40.0, 20.0, 10.0], dtype=torch.float64).expand(n, 4).clone()
    boxes = gt.unsqueeze(1) + 2 * torch.randn(n, T, 4, generator=g, dtype=torch.float64)
    return Frames(boxes, torch.ones(n, T, dtype=torch.bool), gt,
                  torch.arange(n, dtype=torch.float64) % 12 + 1,
                  torch.tensor([20.0, 10.0], dtype=torch.float64).expand(n, T, 2).clone(),
                  torch.arange(n) // 12, [f"s{i}" for i in range(n // 12)],
                  [f"t{i}" for i in range(T)])


def test_recorded_gradient_norm_is_the_true_one() -> None:
    f = _frames()
    settings = FusionSettings(steps=3, batch_size=len(f), lr=0.01, max_iter=20)
    model, rec = train_model(f, settings, seed=0, damping=0.1)
    assert rec["status"] == "completed" and len(rec["grad_norms"]) == 3
    # full batch: step 1's gradient is the gradient of the loss at the initialisation
    init = settings.model(len(f.trackers)).double()
    loss, _ = fusion_loss(init, f.tensors())
    grads = torch.autograd.grad(loss, [p for p in init.parameters()])
    want = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    assert abs(rec["grad_norms"][0] - want) < 1e-6 * want
    assert rec["grad_norm"]["max"] == max(rec["grad_norms"])


def test_fewer_learnt_parameters_and_early_stopping() -> None:
    f = _frames()
    settings = FusionSettings(steps=4, batch_size=24, lr=0.05, max_iter=20, learn="mass",
                              early_stop=True, reg_init=1.0)
    model, rec = train_model(f, settings, seed=0, damping=0.1)
    init = settings.model(len(f.trackers)).double()
    for (name, p), (_, p0) in zip(model.named_parameters(), init.named_parameters(),
                                  strict=True):
        if name != "log_mass":      # only the masses are learnt
            assert torch.equal(p.detach(), p0.detach()), name
    assert rec["status"] == "completed" and 0 <= rec["best_step"] <= 4
    assert rec["n_val_frames"] == 12          # one whole sequence of 12 frames held out
