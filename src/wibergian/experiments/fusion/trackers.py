"""The real trackers (OpenCV's) and their parameter variants; running one on a sequence.

Every configuration is a real OpenCV tracker (``opencv-contrib-python``: the ``[trackers]``
extra), initialised once on the first frame's ground truth and never re-initialised (the
paper's protocol: VOT2018 runs without re-initialisation). A variant changes the tracker's
parameters (where OpenCV exposes them: KCF, CSRT, MIL) or its input (half resolution, grey
scale) for the legacy trackers whose parameters are not exposed to Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def _kcf(**kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        import cv2

        p = cv2.TrackerKCF_Params()
        for k, v in kw.items():
            setattr(p, k, v)
        return cv2.TrackerKCF_create(p)
    return make


def _csrt(**kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        import cv2

        p = cv2.TrackerCSRT_Params()
        for k, v in kw.items():
            setattr(p, k, v)
        return cv2.TrackerCSRT_create(p)
    return make


def _mil(**kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        import cv2

        p = cv2.TrackerMIL_Params()
        for k, v in kw.items():
            setattr(p, k, v)
        return cv2.TrackerMIL_create(p)
    return make


def _legacy(name: str) -> Callable[[], Any]:
    def make() -> Any:
        import cv2

        return getattr(cv2.legacy, f"Tracker{name}_create")()
    return make


@dataclass(frozen=True)
class TrackerConfig:
    """A named tracker configuration: a factory and the input it sees.

    ``input_scale`` < 1 runs the tracker on a downscaled frame (boxes are scaled back);
    ``grey`` feeds it a grey-scale frame (as 3 equal channels); ``blur`` > 0 smooths its
    input with a Gaussian of that standard deviation (pixels).
    """

    name: str
    make: Callable[[], Any]
    input_scale: float = 1.0
    grey: bool = False
    blur: float = 0.0


CONFIGS: tuple[TrackerConfig, ...] = (
    TrackerConfig("kcf", _kcf()),
    TrackerConfig("kcf_nocompress", _kcf(compress_feature=False)),
    TrackerConfig("kcf_fastlearn", _kcf(interp_factor=0.2)),
    TrackerConfig("kcf_slowlearn", _kcf(interp_factor=0.02)),
    TrackerConfig("kcf_wide", _kcf(sigma=0.5, output_sigma_factor=0.1)),
    TrackerConfig("kcf_half", _kcf(), input_scale=0.5),
    TrackerConfig("kcf_half_lowthresh", _kcf(detect_thresh=0.2), input_scale=0.5),
    TrackerConfig("csrt_light", _csrt(number_of_scales=17, admm_iterations=2,
                                      template_size=120.0, use_color_names=False)),
    TrackerConfig("csrt_small", _csrt(template_size=90.0, number_of_scales=17,
                                      use_segmentation=False)),
    TrackerConfig("mil_half", _mil(samplerSearchWinSize=12.0, samplerTrackMaxNegNum=30),
                  input_scale=0.5),
    TrackerConfig("mosse", _legacy("MOSSE")),
    TrackerConfig("mosse_blur", _legacy("MOSSE"), blur=1.5),
    TrackerConfig("medianflow", _legacy("MedianFlow")),
    TrackerConfig("medianflow_half", _legacy("MedianFlow"), input_scale=0.5),
    TrackerConfig("medianflow_blur", _legacy("MedianFlow"), blur=1.5),
    TrackerConfig("boosting_half", _legacy("Boosting"), input_scale=0.5),
)


def config_by_name(name: str) -> TrackerConfig:
    for c in CONFIGS:
        if c.name == name:
            return c
    raise KeyError(f"unknown tracker configuration {name!r}; known: {[c.name for c in CONFIGS]}")


def _prep(frame: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    import cv2

    if cfg.grey:
        g = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        frame = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if cfg.blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), cfg.blur)
    if cfg.input_scale != 1.0:
        frame = cv2.resize(frame, None, fx=cfg.input_scale, fy=cfg.input_scale,
                           interpolation=cv2.INTER_AREA)
    return frame


def run_tracker(cfg: TrackerConfig, frames: list[np.ndarray], init_box: np.ndarray
                ) -> np.ndarray:
    """(L, 4) boxes ``x, y, w, h`` (frame pixels); NaN rows where the tracker gave no box.

    Row 0 is NaN too: frame 0 is the initialisation (written as VOT code 1). The tracker is
    initialised once, on ``init_box`` (the ground truth, rounded to whole pixels for the
    trackers whose API takes integers), and never re-initialised: after it reports a loss it
    keeps being asked, and its later answers are kept.
    """
    s = cfg.input_scale
    tracker = cfg.make()
    box0 = np.asarray(init_box, float) * s
    rect = tuple(int(round(v)) for v in box0)
    rect = (rect[0], rect[1], max(rect[2], 2), max(rect[3], 2))
    out = np.full((len(frames), 4), np.nan)
    try:
        tracker.init(_prep(frames[0], cfg), rect)
    except Exception:   # noqa: BLE001 (an OpenCV tracker that cannot start has no output)
        return out
    for f in range(1, len(frames)):
        try:
            ok, box = tracker.update(_prep(frames[f], cfg))
        except Exception:   # noqa: BLE001 (OpenCV raises on degenerate internal states)
            ok, box = False, None
        if ok and box is not None:
            b = np.asarray(box, float) / s
            if np.all(np.isfinite(b)) and b[2] > 0 and b[3] > 0:
                out[f] = b
    return out
