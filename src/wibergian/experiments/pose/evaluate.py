"""Evaluation of a lifting model: P1 / P2 / P3 (mm) on the frames of a :class:`PoseData`.

Multi-camera: one reconstruction per frame. Monocular: one reconstruction per frame and view;
every view counts as a sample (the frame's ground truth is repeated over views).
"""

from __future__ import annotations

import time

from torch import Tensor

from . import metrics
from .datasets import PoseData
from .model import PoseModel
from .train import arrays


def predict(model: PoseModel, data: PoseData, chunk: int = 128) -> tuple[Tensor, Tensor, list]:
    """Reconstructions and matching ground truth, both (N, 17, 3) mm, and per-sample actions."""
    a = arrays(data)
    pred = model.predict(a.points, a.visible, a.cams, chunk=chunk)
    gt = a.gt
    actions = list(data.actions)
    if pred.dim() == 4:  # mono (F, C, J, 3)
        c = pred.shape[1]
        pred = pred.reshape(-1, *pred.shape[2:])
        gt = gt[:, None].expand(-1, c, -1, -1).reshape(-1, *gt.shape[1:])
        actions = [act for act in actions for _ in range(c)]
    return pred, gt, actions


def evaluate_model(model: PoseModel, data: PoseData, chunk: int = 128) -> dict:
    """Metrics of ``model`` on all frames of ``data`` (see ``metrics.evaluate``), plus the
    per-sample P1 list (``"per_frame_P1"``) and the time taken (``"seconds"``)."""
    t0 = time.perf_counter()
    pred, gt, actions = predict(model, data, chunk)
    out = metrics.evaluate(pred, gt, actions if len(set(actions)) > 1 else None)
    out["per_frame_P1"] = metrics.per_frame_errors(pred, gt)["P1"].tolist()
    out["seconds"] = time.perf_counter() - t0
    out["mode"] = model.config.mode
    out["generated_2d"] = bool(data.generated)
    out["source"] = data.source
    return out


def summary(m: dict) -> dict:
    """The headline numbers of an :func:`evaluate_model` result (no per-frame lists)."""
    keep = ("P1", "P2", "P3", "frames", "seconds", "mode", "generated_2d", "source",
            "per_action", "action_mean")
    return {k: m[k] for k in keep if k in m}


def format_metrics(m: dict) -> str:
    """One line: ``P1 .. mm  P2 .. mm  P3 .. mm  (N samples)``."""
    return (f"P1 {m['P1']:.1f} mm  P2 {m['P2']:.1f} mm  P3 {m['P3']:.1f} mm  "
            f"({m['frames']} samples, {m.get('mode', '?')})")

