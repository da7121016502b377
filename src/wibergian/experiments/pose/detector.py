"""A simulated 2D joint detector with stacked-hourglass-like failure modes (a SIMULATION).

Starting from exact projections ``x`` (..., 17, 2) in pixels, per view and joint:

1. Gaussian noise: ``x + noise_px * joint_scale[j] * N(0, I_2)`` (wrists and ankles worse).
2. Gross errors: with probability ``gross_rate`` the joint is placed at the true location of
   another joint of the same view (chosen uniformly), plus the same Gaussian noise: the
   detector "fires" on the wrong body part.
3. Left/right swaps: with probability ``swap_rate`` per view and limb pair (arms; legs) the
   labels of the left and right shoulder/elbow/wrist (or hip/knee/ankle) are exchanged.
4. Missing joints: with probability ``missing_rate`` a joint is not detected; its position is
   set to 0 and ``visible`` is False (consumers must weight by ``visible``).
5. Out of the image: a joint whose exact projection lies outside the image (``image_size``
   given: x outside [0, width], y outside [0, height]) or behind the camera (``in_front``
   False) cannot be detected: it is missing too (``Detections.outside``).

Everything is drawn from a ``torch.Generator`` seeded by ``DetectorConfig.seed``. The defaults
give a measured mean 2D error of 14.2 px (median 9.9 px) per visible joint on the default
data (see docs/pose-data.md), in the range usually quoted for stacked-hourglass detections on
Human3.6M images (roughly 10-20 px); they are chosen, not fitted to real detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import skeleton as sk

#: default per-joint noise multipliers (order of skeleton.JOINT_NAMES).
DEFAULT_JOINT_SCALE: tuple[float, ...] = (
    1.0,  # Hip
    1.1, 1.2, 1.5,  # RHip RKnee RFoot
    1.1, 1.2, 1.5,  # LHip LKnee LFoot
    1.0, 0.9, 0.9, 1.0,  # Spine Thorax Neck/Nose Head
    1.0, 1.3, 1.8,  # LShoulder LElbow LWrist
    1.0, 1.3, 1.8,  # RShoulder RElbow RWrist
)

#: (left joints, right joints) of the limb pairs that can be swapped: arms, legs.
SWAP_GROUPS: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((11, 12, 13), (14, 15, 16)),
    ((4, 5, 6), (1, 2, 3)),
)


@dataclass
class DetectorConfig:
    """Simulated detector settings (see module docstring for the model).

    Attributes:
        noise_px: base standard deviation of the per-coordinate Gaussian noise, pixels (7.0).
        joint_scale: per-joint multipliers of ``noise_px`` (17 values; wrists 1.8, ankles 1.5).
        gross_rate: probability that a joint is placed on another joint's location (0.02).
        swap_rate: probability per view and limb pair (arms; legs) of a left/right swap (0.03).
        missing_rate: probability that a joint is not detected (0.02).
        seed: seed of the random generator (0).
    """

    noise_px: float = 7.0
    joint_scale: tuple[float, ...] = field(default_factory=lambda: DEFAULT_JOINT_SCALE)
    gross_rate: float = 0.02
    swap_rate: float = 0.03
    missing_rate: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.joint_scale) != sk.NUM_JOINTS:
            raise ValueError(f"joint_scale needs {sk.NUM_JOINTS} values, got "
                             f"{len(self.joint_scale)}")
        if self.noise_px < 0 or any(s < 0 for s in self.joint_scale):
            raise ValueError("noise_px and joint_scale must be non-negative")
        for name in ("gross_rate", "swap_rate", "missing_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")


@dataclass
class Detections:
    """Output of :func:`simulate_detections` for inputs of shape (..., 17, 2).

    ``points`` (..., 17, 2) px (0 where missing), ``visible`` (..., 17) bool, and the drawn
    events: ``gross`` (..., 17) bool, ``swapped`` (..., 2) bool (arms, legs), ``missing``
    (drawn at ``missing_rate``), ``outside`` (..., 17) bool (projection outside the image or
    behind the camera; all False without ``image_size``). ``visible = ~(missing | outside)``."""

    points: torch.Tensor
    visible: torch.Tensor
    gross: torch.Tensor
    swapped: torch.Tensor
    missing: torch.Tensor
    outside: torch.Tensor | None = None


def simulate_detections(
    clean: torch.Tensor, config: DetectorConfig | None = None,
    generator: torch.Generator | None = None,
    image_size: torch.Tensor | tuple[float, float] | None = None,
    in_front: torch.Tensor | None = None,
) -> Detections:
    """Corrupt exact projections ``clean`` (..., 17, 2) like a stacked-hourglass detector.

    ``image_size``: (width, height) px, or a tensor broadcasting to (..., 1, 2) (one size per
    view); joints projected outside it are missing. ``in_front``: (..., 17) bool, False for
    joints behind the camera (missing too). The random draws do not depend on either, so the
    same seed gives the same noise with and without them."""
    cfg = config or DetectorConfig()
    if clean.shape[-2:] != (sk.NUM_JOINTS, 2):
        raise ValueError(f"expected (..., {sk.NUM_JOINTS}, 2) points, got {tuple(clean.shape)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    dtype = clean.dtype if clean.is_floating_point() else torch.float64
    clean = clean.to(dtype)
    lead = clean.shape[:-2]
    J = sk.NUM_JOINTS
    scale = torch.tensor(cfg.joint_scale, dtype=dtype)[:, None] * cfg.noise_px
    noise = torch.randn(clean.shape, generator=gen, dtype=dtype) * scale
    # gross errors: take another joint's true position
    gross = torch.rand((*lead, J), generator=gen, dtype=torch.float32) < cfg.gross_rate
    offset = torch.randint(1, J, (*lead, J), generator=gen)
    other = (torch.arange(J) + offset) % J
    wrong = torch.gather(clean, -2, other.unsqueeze(-1).expand(*lead, J, 2))
    points = torch.where(gross.unsqueeze(-1), wrong, clean) + noise
    # left/right swaps of whole limbs
    u_swap = torch.rand((*lead, len(SWAP_GROUPS)), generator=gen, dtype=torch.float32)
    swapped = u_swap < cfg.swap_rate
    perm = torch.arange(J).expand(*lead, J).clone()
    for g, (left, right) in enumerate(SWAP_GROUPS):
        s = swapped[..., g : g + 1]
        perm[..., list(left)] = torch.where(s, torch.tensor(right), torch.tensor(left))
        perm[..., list(right)] = torch.where(s, torch.tensor(left), torch.tensor(right))
    points = torch.gather(points, -2, perm.unsqueeze(-1).expand(*lead, J, 2))
    missing = torch.rand((*lead, J), generator=gen, dtype=torch.float32) < cfg.missing_rate
    outside = torch.zeros_like(missing)
    if image_size is not None:
        size = torch.as_tensor(image_size, dtype=dtype)
        outside = ((clean < 0) | (clean > size)).any(-1)
    if in_front is not None:
        outside = outside | ~in_front.to(torch.bool)
    gone = missing | outside
    points = torch.where(gone.unsqueeze(-1), torch.zeros((), dtype=dtype), points)
    return Detections(points=points, visible=~gone, gross=gross, swapped=swapped,
                      missing=missing, outside=outside)


def expected_inlier_error(config: DetectorConfig) -> torch.Tensor:
    """Mean 2D error per joint (17,) without gross errors/swaps: for isotropic Gaussian noise
    of std s, E|e| = s * sqrt(pi / 2)."""
    return torch.tensor(config.joint_scale, dtype=torch.float64) * config.noise_px * math.sqrt(
        math.pi / 2
    )


def error_stats(clean: torch.Tensor, det: Detections) -> dict[str, float]:
    """Measured 2D error statistics over visible joints, pixels, and event rates."""
    err = (det.points - clean).norm(dim=-1)[det.visible]
    return {
        "mean_px": float(err.mean()),
        "median_px": float(err.median()),
        "p90_px": float(torch.quantile(err.double(), 0.9)),
        "rmse_px": float(err.pow(2).mean().sqrt()),
        "gross_rate": float(det.gross.double().mean()),
        "swap_rate": float(det.swapped.double().mean()),
        "missing_rate": float(det.missing.double().mean()),
        "num_visible": float(det.visible.sum()),
    }
