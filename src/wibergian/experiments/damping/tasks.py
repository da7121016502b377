"""The experiments as `generic.Task`s: tracker fusion, end-to-end line fitting, pose.

Each builder loads or generates its data and wraps the experiment's own model, loss and
held-out metric unchanged (the method is imposed by `regimes.imposed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .generic import Task


def _index_batches(n_rows: int, size: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(count):
        yield torch.randperm(n_rows, generator=g)[:size]


# ----------------------------------------------------------------------------- fusion

def fusion_task(frames: Any, name: str, data_label: str, seed: int = 0,
                eval_frames: int | None = None) -> Task:
    """Fusion on ``frames`` (a ``fusion.data.Frames``): protocol "frames", split ``seed``;
    metric mean IoU on the held-out frames (at most ``eval_frames`` of them, evenly spaced)."""
    from wibergian.experiments.fusion.data import split
    from wibergian.experiments.fusion.train import FusionSettings, fusion_loss, mean_iou

    tr, te = split(frames, "frames", seed)
    train, test = frames.subset(tr), frames.subset(te)
    if eval_frames is not None and len(test) > eval_frames:
        keep = torch.linspace(0, len(test) - 1, eval_frames).round().long()
        test = test.subset(keep)
    settings = FusionSettings()
    n_trackers = len(frames.trackers)
    tensors = train.tensors()

    def make_model(s: int) -> nn.Module:
        torch.manual_seed(s)
        return settings.model(n_trackers).to(frames.gt.dtype)

    def problems(size: int, count: int, s: int) -> Iterator[Any]:
        for idx in _index_batches(len(train), size, count, s):
            yield tuple(t[idx] for t in tensors)

    def evaluate(model: nn.Module) -> float:
        return mean_iou(model, test)

    return Task(name=name, data=data_label, make_model=make_model, loss_fn=fusion_loss,
                train_data=tensors, problems=problems, evaluate=evaluate, metric="mean IoU",
                higher_is_better=True, explode_threshold=settings.explode_threshold,
                notes={"train_frames": len(train), "test_frames": len(test),
                       "trackers": n_trackers, "protocol": "frames", "split_seed": seed})


def zoo_frames(out_dir: Path, quick: bool) -> tuple[Any, str]:
    """Generate the tracker zoo (default settings; quick: 14 shorter sequences) in ``out_dir``."""
    from wibergian.experiments.fusion.data import frames_from_dataset
    from wibergian.experiments.fusion.vot import load_dataset
    from wibergian.experiments.fusion.zoo import generate, load_config

    overrides: dict[str, Any] = {}
    if quick:
        overrides = {"n_sequences": 8, "length_min": 80, "length_max": 120}
    cfg = load_config(None, overrides)
    zoo = Path(out_dir) / "damping_zoo"
    generate(zoo, cfg)
    label = (f"generated tracker zoo ({cfg['n_sequences']} sequences, {cfg['n_trackers']} "
             f"trackers, generator seed {cfg['seed']})")
    return frames_from_dataset(load_dataset(zoo)), label


# ----------------------------------------------------------------------------- end to end

def endtoend_task(n_test: int = 1000) -> Task:
    """Weight network + robust line fit trained through the argmin (generated data); metric
    mean parameter error ``||θ* - θ_true||`` on ``n_test`` held-out problems."""
    from wibergian.experiments.endtoend.data import (
        LABEL,
        LineSpec,
        make_generator,
        sample_batch,
        test_batch,
        train_sampler,
    )
    from wibergian.experiments.endtoend.model import LineFitModel, param_error
    from wibergian.experiments.endtoend.run import _fit_loss

    spec = LineSpec()
    test = test_batch(n_test, 0, spec)
    sampler = train_sampler(0, spec)

    def make_model(s: int) -> nn.Module:
        torch.manual_seed(s)
        return LineFitModel(spec.feat_dim, mode="argmin", damping=0.1).double()

    def data(step: int, generator: torch.Generator) -> Any:
        sampler.batch_size = data.batch_size  # type: ignore[attr-defined]
        return sampler(step, generator)

    data.batch_size = 32  # type: ignore[attr-defined]

    def problems(size: int, count: int, s: int) -> Iterator[Any]:
        for k in range(count):
            yield sample_batch(size, make_generator(31, s, k), spec)

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            theta = model(test)
        return float(param_error(theta, test["theta"]).mean())

    return Task(name="endtoend", data=LABEL, make_model=make_model, loss_fn=_fit_loss,
                train_data=data, problems=problems, evaluate=evaluate,
                metric="mean parameter error", higher_is_better=False,
                notes={"n_test": n_test})


# ----------------------------------------------------------------------------- pose

def pose_task(num_models: int = 3, num_basis: int = 8, grid: int = 16,
              test_frames: int | None = None) -> Task:
    """Multi-camera pose (PPCA mixture + Huber fit through the argmin) on the built-in data:
    real CMU mocap, 4 real camera rigs, simulated 2D detections; metric P1 (mm) on the test
    frames. The optimiser keeps the experiment's per-parameter learning-rate factors."""
    from wibergian.experiments.pose.datasets import load_default
    from wibergian.experiments.pose.evaluate import evaluate_model
    from wibergian.experiments.pose.model import ModelConfig
    from wibergian.experiments.pose.train import LR_FACTORS, arrays, build_model, pose_loss
    from wibergian.train.averaging import make_asgd

    data = load_default()
    train, test = data.train(), data.test()
    if test_frames is not None and len(test.test_idx) > test_frames:
        keep = torch.linspace(0, len(test.test_idx) - 1, test_frames).round().long()
        test = test.subset(keep)
    tensors = arrays(train).as_tuple()
    cfg = ModelConfig(mode="multi", loss="huber", grid=grid)

    def make_model(s: int) -> nn.Module:
        model = build_model(data, cfg, num_models, num_basis, source="half", seed=0)
        model.set_learnable("all")
        return model

    def optimizer(model: nn.Module, tc: Any) -> torch.optim.Optimizer:
        groups = [{"params": [p], "lr": tc.lr * LR_FACTORS.get(n, 1.0)}
                  for n, p in model.named_parameters() if p.requires_grad]
        if tc.optimizer == "asgd":
            return make_asgd(groups, tc.lr)
        if tc.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum)
        return torch.optim.Adam(groups, lr=tc.lr)

    def problems(size: int, count: int, s: int) -> Iterator[Any]:
        for idx in _index_batches(tensors[0].shape[0], size, count, s):
            yield tuple(t[idx] for t in tensors)

    def evaluate(model: nn.Module) -> float:
        return float(evaluate_model(model, test)["P1"])

    return Task(name="pose", data=data.source, make_model=make_model, loss_fn=pose_loss,
                train_data=tensors, problems=problems, evaluate=evaluate, metric="P1 (mm)",
                higher_is_better=False, optimizer_factory=optimizer,
                notes={"train_frames": int(tensors[0].shape[0]),
                       "test_frames": len(test.test_idx), "mode": "multi", "loss": "huber",
                       "num_models": num_models, "num_basis": num_basis, "grid": grid})
