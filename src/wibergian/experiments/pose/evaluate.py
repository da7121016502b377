"""Evaluation of a lifting model: P1 / P2 / P3 (mm) on the frames of a :class:`PoseData`.

Multi-camera: one reconstruction per frame. Monocular: one reconstruction per frame and view;
every view counts as a sample (the frame's ground truth is repeated over views).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from wibergian.progress import phase

from . import metrics
from .datasets import PoseData
from .model import PoseModel
from .train import arrays


def predict(model: PoseModel, data: PoseData, chunk: int = 128, progress: str | None = None,
            quiet: bool = False) -> tuple[Tensor, Tensor, list]:
    """Reconstructions and matching ground truth, both (N, 17, 3) mm, and per-sample actions.

    With ``progress`` (a phase name), a :func:`wibergian.progress.phase` reports the frames
    done (``quiet``: one line at the end)."""
    a = arrays(data)
    if progress is None:
        pred = model.predict(a.points, a.visible, a.cams, chunk=chunk)
    else:
        n = a.points.shape[0]
        parts = []
        with phase(progress, total=n, unit="frame", quiet=quiet) as p:
            for i in range(0, n, chunk):
                sl = slice(i, i + chunk)
                parts.append(model.predict(a.points[sl], a.visible[sl],
                                           {k: v[sl] for k, v in a.cams.items()}, chunk=chunk))
                p.update(parts[-1].shape[0])
        pred = torch.cat(parts)
    gt = a.gt
    actions = list(data.actions)
    if pred.dim() == 4:  # mono (F, C, J, 3)
        c = pred.shape[1]
        pred = pred.reshape(-1, *pred.shape[2:])
        gt = gt[:, None].expand(-1, c, -1, -1).reshape(-1, *gt.shape[1:])
        actions = [act for act in actions for _ in range(c)]
    return pred, gt, actions


def evaluate_model(model: PoseModel, data: PoseData, chunk: int = 128,
                   progress: str | None = None, quiet: bool = False) -> dict:
    """Metrics of ``model`` on all frames of ``data`` (see ``metrics.evaluate``): the mean
    P1/P2/P3, the median and 90th percentile of P1 and the count over 500 mm
    (:func:`robust_stats`), the per-sample P1 list (``"per_frame_P1"``) and the time taken
    (``"seconds"``). ``progress``/``quiet`` as in :func:`predict`."""
    t0 = time.perf_counter()
    pred, gt, actions = predict(model, data, chunk, progress, quiet)
    out = metrics.evaluate(pred, gt, actions if len(set(actions)) > 1 else None)
    per = metrics.per_frame_errors(pred, gt)["P1"]
    out.update(robust_stats(per))
    out["per_frame_P1"] = per.tolist()
    out["seconds"] = time.perf_counter() - t0
    out["mode"] = model.config.mode
    out["generated_2d"] = bool(data.generated)
    out["source"] = data.source
    return out


#: a sample whose P1 exceeds this (mm) counts as an outlier (a blown-up reconstruction).
OUTLIER_MM = 500.0


def robust_stats(per_sample_p1: Tensor) -> dict:
    """Median and 90th percentile of per-sample P1 (mm) and the count of samples over
    :data:`OUTLIER_MM`: a few blown-up monocular samples can dominate the mean."""
    e = per_sample_p1.double()
    return {"P1_median": float(e.median()), "P1_p90": float(torch.quantile(e, 0.9)),
            "over_500mm": int((e > OUTLIER_MM).sum())}


def summary(m: dict) -> dict:
    """The headline numbers of an :func:`evaluate_model` result (no per-frame lists)."""
    keep = ("P1", "P1_median", "P1_p90", "over_500mm", "P2", "P3", "frames", "seconds",
            "mode", "generated_2d", "source", "per_action", "action_mean")
    return {k: m[k] for k in keep if k in m}


def format_metrics(m: dict) -> str:
    """One line: ``P1 .. mm  P2 .. mm  P3 .. mm  (N samples)``."""
    extra = ""
    if "P1_median" in m:
        extra = (f" (median {m['P1_median']:.1f}, p90 {m['P1_p90']:.1f}, "
                 f"{m['over_500mm']} over 500)")
    return (f"P1 {m['P1']:.1f} mm{extra}  P2 {m['P2']:.1f} mm  P3 {m['P3']:.1f} mm  "
            f"({m['frames']} samples, {m.get('mode', '?')})")

