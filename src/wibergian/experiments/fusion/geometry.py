"""Axis-aligned boxes: conversions, intersection over union, polygon reduction.

Conventions (used throughout the fusion experiment):

- a *box* is ``(x, y, w, h)`` in pixels: top-left corner ``(x, y)``, width ``w``, height ``h``
  (the VOT rectangle form);
- *corners* are ``(x0, y0, x1, y1)``: top-left ``(x0, y0)`` and bottom-right
  ``(x1, y1) = (x + w, y + h)``.

All functions work on tensors (or arrays) of shape ``(..., 4)`` and broadcast over the leading
dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def box_to_corners(box: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` boxes ``(x, y, w, h)`` -> corners ``(x, y, x + w, y + h)``."""
    x, y, w, h = box.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def corners_to_box(corners: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corners ``(x0, y0, x1, y1)`` -> boxes ``(x0, y0, x1 - x0, y1 - y0)``.

    Widths/heights may come out negative when the corners are inverted; :func:`iou` treats
    such boxes as empty.
    """
    x0, y0, x1, y1 = corners.unbind(-1)
    return torch.stack((x0, y0, x1 - x0, y1 - y0), dim=-1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes ``a`` and ``b`` (``(..., 4)``, form ``x, y, w, h``).

    ``IoU = |a ∩ b| / (|a| + |b| - |a ∩ b|)``; boxes with non-positive width or height have
    zero area. When both boxes are empty the IoU is defined as 0. Returns shape ``(...)``.
    """
    ax0, ay0, aw, ah = a.unbind(-1)
    bx0, by0, bw, bh = b.unbind(-1)
    aw, ah, bw, bh = aw.clamp(min=0), ah.clamp(min=0), bw.clamp(min=0), bh.clamp(min=0)
    iw = (torch.minimum(ax0 + aw, bx0 + bw) - torch.maximum(ax0, bx0)).clamp(min=0)
    ih = (torch.minimum(ay0 + ah, by0 + bh) - torch.maximum(ay0, by0)).clamp(min=0)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    safe = torch.where(union > 0, union, torch.ones_like(union))
    return torch.where(union > 0, inter / safe, torch.zeros_like(union))


def polygon_to_box(points: Sequence[float]) -> tuple[float, float, float, float]:
    """Reduce a polygon ``x1, y1, x2, y2, ...`` to an axis-aligned box ``(x, y, w, h)``.

    Rule (documented in docs/fusion.md): the **min/max bounding box** of the polygon's
    vertices, ``x = min x_i``, ``y = min y_i``, ``w = max x_i - min x_i``,
    ``h = max y_i - min y_i``. It contains the whole polygon, is exact for axis-aligned
    rectangles given as 4 points, and does not depend on vertex order.
    """
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 1 or arr.size < 6 or arr.size % 2:
        raise ValueError(f"a polygon needs an even number (>= 6) of values, got {arr.size}")
    xs, ys = arr[0::2], arr[1::2]
    return (float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
            float(ys.max() - ys.min()))
